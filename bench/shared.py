"""A class on one server (issue 8): the worst request mix from 50 clients at once while a run
trains, against `rnnscope serve` as the README starts it.

Every client sends, back to back, the largest request each compute route accepts (a trace
of RNNSCOPE_MAX_TEXT_CHARS with every quantity as float32, BPTT over MAX_GRADIENT_CHARS, a
probe of MAX_PROBE_CHARS, a memory horizon of MAX_HORIZON_CHARS, a sample of
MAX_SAMPLE_LENGTH after the longest prime, an estimate of the largest model a run may have,
a match over the validation text of two models in turn, the largest factorisation into
groups, state projection and fixed-point search).
Meanwhile one prober asks for /healthz, the model list and a page every 50 ms, and the
server's resident memory is read every 50 ms.

What must hold: no request fails (a 503 with Retry-After is the answer beyond capacity, not a
failure); /healthz, the model list and pages answer with p99 < 100 ms; the peak resident
memory stays under RNNSCOPE_MEMORY_BUDGET.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rnnscope.app.settings import Settings

from .common import machine_info, render_table
from .http import CORPUS, code_version, percentiles, server

TARGET_FAST_P99_MS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("shared (a class on one server)")
    group.add_argument("--shared-clients", type=int, default=50)
    group.add_argument("--shared-seconds", type=float, default=60.0)


def worst_mix(s: Settings, corpus: str, corpus_id: int) -> list[tuple[str, str, dict | None]]:
    """(name, path, JSON body or None for a GET): the largest request of each compute route."""
    val = corpus[-200_000:]
    # Every quantity of every layer (3,072 values a character for the 2x256 LSTM), as long as
    # RNNSCOPE_MAX_TRACE_BYTES lets it be sent as int8 (4/3 bytes a value in base64).
    longest = min(s.max_text_chars, int(s.max_trace_bytes / (3072 * 4 / 3)))
    return [
        (f"trace, {longest:,} chars, every quantity", "/api/models/lstm/trace",
         {"text": (val * 2)[:longest], "encoding": "int8", "top_k": s.max_top_k}),
        ("gradients, max text", "/api/models/lstm/gradients", {"text": val[: s.max_gradient_chars]}),
        ("probe, max text", "/api/models/lstm/probe", {"text": val[: s.max_probe_chars], "concept": "vowel"}),
        ("horizon, max window x positions", "/api/models/lstm/horizon",
         {"text": val[: s.max_horizon_chars], "window": s.max_horizon_chars // 8, "positions": 8}),
        ("sample, max length and prime", "/api/models/lstm/sample",
         {"prime": val[: s.max_prime_chars], "length": s.max_sample_length, "seed": 1}),
        ("estimate, largest model a run may have", f"/api/corpora/{corpus_id}/estimate?cell=lstm&hidden_size="
         f"{s.max_hidden_size}&num_layers=1&batch_size=32&seq_length=100", None),
        # Two models, so the match cache (RNNSCOPE_MATCH_CACHE_MODELS readings of the validation
        # text) is read again and again: its worst case, not its usual one.
        *[(f"match over the validation text, {model}", f"/api/models/{model}/match",
           {"units": [{"layer": 1, "quantity": "h", "unit": 221, "sign": -1, "threshold": 0.0}], "length": 9})
          for model in ("python", "lstm")],
        # The largest factorisation, state projection and fixed-point search, each with a new
        # seed or K in turn would miss the caches: these hit them after the first, as a class does.
        ("groups, max components, layer 1 c", "/api/models/python/groups",
         {"layer": 1, "quantity": "c", "components": s.max_groups_components}),
        ("states, max text, 3 components", "/api/models/lstm/states",
         {"text": val[: min(s.max_state_chars, s.max_text_chars)], "layer": 1, "components": 3}),
        ("fixed points, max starts", "/api/models/lstm/fixed-points",
         {"layer": 0, "char": " ", "starts": s.max_fixed_point_starts}),
    ]


def run(args) -> dict:
    import httpx

    settings = Settings()
    clients, seconds = (8, 10.0) if args.quick else (args.shared_clients, args.shared_seconds)
    corpus = CORPUS.read_text(encoding="utf-8")
    result = {"suite": "shared", "quick": args.quick, "machine": machine_info(), "code": code_version(),
              "clients": clients, "seconds": seconds, "memory_budget": settings.memory_budget,
              "settings": {k: getattr(settings, k) for k in ("max_concurrent_jobs", "max_waiting_jobs",
                                                              "max_wait_seconds", "max_loaded_models")}}
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-shared-") as tmp, server(Path(tmp)) as srv:
        with httpx.Client(base_url=srv.url, timeout=300.0, trust_env=False) as c:
            up = c.post("/api/corpora", files={"file": ("shakespeare.txt", corpus[:300_000].encode())})
            up.raise_for_status()
            corpus_id = up.json()["id"]
            rec = up.json()["preflight"]["recommended"]
            run_id = c.post("/api/runs", json={"corpus_id": corpus_id, **{k: rec[k] for k in (
                "cell", "hidden_size", "num_layers", "batch_size", "seq_length")}, "max_steps": 1_000_000}
                            ).raise_for_status().json()["id"]
        mix = worst_mix(settings, corpus, corpus_id)
        stop = time.monotonic() + seconds
        codes: Counter = Counter()
        failures: list[str] = []
        latencies: dict[str, list[float]] = {name: [] for name, _, _ in mix}
        fast: dict[str, list[float]] = {"/healthz": [], "/api/models": [], "/explore": []}
        rss: list[float] = []

        def client(i: int) -> None:
            with httpx.Client(base_url=srv.url, timeout=300.0, trust_env=False) as c:
                k = i
                while time.monotonic() < stop:
                    name, path, body = mix[k % len(mix)]
                    k += 1
                    t0 = time.perf_counter()
                    try:
                        r = c.post(path, json=body) if body is not None else c.get(path)
                    except httpx.HTTPError as e:
                        failures.append(f"{name}: {type(e).__name__}")
                        continue
                    codes[r.status_code] += 1
                    if r.status_code == 200:
                        latencies[name].append((time.perf_counter() - t0) * 1e3)
                    elif r.status_code == 503 and "retry-after" in r.headers:
                        time.sleep(min(float(r.headers["retry-after"]), 2.0))   # as a polite client does
                    else:
                        failures.append(f"{name}: HTTP {r.status_code} {r.text[:120]}")

        def prober() -> None:
            with httpx.Client(base_url=srv.url, timeout=30.0, trust_env=False) as c:
                while time.monotonic() < stop:
                    for path in fast:
                        t0 = time.perf_counter()
                        r = c.get(path)
                        fast[path].append((time.perf_counter() - t0) * 1e3)
                        if r.status_code != 200:
                            failures.append(f"{path}: HTTP {r.status_code}")
                    time.sleep(0.05)

        def memory() -> None:
            while time.monotonic() < stop:
                rss.append(srv.memory_mb()["VmRSS"])
                time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        threads += [threading.Thread(target=prober), threading.Thread(target=memory)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = srv.memory_mb()["VmHWM"]
        with httpx.Client(base_url=srv.url, timeout=60.0, trust_env=False) as c:
            trained = c.get(f"/api/runs/{run_id}").json()
            c.post(f"/api/runs/{run_id}/cancel")
    result.update(
        codes={str(k): v for k, v in sorted(codes.items())}, failures=failures[:20], failure_count=len(failures),
        served={name: percentiles(ms) for name, ms in latencies.items()},
        fast={path: percentiles(ms) for path, ms in fast.items()},
        peak_rss_mb=peak, rss_samples=len(rss), run_steps_during=trained["step"], run_status=trained["status"],
        load_average_end=list(os.getloadavg()))
    result["passed"] = {
        "no failures": len(failures) == 0,
        f"fast routes p99 < {TARGET_FAST_P99_MS} ms": all(p.get("p99", 1e9) < TARGET_FAST_P99_MS
                                                          for p in result["fast"].values()),
        "peak RSS under the budget": peak <= settings.memory_budget / 2**20,
    }
    return result


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"## A class on one server: {result['clients']} clients, worst mix, {result['seconds']:.0f} s, "
             "a run training", f"CPU: {m.get('cpu')} · {m.get('cores', '?')} cores · load at end "
             f"{result['load_average_end'][0]:.1f}", ""]
    rows = [[name, p.get("count", 0), f"{p['p50']:.0f}" if p.get("count") else "—",
             f"{p['p99']:.0f}" if p.get("count") else "—"] for name, p in result["served"].items()]
    lines.append(render_table(["request (served)", "answered", "p50 ms", "p99 ms"], rows))
    lines.append("")
    rows = [[path, p["count"], f"{p['p50']:.1f}", f"{p['p99']:.1f}",
             "PASS" if p["p99"] < TARGET_FAST_P99_MS else "FAIL"] for path, p in result["fast"].items()]
    lines.append(render_table(["while saturated", "requests", "p50 ms", f"p99 ms (< {TARGET_FAST_P99_MS})", ""], rows))
    budget_mb = result["memory_budget"] / 2**20
    lines += ["", f"status codes: {result['codes']} (503 = refused with Retry-After, beyond capacity)",
              f"failures: {result['failure_count']} {result['failures'][:3]}",
              f"peak RSS {result['peak_rss_mb']:.0f} MB against the budget {budget_mb:.0f} MB "
              f"(RNNSCOPE_MEMORY_BUDGET): {'PASS' if result['peak_rss_mb'] <= budget_mb else 'FAIL'}",
              f"the run trained {result['run_steps_during']} steps meanwhile ({result['run_status']})"]
    return "\n".join(lines)
