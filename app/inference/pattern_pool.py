"""User patterns matched in a few worker processes, so that no pattern can stall the
server, and the time budget is enforced by stopping the worker.

Measured (google-re2 1.1.20251105; the figures are in tests/test_pattern_isolation.py's
docstring): the binding releases the GIL while it matches, a thread matching for 4.9 s
left the main thread's longest pause at 0.1 s, but not while it compiles: compiling
"(?s)" + ".{0,999}" * 24 + "Z$" held it for 1.3 to 6.6 s, during which the event loop
answered nothing. Matching on slices of the text with the GIL released between them would
leave that compile where it was, and a thread that overruns cannot be stopped. A process
can: each job (compile and match) goes to a worker (model/pattern_worker.py), the request
thread waits on the pipe without the GIL, and a worker that overruns
RNNSCOPE_MAX_REGEX_SECONDS is killed and replaced.

Workers start on first use (15 MB each) and are reused; at most `workers` jobs run at
once, and the rest wait as at the compute gate (its limits and its 503s). A job carries
one text that the route has already held to its limits (RNNSCOPE_MAX_TEXT_CHARS): memory
per job is bounded by that, and RE2's own 8 MiB per compiled pattern.
"""
from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from starlette.requests import Request

from rnnscope.model import pattern_worker
from rnnscope.model.pattern_worker import HEADER, frame
from rnnscope.model.patterns import PatternError, PatternTooSlow, to_re2

from .compute_gate import ComputeBusy, ComputeGate

# By path, and -P: neither the server's working directory nor model/ is searched for
# modules, so nothing there can stand in for what the worker imports (re, json, re2).
COMMAND = [sys.executable, "-P", pattern_worker.__file__]
# A worker starts in ~0.1 s (15 MB); a loaded machine can take seconds, and waiting for it
# is not the pattern's time.
START_SECONDS = 30.0
# Below the server in the CPU queue, from its first instruction: on two cores, two workers
# compiling at full speed otherwise took the event loop's turns too (/healthz p99 326 ms with
# five slow probes, against 160 ms at niceness 10). They still get a tenth of a busy core.
WORKER_NICENESS = 10


class WorkerLost(Exception):
    """The worker closed its pipe or said something that is not an answer."""


class Worker:
    """One worker process and its two pipes; used by one thread at a time."""

    def __init__(self):
        # Same process group as the server: a signal to the group reaches the workers too.
        self.process = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        try:
            os.setpriority(os.PRIO_PROCESS, self.process.pid, WORKER_NICENESS)
        except OSError:                             # ended already, or not allowed: run as it is
            pass
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, job: dict, seconds: float, max_reply: int) -> dict:
        """Send `job` and wait `seconds` at most for its answer (TimeoutError); a reply
        longer than `max_reply` bytes is WorkerLost."""
        if not self.ready:
            self._expect_ready()
        deadline = time.monotonic() + seconds
        try:
            self.process.stdin.write(frame(job))        # unbuffered: write() writes it all or raises
        except (BrokenPipeError, ValueError):
            raise WorkerLost("the worker's pipe is closed") from None
        return self._receive(deadline, max_reply)

    def _expect_ready(self) -> None:
        try:
            hello = self._receive(time.monotonic() + START_SECONDS, 1024)
        except TimeoutError:
            raise WorkerLost(f"the worker did not start in {START_SECONDS:g} s") from None
        if hello != {"ready": True}:
            raise WorkerLost("the worker did not start")
        self.ready = True

    def _receive(self, deadline: float, max_reply: int) -> dict:
        (size,) = HEADER.unpack(self._read(HEADER.size, deadline))
        if size > max_reply:
            raise WorkerLost(f"a reply of {size} bytes")
        try:
            return json.loads(self._read(size, deadline))
        except ValueError:
            raise WorkerLost("a reply that is not JSON") from None

    def _read(self, size: int, deadline: float) -> bytes:
        fd = self.process.stdout.fileno()
        poller = select.poll()                      # not select(): no ceiling on descriptor numbers
        poller.register(fd, select.POLLIN)
        chunks = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(math.ceil(left * 1000)):
                raise TimeoutError
            try:
                chunk = os.read(fd, size)
            except OSError as e:
                raise WorkerLost(f"the worker's pipe: {e}") from None
            if not chunk:
                raise WorkerLost("the worker ended")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def stop(self, grace: float = 0.0) -> None:
        """End the process (closing its input asks it to; SIGKILL after `grace` seconds),
        reap it, and close both pipes."""
        stop_process(self.process, grace)


def stop_process(process: subprocess.Popen, grace: float) -> None:
    try:
        process.stdin.close()                       # EOF: an idle worker ends at once
    except OSError:
        pass
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stdout.close()


