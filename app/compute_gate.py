"""The gate every NumPy job passes: a few slots, a short bounded queue, and a refusal
beyond it.

Each slot holds one request's arrays and one core's worth of work; the time loop holds the
GIL, so more slots than cores only queue inside the interpreter while multiplying memory.
A request that finds the queue full, or waits longer than max_wait_seconds, is answered
503 with Retry-After at once: under a burst, clients learn when to come back instead of
piling up threads and memory, and the event loop (health checks, pages, model lists)
never waits behind them.
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


class ComputeGate:
    """`with gate:` runs the block in a compute slot, or raises ComputeBusy (503)."""

    def __init__(self, slots: int, max_waiting: int, max_wait_seconds: float):
        self.slots, self.max_waiting, self.max_wait_seconds = slots, max_waiting, max_wait_seconds
        self._cond = threading.Condition()
        self._busy = 0
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

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            if self._busy >= self.slots:
                busy = self._full()
                if busy:
                    raise busy
                self._waiting += 1
                deadline = time.monotonic() + self.max_wait_seconds
                try:
                    while self._busy >= self.slots:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise ComputeBusy(f"the server is busy: no compute slot freed in "
                                              f"{self.max_wait_seconds:g} s (setting RNNSCOPE_MAX_WAIT_SECONDS); "
                                              "try again shortly", self.retry_after())
                        self._cond.wait(left)
                finally:
                    self._waiting -= 1
            self._busy += 1
            self._grants += 1
        started = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                self._recent = [*self._recent[-19:], time.monotonic() - started]
                self._cond.notify()

    def let_waiting_go_first(self, held_since: float) -> float:
        """For a holder that keeps a slot while work keeps coming (app/batching.py's passes):
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
                        raise ComputeBusy(f"the server is busy: no compute slot freed in "
                                          f"{self.max_wait_seconds:g} s (setting RNNSCOPE_MAX_WAIT_SECONDS); "
                                          "try again shortly", self.retry_after())
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
