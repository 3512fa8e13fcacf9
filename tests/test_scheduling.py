"""Issue 21, "Scheduling": the compute gate serves the shortest expected job first, ages
waiting jobs so a long one cannot starve, and refuses by the wait a newcomer can expect.

Orders are asserted, never durations: each job's expected seconds are declared, the work
is held on events, and where waiting time matters the gate runs on a planted clock."""
from __future__ import annotations

import contextlib
import threading
import time

import httpx
import pytest

from rnnscope.app.inference.compute_gate import ComputeBusy, ComputeGate
from tests.conftest import serving
from tests.training_app import build_app

MB = 1_000_000


class Clock:
    """A clock that moves only when told: priorities and expected waits read it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the gate never reached the state waited for"
        time.sleep(0.002)


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_a_short_job_arriving_behind_two_long_ones_runs_before_the_long_one_waiting():
    """Two 3 s jobs hold both slots (no slot kept from long jobs), a third waits; a 20 ms job
    arriving last takes the first slot that frees, and finishes before the waiting 3 s job starts."""
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30, long_seconds=None)
    order: list[str] = []
    release = {name: threading.Event() for name in ("first", "second")}

    def running(name: str) -> None:
        with gate.expect(3.0):
            order.append(f"{name} started")
            release[name].wait(10)

    def job(name: str, seconds: float) -> None:
        with gate.expect(seconds):
            order.append(f"{name} started")
            time.sleep(seconds / 30)                  # the work, scaled down: 0.1 s and 0.7 ms
            order.append(f"{name} done")

    threads = [start(running, "first"), start(running, "second")]
    until(lambda: gate.busy == 2)
    threads.append(start(job, "long", 3.0))
    until(lambda: gate.waiting == 1)
    threads.append(start(job, "short", 0.02))
    until(lambda: gate.waiting == 2)
    release["first"].set()                            # one slot frees
    until(lambda: "long done" in order)
    release["second"].set()
    for thread in threads:
        thread.join(10)
    assert order.index("short done") < order.index("long started"), order
    assert gate.busy == 0 and gate.waiting == 0


def test_a_20ms_job_arriving_behind_two_3s_jobs_finishes_first():
    """Issue 21's case with the slot kept from long jobs: of two 3 s jobs one runs and one
    waits, and a 20 ms job arriving behind them runs at once in the other slot."""
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30)
    order: list[str] = []
    release = threading.Event()

    def job(name: str, seconds: float) -> None:
        with gate.expect(seconds):
            order.append(f"{name} started")
            if seconds > 1:
                release.wait(10)
            order.append(f"{name} done")

    threads = [start(job, "3 s", 3.0)]
    until(lambda: gate.busy == 1)
    threads.append(start(job, "another 3 s", 3.0))
    until(lambda: gate.waiting == 1)
    assert gate.busy == 1                             # the second slot is kept from long jobs
    threads.append(start(job, "20 ms", 0.02))
    until(lambda: "20 ms done" in order)
    release.set()
    for thread in threads:
        thread.join(10)
    assert order.index("20 ms done") < min(order.index("3 s done"), order.index("another 3 s started")), order
    assert order.index("another 3 s started") > order.index("3 s done")
    assert gate.busy == 0 and gate.waiting == 0


def test_ageing_lets_a_long_job_through_after_a_bounded_number_of_short_ones():
    """priority = expected - AGEING x waited: a 1 s job is passed by the 50 ms jobs that
    arrive within 0.95 s of it (AGEING 1), and by none that arrive later."""
    clock = Clock()
    gate = ComputeGate(slots=1, max_waiting=64, max_wait_seconds=30, clock=clock)
    order: list[str] = []

    def job(name: str, seconds: float) -> None:
        with gate.expect(seconds):
            order.append(name)

    threads = []
    with gate.expect(1.0):                            # the slot, held while the queue builds
        threads.append(start(job, "long", 1.0))
        until(lambda: gate.waiting == 1)
        for i in range(1, 21):                        # a short job every 0.1 s for 2 s
            clock.now = i / 10
            threads.append(start(job, f"short {i}", 0.05))
            until(lambda: gate.waiting == i + 1)
    for thread in threads:
        thread.join(10)
    assert order == [f"short {i}" for i in range(1, 10)] + ["long"] + [f"short {i}" for i in range(10, 21)]


def test_a_newcomer_is_refused_by_its_expected_wait_not_by_the_jobs_running():
    """Two heavy jobs run (3 s and 2 s, 1.5 s into them): a 20 ms job expects to wait 0.5 s
    and is admitted; a 2 s job behind it and an 0.8 s job expects 1.32 s, over the 1 s
    setting: 503, Retry-After 2, naming the setting; a short one after it is admitted."""
    clock = Clock()
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30, max_expected_wait=1.0, long_seconds=None,
                       clock=clock)
    ran: list[str] = []

    def job(name: str, seconds: float) -> None:
        with gate.expect(seconds):
            ran.append(name)

    with contextlib.ExitStack() as heavy, contextlib.ExitStack() as lighter:
        heavy.enter_context(gate.slot(seconds=3.0))
        lighter.enter_context(gate.slot(seconds=2.0))
        clock.now = 1.5
        waiting = [start(job, "short", 0.02)]
        until(lambda: gate.waiting == 1)
        assert gate.retry_after(0.8) == pytest.approx(0.52)
        waiting.append(start(job, "middling", 0.8))
        until(lambda: gate.waiting == 2)
        with pytest.raises(ComputeBusy) as refused:
            with gate.expect(2.0):
                ran.append("refused job ran")
        assert refused.value.status_code == 503 and refused.value.headers["Retry-After"] == "2"
        assert "RNNSCOPE_MAX_EXPECTED_WAIT_SECONDS" in refused.value.detail and "1.3 s" in refused.value.detail
        waiting.append(start(job, "another short", 0.01))   # 0.5 s: ahead of the first short, even
        until(lambda: gate.waiting == 3)
        lighter.close()                                     # one slot frees: they run in turn on it
        for thread in waiting:
            thread.join(10)
        assert ran == ["another short", "short", "middling"]
    assert gate.busy == 0 and gate.waiting == 0


def test_a_full_queue_still_refuses_whatever_the_expected_wait():
    gate = ComputeGate(slots=1, max_waiting=1, max_wait_seconds=30, max_expected_wait=100.0)
    def waiter() -> None:
        with gate.expect(0.01):
            pass

    with gate.expect(0.01):
        waiter = start(waiter)
        until(lambda: gate.waiting == 1)
        with pytest.raises(ComputeBusy) as refused:
            gate.check()
        assert "RNNSCOPE_MAX_WAITING_JOBS" in refused.value.detail
        with pytest.raises(ComputeBusy) as refused:
            with gate.slot(seconds=0.01):            # a slot of its own, not the one this thread holds
                pass
        assert "RNNSCOPE_MAX_WAITING_JOBS" in refused.value.detail
    waiter.join(10)


def test_a_short_job_whose_bytes_do_not_fit_waits_while_a_longer_one_that_fits_runs():
    """Memory still gates: the first in priority waits for its bytes, and a job behind it
    whose bytes fit takes the free slot meanwhile; the bytes freed, the first goes."""
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30, memory_budget=100 * MB)
    order: list[str] = []
    done = threading.Event()

    def job(name: str, nbytes: int, seconds: float) -> None:
        with gate.job(nbytes, name, seconds):
            order.append(name)
            if name == "fits":
                done.wait(10)

    with gate.job(80 * MB, "holder", 5.0):
        short = start(job, "short, 50 MB", 50 * MB, 0.01)
        until(lambda: gate.waiting == 1)
        fits = start(job, "fits", 10 * MB, 1.0)
        until(lambda: order == ["fits"])
        assert gate.waiting == 1 and gate.held_bytes == 90 * MB
    short.join(10)
    assert order == ["fits", "short, 50 MB"]
    done.set()
    fits.join(10)
    assert gate.held_bytes == 0 and gate.busy == 0


def test_a_pass_hands_its_slot_only_to_work_ahead_of_what_it_has_left():
    """A batcher's worker between pieces: a long job that just arrived waits for the little
    the pass has left; a short one goes first."""
    gate = ComputeGate(slots=1, max_waiting=8, max_wait_seconds=30)
    order: list[str] = []

    def job(name: str, seconds: float) -> None:
        with gate.expect(seconds):
            order.append(name)

    with gate.slot(seconds=1.0):
        held = time.monotonic()
        long = start(job, "long", 5.0)
        until(lambda: gate.waiting == 1)
        assert gate.let_waiting_go_first(held, 0.05) == held     # 50 ms left: keeps the slot
        short = start(job, "short", 0.01)
        until(lambda: gate.waiting == 2)
        gate.let_waiting_go_first(held, 0.05)                    # the short job runs, then the pass again
        order.append("pass")
        assert gate.busy == 1 and gate.waiting == 1
    long.join(10)
    short.join(10)
    assert order == ["short", "pass", "long"]


def test_a_pass_that_gave_its_slot_up_waits_for_its_own_worker_not_any_slot():
    """Two workers, two slots. A pass placed on worker A gives its slot to a short job, which
    is placed on A (the worker free then). When the other slot frees, the pass is not granted
    it (its rows live on A, busy): a newcomer is, and is placed on the free worker B; the pass
    goes on once A's job has finished."""
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30, long_seconds=None)
    workers = ["A", "B"]
    order: list[str] = []
    release = {name: threading.Event() for name in ("other", "short", "pass")}
    placed: dict[str, str] = {}

    def job(name: str, seconds: float) -> None:
        with gate.expect(seconds):
            placed[name] = gate.place(workers, lambda w, taken: (taken, {"A": 1, "B": 0}[w]))   # B if both free
            order.append(f"{name} on {placed[name]}")
            if name in release:
                release[name].wait(10)

    def a_pass() -> None:
        with gate.slot(seconds=1.0):
            placed["pass"] = gate.place(workers, lambda w, taken: (taken, {"A": 0, "B": 1}[w]))
            release["pass"].wait(10)
            gate.let_waiting_go_first(time.monotonic(), 0.5)
            order.append(f"pass again on {gate.place(workers, lambda w, taken: (taken, 0))}")

    pass_thread = start(a_pass)
    until(lambda: "pass" in placed)
    assert placed["pass"] == "A"
    other = start(job, "other", 1.0)
    until(lambda: "other" in placed)
    short = start(job, "short", 0.01)
    until(lambda: gate.waiting == 1)
    release["pass"].set()                    # the pass hands its slot to the short job
    until(lambda: "short" in placed)
    release["other"].set()                   # a slot frees; the pass's worker is still busy
    other.join(10)
    newcomer = start(job, "newcomer", 0.01)
    newcomer.join(10)
    assert pass_thread.is_alive() and gate.waiting == 1
    release["short"].set()
    pass_thread.join(10)
    short.join(10)
    assert order == ["other on B", "short on A", "newcomer on B", "pass again on A"]


