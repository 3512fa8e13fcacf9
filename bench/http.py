"""The server's speed (issue 3, "Speed"): request latencies over real HTTP against
`rnnscope serve` on localhost, 20 clients at once, and the server's resident memory.

The server runs as `rnnscope serve` starts it: its own process, one uvicorn worker, one BLAS
thread, models loaded at start-up. Every request type is timed beside the same computation
run in this process without HTTP (the model's forward pass, sampler or BPTT, on the same
weights and text, at the same BLAS thread count), in alternating rounds, so the ratio shows
what serving adds whatever else the shared machine is doing.

Model: the bundled LSTM 2x256 (model/weights/lstm.safetensors). A bundled model not installed
yet is replaced by a randomly initialised 2x256 stand-in in the server's data directory, so the
timings (which do not depend on the weights) and the memory (all three models loaded) still
mean what the issue asks; the output names the stand-ins.
"""
from __future__ import annotations

import argparse
import base64
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from rnnscope.model.analysis import gradient_through_time
from rnnscope.model.bundled import bundled_paths
from rnnscope.model.checkpoint import load_model, save_model
from rnnscope.model.data import split
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig, init_params
from rnnscope.model.sample import sample
from rnnscope.model.vocab import Vocab

from .common import machine_info, render_table, tree_cpu_seconds

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
VAL_FRACTION = 0.1                 # TrainConfig's: the bundled models never trained on this part
STAND_IN_CELLS = ("lstm", "gru", "rnn")   # the bundled set, whose ids are their cells' names
HIDDEN, LAYERS = 256, 2

PRIME, SAMPLE_LENGTH, SAMPLE_SEED = "ROMEO:", 500, 0
TRACE_LAYER, TRACE_QUANTITY = 0, "h"     # the neuron explorer's first view

# Issue 10's targets (issue 3's for the trace of every quantity): p50 per request type, then
# the load test, whose served requests per second must be 4x those with batching off, and
# the server's memory.
TARGET_P50_MS = {"trace_1k_one": 60, "trace_1k_all": 300, "trace_10k_one": 600,
                 "sample_500": 50, "gradients_1k": 150}
