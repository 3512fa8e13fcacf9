"""Counted limits: how many of something may be held at once (event streams open, say),
taken and released in one place under a lock.

A limit checked in one step and counted in another gives way to a burst: 500 requests that
all arrive before the first one counts itself all see room. Here the check and the count
are one operation, and the release is tied to the same holder, so a burst gets exactly
`maximum` and the rest are refused.
"""
from __future__ import annotations

import threading

from fastapi import HTTPException


class LimitReached(HTTPException):
    """503 with Retry-After: the limit is a moment's load, not the client's mistake."""

    def __init__(self, detail: str, retry_after: int):
        super().__init__(503, detail, headers={"Retry-After": str(retry_after)})


class Limit:
    """At most `maximum` held at once. `try_acquire()` takes one if there is room (True) and
    `release()` gives it back; `with limit:` does both, raising LimitReached (503) when full.
    The lock is a thread lock, held for a comparison and an addition only: the event loop and
    request threads can both take from the same limit."""

    def __init__(self, maximum: int, what: str, setting: str, retry_after: int = 5):
        self.maximum, self.what, self.setting, self.retry_after = maximum, what, setting, retry_after
        self._lock = threading.Lock()
        self._held = 0

    def try_acquire(self) -> bool:
        with self._lock:
            if self._held >= self.maximum:
                return False
            self._held += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._held <= 0:
                raise RuntimeError(f"{self.what}: released more often than acquired")
            self._held -= 1

    @property
    def held(self) -> int:
        return self._held

    def refusal(self) -> LimitReached:
        return LimitReached(f"{self.maximum} {self.what} are open, the limit (setting {self.setting}); "
                            "try again shortly", self.retry_after)

    def __enter__(self) -> Limit:
        if not self.try_acquire():
            raise self.refusal()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
