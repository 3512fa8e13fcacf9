"""User patterns cannot stall the server (issue 18, defect 4): they compile and match in
worker processes (app/inference/pattern_pool.py), which are killed and replaced past the time budget
and stopped with the server.

Why processes (measured with google-re2 1.1.20251105 on the shared two-core machine): a
thread matching "(?s)" + ".{0,999}" * 24 + "Z$" on 10,000 characters for 4.9 s left the main
thread's longest pause at 0.1 s (the binding releases the GIL while matching), but compiling
that pattern held the GIL for 1.3-6.6 s with no pause at all. Five clients sending such
probes for five seconds (/tmp measurement with this file's helpers, machine load ~10):
before the pool /healthz waited over 50 ms 81.7 % of the time, the longest 23.2 s; with it
0.14 % (0.68 % idle beside two spinning processes), the longest 66 ms, p99 22 ms.
"""
from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from fastapi.testclient import TestClient

from rnnscope.app.inference.compute_gate import ComputeBusy
from rnnscope.app.inference.pattern_pool import PatternPool
from rnnscope.app.training.schemas import GradientHistory, Metrics
from rnnscope.model.patterns import PatternError, PatternTooSlow, compile_pattern, matches
from tests.corpus import shakespeare_head
from tests.training_app import FAST, OWNER, Server, build_app, new_corpus, start, wait_for

# Legal (198 characters, under max_regex_chars): RE2 expands the bounded repeats into a
# program that takes seconds to compile and to run over 10,000 characters.
SLOW = "(?s)" + ".{0,999}" * 24 + "Z$"
TEXT = shakespeare_head(10_000)

CODE = ('def parse(line):  # split "key = value"\n    key, _, value = line.partition("=")\n'
        '    return key.strip(), value  # naïve: Ωμέγα = 3, café ٣٤\u00a0ok\n\n') * 3


@pytest.fixture
def pool():
    pool = PatternPool(workers=2, max_seconds=30.0, max_chars=20_000, max_waiting=8, max_wait_seconds=60.0)
    yield pool
    pool.close()