LOAD_TARGET = {"p99_ms": 1000, "errors": 0, "served_ratio": 4.0}
MEMORY_TARGET_MB = 300
# Why a target can be missed on a 2-core machine: printed beside a shortfall.
REASONS = {
    "trace_10k_one": "a lone trace is 10,000 sequential steps at batch 1 (~50 us each for 2x256: one "
                     "(1, 256) x (256, 1024) product per layer plus ~13 small NumPy calls); batching shares "
                     "steps between requests but cannot shorten one",
    "trace_1k_one": "as the 10,000-character trace: 1,000 sequential batch-1 steps",
    "sample_500": "500 sequential steps (~68 us each: three products and the draw) after the prime",
    "gradients_1k": "one BPTT pass at batch 1 over 999 steps, forward and backward: the training kernels' "
                    "time loop, which batching cannot shorten for a lone request",
    "load_p99": "20 clients sending back to back wait 20 / (served per second) on average (Little's law): "
                "a p99 of 1 s needs over 20 served per second, more than the mix's compute allows on two "
                "cores; the tail is the 10,000-character traces, 10,000 sequential steps each, a step "
                "shared by 12-16 rows costing 5-8x a lone one",
    "served_ratio": "a batched traced character costs ~25 us against ~50 alone, and the 2x256 LSTM's "
                    "1.5 MFLOP a character at NumPy's ~100-130 GFLOP/s puts a floor of 12-15 us under any "
                    "batch; BPTT batches gain 1.1-1.3x; the time loop holds the GIL between NumPy calls, so "
                    "a second core adds little, and the unbatched server already kept about one core busy",
    "served_ratio_threads": "a server whose compute runs in its own threads is held to about one core by the "
                            "GIL (its time loops hold it between NumPy calls); with worker processes the server "
                            "can use every core, so the ratio is bounded by the cores there are and the CPU a "
                            "served request costs (the ceiling row above); on two cores the API process and the "
                            "load generator take their share of them",
    "memory": "with batching every client's request is in progress at once (up to 16 traces in a pass, "
              "a gradient pass, a request alone beside each, answers being rendered) instead of two; "
              "bounded by the batch limits (RNNSCOPE_MAX_BATCH), not by the clients",
}
BATCHING_OFF = {"RNNSCOPE_MAX_BATCH": "1"}     # app/inference/batching.py: every request alone, as before batching
# The "before" server of the load test: batching off (issue 10's comparison), or compute in the
# server's own threads (RNNSCOPE_COMPUTE_WORKERS=0, issue 21's: before worker processes).
# Each with the served/s ratio its issue asks of the server under test (issue 10: 4x; issue 21: 1.8x).
BEFORE = {"unbatched": (BATCHING_OFF, "batching off", LOAD_TARGET["served_ratio"]),
          "threads": ({"RNNSCOPE_COMPUTE_WORKERS": "0", "RNNSCOPE_MAX_CONCURRENT_JOBS": "2"},
                      "compute in the server's threads, 2 slots", 1.8)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("http suite")
    g.add_argument("--http-requests", type=int, metavar="N",
                   help="timed requests per type, and as many in-process calls (default 100, quick 6)")
    g.add_argument("--http-clients", type=int, default=20, metavar="N",
                   help="concurrent clients in the load test (default 20)")
    g.add_argument("--http-load-seconds", type=float, metavar="S",
                   help="length of the load test (default 30, quick 5)")
    g.add_argument("--http-batching", choices=("both", "on"), default="both",
                   help="both: the load test also against a server with batching off (RNNSCOPE_MAX_BATCH=1), "
                        "for the before figure; on: only with batching (default both)")
    g.add_argument("--http-before", choices=tuple(BEFORE), default="unbatched",
                   help="the server the load test compares with: batching off (unbatched, the default) or "
                        "compute in the server's threads instead of worker processes (threads)")
    g.add_argument("--http-load-only", action="store_true", help="skip the per-request latencies")
    g.add_argument("--http-load-rounds", type=int, metavar="N",
                   help="alternating rounds of the two load tests, splitting --http-load-seconds (default 2, quick 1)")


# --- what is requested ----------------------------------------------------------------------

@dataclass
class Kind:
    """One request type: its body, the same computation in this process, and a check that
    the server's answer is the in-process one (so both sides really do the same work)."""

    name: str
    label: str
    route: str                               # under /api/models/{model_id}/
    body: dict
    reference: Callable[[], object]
    reference_label: str
    check: Callable[[dict], None]
    target_p50_ms: float


def forward_only(lm: LanguageModel, text: str) -> Callable[[], None]:
    """The forward pass a trace needs, read in the same 1,024-character pieces the route reads."""
    ids = lm.encode(text)

    def run():
        for _ in lm.read(ids):
            pass

    return run


SENT_DTYPES = {"int8": "i1", "float16": "<f2", "float32": "<f4"}


def decoded(array: dict) -> np.ndarray:
    """An EncodedArray of the API back to floats (T, H)."""
    q = np.frombuffer(base64.b64decode(array["data"]), SENT_DTYPES[array["dtype"]])
    return q.reshape(array["shape"]) * array["scale"]


def kinds(lm: LanguageModel, val: str) -> list[Kind]:
    H, cell = lm.config.hidden_size, lm.cell
    text_1k, text_10k = val[:1000], val[:10_000]
    _, losses_1k, cache_1k = lm.run(text_1k)
    h_1k = lm.internals(cache_1k, TRACE_LAYER, TRACE_QUANTITY)
    sample_text = sample(lm, PRIME, SAMPLE_LENGTH, 1.0, 0, SAMPLE_SEED)[0]
    grad = gradient_through_time(lm, text_1k)

    def check_trace(T: int, layers: list[int], quantities: list[str]):
        def check(r: dict):
            assert [l["layer"] for l in r["layers"]] == layers, r["layers"]
            for l in r["layers"]:
                assert list(l["quantities"]) == quantities
                assert all(a["shape"] == [T, H] for a in l["quantities"].values())
            if T == len(text_1k):
                assert math.isclose(r["mean_loss"], float(losses_1k.mean()), rel_tol=1e-4), r["mean_loss"]
                a = r["layers"][0]["quantities"][TRACE_QUANTITY]
                # int8 keeps each value within scale / 2 of the float.
                assert np.abs(decoded(a) - h_1k).max() <= a["scale"] * 0.5 + 1e-6
            else:
                assert len(r["loss"]) == T - 1 and math.isfinite(r["mean_loss"])
        return check

    def check_sample(r: dict):
        assert r["text"] == sample_text, "the server wrote another text from the same seed"

    def check_gradients(r: dict):
        assert math.isclose(r["loss"], float(grad.loss), rel_tol=1e-4), (r["loss"], grad.loss)
        for l, layer in enumerate(r["layers"]):
            ours = grad.h_grad_norm[l]
            assert len(layer["h_grad_norm"]) == len(ours) == len(text_1k) - 1
            assert np.allclose(np.array(layer["h_grad_norm"], float), ours, rtol=1e-3, atol=1e-6 * ours.max())

    one = {"layers": [TRACE_LAYER], "quantities": [TRACE_QUANTITY]}
    all_layers, all_quantities = list(range(lm.config.num_layers)), list(cell.quantities)
    forward_label = "LanguageModel.read (forward pass)"
    return [
        Kind("trace_1k_one", f"trace 1,000 chars, layer {TRACE_LAYER} {TRACE_QUANTITY}", "trace",
             {"text": text_1k, **one}, forward_only(lm, text_1k), forward_label,
             check_trace(1000, [TRACE_LAYER], [TRACE_QUANTITY]), TARGET_P50_MS["trace_1k_one"]),
        Kind("trace_1k_all", "trace 1,000 chars, all layers and quantities", "trace",
             {"text": text_1k}, forward_only(lm, text_1k), forward_label,
             check_trace(1000, all_layers, all_quantities), TARGET_P50_MS["trace_1k_all"]),
        Kind("trace_10k_one", f"trace 10,000 chars, layer {TRACE_LAYER} {TRACE_QUANTITY}", "trace",
             {"text": text_10k, **one}, forward_only(lm, text_10k), forward_label,
             check_trace(10_000, [TRACE_LAYER], [TRACE_QUANTITY]), TARGET_P50_MS["trace_10k_one"]),
        Kind("sample_500", f"sample {SAMPLE_LENGTH} chars", "sample",
             {"prime": PRIME, "length": SAMPLE_LENGTH, "temperature": 1.0, "seed": SAMPLE_SEED},
             lambda: sample(lm, PRIME, SAMPLE_LENGTH, 1.0, 0, SAMPLE_SEED), "model.sample.sample",
             check_sample, TARGET_P50_MS["sample_500"]),
        Kind("gradients_1k", "gradients 1,000 chars (BPTT over 999)", "gradients",
             {"text": text_1k}, lambda: gradient_through_time(lm, text_1k),
             "model.analysis.gradient_through_time", check_gradients, TARGET_P50_MS["gradients_1k"]),
    ]


# --- the server -----------------------------------------------------------------------------

@dataclass
class Served:
    model_id: str                # the LSTM every request goes to
    path: Path
    stand_ins: list[str]         # ids of the random stand-ins for bundled models not installed


def prepare_models(data_dir: Path, vocab: Vocab) -> Served:
    """A random 2x256 stand-in in <data_dir>/models for each bundled model not installed, named
    <cell>2x256 so it cannot be taken for a trained one; the bundled LSTM, or its stand-in."""
    installed, stand_ins = bundled_paths(), []
    for cell in STAND_IN_CELLS:
        if cell not in installed:
            cfg = ModelConfig(cell, len(vocab), HIDDEN, LAYERS)
            stand_ins.append(f"{cell}{LAYERS}x{HIDDEN}")
            save_model(LanguageModel(cfg, vocab, init_params(cfg, seed=0)),
                       data_dir / "models" / f"{stand_ins[-1]}.safetensors")
    if "lstm" in installed:
        return Served("lstm", installed["lstm"], stand_ins)
    model_id = f"lstm{LAYERS}x{HIDDEN}"
    return Served(model_id, data_dir / "models" / f"{model_id}.safetensors", stand_ins)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rnnscope_command() -> str:
    beside = Path(sys.executable).with_name("rnnscope")     # the venv's, as `make serve` runs it
    found = str(beside) if beside.exists() else shutil.which("rnnscope")
    if not found:
        raise RuntimeError("no rnnscope command: install the project (make install)")
    return found


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    start_seconds: float
    warm_seconds: float = 0.0          # from answering to its caches prepared (RNNSCOPE_WARM_ON_START)

    def memory_mb(self) -> dict[str, float]:
        """VmRSS (resident now) and VmHWM (the most it has been resident) of the server process."""
        out = {}
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024          # kB -> MB
        return out


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Preparing every bundled model's caches takes tens of seconds of CPU; far more is a fault.
WARM_TIMEOUT = 300.0


@contextmanager
def server(data_dir: Path, timeout: float = 180.0, env: dict[str, str] | None = None,
           log_name: str = "server.log") -> Iterator[Server]:
    """`rnnscope serve` on a free port, its log in data_dir; yields once /healthz answers and
    says the caches the server prepares ahead of requests are ready (RNNSCOPE_WARM_ON_START):
    a server measured while it still prepared them, or beside another that did, lent them a
    core (two servers compared in alternating rounds measured 1.31x where one at a time gave
    1.85x). `env`: variables set for the server besides this process's."""
    import httpx
    port = free_port()
    log = data_dir / log_name
    cmd = [rnnscope_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)]
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   env=None if env is None else {**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        # Loading the models takes seconds, more while other processes hold the CPUs.
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log_tail(log)}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"no answer from {url}/healthz in {timeout:.0f} s:\n{log_tail(log)}")
            try:
                health = httpx.get(f"{url}/healthz", timeout=2.0, trust_env=False)
                if health.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        started = time.perf_counter() - start
        while health.json().get("warming") and time.perf_counter() - start < started + WARM_TIMEOUT:
            time.sleep(0.5)
            health = httpx.get(f"{url}/healthz", timeout=10.0, trust_env=False)
        yield Server(process, url, log, started, time.perf_counter() - start - started)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)          # uvicorn's graceful shutdown, as Ctrl-C
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- measuring ------------------------------------------------------------------------------

