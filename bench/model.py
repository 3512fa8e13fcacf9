"""The model's speed (issue 2, "Speed"): training chars/s against torch nn.LSTM, achieved
GFLOP/s against the machine's sgemm peak, full-trace forward chars/s and sampling chars/s.

Every model is randomly initialised (network.init_params): speed does not depend on the
weights, and the bundled checkpoints need not exist yet. rnnscope and torch run in one
process, on the same data, from the same weights, with the same thread count, in
alternating short rounds, so a slow spell on a shared machine hits both sides alike.
"""
from __future__ import annotations

import argparse
import math
import statistics
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from rnnscope.model import network
from rnnscope.model.cells import dot_layout, get_cell
from rnnscope.model.layers import softmax_cross_entropy
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.optim import Adam, clip_by_global_norm
from rnnscope.model.sample import sample
from rnnscope.model.vocab import Vocab

from .common import alternate, calls_per_round, machine_info, render_table, seconds, summary

try:
    import torch
    import torch.nn.functional as F
except ImportError:          # the ratios need torch; rnnscope's own numbers do not
    torch = None

# tinyshakespeare's 65 characters, the vocabulary of the bundled models.
CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
V = len(CHARS)
LEARNING_RATE, GRAD_CLIP = 2e-3, 5.0       # TrainConfig's defaults
PARTS = ("peak", "train", "trace", "sample")


@dataclass(frozen=True)
class TrainSetup:
    hidden_size: int
    num_layers: int
    batch_size: int
    seq_length: int
    cell: str = "lstm"

    @property
    def label(self) -> str:
        return f"{self.cell.upper()} H{self.hidden_size} L{self.num_layers} B{self.batch_size} T{self.seq_length}"

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(self.cell, V, self.hidden_size, self.num_layers)


CONFIGS = {
    "h128l1": TrainSetup(128, 1, 32, 64),
    "h256l2": TrainSetup(256, 2, 32, 100),     # the bundled LSTM under TrainConfig's defaults
    "h512l2": TrainSetup(512, 2, 64, 100),
    "gru-h256l2": TrainSetup(256, 2, 32, 100, "gru"),
    "rnn-h256l2": TrainSetup(256, 2, 32, 100, "rnn"),
}
SERVE_CONFIG = ModelConfig("lstm", V, 256, 2)  # the bundled LSTM: what the trace and the sampler run
TRACE_CHARS = 1000
PRIME = "ROMEO:"

# Issue 10's targets. Training: minimum rnnscope/torch ratio and fraction of the sgemm peak;
# every other training row at either thread count must not fall below 0.8x torch.
TRAIN_TARGETS = {
    ("h256l2", 1): {"ratio": 1.0, "peak_fraction": 0.60},
    ("h256l2", 2): {"ratio": 0.9},
}
OTHER_TRAIN_TARGET = {"ratio": 0.8}
TRACE_TARGET = {"chars_per_sec": 25_000}
SAMPLE_TARGET = {"chars_per_sec": 15_000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model suite")
    g.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART",
                   help=f"parts to run: {', '.join(PARTS)} (default: all; train implies peak)")
    g.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default: 1 2)")
    g.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                   metavar="CONFIG", help=f"training configs: {', '.join(CONFIGS)} (default: all)")
    g.add_argument("--rounds", type=int, help="timed rounds per contender (default 5, quick 2)")
    g.add_argument("--round-seconds", type=float, help="length of one round (default 1.0, quick 0.2)")
    g.add_argument("--sample-length", type=int, help="characters per sample (default 2000, quick 300)")
    g.add_argument("--no-torch", action="store_true", help="rnnscope only, no ratios")


# --- FLOPs -------------------------------------------------------------------------------

