"""The gate every NumPy job passes: a few slots, a bounded queue served shortest expected job
first with ageing, and a refusal when the wait a newcomer can expect is too long.

Each slot holds one request's arrays and one core's worth of work; the time loop holds the
GIL, so more slots than cores only queue inside the interpreter while multiplying memory.

Scheduling (issue 21). Every job says, when it asks for a slot, how many seconds it expects
to hold it, estimated from its shape by one cost model (app/inference/costs.py). Those
waiting are served by the smallest priority `expected - AGEING x waited`: a 50 ms trace that
arrives behind a queued 5 s probe goes first. Shortest-expected-first is the policy that
minimises the mean wait when sizes are known and vary by orders of magnitude, as a class's
clicks do (a passage's trace against a cold state-space fit); FIFO makes every cheap click
pay for the heavy one ahead of it. Ageing keeps it from starving a long job: see AGEING.
Shortest-first cannot stop a short job from arriving while heavy jobs hold every slot, so
long jobs (LONG_SECONDS) hold at most all slots but one, unless they give their slot up
between pieces of their work to any job waiting ahead of them (`yields`: the batched passes,
whose pieces take well under a second), which keeps a cheap click from waiting longer than a
piece without keeping a core idle while only long work waits.
A newcomer is refused (503, Retry-After: the wait it can expect) only when that wait, the
running jobs' remaining expected time and the expected time of the jobs ahead of it served
on the slots, exceeds max_expected_wait (RNNSCOPE_MAX_EXPECTED_WAIT_SECONDS): a short job is
admitted while two heavy ones run, and a heavy one behind a long queue learns when to come
back. Every expectation is scaled by what the last jobs took over what they said
(SPEED_JOBS), so the waits promised hold on a slower or busier machine than the one the cost
model was measured on. max_waiting stays a hard bound on the threads waiting
(RNNSCOPE_MAX_WAITING_JOBS), and max_wait_seconds a backstop against an estimate that was
wrong (RNNSCOPE_MAX_WAIT_SECONDS).
The event loop (health checks, pages, model lists) never waits behind any of them.

The gate also holds the memory budget (RNNSCOPE_MEMORY_BUDGET) in bytes. A job that
allocates in proportion to a model's size says beforehand how many bytes its peak needs,
estimated from its shape: more than the whole budget is refused at once (413, naming the
setting), and otherwise it waits, as for a slot, until the jobs holding bytes leave room;
a job whose bytes fit may meanwhile take a slot before one ahead of it whose bytes do not.
Training runs hold their bytes without a slot for as long as they train (`reserve`), so a
request and a run never add up past the budget together.

Work nobody waits for (the views' caches prepared ahead of requests, app/inference/warming.py)
takes a slot only while the gate is idle (`when_idle`): nothing running, nothing waiting. It
holds its bytes like any job, and between pieces of its work gives the slot up to any request
that waits, taking it back once the gate is idle again.
"""
from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import HTTPException

from .costs import UNKNOWN_SECONDS

# The gate compares what jobs took with what they expected over the last SPEED_JOBS that
# said (once SPEED_MIN_JOBS have), and scales every expectation by it: the cost model was
# measured once on a quiet machine, and a slower or busier one (another session's work, a
# training run beside the requests) would otherwise promise waits it cannot keep and refuse
# by RNNSCOPE_MAX_WAIT_SECONDS after the wait instead of by the expected wait before it.
# 50 jobs is 10 to 20 s of a class's clicks; the bounds keep one odd minute from ruling.
SPEED_JOBS, SPEED_MIN_JOBS, SPEED_BOUNDS = 50, 10, (0.25, 20.0)
# A job expected to take longer than this (in the cost model's seconds) is long: long jobs
# hold at most all slots but one, so a cheap click never waits for two heavy jobs to end. On
# a planted mix (2 slots, 4.3 jobs/s sleeping their time, 10 % of them 3 s) the short jobs'
# p99 was 3.3-5.6 s first come first served, 2.6-3.7 s shortest first, 0.2-0.4 s with the
# kept slot; the price is the long jobs' capacity, one slot of two (there, 1.3 slots of long
# work a second: 19 of 41 refused). 1 s is above every click of the class's pages on the
# bundled models (a 2,000-character gradient is 0.5 s) and below the cold fits and long texts.
LONG_SECONDS = 1.0
# Seconds of priority a job gains per second it waits. At 1, a waiting job is passed only by
# jobs that arrive within its own expected duration of it and are shorter by that margin, so
# a long job waits at most about one of its own lengths' worth of later, shorter arrivals
# beyond what FIFO would make it wait: a 5 s cold state-space fit is passed by the traces
# clicked in the next 5 s, never by those of the next minute. Larger is closer to FIFO (the
# cheap clicks queue again); smaller lets a busy class hold a heavy view back for longer.
AGEING = 1.0