class PatternPool:
    """`spans(pattern, text)`: every match of a user pattern (Python's syntax), found in a
    worker process within `max_seconds`."""

    def __init__(self, workers: int, max_seconds: float, max_chars: int, max_waiting: int,
                 max_wait_seconds: float):
        self.max_seconds, self.max_chars = max_seconds, max_chars
        self._gate = ComputeGate(workers, max_waiting, max_wait_seconds)
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._all: set[subprocess.Popen] = set()   # every live worker's process, for close()
        self._closed = False
        # Also at interpreter exit, for a pool whose app never ran its shutdown.
        self._finalizer = weakref.finalize(self, _stop_all, self._all)

    def spans(self, pattern: str, text: str) -> list[tuple[int, int]]:
        """(start, end) of every match, as patterns.matches finds them in-process.
        PatternError for a pattern that is not one, needs backtracking, or takes longer than
        max_seconds (PatternTooSlow, the worker replaced); ComputeBusy (503) when every
        worker is taken and the wait is over the compute gate's limits."""
        syntax = to_re2(pattern)                    # Python's parser: milliseconds, and refusals by name
        if len(text) > self.max_chars:
            raise ValueError(f"a text of {len(text)} characters; patterns are matched on "
                             f"{self.max_chars} at most")
        # Two offsets of at most 7 digits and 2 separators per match, and a match per character at most.
        max_reply = 18 * (len(text) + 2) + 4096
        with self._gate.slot():
            worker = self._take()
            try:
                reply = worker.ask({"pattern": syntax, "text": text}, self.max_seconds, max_reply)
            except TimeoutError:
                worker = self._replace(worker)
                raise PatternTooSlow(
                    f"matching the pattern took over {self.max_seconds:g} s (setting RNNSCOPE_MAX_REGEX_SECONDS) "
                    "and was stopped; use a simpler pattern (fewer or smaller bounded repeats such as "
                    ".{0,999}, which RE2 expands), or a shorter text", "regex_too_slow") from None
            except WorkerLost as e:
                worker = self._replace(worker)
                raise ComputeBusy(f"the process matching patterns stopped ({e}); it has been restarted: "
                                  "try again", 1) from None
            finally:
                self._give_back(worker)
        if "error" in reply:
            raise PatternError(reply["error"], reply.get("kind", "regex_error"))
        offsets = reply["spans"]
        return list(zip(offsets[::2], offsets[1::2]))

    def _take(self) -> Worker:
        """An idle worker, or a new one: the gate lets in no more jobs than workers."""
        with self._lock:
            if self._closed:
                raise ComputeBusy("the server is shutting down", 5)
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is None:
                    return worker
                self._all.discard(worker.process)   # ended while idle (killed from outside)
                worker.stop()
            try:
                worker = Worker()
            except OSError as e:                    # out of processes or open files, most likely
                raise ComputeBusy(f"the server cannot start a process to match patterns in ({e}); "
                                  "try again shortly", 5) from None
            self._all.add(worker.process)
            return worker

    def _replace(self, worker: Worker) -> Worker:
        """Kill `worker` and start another, which starts up while the answer goes out."""
        with self._lock:
            self._all.discard(worker.process)
        worker.stop()
        with self._lock:
            if self._closed:
                return worker
            try:
                fresh = Worker()
            except OSError:                         # the next job tries again, and says why
                return worker
            self._all.add(fresh.process)
            return fresh

    def _give_back(self, worker: Worker) -> None:
        with self._lock:
            if worker.process in self._all and not self._closed:
                self._idle.append(worker)

    def pids(self) -> list[int]:
        """The worker processes' ids (for tests that check none is left behind)."""
        with self._lock:
            return sorted(p.pid for p in self._all)

    def close(self) -> None:
        """Stop every worker. A job still running sees its worker end and is answered 503;
        its thread reaps the worker and closes the pipes, which another thread must not
        close under it."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for worker in idle:
                self._all.discard(worker.process)
            busy = list(self._all)
        for worker in idle:
            worker.stop(grace=1.0)
        for process in busy:
            process.kill()


def _stop_all(processes: set[subprocess.Popen]) -> None:
    for process in list(processes):
        stop_process(process, 1.0)
        processes.discard(process)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's pool, made with the app's settings, its workers stopped at shutdown."""
    s = app.state.settings
    pool = app.state.pattern_pool = PatternPool(s.regex_workers, s.max_regex_seconds, s.max_text_chars,
                                                s.max_waiting_jobs, s.max_wait_seconds)
    try:
        yield
    finally:
        pool.close()


async def get_pattern_pool(request: Request) -> PatternPool:
    return request.app.state.pattern_pool


PatternPoolDep = Annotated[PatternPool, Depends(get_pattern_pool)]