def test_long_passes_that_give_way_between_pieces_may_take_every_slot():
    """Long jobs hold at most all slots but one, unless they give their slot up between
    pieces (batched passes): then two may run, as a waiting click gets a slot at the next piece."""
    for yields, both in ((False, False), (True, True)):
        gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30, long_seconds=1.0)
        release = threading.Event()
        running: list[int] = []

        def long_job(n: int) -> None:
            with gate.slot(seconds=3.0, yields=yields):
                running.append(n)
                release.wait(10)

        threads = [start(long_job, n) for n in range(2)]
        until(lambda: len(running) + gate.waiting == 2)
        assert (len(running) == 2) is both, (yields, running)
        release.set()
        for t in threads:
            t.join(10)


def test_a_pass_goes_to_the_worker_with_the_least_work_pinned_not_the_one_free_now():
    """Pass A (3 s) is pinned to worker 0 and has given its slot up; a short pass B runs on
    worker 1. A second long pass goes to worker 1, where the work pinned is short, though
    worker 0 is the free one now: placed on 0, the two long passes would take turns on one core."""
    from rnnscope.app.inference.workers import Worker, WorkerPool

    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30)
    pool = WorkerPool(0, remote=[Worker(0), Worker(1)], gate=gate)
    picked: dict[str, int] = {}
    hold = threading.Event()

    def a_pass(name: str, seconds: float, then: threading.Event | None = None) -> None:
        with gate.slot(seconds=seconds, yields=True):
            picked[name] = pool.pick(for_pass=seconds).number
            if then is not None:
                then.wait(10)

    a_pass("A", 3.0)                                   # pinned to 0 (both empty), then its slot is given up
    b = start(a_pass, "B", 0.1, hold)
    until(lambda: "B" in picked)
    a_pass("C", 3.0)
    hold.set()
    b.join(10)
    assert picked == {"A": 0, "B": 1, "C": 1}


