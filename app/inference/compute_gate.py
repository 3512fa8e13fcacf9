"""The gate every NumPy job passes: a few slots, a short bounded queue, and a refusal
beyond it.

Each slot holds one request's arrays and one core's worth of work; the time loop holds the
GIL, so more slots than cores only queue inside the interpreter while multiplying memory.
A request that finds the queue full, or waits longer than max_wait_seconds, is answered
503 with Retry-After at once: under a burst, clients learn when to come back instead of
piling up threads and memory, and the event loop (health checks, pages, model lists)
never waits behind them.

The gate also holds the memory budget (RNNSCOPE_MEMORY_BUDGET) in bytes. A job that
allocates in proportion to a model's size says beforehand how many bytes its peak needs,
estimated from its shape: more than the whole budget is refused at once (413, naming the
setting), and otherwise it waits, as for a slot, until the jobs holding bytes leave room.
Training runs hold their bytes without a slot for as long as they train (`reserve`), so a
request and a run never add up past the budget together.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException


class ComputeBusy(HTTPException):
    def __init__(self, detail: str, retry_after: float):
        super().__init__(503, detail, headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class OverBudget(HTTPException):
    """A job whose peak alone exceeds the memory budget: no wait would let it run."""

    def __init__(self, what: str, nbytes: int, budget: int):
        super().__init__(413, f"{what} needs about {nbytes / 1e6:,.0f} MB of memory at its peak; the server's "
                              f"budget is {budget / 1e6:,.0f} MB (setting RNNSCOPE_MEMORY_BUDGET); ask for less")


class ComputeGate:
    """`with gate:` runs the block in a compute slot, or raises ComputeBusy (503);
    `with gate.job(nbytes, what):` also holds nbytes of the memory budget (OverBudget, 413,
    if the budget could never hold them)."""

    def __init__(self, slots: int, max_waiting: int, max_wait_seconds: float, memory_budget: int | None = None):
        self.slots, self.max_waiting, self.max_wait_seconds = slots, max_waiting, max_wait_seconds
        self.memory_budget = memory_budget          # None: bytes are not counted
        self._cond = threading.Condition()
        self._busy = 0
        self._held_bytes = 0                       # of the jobs and runs holding bytes now
        self._waiting = 0
        self._recent: list[float] = []            # seconds the last jobs held a slot, for Retry-After
        self._grants = 0                          # slots given so far, to queue behind those waiting
        self._local = threading.local()

    def retry_after(self) -> float:
        """About when a slot frees: the queue ahead times a typical job, over the slots."""
        typical = sorted(self._recent)[len(self._recent) // 2] if self._recent else 1.0
        return (self._waiting + 1) * typical / self.slots

    def _full(self) -> ComputeBusy | None:
        if self._busy >= self.slots and self._waiting >= self.max_waiting:
            return ComputeBusy(f"the server is busy: {self._busy} jobs running and {self._waiting} waiting, "
                               "the limit (setting RNNSCOPE_MAX_WAITING_JOBS); try again shortly",
                               self.retry_after())
        return None

    def check(self) -> None:
        """Refuse (503) now what would be refused on arrival at the gate: for a job that is
        costly to receive (an upload), before receiving it."""
        with self._cond:
            busy = self._full()
        if busy:
            raise busy

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
            self._cond.notify_all()

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def _no_room(self, nbytes: int, what: str) -> ComputeBusy:
        return ComputeBusy(f"the server is busy: {what} needs {nbytes / 1e6:,.0f} MB of memory and the jobs "
                           f"running hold {self._held_bytes / 1e6:,.0f} MB of the {self.memory_budget / 1e6:,.0f} MB "
                           "budget (setting RNNSCOPE_MEMORY_BUDGET); try again shortly", self.retry_after())

    def _busy_for(self, wait: float) -> ComputeBusy:
        return ComputeBusy(f"the server is busy: no compute slot freed in {wait:g} s "
                           "(setting RNNSCOPE_MAX_WAIT_SECONDS); try again shortly", self.retry_after())

    @contextmanager
    def slot(self, nbytes: int = 0, what: str = "this request") -> Iterator[None]:
        """A compute slot and nbytes of the memory budget, or ComputeBusy (503) / OverBudget (413)."""
        self.admit(nbytes, what)
        with self._cond:
            if self._busy >= self.slots or not self._room(nbytes):
                busy = self._full()
                if busy:
                    raise busy
                self._waiting += 1
                deadline = time.monotonic() + self.max_wait_seconds
                try:
                    while self._busy >= self.slots or not self._room(nbytes):
                        left = deadline - time.monotonic()
                        if left <= 0:
                            if self._busy < self.slots:
                                raise self._no_room(nbytes, what)
                            raise self._busy_for(self.max_wait_seconds)
                        self._cond.wait(left)
                finally:
                    self._waiting -= 1
            self._busy += 1
            self._grants += 1
            self._held_bytes += nbytes
        started = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._held_bytes -= nbytes
                self._recent = [*self._recent[-19:], time.monotonic() - started]
                self._cond.notify_all()     # a waiter for bytes may fit where a waiter for a slot does not

    @contextmanager
    def job(self, nbytes: int, what: str = "this request") -> Iterator[None]:
        """`with gate.job(nbytes, what):` a slot and nbytes, nested as `with gate:` nests: a
        thread that holds a slot already takes only the bytes (waiting for them as for a slot)."""
        stack = getattr(self._local, "stack", None)
        if not stack:
            with self._stacked(self.slot(nbytes, what)):
                yield
            return
        with self.hold(nbytes, what):
            yield

    @contextmanager
    def hold(self, nbytes: int, what: str = "this request") -> Iterator[None]:
        """nbytes of the budget without a slot, waiting for them up to max_wait_seconds: for
        a request whose work runs in someone else's slot (a batched pass, app/inference/batching.py)."""
        self.admit(nbytes, what)
        with self._cond:
            deadline = time.monotonic() + self.max_wait_seconds
            while not self._room(nbytes):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._no_room(nbytes, what)
                self._cond.wait(left)
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

    def let_waiting_go_first(self, held_since: float) -> float:
        """For a holder that keeps a slot while work keeps coming (app/inference/batching.py's passes):
        if others wait, give the slot up, and take one again once those waiting now have had
        theirs, so a busy batcher never starves another route. Returns when the slot was
        taken again (for the next call's held_since); ComputeBusy as for a newcomer."""
        with self._cond:
            if self._waiting == 0:
                return held_since
            ahead = self._grants + self._waiting
            self._busy -= 1
            self._recent = [*self._recent[-19:], time.monotonic() - held_since]
            self._cond.notify(self._waiting)
            self._waiting += 1
            deadline = time.monotonic() + self.max_wait_seconds
            try:
                # Those waiting now go first, unless they gave up (then only this one waits).
                while self._busy >= self.slots or (self._grants < ahead and self._waiting > 1):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._busy_for(self.max_wait_seconds)
                    self._cond.wait(min(left, 0.05))      # a waiter that gives up does not notify
            finally:
                self._waiting -= 1
            self._busy += 1
            self._grants += 1
            return time.monotonic()

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
        return self._waiting

    @property
    def busy(self) -> int:
        return self._busy


@contextmanager
def _held() -> Iterator[None]:
    yield