def train_flops_per_char(setup: TrainSetup, num_gates: int = 4) -> dict[str, int]:
    """GEMM FLOPs of one training step per character, 2*m*n*k per product, with the
    N*T characters of a batch as the rows (GH = G*H):

      forward   recurrent  h_{t-1} W_hh^T             2*H*GH      every layer
                input      x W_ih^T                   2*H*GH      layers above 0; layer 0's
                                                                  one-hot input is a row lookup
                decoder    h W_hy^T                   2*H*V
      backward  recurrent  da W_hh, da^T h_{t-1}      2 * 2*H*GH  every layer
                input      da W_ih, da^T x            2 * 2*H*GH  layers above 0
                one-hot    da^T onehot                2*GH*V      layer 0's dW_ih: a dense GEMM with a
                                                                  one-hot operand, counted as executed
                decoder    dy W_hy, dy^T h            2 * 2*H*V

      total = 6*(2L-1)*H*GH + 2*GH*V + 6*H*V

    The elementwise gate maths, the loss, clipping and Adam are not counted.
    """
    H, L = setup.hidden_size, setup.num_layers
    GH = num_gates * H
    onehot = 2 * GH * V
    return {"total": 6 * (2 * L - 1) * H * GH + onehot + 6 * H * V, "onehot": onehot}


def sgemm_peak(n: int, repeat: int) -> float:
    """Best float32 GFLOP/s of an n x n x n NumPy matmul, at the current BLAS thread limit."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = min(seconds(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


# --- training -----------------------------------------------------------------------------

def random_batches(setup: TrainSetup, count: int = 4, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) pairs of random ids (N, T), y the next character of x; cycled through."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, size=(count, setup.batch_size, setup.seq_length + 1))
    return [(s[:, :-1].copy(), s[:, 1:].copy()) for s in ids]


class NumpyTrainer:
    """One rnnscope training step per call, taken as model/train.py takes it, with the
    state carried from batch to batch."""

    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray], batches):
        self.cfg, self.batches = cfg, batches
        self.params = {k: v.copy() for k, v in params.items()}
        self.optimizer = Adam(self.params)
        self.state, self.i = None, 0

    def step(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        logits, self.state, cache = network.forward(self.cfg, self.params, x, self.state)
        loss, dlogits, _ = softmax_cross_entropy(logits, y)
        if not math.isfinite(loss):
            raise RuntimeError("rnnscope's loss is not finite")
        grads = network.backward(self.cfg, self.params, dlogits, cache).params
        clip_by_global_norm(grads, GRAD_CLIP)
        self.optimizer.step(self.params, grads, LEARNING_RATE)
        # model/train.py's loop variables hold a step's arrays until the next step has made
        # its own; so do these. Freed all at once at the end of each step instead, glibc trims
        # them off the heap and the next step faults every page in again: 197-200 ms a step
        # against train()'s 172-180 at H256 L2 B32 T100, the gap issue 10's CLI check saw.
        self.last = (logits, dlogits, cache, grads)
        return loss


if torch is not None:
    TORCH_CELLS = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}

    class TorchCharLM(torch.nn.Module):
        """The torch twin of an rnnscope checkpoint: one-hot ids -> nn.RNN|GRU|LSTM -> nn.Linear."""

        def __init__(self, cfg: ModelConfig):
            super().__init__()
            self.rnn = TORCH_CELLS[cfg.cell](input_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                                             num_layers=cfg.num_layers)
            self.decoder = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size)

        def forward(self, ids, state=None):
            """ids (T, N) -> logits (T, N, V), final (h, c)."""
            x = F.one_hot(ids, self.decoder.out_features).to(torch.float32)    # (T, N, V)
            h, state = self.rnn(x, state)
            return self.decoder(h), state

    def torch_model(cfg: ModelConfig, params: dict[str, np.ndarray]) -> TorchCharLM:
        net = TorchCharLM(cfg)
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()}, strict=True)
        return net


class TorchTrainer:
    """The same step in torch: cross-entropy, backward, clip_grad_norm_, Adam. With onednn
    False, torch's own ATen loop runs instead of oneDNN's fused RNN primitive, which torch
    picks for nn.LSTM on CPU: the same GEMMs-plus-elementwise design as rnnscope's."""

    def __init__(self, cfg: ModelConfig, params: dict[str, np.ndarray], batches, onednn: bool = True):
        self.onednn = onednn
        self.net = torch_model(cfg, params)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE)
        self.batches = [(torch.from_numpy(x.T.copy()), torch.from_numpy(y.T.copy())) for x, y in batches]
        self.state, self.i = None, 0

    def step(self) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # the flags' note about Intel GPUs' TF32
            with torch.backends.mkldnn.flags(enabled=self.onednn):
                return self._step()

    def _step(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]                       # (T, N)
        self.i += 1
        logits, state = self.net(x, self.state)
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return loss.item()