def ended(pid: int) -> bool:
    """No such process, or only its exit status left for its parent to collect."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until_ended(pids, seconds: float = 30.0) -> list[int]:
    """The pids still running after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(ended(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not ended(p)]


def workers_of(pid: int) -> list[int]:
    """The pattern workers among a process's children, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == pid and b"pattern_worker" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("pattern", [
    r"\bdef\b", r'"[^"\n]*"', r"#.*", r"(?m)^\s+", r"\w+", r"\W+", r"\d+", r"\s+", r"(?i)DEF\w*",
    r"(?s)def.*?def", r"x{,3}", r"a|ab|abc", r"", r".", r"[^\x00-\x7f]+", r"(a+)+$", r"(?m)$",
])
def test_a_worker_finds_what_re2_finds_in_process(pool, pattern):
    for text in (CODE, TEXT[:2_000], ""):
        assert pool.spans(pattern, text) == list(matches(compile_pattern(pattern), text)), (pattern, text[:20])


def test_what_is_not_a_pattern_is_refused_by_name_as_in_process(pool):
    # The first four are refused by Python's parser in the server, the last two by RE2 in the worker.
    for pattern in ("(unclosed", r"(a)\1", r"\w+(?=:)", "x{1001}", r"(?:a{0,1000}){0,1000}", r"\w{1000}\w{1000}"):
        with pytest.raises(PatternError) as in_process:
            compile_pattern(pattern)
        with pytest.raises(PatternError) as in_worker:
            pool.spans(pattern, CODE)
        assert (in_worker.value.kind, str(in_worker.value)) == (in_process.value.kind, str(in_process.value))


def test_a_pattern_over_the_budget_is_stopped_and_its_worker_replaced():
    pool = PatternPool(workers=1, max_seconds=0.3, max_chars=20_000, max_waiting=8, max_wait_seconds=60.0)
    try:
        assert pool.spans("Z", "aZ") == [(1, 2)]                  # started, outside the budget
        (first,) = pool.pids()
        with pytest.raises(PatternTooSlow, match="over 0.3 s .setting RNNSCOPE_MAX_REGEX_SECONDS.") as e:
            pool.spans(SLOW, TEXT)
        assert e.value.kind == "regex_too_slow"
        assert ended(first)                                       # killed and collected, not left running
        (second,) = pool.pids()
        assert second != first
        assert pool.spans(r"\w+", CODE) == list(matches(compile_pattern(r"\w+"), CODE))
    finally:
        pool.close()
    assert wait_until_ended([second]) == []


def test_a_worker_killed_from_outside_is_replaced(pool):
    assert pool.spans("a", "banana") == [(1, 2), (3, 4), (5, 6)]
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)
    assert wait_until_ended([pid], 10) == []
    assert pool.spans("a", "banana") == [(1, 2), (3, 4), (5, 6)]    # idle and dead: a new one answers
    assert pool.pids() != [pid]


def test_a_text_over_the_limit_is_not_sent(pool):
    with pytest.raises(ValueError, match="20000 at most"):
        pool.spans("a", "a" * 20_001)


def test_close_stops_every_worker_and_refuses_later_jobs():
    pool = PatternPool(workers=2, max_seconds=30.0, max_chars=20_000, max_waiting=8, max_wait_seconds=60.0)
    both = [threading.Thread(target=pool.spans, args=("a", "banana")) for _ in range(2)]
    for t in both:
        t.start()
    for t in both:
        t.join()
    pids = pool.pids()
    assert pids
    pool.close()
    assert wait_until_ended(pids, 10) == []
    with pytest.raises(ComputeBusy):
        pool.spans("a", "banana")


def settle(pid: int, seconds: float = 60.0) -> None:
    """Wait until a process is idle (under 10 % of a core over half a second): start-up work
    in background threads (compressing the static files) is not the server answering."""
    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = cpu()
        time.sleep(0.5)
        if cpu() - before < 0.05:
            return


def healthz_latencies(url: str, until, at_least: int) -> tuple[list[float], float]:
    """/healthz asked every 10 ms after the last answer, until until() is false and at least
    `at_least` answers came: the latencies, and the seconds it took."""
    latencies = []
    begin = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as http:
        while until() or len(latencies) < at_least:
            start = time.perf_counter()
            assert http.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.01)
    return latencies, time.perf_counter() - begin


def share_over(bound: float, latencies: list[float], seconds: float) -> float:
    """The share of those seconds in which a request arriving would have waited over `bound`.
    One answer after a stall of a second is one sample in a hundred, but a hundredth of the
    time only if the stall lasted 10 ms: asked at a random moment, /healthz waits past the
    bound for the time the server stalls past it. p99 of users' waits <= bound is this <= 1 %."""
    return sum(max(0.0, t - bound) for t in latencies) / seconds


@contextmanager
def cores_taken(count: int):
    """`count` processes spinning at the workers' priority (nice 10): the CPU two slow
    patterns take, without the server doing anything."""
    spinners = [subprocess.Popen(["nice", "-n", "10", sys.executable, "-c", "while True: pass"])
                for _ in range(count)]
    try:
        yield
    finally:
        for s in spinners:
            s.kill()
            s.wait()


def test_health_stays_quick_while_five_slow_patterns_run(tmp_path, data_dir, record_property):
    """A live server, five clients probing with SLOW over 10,000 characters for five
    seconds, /healthz asked every 10 ms meanwhile; then the server is killed and its
    workers end too. The bound: /healthz, asked at a random moment, waits over 50 ms at
    most 1 % of the time (p99 <= 50 ms) more than the same server idle a moment before while
    two processes at the workers' priority take the cores as two workers do; what the
    scheduler costs on a machine shared with other work is not the server stalling. Before
    the pool, compiling held the GIL for seconds: /healthz waited past 50 ms most of the time."""
    shutil.copytree(data_dir / "models", tmp_path / "models")
    server = Server(tmp_path, {"RNNSCOPE_MAX_REGEX_SECONDS": "2"}).start()
    answers: list[httpx.Response] = []

    def probe(seconds: float = 5.0):
        with httpx.Client(base_url=server.url, timeout=120) as http:
            begin = time.monotonic()
            while time.monotonic() - begin < seconds:
                answers.append(http.post("/api/models/lstm/probe", json={"text": TEXT, "regex": SLOW}))

    try:
        settle(server.process.pid)
        assert httpx.post(f"{server.url}/api/models/lstm/probe", json={"text": "ab", "regex": "a"},
                          timeout=60).status_code == 200               # a worker started
        gc.collect()
        gc.disable()                        # this process's pauses are not the server's latency
        try:
            with cores_taken(2):
                idle = healthz_latencies(server.url, lambda: False, 300)
            clients = [threading.Thread(target=probe) for _ in range(5)]
            for c in clients:
                c.start()
            busy = healthz_latencies(server.url, lambda: any(c.is_alive() for c in clients), 300)
            for c in clients:
                c.join(120)
        finally:
            gc.enable()
        workers = workers_of(server.process.pid)
        assert 1 <= len(workers) <= 2                                 # RNNSCOPE_REGEX_WORKERS
    finally:
        server.kill()                       # SIGKILL: no shutdown; the workers see their input close
    assert wait_until_ended(workers, 30) == []
    assert len(answers) >= 5
    for r in answers:
        if r.status_code == 503:            # five clients, two workers: waited past the gate's limit
            assert "RNNSCOPE_MAX_WAIT" in r.json()["detail"] and "Retry-After" in r.headers, r.text
            continue
        assert r.status_code == 422, r.text
        error = r.json()["detail"][0]
        assert error["type"] in ("regex_too_slow", "concept_constant"), error   # stopped, or no match
        if error["type"] == "regex_too_slow":
            assert "RNNSCOPE_MAX_REGEX_SECONDS" in error["msg"] and error["ctx"] == {"max_seconds": 2.0}
    assert any(r.status_code == 422 for r in answers)
    stalled, stalled_idle = share_over(0.050, *busy), share_over(0.050, *idle)
    record_property("healthz", {"share_over_50ms": {"busy": round(stalled, 4), "idle": round(stalled_idle, 4)},
                                "p99_ms": {"busy": round(float(np.percentile(busy[0], 99)) * 1e3, 1),
                                           "idle": round(float(np.percentile(idle[0], 99)) * 1e3, 1)},
                                "max_ms": round(max(busy[0]) * 1e3, 1), "samples": len(busy[0])})
    assert stalled <= 0.01 + stalled_idle, (f"/healthz waited over 50 ms {stalled:.1%} of the time with five slow "
                                           f"patterns, {stalled_idle:.1%} idle ({len(busy[0])} answers in "
                                           f"{busy[1]:.1f} s, the longest {max(busy[0]):.2f} s)")


# ---- other work that ran on the event loop -------------------------------------------------------

def test_a_runs_metrics_and_gradients_render_in_the_request_thread(tmp_path, monkeypatch):
    """FastAPI renders a sync route's response model on the event loop: 200,000 metric points
    (max_points allows 1,000,000) took 0.5 s there, every other request waiting."""
    rendered = []

    def spy_on(cls):
        original = cls.model_dump_json

        def model_dump_json(self, *args, **kwargs):
            try:
                asyncio.get_running_loop()
                rendered.append((cls.__name__, "event loop"))
            except RuntimeError:
                rendered.append((cls.__name__, "thread"))
            return original(self, *args, **kwargs)
        monkeypatch.setattr(cls, "model_dump_json", model_dump_json)

    spy_on(Metrics)
    spy_on(GradientHistory)
    with TestClient(build_app(tmp_path, **FAST), headers=OWNER) as client:
        run_id = start(client, new_corpus(client), max_steps=20)
        wait_for(client, run_id)
        assert client.get(f"/api/runs/{run_id}/metrics").json()["step"][-1] == 20
        assert client.get(f"/api/runs/{run_id}/gradients").status_code == 200
    assert rendered == [("Metrics", "thread"), ("GradientHistory", "thread")]