def test_a_short_trace_is_answered_before_a_long_probe_queued_ahead_of_it(data_dir):
    """Over HTTP, one compute slot, held: a probe of 10,000 characters queues, then a trace of
    400; the slot freed, the trace is answered first (it cannot run beside the probe). The
    gate's clock stands still: the tests' 2x32 models make the probe only ~0.13 s, less than
    a loaded machine may take between the two requests, and ageing would rightly let it go."""
    app = build_app(data_dir, max_batch=1)
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 170)
    answered: list[str] = []

    def ask(url: str, name: str, route: str, body: dict) -> None:
        r = httpx.post(f"{url}/api/models/lstm/{route}", json=body, timeout=60)
        answered.append(f"{name} {r.status_code}")

    with serving(app) as url:
        gate = app.state.compute_slots = ComputeGate(slots=1, max_waiting=8, max_wait_seconds=30, clock=Clock())
        with gate.slot(seconds=1.0):
            probe = start(ask, url, "probe", "probe", {"text": text[:10_000], "concept": "vowel"})
            until(lambda: gate.waiting == 1)
            trace = start(ask, url, "trace", "trace", {"text": text[:400]})
            until(lambda: gate.waiting == 2)
        probe.join(60)
        trace.join(60)
    assert answered == ["trace 200", "probe 200"]