def bench_training(setup: TrainSetup, threads: int, opts) -> dict:
    cfg = setup.model_config
    params = network.init_params(cfg, seed=0)
    batches = random_batches(setup)
    trainers = {"rnnscope": NumpyTrainer(cfg, params, batches)}
    if opts.use_torch:
        trainers["torch"] = TorchTrainer(cfg, params, batches)
        if cfg.cell == "lstm":
            trainers["torch_aten"] = TorchTrainer(cfg, params, batches, onednn=False)
    # The first step doubles as warm-up and as proof that both sides compute the same thing.
    first_loss = {name: t.step() for name, t in trainers.items()}
    if opts.use_torch and not all(math.isclose(first_loss["rnnscope"], v, rel_tol=1e-4) for v in first_loss.values()):
        raise AssertionError(f"{setup.label}: first losses differ, {first_loss}; they are not training the same model")
    chars = setup.batch_size * setup.seq_length
    plan = {name: (t.step, calls_per_round(t.step, opts.round_seconds), chars) for name, t in trainers.items()}
    rates = alternate(plan, opts.rounds, opts.settle_seconds)
    flops = train_flops_per_char(setup, get_cell(cfg.cell).num_gates)
    row = {
        "config": setup.label, "threads": threads, "chars_per_step": chars,
        "steps_per_round": {name: p[1] for name, p in plan.items()},
        "flops_per_char": flops["total"], "onehot_flops_per_char": flops["onehot"],
        "first_loss": first_loss,
        **{name: summary(r) for name, r in rates.items()},
    }
    ours = row["rnnscope"]["median"]
    row["gflops"] = ours * flops["total"] / 1e9
    row["ratio"] = ours / row["torch"]["median"] if "torch" in row else None
    row["ratio_aten"] = ours / row["torch_aten"]["median"] if "torch_aten" in row else None
    if "torch" in row:
        row["torch_gflops_same_count"] = row["torch"]["median"] * flops["total"] / 1e9
    return row


# --- trace and sampling -------------------------------------------------------------------

def serve_model() -> LanguageModel:
    return LanguageModel(SERVE_CONFIG, Vocab(CHARS), network.init_params(SERVE_CONFIG, seed=0))


def bench_trace(threads: int, opts) -> dict:
    """LanguageModel.run on 1,000 characters at batch 1: logits, losses and every h, c and gate."""
    lm = serve_model()
    text = "".join(np.random.default_rng(2).choice(list(CHARS), TRACE_CHARS))
    _, _, cache = lm.run(text)
    H = SERVE_CONFIG.hidden_size
    for lc in cache.layers:       # the cache really is the full trace
        assert lc.acts.shape[:2] == (TRACE_CHARS, 1) and lc.acts.shape[2] == 4 * H and lc.hs.shape == lc.cs.shape == (TRACE_CHARS + 1, 1, H)
    def trace():
        lm.run(text)

    products = trace_products(TRACE_CHARS)
    plan = {"rnnscope": (trace, calls_per_round(trace, opts.round_seconds), TRACE_CHARS),
            "products": (products, calls_per_round(products, opts.round_seconds), TRACE_CHARS)}
    rates = alternate(plan, opts.rounds, opts.settle_seconds)
    row = {"chars": TRACE_CHARS, "threads": threads, "rnnscope": summary(rates["rnnscope"]),
           "products": summary(rates["products"]),
           "matvec_us": matvec_us(), "matvecs_per_char": SERVE_CONFIG.num_layers}
    row["of_floor"] = of_floor(rates)
    return row


# The floor of a batch-1 pass: its matrix products alone, bare, into preallocated buffers.
# Timed in the same alternating rounds as rnnscope, so a busy machine slows both alike;
# "of floor" (the median over rounds of rnnscope's rate / the floor's rate in the same
# round) is the share of the time spent in those products, comparable across loads.

def _operands(rows: int, cols: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, rows), dtype=np.float32)
    W = dot_layout(rng.standard_normal((rows, cols), dtype=np.float32))     # the layout rnnscope's rows use
    return x, W, np.empty((1, cols), np.float32)


