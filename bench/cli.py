"""The independent check of issue 10: `rnnscope train` end to end against an equivalent torch
loop, beside bench/model.py's in-process ratio, all in one run.

`rnnscope train` runs as a user runs it (its own process, tinyshakespeare, LSTM H256 L2 B32
T100, Adam, clipping, --threads N). Its start-up, corpus encoding and final validation are
the same whatever the step count, so two runs of S1 and S2 steps give the training speed as
(S2 - S1) x B x T / (t2 - t1). The torch loop trains nn.LSTM + nn.Linear on the same
corpus, the same contiguous-stream batches with the state carried, cross-entropy, clipping
and Adam, at the same thread count, timed over the same S2 - S1 steps. Rounds alternate
(CLI, torch, CLI, ...), and the in-process ratio of bench/model.py (random batches, same
sizes) is measured in the same run; the spread of the rounds is the noise the two ratios
are compared within.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from threadpoolctl import threadpool_limits

from rnnscope.model.data import StreamBatches, split
from rnnscope.model.vocab import Vocab

from .common import machine_info, render_table
from .http import CORPUS, code_version, rnnscope_command
from .model import CONFIGS, TorchTrainer, bench_training, torch

SETUP = CONFIGS["h256l2"]
VAL_FRACTION = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cli suite")
    g.add_argument("--cli-steps", type=int, nargs=2, metavar=("S1", "S2"),
                   help="step counts of the short and the long `rnnscope train` run (default 5 45, quick 3 13)")
    g.add_argument("--cli-rounds", type=int, help="rounds of CLI and torch (default 3, quick 1)")
    g.add_argument("--cli-threads", type=int, default=1, help="BLAS / torch threads (default 1)")


def cli_seconds(corpus: Path, steps: int, threads: int, out_dir: Path) -> float:
    """Wall time of `rnnscope train` for `steps` steps, validating only at the end."""
    cmd = [rnnscope_command(), "train", str(corpus), "--out", str(out_dir / f"m{steps}.safetensors"),
           "--cell", SETUP.cell, "--hidden", str(SETUP.hidden_size), "--layers", str(SETUP.num_layers),
           "--batch-size", str(SETUP.batch_size), "--seq-length", str(SETUP.seq_length),
           "--max-steps", str(steps), "--eval-every", str(10 ** 9), "--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def torch_loop(text: str, steps: int):
    """The equivalent torch training, stepped from the start of the training part: returns a
    function timing `steps` steps."""
    train_text, _ = split(text, VAL_FRACTION)
    vocab = Vocab.from_text(text)
    assert len(vocab) == SETUP.model_config.vocab_size, "bench.model's V is tinyshakespeare's 65"
    stream = StreamBatches(vocab.encode(train_text), SETUP.batch_size, SETUP.seq_length)
    batches = [stream[k] for k in range(steps + 1)]
    from rnnscope.model.network import init_params
    trainer = TorchTrainer(SETUP.model_config, init_params(SETUP.model_config, seed=0), batches)
    trainer.step()                                           # warm-up

    def timed() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        return time.perf_counter() - start

    return timed


def run(args) -> dict:
    quick = args.quick
    s1, s2 = args.cli_steps or ((3, 13) if quick else (5, 45))
    rounds = args.cli_rounds or (1 if quick else 3)
    threads = args.cli_threads
    chars = (s2 - s1) * SETUP.batch_size * SETUP.seq_length
    result = {"suite": "cli", "quick": quick, "machine": machine_info(), "code": code_version(),
              "setup": SETUP.label, "threads": threads, "steps": [s1, s2], "rounds": rounds,
              "corpus": str(CORPUS)}
    if torch is None:
        raise RuntimeError("the cli suite compares with torch: install torch==2.13.0")
    torch.set_num_threads(threads)
    text = CORPUS.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    cli_rates, torch_rates = [], []
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-cli-") as tmp, threadpool_limits(threads):
        timed_torch = torch_loop(text, s2 - s1)
        for _ in range(rounds):
            t1 = cli_seconds(CORPUS, s1, threads, Path(tmp))
            t2 = cli_seconds(CORPUS, s2, threads, Path(tmp))
            cli_rates.append(chars / (t2 - t1))
            torch_rates.append(chars / timed_torch())
        model_opts = SimpleNamespace(use_torch=True, round_seconds=0.2 if quick else 1.0,
                                     rounds=2 if quick else 5, settle_seconds=0.0)
        model_row = bench_training(SETUP, threads, model_opts)
    ratios = [c / t for c, t in zip(cli_rates, torch_rates)]
    cli, tor, ratio = statistics.median(cli_rates), statistics.median(torch_rates), statistics.median(ratios)
    model_ratios = [a / b for a, b in zip(model_row["rnnscope"]["rounds"], model_row["torch"]["rounds"])]
    # Noise: the spread of the per-round ratios, of the CLI rounds and of bench/model.py's rounds.
    spread = max(max(ratios) - min(ratios), max(model_ratios) - min(model_ratios)) / 2
    result.update({
        "cli_chars_per_sec": cli_rates, "torch_chars_per_sec": torch_rates, "ratios": ratios,
        "cli_median": cli, "torch_median": tor, "ratio": ratio,
        "model_suite": {"rnnscope": model_row["rnnscope"]["median"], "torch": model_row["torch"]["median"],
                        "ratio": model_row["ratio"], "round_ratios": model_ratios},
        "noise": spread, "agree": abs(ratio - model_row["ratio"]) <= max(spread, 0.05),
    })
    return result


def table(result: dict) -> str:
    m = result["machine"]
    t = m.get("torch") or {}
    blas = m.get("numpy_blas") or {}
    lines = [f"rnnscope train (CLI) against an equivalent torch loop{' (--quick: indicative only)' if result['quick'] else ''}",
             f"{m['cpu']}, {m['logical_cpus']} CPUs, load {m['load_average'][0]:.2f} at the start; numpy "
             f"{m['numpy']} on {blas.get('name', '?')} {blas.get('version', '')}; torch {t.get('version')} "
             f"({t.get('blas')}, oneDNN {t.get('mkldnn')}, {t.get('capability')})",
             f"{result['setup']}, {result['threads']} thread(s); CLI speed from runs of {result['steps'][0]} and "
             f"{result['steps'][1]} steps (start-up and final validation cancel out), {result['rounds']} round(s)"]
    ms = result["model_suite"]
    rows = [
        ["rnnscope train (CLI, subprocess)", f"{result['cli_median']:,.0f}",
         " ".join(f"{r:,.0f}" for r in result["cli_chars_per_sec"]), None],
        ["torch loop (nn.LSTM, same batches)", f"{result['torch_median']:,.0f}",
         " ".join(f"{r:,.0f}" for r in result["torch_chars_per_sec"]), None],
        ["ratio CLI / torch", f"{result['ratio']:.2f}x", " ".join(f"{r:.2f}" for r in result["ratios"]), None],
        ["bench model: rnnscope / torch in-process", f"{ms['ratio']:.2f}x",
         " ".join(f"{r:.2f}" for r in ms["round_ratios"]), f"{ms['rnnscope']:,.0f} / {ms['torch']:,.0f}"],
        ["agree within noise", "yes" if result["agree"] else "NO",
         f"|{result['ratio']:.2f} - {ms['ratio']:.2f}| vs +-{result['noise']:.2f}", None],
    ]
    note = ("\nnoise = half the largest spread (max - min) of the per-round ratios, CLI rounds or bench model "
            "rounds; the two agree when their medians differ by no more (or by 0.05).")
    return "\n".join(lines) + "\n\n" + render_table(["", "median", "rounds", "chars/s"], rows) + note