def test_expectations_are_scaled_by_what_jobs_really_took():
    """The cost model was measured once; on a machine where jobs take 10x what they say, the
    expected wait is 10x too: a newcomer behind a job that said 0.2 s is refused by a 1 s
    limit it would have passed, and jobs that did not say what they cost do not count."""
    def planted() -> ComputeGate:
        return ComputeGate(slots=1, max_waiting=8, max_wait_seconds=30, max_expected_wait=1.0, clock=Clock())

    fresh = planted()
    with fresh.slot(seconds=0.2):
        assert fresh.retry_after(0.01) == pytest.approx(0.2)
    gate = planted()
    for _ in range(20):
        with gate:                                   # unknown cost: not a measure
            pass
    assert gate.slowdown == 1.0
    for _ in range(10):
        with gate.expect(0.001):
            time.sleep(0.01)                         # at least 10x what it said
    assert gate.slowdown >= 10
    with gate.slot(seconds=0.2):
        with pytest.raises(ComputeBusy) as refused:
            with gate.slot(seconds=0.01):
                pass
        assert int(refused.value.headers["Retry-After"]) >= 2


def test_a_long_newcomer_expects_to_wait_for_the_slots_long_jobs_may_hold():
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=30, max_expected_wait=2.0, clock=Clock())
    with gate.slot(seconds=3.0):
        assert gate.retry_after(0.02) == 0.0 and gate.retry_after(2.0) == pytest.approx(3.0)
        with pytest.raises(ComputeBusy) as refused:
            with gate.slot(seconds=2.0):
                pass
        assert refused.value.headers["Retry-After"] == "3"
        with gate.slot(seconds=0.02):                 # the kept slot: at once
            assert gate.busy == 2


def test_a_long_job_that_waits_too_long_beside_the_kept_slot_is_a_503():
    """A slot is free (kept from long jobs) and no memory budget is set: the long job's
    refusal after max_wait_seconds names the wait, not the budget."""
    gate = ComputeGate(slots=2, max_waiting=8, max_wait_seconds=0.2)
    with gate.slot(seconds=3.0):
        with pytest.raises(ComputeBusy) as refused:
            with gate.slot(seconds=3.0):
                pass
    assert "RNNSCOPE_MAX_WAIT_SECONDS" in refused.value.detail and gate.busy == 0 and gate.waiting == 0