def trace_products(T: int):
    """One trace's products: per character one (1, H) x (H, 4H) per layer (h W_hh^T); per text
    one (T, H) x (H, 4H) per layer above the first (its input term) and the (T, H) x (H, V) decoder."""
    H, L = SERVE_CONFIG.hidden_size, SERVE_CONFIG.num_layers
    steps = [_operands(H, 4 * H, l) for l in range(L)]
    rng = np.random.default_rng(9)
    hs = rng.standard_normal((T, H), dtype=np.float32)
    dense = [(rng.standard_normal((n, H), dtype=np.float32).T, np.empty((T, n), np.float32))      # as dense_forward's W.T
             for n in [4 * H] * (L - 1) + [V]]

    def run():
        for x, W, out in steps:
            for _ in range(T):
                np.matmul(x, W, out=out)
        for W, out in dense:
            np.matmul(hs, W, out=out)

    return run


def sample_products(length: int):
    """One sample's products per character: layer 0's h W_hh^T, two per layer above, the decoder."""
    H, L = SERVE_CONFIG.hidden_size, SERVE_CONFIG.num_layers
    ops = [_operands(H, 4 * H, k) for k in range(2 * L - 1)] + [_operands(H, V, 99)]

    def run():
        for _ in range(length):
            for x, W, out in ops:
                np.matmul(x, W, out=out)

    return run


def of_floor(rates: dict[str, list[float]]) -> float:
    return statistics.median(ours / floor for ours, floor in zip(rates["rnnscope"], rates["products"]))


def matvec_us(H: int = 256, G: int = 4) -> float:
    """Best time of one batch-1 step's (1, H) x (H, G*H) float32 product, in microseconds."""
    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((1, H), dtype=np.float32), rng.standard_normal((H, G * H), dtype=np.float32)
    out = np.empty((1, G * H), np.float32)
    return min(seconds(lambda: np.matmul(x, W, out=out), 2000) for _ in range(5)) / 2000 * 1e6


def matvec_note(row: dict) -> str:
    per_char = 1e6 / row["rnnscope"]["median"]
    mv = row["matvec_us"] * row["matvecs_per_char"]
    return (f"{per_char:.0f} us per character, of which {row['matvecs_per_char']} (1, 256) x (256, 1024) "
            f"products take {mv:.0f} us; the rest is the cell's elementwise steps (the LSTM's ten NumPy calls a "
            "layer, cells.LSTMCell.row_step; at batch 1 mostly per-call dispatch), for a trace the first touch of "
            "its record's fresh pages (~16 MB per 1,000 characters), and, sampling, the softmax and draw")


def torch_sampler(lm: LanguageModel, length: int, temperature: float = 1.0):
    """torch stepping one character at a time: nn.LSTM with carried state, Linear, multinomial."""
    net = torch_model(lm.config, lm.params)
    prime = torch.from_numpy(lm.encode(PRIME))

    @torch.no_grad()
    def run() -> list[int]:
        gen = torch.Generator().manual_seed(0)
        state = None
        if len(prime) > 1:            # read all but the last prime character in one call, as rnnscope does
            _, state = net(prime[:-1, None], None)
        char_id, out = int(prime[-1]), []
        for _ in range(length):
            logits, state = net(torch.tensor([[char_id]]), state)
            probs = F.softmax(logits[0, 0] / temperature, dim=-1)
            char_id = int(torch.multinomial(probs, 1, generator=gen))
            out.append(char_id)
        return out

    return run


def bench_sampling(threads: int, opts) -> dict:
    lm = serve_model()
    length = opts.sample_length
    fns = {"rnnscope": lambda: sample(lm, prime=PRIME, length=length, temperature=1.0, seed=0),
           "products": sample_products(length)}
    if opts.use_torch:
        fns["torch"] = torch_sampler(lm, length)
    plan = {name: (fn, calls_per_round(fn, opts.round_seconds), length) for name, fn in fns.items()}
    rates = alternate(plan, opts.rounds, opts.settle_seconds)
    row = {"length": length, "prime": PRIME, "threads": threads, **{n: summary(r) for n, r in rates.items()},
           "matvec_us": matvec_us(), "matvecs_per_char": 2 * SERVE_CONFIG.num_layers - 1}
    row["of_floor"] = of_floor(rates)
    row["ratio"] = row["rnnscope"]["median"] / row["torch"]["median"] if "torch" in row else None
    return row