def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, float)
    if not a.size:
        return {"count": 0}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": int(a.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "mean": float(a.mean()), "min": float(a.min()), "max": float(a.max())}


def timed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(client, kind: Kind, url: str, count: int, rounds: int, settle: float) -> dict:
    """count requests and count in-process calls, in rounds whose order reverses every round
    (HTTP first, then in-process first, ...) so a slow spell on the machine hits both sides."""
    sizes: list[int] = []

    def over_http():
        r = client.post(url, json=kind.body)
        r.raise_for_status()
        sizes.append(len(r.content))

    http_ms, ref_ms = [], []
    sides = [("http", over_http, http_ms), ("in-process", kind.reference, ref_ms)]
    per_round = [count // rounds + (i < count % rounds) for i in range(rounds)]
    for r, calls in enumerate(per_round):
        for _, fn, out in (sides if r % 2 == 0 else sides[::-1]):
            time.sleep(settle)
            out.extend(timed_ms(fn) for _ in range(calls))
    http, ref = percentiles(http_ms), percentiles(ref_ms)
    return {"name": kind.name, "label": kind.label, "route": kind.route, "reference": kind.reference_label,
            "response_bytes": int(np.median(sizes)), "http": http, "in_process": ref,
            "ratio_p50": http["p50"] / ref["p50"], "target_p50_ms": kind.target_p50_ms,
            "passed": http["p50"] <= kind.target_p50_ms, "http_ms": http_ms, "in_process_ms": ref_ms}


def load_test(base_url: str, model_id: str, mix: list[Kind], clients: int, seconds: float) -> dict:
    """`clients` threads, each with its own connection, sending the mix back to back (no
    think time) for `seconds`; client i starts at mix[i % len(mix)] so every type is in flight
    from the start. A request running at the deadline is waited for and counted."""
    import httpx
    records: list[list[tuple[str, float, str | None, int, float]]] = [[] for _ in range(clients)]
    start = time.perf_counter()
    deadline = start + seconds

    def client_loop(i: int) -> None:
        # A timeout far above the target: a slow answer is a latency to report, not an error.
        with httpx.Client(base_url=base_url, timeout=120.0, trust_env=False) as c:
            k = i
            while time.perf_counter() < deadline:
                kind = mix[k % len(mix)]
                k += 1
                t0 = time.perf_counter()
                status = 0
                try:
                    r = c.post(f"/api/models/{model_id}/{kind.route}", json=kind.body)
                    status = r.status_code
                    # 503 with Retry-After is the server refusing beyond capacity (issue 8), not a failure.
                    error = None if r.status_code in (200, 503) else f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    error = type(e).__name__
                now = time.perf_counter()
                records[i].append((kind.name, (now - t0) * 1e3, error, status, now - start))
                if status == 503:                  # as a client should: wait as told, a little
                    time.sleep(min(float(r.headers.get("retry-after", 1)), 1.0))

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return load_summary([rec for per_client in records for rec in per_client], wall, clients, seconds, mix)


def load_summary(flat: list, wall: float, clients: int, seconds: float, mix: list[Kind]) -> dict:
    """Latencies, served requests and errors of load-test records (name, ms, error, status,
    seconds from the start to the answer). Served per second counts the answers (200) given
    within the test's seconds: the requests still running at the deadline are waited for and
    their latencies count, but a server slow to drain them is not charged the drain."""
    errors = [e for _, _, e, _, _ in flat if e]
    served = [rec for rec in flat if rec[3] == 200]
    overall = percentiles([ms for _, ms, _, _, _ in flat])
    result = {
        "clients": clients, "seconds": seconds, "wall_seconds": wall, "requests": len(flat),
        "requests_per_second": len(flat) / wall, "errors": len(errors),
        "served": len(served), "served_per_second": sum(1 for rec in served if rec[4] <= seconds) / seconds,
        "refused_503": sum(1 for rec in flat if rec[3] == 503),
        "error_kinds": sorted({e for e in errors}), "all": overall,
        "per_kind": {k.name: percentiles([ms for name, ms, _, _, _ in flat if name == k.name]) for k in mix},
        "target": LOAD_TARGET, "records": flat,
    }
    result["passed"] = (result["errors"] <= LOAD_TARGET["errors"]
                        and overall.get("p99", math.inf) <= LOAD_TARGET["p99_ms"])
    return result


def loaded(srv: Server, model_id: str, mix: list[Kind], clients: int, seconds: float) -> dict:
    """load_test against srv, with the CPU seconds its process tree (the API process and its
    workers) and this process (the load generator's clients) used meanwhile: how much of the
    machine each server could put to work."""
    server0, client0 = tree_cpu_seconds(srv.process.pid), time.process_time()
    result = load_test(srv.url, model_id, mix, clients, seconds)
    result["server_cpu_seconds"] = tree_cpu_seconds(srv.process.pid) - server0
    result["client_cpu_seconds"] = time.process_time() - client0
    return result


def cpu_summary(runs: list[dict], served: int) -> dict:
    wall = sum(r["wall_seconds"] for r in runs)
    server, client = (sum(r[f"{who}_cpu_seconds"] for r in runs) for who in ("server", "client"))
    return {"server_cores": server / wall, "client_cores": client / wall,
            "server_seconds_per_served": server / max(served, 1)}


# --- the suite ------------------------------------------------------------------------------

@dataclass
class Options:
    requests: int
    rounds: int
    settle_seconds: float
    warmup: int
    clients: int
    load_seconds: float
    load_rounds: int
    blas_threads: int


def options(args) -> Options:
    from rnnscope.app.settings import Settings
    quick = args.quick
    requests = args.http_requests or (6 if quick else 100)
    return Options(
        requests=requests,
        rounds=min(requests, 2 if quick else 5),
        settle_seconds=0.05 if quick else 0.3,       # lets idle BLAS threads go to sleep between sides
        warmup=1 if quick else 3,
        clients=args.http_clients,
        load_seconds=args.http_load_seconds or (5.0 if quick else 30.0),
        load_rounds=args.http_load_rounds or (1 if quick else 2),
        blas_threads=Settings().blas_threads,        # what the server runs with, from the same environment
    )


def code_version() -> dict:
    """The commit and the uncommitted changes under test: the server imports the working tree."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.rstrip("\n")
    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "modified": [line[3:] for line in git("status", "--porcelain", "--", "app", "model").splitlines()]}


def memory_row(label: str, mb: float) -> dict:
    return {"label": label, "mb": mb, "target_mb": MEMORY_TARGET_MB, "passed": mb <= MEMORY_TARGET_MB}


def run(args) -> dict:
    import httpx
    opts = options(args)
    corpus = CORPUS.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    _, val = split(corpus, VAL_FRACTION)
    result = {"suite": "http", "quick": args.quick, "machine": machine_info(), "code": code_version(),
              "options": vars(opts),
              "corpus": str(CORPUS), "text": f"the validation part (last {VAL_FRACTION:.0%}) from its start"}
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-http-") as tmp, threadpool_limits(opts.blas_threads):
        data_dir = Path(tmp)
        served = prepare_models(data_dir, Vocab.from_text(corpus))
        lm = load_model(served.path)
        cfg = lm.config
        assert (cfg.cell, cfg.hidden_size, cfg.num_layers) == ("lstm", HIDDEN, LAYERS), cfg
        mix = kinds(lm, val)
        with server(data_dir) as srv, httpx.Client(base_url=srv.url, timeout=120.0, trust_env=False) as client:
            models = client.get("/api/models").raise_for_status().json()
            result["server"] = {"pid": srv.process.pid, "start_seconds": srv.start_seconds,
                                # Inherited settings that change what is measured (MALLOC_ARENA_MAX: memory).
                                "env": {k: v for k, v in os.environ.items()
                                        if k.startswith(("RNNSCOPE_", "MALLOC_", "OPENBLAS_", "OMP_"))},
                                "models": [{k: m[k] for k in ("id", "cell", "hidden_size", "num_layers")}
                                           for m in models]}
            result["model"] = {"id": served.model_id, "path": str(served.path), "stand_ins": served.stand_ins}
            assert served.model_id in [m["id"] for m in models], models
            time.sleep(1.0)
            memory = {"idle": srv.memory_mb()}

            for kind in mix:      # warm-up, and proof that the server computes what this process does
                url = f"/api/models/{served.model_id}/{kind.route}"
                kind.check(client.post(url, json=kind.body).raise_for_status().json())
                for _ in range(opts.warmup - 1):
                    client.post(url, json=kind.body).raise_for_status()
                kind.reference()

            result["requests"] = [] if args.http_load_only else [
                measure(client, k, f"/api/models/{served.model_id}/{k.route}", opts.requests, opts.rounds,
                        opts.settle_seconds) for k in mix]
            memory["after_requests"] = srv.memory_mb()
            if args.http_batching == "both":
                # The before figure: the same code with batching off (every request alone in its
                # own slot, as before app/inference/batching.py) in a second server, the two loaded in
                # alternating rounds (off, on, on, off, ...) so the shared machine's slow spells
                # hit both; each side's figures are over all its rounds.
                before_env, result["before"], target_ratio = BEFORE[args.http_before]
                with server(data_dir, env=before_env, log_name="server-before.log") as off_srv:
                    part = opts.load_seconds / opts.load_rounds
                    runs: dict[str, list[dict]] = {"off": [], "on": []}
                    for r in range(opts.load_rounds):
                        for side in (("off", "on") if r % 2 == 0 else ("on", "off")):
                            runs[side].append(loaded(off_srv if side == "off" else srv, served.model_id, mix,
                                                     opts.clients, part))
                memory["after_load"] = srv.memory_mb()
                for side, key in (("off", "load_unbatched"), ("on", "load")):
                    # Each round's answer times shifted past the rounds before it, as one test of all.
                    flat = [(*rec[:4], rec[4] + k * part if rec[4] <= part else opts.load_seconds + 1.0)
                            for k, run_ in enumerate(runs[side]) for rec in run_["records"]]
                    result[key] = load_summary(flat, sum(run_["wall_seconds"] for run_ in runs[side]), opts.clients,
                                               opts.load_seconds, mix)
                    result[key]["rounds"] = opts.load_rounds
                    result[key]["cpu"] = cpu_summary(runs[side], result[key]["served"])
                off, on = result["load_unbatched"], result["load"]
                on["served_ratio"] = on["served_per_second"] / max(off["served_per_second"], 1e-9)
                on["target_ratio"] = target_ratio
            else:
                result["load"] = loaded(srv, served.model_id, mix, opts.clients, opts.load_seconds)
                result["load"]["cpu"] = cpu_summary([result["load"]], result["load"]["served"])
                memory["after_load"] = srv.memory_mb()
            result["server"]["log_tail"] = log_tail(srv.log, 5)
    load = result["load"]
    load["passed"] = (load["errors"] <= LOAD_TARGET["errors"]
                      and load["all"].get("p99", math.inf) <= LOAD_TARGET["p99_ms"]
                      and load.get("served_ratio", math.inf) >= load.get("target_ratio", math.inf))
    result["memory"] = {
        "readings": memory,
        "rows": [memory_row("resident, idle after start-up (VmRSS)", memory["idle"]["VmRSS"]),
                 memory_row("resident after the load (VmRSS)", memory["after_load"]["VmRSS"]),
                 memory_row("peak resident over the run (VmHWM)", memory["after_load"]["VmHWM"])],
    }
    result["load_average_end"] = list(os.getloadavg())
    return result


# --- the table ------------------------------------------------------------------------------

def ms(v: float | None) -> str | None:
    return None if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.1f}")


def verdict(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def table(result: dict) -> str:
    m, model = result["machine"], result["model"]
    lines = [f"rnnscope HTTP benchmark{' (--quick: indicative only)' if result['quick'] else ''}",
             f"{m['cpu']}, {m['logical_cpus']} CPUs, load {m['load_average'][0]:.2f} at the start, "
             f"{result['load_average_end'][0]:.2f} at the end; numpy {m['numpy']} on "
             f"{(m.get('numpy_blas') or {}).get('name', '?')} {(m.get('numpy_blas') or {}).get('version', '')}; "
             f"server: `rnnscope serve`, 1 worker, {result['options']['blas_threads']} BLAS thread(s), "
             f"started in {result['server']['start_seconds']:.1f} s"]
    if model["id"] in model["stand_ins"]:
        lines.append(f"NOTE: model/weights/lstm.safetensors does not exist yet: model {model['id']!r} is a "
                     "randomly initialised LSTM 2x256; speed does not depend on the weights")
    else:
        lines.append(f"model {model['id']!r}: the bundled LSTM 2x256 ({model['path']})")
    others = [i for i in model["stand_ins"] if i != model["id"]]
    if others:
        lines.append(f"NOTE: bundled models not installed yet, loaded as random 2x256 stand-ins for the memory "
                     f"figure: {', '.join(others)}")
    code = result["code"]
    lines.append(f"code: commit {code['commit']}" + (f" + uncommitted changes to {', '.join(code['modified'])}"
                                                     if code["modified"] else ""))
    if result["server"]["env"]:
        lines.append("server environment: " + " ".join(f"{k}={v}" for k, v in result["server"]["env"].items()))
    if m["load_average"][0] > 0.5:
        lines.append(f"WARNING: load average {m['load_average'][0]:.2f}: other processes share the CPUs; the "
                     "ratios (same run, alternating rounds) are the comparable figures, the absolute times "
                     "are not")

    rows = []
    for r in result["requests"]:
        h = r["http"]
        rows.append([r["label"], h["count"], ms(h["p50"]), ms(h["p95"]), ms(h["p99"]), ms(r["in_process"]["p50"]),
                     f"{r['ratio_p50']:.2f}x", f"{r['response_bytes'] / 1e3:,.0f} kB",
                     f"p50<={r['target_p50_ms']} ms",
                     "PASS" if r["passed"] else f"short: {h['p50'] / r['target_p50_ms']:.2f}x the target, see below"])
    load = result["load"]
    reference = {r["name"]: r["in_process"]["p50"] for r in result["requests"]}
    for r in result["requests"]:
        p = load["per_kind"][r["name"]]
        if p["count"]:
            rows.append([f"  under load: {r['label']}", p["count"], ms(p["p50"]), ms(p["p95"]), ms(p["p99"]),
                         ms(reference[r["name"]]), f"{p['p50'] / reference[r['name']]:.2f}x", None, None, None])
    off = result.get("load_unbatched")
    before = result.get("before", "batching off")
    for label, run_ in ((f"{before} (before)", off), ("now", load)):
        if run_ is None:
            continue
        a = run_["all"]
        rows.append([f"load, {label}: {run_['clients']} clients x {run_['seconds']:.0f} s, {run_['errors']} errors, "
                     f"{run_['served_per_second']:.1f} served/s ({run_['refused_503']} refused 503)",
                     a["count"], ms(a.get("p50")), ms(a.get("p95")), ms(a.get("p99")), None, None, None,
                     f"p99<={LOAD_TARGET['p99_ms']} ms, 0 errors" if run_ is load else None,
                     None if run_ is not load else
                     "PASS" if load["errors"] == 0 and a.get("p99", math.inf) <= LOAD_TARGET["p99_ms"]
                     else f"short: {load['errors']} errors, p99 {a.get('p99', math.inf) / 1e3:.2f} s"])
        cpu = run_.get("cpu")
        if cpu:
            rows.append([f"  CPU: the server {cpu['server_cores']:.2f} cores "
                         f"({cpu['server_seconds_per_served']:.3f} core-s a served request), the load generator "
                         f"{cpu['client_cores']:.2f}", None, None, None, None, None, None, None, None, None])
    target = load.get("target_ratio", LOAD_TARGET["served_ratio"])
    if off is not None:
        ratio = load["served_ratio"]
        rows.append([f"served/s, now over {before}: {load['served_per_second']:.1f} / "
                     f"{off['served_per_second']:.1f}", None, None, None, None, None, f"{ratio:.2f}x", None,
                     f">= {target:g}x", "PASS" if ratio >= target else "short, see below"])
        cpu = load.get("cpu")
        if cpu:
            # Every core the load generator leaves, spent at the measured CPU a served request.
            ceiling = (m["logical_cpus"] - cpu["client_cores"]) / cpu["server_seconds_per_served"]
            rows.append([f"  ceiling now: the {m['logical_cpus']} cores less the load generator's, at its CPU a "
                         f"served request: {ceiling:.1f} served/s", None, None, None, None, None,
                         f"{ceiling / max(off['served_per_second'], 1e-9):.2f}x", None, None, None])
    headers = ["request (HTTP)", "n", "p50 ms", "p95 ms", "p99 ms", "in-process p50 ms", "HTTP/in-process",
               "response", "target", "result"]
    mem = render_table(["server memory", "MB", "target", "result"],
                       [[row["label"], f"{row['mb']:.0f}", f"<={row['target_mb']} MB", verdict(row["passed"])]
                        for row in result["memory"]["rows"]])
    errors = f"\nload-test errors: {', '.join(load['error_kinds'])}" if load["error_kinds"] else ""
    short = [(r["name"], REASONS.get(r["name"])) for r in result["requests"] if not r["passed"]]
    if load["all"].get("p99", 0) > LOAD_TARGET["p99_ms"]:
        short.append(("load p99", REASONS["load_p99"]))
    if off is not None and load["served_ratio"] < target:
        short.append(("served/s ratio", REASONS["served_ratio_threads" if before == BEFORE["threads"][1]
                                                else "served_ratio"]))
    if not all(row["passed"] for row in result["memory"]["rows"]):
        short.append(("memory", REASONS["memory"]))
    if short:
        errors += "\n\nwhy the shortfalls:\n" + "\n".join(f"- {name}: {why}" for name, why in short if why)
    references = sorted({f"{r['route']}: {r['reference']}" for r in result["requests"]})
    footer = ("\n\nin-process = the same computation in the benchmark's process, no HTTP, same weights, text and "
              f"BLAS threads ({'; '.join(references)}); HTTP/in-process = ratio of the p50s. Under load, the "
              "ratio is against the sequential in-process p50.")
    return "\n".join(lines) + "\n\n" + render_table(headers, rows) + errors + "\n\n" + mem + footer