class ComputeBusy(HTTPException):
    def __init__(self, detail: str, retry_after: float):
        super().__init__(503, detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class Stopped(Exception):
    """Work done while the gate is idle was asked to stop (the server is shutting down)."""


class GaveWay(Exception):
    """Work done while the gate is idle dropped its piece: a waiting request needs the bytes it holds."""


class OverBudget(HTTPException):
    """A job whose peak alone exceeds the memory budget: no wait would let it run."""

    def __init__(self, what: str, nbytes: int, budget: int):
        super().__init__(413, f"{what} needs about {nbytes / 1e6:,.0f} MB of memory at its peak; the server's "
                              f"budget is {budget / 1e6:,.0f} MB (setting RNNSCOPE_MEMORY_BUDGET); ask for less")


@dataclass(eq=False)
class _Job:
    """A job waiting for a slot or holding one."""

    expected: float                    # seconds it expects to hold a slot, as the cost model says
    nbytes: int                        # of the budget, taken with the slot
    # expected + AGEING x arrival time: `expected - AGEING x waited` plus AGEING x now, which
    # is the same for every job, so the order of those waiting never changes as they wait.
    priority: float
    order: int                         # of arrival: equal priorities go first come, first served
    granted: bool = False
    started: float = 0.0               # on the gate's clock
    counted: bool = True               # its time teaches the gate its speed (it said what it expects)
    began: float = 0.0                 # time.monotonic(): what it took, whatever the gate's clock
    background: bool = False           # work nobody waits for, taken only while the gate is idle
    place: object = None               # the worker its work runs on, once it has one (place())
    yields: bool = False               # gives its slot up between pieces (let_waiting_go_first)


class ComputeGate:
    """`with gate.expect(seconds):` runs the block in a compute slot, or raises ComputeBusy
    (503); `with gate.job(nbytes, what, seconds):` also holds nbytes of the memory budget
    (OverBudget, 413, if the budget could never hold them). `with gate:` is a job of
    unknown cost (costs.UNKNOWN_SECONDS)."""

    def __init__(self, slots: int, max_waiting: int, max_wait_seconds: float, memory_budget: int | None = None,
                 max_expected_wait: float | None = None, ageing: float = AGEING,
                 long_seconds: float | None = LONG_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.slots, self.max_waiting, self.max_wait_seconds = slots, max_waiting, max_wait_seconds
        self.memory_budget = memory_budget          # None: bytes are not counted
        self.max_expected_wait = max_expected_wait  # None: only the queue's length refuses
        self.ageing = ageing
        self.long_seconds = long_seconds            # None: no slot kept from long jobs
        self._clock = clock                         # for priorities and expected waits; tests plant one
        self._cond = threading.Condition()
        self._held_bytes = 0                        # of the jobs and runs holding bytes now
        self._waiting: list[_Job] = []              # for a slot, in arrival order
        self._running: set[_Job] = set()            # holding one
        self._order = itertools.count()             # equal priorities: first come, first served
        self._took: deque[tuple[float, float]] = deque(maxlen=SPEED_JOBS)   # (took, expected) seconds
        self._local = threading.local()
        # The record of the work done while idle (when_idle), for tests and the bench: slots
        # taken, slots given up to a waiting request, and requests that waited while it held one.
        self.background_slots = 0
        self.background_yields = 0
        self.waited_behind_background = 0
        self._wanting_bytes = 0                     # threads in hold() waiting for bytes, without a slot

    # ---- what a newcomer can expect --------------------------------------------------------------

    def _expected_wait(self, ahead: list[_Job], long: bool = False) -> float:
        """Until a slot is free for a newcomer: each slot frees when its job's expected time is
        up, and the jobs ahead take the slots as they free, each for its expected time. A
        long newcomer also waits for one of the slots long jobs may hold."""
        def served(slots: int, running: list[_Job], queued: list[_Job]) -> float:
            frees = [max(0.0, j.expected * speed - (now - j.started)) for j in running]
            frees += [0.0] * max(0, slots - len(frees))
            heapq.heapify(frees)
            for job in queued:
                heapq.heapreplace(frees, frees[0] + job.expected * speed)
            return frees[0]

        now, speed = self._clock(), self.slowdown
        wait = served(self.slots, list(self._running), ahead)
        if long and self._lanes():
            wait = max(wait, served(self.slots - 1, [j for j in self._running if self._holds_long(j)],
                                   [j for j in ahead if self._holds_long(j)]))
        return wait

    def _lanes(self) -> bool:
        return self.long_seconds is not None and self.slots > 1

    def _long(self, seconds: float) -> bool:
        return self._lanes() and seconds > self.long_seconds

    def _holds_long(self, job: _Job) -> bool:
        """Whether the job is long and kept from the last slot: a long job that gives its slot
        up between pieces to whoever waits ahead of it (a batched pass) holds a cheap click
        back for one piece at most, so it may take every slot."""
        return not job.yields and self._long(job.expected)

    @property
    def slowdown(self) -> float:
        """What the last jobs took over what they expected (1 until SPEED_MIN_JOBS said)."""
        with self._cond:
            if len(self._took) < SPEED_MIN_JOBS:
                return 1.0
            took, expected = (sum(t) for t in zip(*self._took))
        return min(max(took / expected, SPEED_BOUNDS[0]), SPEED_BOUNDS[1])

    def retry_after(self, seconds: float = UNKNOWN_SECONDS) -> float:
        """When a newcomer expecting `seconds` would get a slot, as things stand."""
        with self._cond:
            priority = self._priority(seconds)
            return self._expected_wait(sorted((j for j in self._waiting if j.priority <= priority), key=_rank),
                                       self._long(seconds))

    def _priority(self, seconds: float) -> float:
        return seconds * self.slowdown + self.ageing * self._clock()

    def _refusal(self, job: _Job, by_wait: bool = True) -> ComputeBusy | None:
        """Why a job that must wait is refused at once, or None: the queue is full, or (by_wait)
        the wait it can expect is over the setting."""
        others = [j for j in self._waiting if j is not job]
        wait = self._expected_wait(sorted((j for j in others if _rank(j) < _rank(job)), key=_rank),
                                   self._holds_long(job))
        if len(others) >= self.max_waiting:
            return ComputeBusy(f"the server is busy: {self.busy} jobs running and {len(others)} waiting, "
                               "the limit (setting RNNSCOPE_MAX_WAITING_JOBS); try again shortly", wait)
        if by_wait and self.max_expected_wait is not None and wait > self.max_expected_wait:
            return ComputeBusy(f"the server is busy: this request would wait about {wait:.1f} s for a compute "
                               f"slot ({self.busy} jobs running, {len(others)} waiting), over the "
                               f"{self.max_expected_wait:g} s limit (setting RNNSCOPE_MAX_EXPECTED_WAIT_SECONDS); "
                               f"try again in {max(1, math.ceil(wait))} s", wait)
        return None

    def check(self, seconds: float | None = None) -> None:
        """Refuse (503) now what would be refused on arrival at the gate: for a job that is
        costly to receive (an upload), before receiving it. Given the job's expected
        `seconds`, also by the wait it can expect; else only by the queue's length."""
        with self._cond:
            if self.busy < self.slots and not self._waiting:
                return
            cost = UNKNOWN_SECONDS if seconds is None else seconds
            probe = _Job(cost, 0, self._priority(cost), next(self._order))
            busy = self._refusal(probe, by_wait=seconds is not None)
        if busy:
            raise busy

    # ---- the memory budget ---------------------------------------------------------------------------

    def admit(self, nbytes: int, what: str = "this request") -> None:
        """Refuse (413) a job whose estimated peak alone exceeds the memory budget; for
        whoever must know before starting (a run at creation, an import before parsing)."""
        if self.memory_budget is not None and nbytes > self.memory_budget:
            raise OverBudget(what, nbytes, self.memory_budget)

    def _room(self, nbytes: int) -> bool:
        return self.memory_budget is None or self._held_bytes + nbytes <= self.memory_budget

    def reserve(self, nbytes: int) -> bool:
        """Take nbytes of the budget without a slot, if there is room now (a training run,
        for as long as it trains); give them back with release()."""
        with self._cond:
            if not self._room(nbytes):
                return False
            self._held_bytes += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._cond:
            self._held_bytes -= nbytes
            self._grant()

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def _no_room(self, nbytes: int, what: str) -> ComputeBusy:
        return ComputeBusy(f"the server is busy: {what} needs {nbytes / 1e6:,.0f} MB of memory and the jobs "
                           f"running hold {self._held_bytes / 1e6:,.0f} MB of the {self.memory_budget / 1e6:,.0f} MB "
                           "budget (setting RNNSCOPE_MEMORY_BUDGET); try again shortly",
                           self._expected_wait(sorted(self._waiting, key=_rank)))

    def _busy_for(self, wait: float) -> ComputeBusy:
        return ComputeBusy(f"the server is busy: no compute slot freed in {wait:g} s "
                           "(setting RNNSCOPE_MAX_WAIT_SECONDS); try again shortly",
                           self._expected_wait(sorted(self._waiting, key=_rank)))

    # ---- slots ---------------------------------------------------------------------------------------

    def _grant(self) -> None:
        """Under the lock, whenever a slot or bytes free or a job arrives: the free slots go to
        those waiting in order of priority, each whose bytes fit (one whose bytes do not
        is passed over, as no wait for a slot would help it), a long job only while another
        slot stays free of long ones."""
        free = self.slots - self.busy
        long_running = sum(self._holds_long(j) for j in self._running)
        taken = {j.place for j in self._running if j.place is not None}
        for job in sorted(self._waiting, key=_rank):
            if free <= 0:
                break
            long = self._holds_long(job)
            if long and long_running >= self.slots - 1:
                continue                  # the last slot is kept for what is not long
            if job.place is not None and job.place in taken:
                continue                  # its worker's core is another job's: a slot elsewhere is no use to it
            if self._room(job.nbytes):
                self._waiting.remove(job)
                self._start(job)
                free -= 1
                long_running += long
                taken.add(job.place)
        self._cond.notify_all()           # those granted, and `hold`, which waits for bytes alone

    def _start(self, job: _Job) -> None:
        job.granted, job.started, job.began = True, self._clock(), time.monotonic()
        self._held_bytes += job.nbytes
        self._running.add(job)

    def _wait_for(self, job: _Job, what: str) -> None:
        """Under the lock: queue `job`, and return once it holds a slot, or raise ComputeBusy
        (refused on arrival, or waited max_wait_seconds)."""
        self._waiting.append(job)
        self._grant()
        if job.granted:
            return
        busy = self._refusal(job)
        if busy is not None:
            self._waiting.remove(job)
            raise busy
        if any(j.background for j in self._running):
            self.waited_behind_background += 1
        deadline = time.monotonic() + self.max_wait_seconds
        while not job.granted:
            left = deadline - time.monotonic()
            if left <= 0:
                self._waiting.remove(job)
                self._grant()             # a job behind it whose bytes fit may go now
                if not self._room(job.nbytes):
                    raise self._no_room(job.nbytes, what)
                raise self._busy_for(self.max_wait_seconds)
            self._cond.wait(left)

    def _finish(self, job: _Job) -> None:
        with self._cond:
            if job.counted and job in self._running:
                self._took.append((time.monotonic() - job.began, job.expected))
            self._running.discard(job)
            self._held_bytes -= job.nbytes
            self._grant()

    @contextmanager
    def slot(self, nbytes: int = 0, what: str = "this request", seconds: float | None = None,
             measured: bool = True, yields: bool = False) -> Iterator[None]:
        """A compute slot and nbytes of the memory budget for a job expected to take
        `seconds` (None: not said, UNKNOWN_SECONDS), or ComputeBusy (503) / OverBudget (413).
        `measured=False`: what it takes says nothing of the gate's speed (a batched pass,
        which serves whatever joins it). `yields`: the holder calls let_waiting_go_first
        between pieces of its work, so it is never kept from the last slot as long."""
        self.admit(nbytes, what)
        cost = UNKNOWN_SECONDS if seconds is None else seconds
        with self._cond:
            job = _Job(cost, nbytes, self._priority(cost), next(self._order),
                       counted=measured and seconds is not None, yields=yields)
            self._wait_for(job, what)
        previous, self._local.running = getattr(self._local, "running", None), job
        try:
            yield
        finally:
            self._local.running = previous
            self._finish(job)

    @contextmanager
    def job(self, nbytes: int, what: str = "this request", seconds: float | None = None) -> Iterator[None]:
        """`with gate.job(nbytes, what, seconds):` a slot and nbytes, nested as `with gate:`
        nests: a thread that holds a slot already takes only the bytes (waiting for them as
        for a slot)."""
        stack = getattr(self._local, "stack", None)
        if not stack:
            with self._stacked(self.slot(nbytes, what, seconds)):
                yield
            return
        with self.hold(nbytes, what):
            yield

    @contextmanager
    def expect(self, seconds: float) -> Iterator[None]:
        """`with gate.expect(seconds):` as `with gate:` for a job expected to take `seconds`."""
        with self._stacked(self.slot(seconds=seconds) if not getattr(self._local, "stack", None) else _held()):
            yield

    @contextmanager
    def hold(self, nbytes: int, what: str = "this request") -> Iterator[None]:
        """nbytes of the budget without a slot, waiting for them up to max_wait_seconds: for
        a request whose work runs in someone else's slot (a batched pass, app/inference/batching.py)."""
        self.admit(nbytes, what)
        with self._cond:
            deadline = time.monotonic() + self.max_wait_seconds
            self._wanting_bytes += 1             # work done while idle gives its bytes back for it
            try:
                while not self._room(nbytes):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._no_room(nbytes, what)
                    self._cond.wait(left)
            finally:
                self._wanting_bytes -= 1
            self._held_bytes += nbytes
        try:
            yield
        finally:
            self.release(nbytes)

    @contextmanager
    def _stacked(self, cm) -> Iterator[None]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        with cm:
            stack.append(cm)
            try:
                yield
            finally:
                stack.pop()

    def let_waiting_go_first(self, held_since: float, seconds: float | None = None) -> float:
        """For a holder that keeps a slot while work keeps coming (app/inference/batching.py's
        passes): if a job waits whose priority is ahead of this holder's as a newcomer
        expecting `seconds` more (default: what it expected when it took the slot), give the
        slot up, queue again as that newcomer, and take a slot once those ahead have theirs.
        Ageing lets a long pass that keeps yielding through. Returns when the slot was taken
        again (for the next call's held_since), or held_since if nothing waited ahead;
        ComputeBusy as for a newcomer that waited max_wait_seconds."""
        with self._cond:
            holding: _Job = self._local.running
            expected = holding.expected if seconds is None else seconds
            again = _Job(expected, 0, self._priority(expected), next(self._order), place=holding.place,
                         yields=holding.yields)
            if not any(j.priority <= again.priority and self._room(j.nbytes) and j.place in (None, holding.place)
                       for j in self._waiting):
                return held_since
            # The bytes stay held through the hand-over: they are the holder's, not the slot's.
            self._running.discard(holding)
            self._waiting.append(again)
            self._grant()
            deadline = time.monotonic() + self.max_wait_seconds
            while not again.granted:
                left = deadline - time.monotonic()
                if left <= 0:       # the slot is given up already: the holder's `with` ends without one
                    self._waiting.remove(again)
                    self._grant()
                    raise self._busy_for(self.max_wait_seconds)
                self._cond.wait(left)
            # The slot's job is the holder's again, with its new expectation and start.
            self._running.discard(again)
            holding.expected, holding.started, holding.began = expected, again.started, again.began
            self._running.add(holding)
            return time.monotonic()

    # ---- where a job's work runs ----------------------------------------------------------------------

    def place(self, candidates: list, load: Callable[[object, bool], object]) -> object | None:
        """Where the calling thread's job runs, of `candidates` (the compute workers): the place
        it has if still a candidate, else the candidate least loaded by `load(candidate,
        taken)`, taken saying whether another running job is there; that becomes its place
        (None outside a slot). A job that gives its slot up and waits again
        (let_waiting_go_first) keeps its place, and gets a slot only once no other job runs
        there: a pass's rows live in its worker, and a slot granted while that worker
        computes another job would only queue the two on one core while another core idles."""
        with self._cond:
            job = getattr(self._local, "running", None)
            if job is None or not candidates:
                return None
            if job.place is not None and any(job.place is c for c in candidates):
                return job.place
            taken = [j.place for j in self._running if j is not job and j.place is not None]
            job.place = min(candidates, key=lambda c: load(c, any(c is t for t in taken)))
            return job.place

    # ---- work nobody waits for (app/inference/warming.py) ---------------------------------------

    def _idle(self) -> bool:
        return not self._waiting and not self._running and not self._wanting_bytes

    def _take_idle(self, job: _Job, stop: threading.Event) -> None:
        """Under the lock: wait until the gate is idle, then give `job` a slot (its bytes are
        held already); Stopped once `stop` is set, GaveWay if a waiting request wants its bytes."""
        while not self._idle():
            if stop.is_set():
                raise Stopped()
            if self._wanting_bytes or any(not self._room(j.nbytes) for j in self._waiting):
                raise GaveWay()
            self._cond.wait()
        if stop.is_set():
            raise Stopped()
        job.granted, job.started, job.began = True, self._clock(), time.monotonic()
        self._running.add(job)
        self.background_slots += 1

    @contextmanager
    def when_idle(self, nbytes: int, what: str, stop: threading.Event) -> Iterator[Callable[[], None]]:
        """A slot and nbytes of the budget for work nobody waits for, taken once no job runs
        or waits and the bytes fit. Yields `pause`, which the work calls between its pieces:
        while a request waits, the slot is the request's, and the work goes on once the gate
        is idle again. OverBudget (413) if the bytes could never fit; Stopped once `stop` is
        set (wake() the gate after setting it); GaveWay if a waiting request needs the bytes
        the work holds, which it then gives back by leaving the `with`.
        The job says it expects 0 s: its slot frees at its next pause, as far as a newcomer's
        expected wait goes, and it is never a long job that would keep a request from the
        last slot. What it takes does not teach the gate its speed."""
        self.admit(nbytes, what)
        job = _Job(0.0, nbytes, math.inf, next(self._order), counted=False, background=True)
        with self._cond:
            while not (self._idle() and self._room(nbytes)) and not stop.is_set():
                self._cond.wait()
            if stop.is_set():
                raise Stopped()
            self._held_bytes += nbytes
            self._take_idle(job, stop)          # idle and not stopped: takes the slot at once
        previous, self._local.running = getattr(self._local, "running", None), job

        def pause() -> None:
            with self._cond:
                if stop.is_set():
                    raise Stopped()
                if not self._waiting and not self._wanting_bytes:
                    return
                self._running.discard(job)           # the bytes stay held: the work's arrays live on
                self.background_yields += 1
                self._grant()
                self._take_idle(job, stop)

        try:
            yield pause
        finally:
            self._local.running = previous
            with self._cond:
                self._running.discard(job)
                self._held_bytes -= nbytes
                self._grant()

    def wake(self) -> None:
        """Wake whatever waits in the gate to look again: a stop set for work waiting in when_idle."""
        with self._cond:
            self._cond.notify_all()

    # `with gate:` as the routes write it. A thread's slot is kept on a stack, so nesting
    # on one thread never deadlocks waiting for a slot it holds itself.
    def __enter__(self) -> None:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        cm = self.slot() if not stack else _held()
        cm.__enter__()
        stack.append(cm)

    def __exit__(self, *exc) -> None:
        self._local.stack.pop().__exit__(*exc)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def busy(self) -> int:
        return len(self._running)


def _rank(job: _Job) -> tuple[float, int]:
    return job.priority, job.order


@contextmanager
def _held() -> Iterator[None]:
    yield