# --- the suite ----------------------------------------------------------------------------

def check(measured: dict, target: dict | None) -> bool | None:
    if not target:
        return None
    return all(measured.get(k) is not None and measured[k] >= v for k, v in target.items())


@dataclass
class Options:
    rounds: int
    round_seconds: float
    settle_seconds: float
    sample_length: int
    peak_size: int
    peak_repeat: int
    use_torch: bool


def options(args) -> Options:
    quick = args.quick
    return Options(
        rounds=args.rounds or (2 if quick else 5),
        round_seconds=args.round_seconds or (0.2 if quick else 1.0),
        # Idle BLAS and OpenMP pools spin for a while after their last call and would steal
        # cycles from the other side's first round; pausing lets them go to sleep first.
        settle_seconds=0.05 if quick else 0.3,
        sample_length=args.sample_length or (300 if quick else 2000),
        peak_size=2048,                # 1024 reaches only ~75 % of OpenBLAS's peak here; 2048 saturates
        peak_repeat=3 if quick else 7,
        use_torch=torch is not None and not args.no_torch,
    )


@contextmanager
def thread_limit(n: int):
    """NumPy's BLAS (through threadpoolctl) and torch limited to n threads for the block."""
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def run(args) -> dict:
    opts = options(args)
    parts = set(args.only) | ({"peak"} if "train" in args.only else set())
    result = {
        "suite": "model", "quick": args.quick, "machine": machine_info(),
        "options": vars(opts), "parts": sorted(parts),
        "targets": {"training": {f"{c} {n} thread(s)": t for (c, n), t in TRAIN_TARGETS.items()},
                    "trace": TRACE_TARGET, "sampling": SAMPLE_TARGET},
        "sgemm_peak_gflops": {}, "training": [], "trace": [], "sampling": [],
    }
    for n in args.threads:
        with thread_limit(n):
            peak = None
            if "peak" in parts:
                peak = sgemm_peak(opts.peak_size, opts.peak_repeat)
                result["sgemm_peak_gflops"][str(n)] = peak
            if "train" in parts:
                rows = [bench_training(CONFIGS[name], n, opts) for name in args.configs]
                # A second peak measurement after the training rounds: a busy spell during the
                # first would understate the peak and flatter every "% of peak" below.
                peak = max(peak, sgemm_peak(opts.peak_size, opts.peak_repeat))
                result["sgemm_peak_gflops"][str(n)] = peak
                for name, row in zip(args.configs, rows):
                    row["peak_fraction"] = row["gflops"] / peak
                    row["target"] = TRAIN_TARGETS.get((name, n), OTHER_TRAIN_TARGET if opts.use_torch else None)
                    row["passed"] = check(row, row["target"])
                    result["training"].append(row)
            if "trace" in parts:
                row = bench_trace(n, opts)
                row["target"], row["passed"] = TRACE_TARGET, check(
                    {"chars_per_sec": row["rnnscope"]["median"]}, TRACE_TARGET)
                result["trace"].append(row)
            if "sample" in parts:
                row = bench_sampling(n, opts)
                row["target"], row["passed"] = SAMPLE_TARGET, check(
                    {"chars_per_sec": row["rnnscope"]["median"]}, SAMPLE_TARGET)
                result["sampling"].append(row)
    return result


# --- the table ----------------------------------------------------------------------------

def describe(target: dict | None) -> str | None:
    if not target:
        return None
    words = {"ratio": lambda v: f">={v:.1f}x", "peak_fraction": lambda v: f">={v:.0%} peak",
             "chars_per_sec": lambda v: f">={v:,.0f}/s"}
    return ", ".join(words[k](v) for k, v in target.items())


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"rnnscope model benchmark{' (--quick: indicative only)' if result['quick'] else ''}",
             f"{m['cpu']}, {m['logical_cpus']} CPUs, load {m['load_average'][0]:.2f}; numpy {m['numpy']} "
             f"({(m['numpy_blas'] or {}).get('name')} {(m['numpy_blas'] or {}).get('version')}), "
             f"torch {(m['torch'] or {}).get('version', 'absent')} ({(m['torch'] or {}).get('blas')})"]
    busy = m["load_average"][0] > 0.5
    if busy:
        lines.append(f"WARNING: load average {m['load_average'][0]:.2f} at the start: other processes share the "
                     "CPUs, so these numbers (above all at 2 threads) understate an idle machine")
    if result["sgemm_peak_gflops"]:
        lines.append("sgemm peak: " + ", ".join(f"{g:.1f} GFLOP/s at {n} thread(s)"
                                                for n, g in result["sgemm_peak_gflops"].items()))

    def rate(entry):
        return f"{entry['median']:,.0f}" if entry else None

    def verdict(passed):
        return None if passed is None else ("pass" if passed else "FAIL")

    rows, reasons = [], []
    for r in result["training"]:
        rows.append(["train " + r["config"], r["threads"], rate(r["rnnscope"]), rate(r.get("torch")),
                     None if r["ratio"] is None else f"{r['ratio']:.2f}x",
                     None if r.get("ratio_aten") is None else f"{r['ratio_aten']:.2f}x", f"{r['gflops']:.1f}",
                     None if r["peak_fraction"] is None else f"{r['peak_fraction']:.0%}", None,
                     describe(r["target"]), verdict(r["passed"])])
        peak = result["sgemm_peak_gflops"].get(str(r["threads"]))
        if r["passed"] is False and r.get("torch_gflops_same_count") and peak:
            why = (f"torch does these GEMM FLOPs at {r['torch_gflops_same_count']:.0f} GFLOP/s"
                   + (", above NumPy's whole sgemm peak" if r["torch_gflops_same_count"] > peak else "")
                   + f" ({peak:.0f}); rnnscope reaches {r['gflops']:.0f}")
            if r.get("ratio_aten") is not None:
                why += f"; against torch's ATen loop (oneDNN off) it runs at {r['ratio_aten']:.2f}x"
            reasons.append(f"{r['config']}, {r['threads']} thread(s): {why}")
    def floor(r):
        return f"{r['of_floor']:.0%} of {rate(r['products'])}" if r.get("of_floor") else None

    for r in result["trace"]:
        rows.append([f"full trace 2x256, {r['chars']} chars", r["threads"], rate(r["rnnscope"]), None, None, None,
                     None, None, floor(r), describe(r["target"]), verdict(r["passed"])])
        if r["passed"] is False:
            reasons.append(f"trace, {r['threads']} thread(s): {matvec_note(r)}")
    for r in result["sampling"]:
        rows.append([f"sample 2x256, {r['length']} chars", r["threads"], rate(r["rnnscope"]),
                     rate(r.get("torch")), None if r["ratio"] is None else f"{r['ratio']:.2f}x", None,
                     None, None, floor(r), describe(r["target"]), verdict(r["passed"])])
        if r["passed"] is False:
            reasons.append(f"sampling, {r['threads']} thread(s): {matvec_note(r)}")
    headers = ["benchmark", "threads", "rnnscope chars/s", "torch chars/s", "ratio", "vs ATen", "GFLOP/s",
               "% peak", "of floor", "target", "result"]
    notes = sorted({f"{r['config']}: {r['flops_per_char'] / 1e6:.2f} MFLOP/char" for r in result["training"]})
    footer = ("\n\nGFLOP/s = rnnscope chars/s x GEMM FLOPs per char (bench/model.py, train_flops_per_char): "
              + "; ".join(notes)) if notes else ""
    footer += ("\n\nvs ATen: against torch with oneDNN's fused LSTM switched off (torch's own loop of GEMMs and "
               "elementwise kernels)") if any(r.get("ratio_aten") for r in result["training"]) else ""
    if result["trace"] or result["sampling"]:
        footer += ("\n\nof floor: rnnscope's chars/s as a share of its bare matrix products' chars/s (the floor, "
                   "timed in the same alternating rounds, so comparable under load): the time spent in products")
    footer += "".join(f"\nshort: {why}" for why in reasons)
    return "\n".join(lines) + "\n\n" + render_table(headers, rows) + footer
