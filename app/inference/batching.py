"""Concurrent requests on one model share one pass through the time loop (issue 10).

Each (model, kind of work) has a Batcher. A request that finds nothing of its kind running on
its model runs alone, in its own thread and compute slot, by the same code as before
batching. Requests that arrive while anything of their kind runs there queue instead, and
one worker thread runs them as shared passes in a compute slot, taking in whatever arrived
meanwhile, the way inference servers batch. There is no fixed window, so a lone request
waits for nothing. A queued request waits at most one piece of a pass under way: traces
join between chunks of TRACE_CHUNK characters, samples between characters
(model/batch.py, model/sample.py), and gradients, one BPTT pass each, join the next pass.

Where the work runs (issue 21): with worker processes (RNNSCOPE_COMPUTE_WORKERS, the default)
the lone request and every pass compute in a worker (app/inference/workers.py) while this
module keeps the queues and the slots, and a kind of work on one model may run one pass per
worker at once; without them, in this process, one pass at a time (the GIL's one core). The
engines are app/inference/engines.py, the same in both.

Every guarantee of the compute gate stays. A worker holds one of its slots like any job (and
hands it over between pieces when shorter work waits, see ComputeGate.let_waiting_go_first),
expecting its longest job's time alone, as the gate's shortest-first order needs.
A batch holds at most RNNSCOPE_MAX_BATCH requests and, for traces and gradients, no more arrays than
the largest single request the limits allow (TRACE_BATCH_BYTES_FACTOR, GRADIENT_BATCH_FACTOR).
A request is refused with 503 and Retry-After, like the gate's own refusals, when the gate's
queue is full, when it would find twice that many others queued, or when it waited
max_wait_seconds without joining a pass.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated

from fastapi import Depends, Request

from rnnscope.model.lm import LanguageModel

from ..settings import Settings
from .compute_gate import ComputeBusy, ComputeGate
from .costs import UNKNOWN_SECONDS
from .deps import ComputeSlots
from .engines import KINDS, Engine, GradientWork, Job, SampleWork, TraceWork, trace_alone  # noqa: F401 - the routes' names
from .runtime import release_free_memory
from .workers import RemoteEngine, WorkerPool

log = logging.getLogger(__name__)

# Requests per pass: Settings.max_batch (RNNSCOPE_MAX_BATCH, 1 switches batching off); each
# batcher queues at most PENDING_PER_BATCH times that many beyond its pass.
PENDING_PER_BATCH = 2
# A worker in a pass hands the heap's free pages back at most this often: under the 20-client
# load the peak was 321 MB without it and 285 MB with it, at no cost in requests served (every
# step cost a quarter of them). A fixed mmap threshold did as well for memory, but made the
# server's own training runs fault their per-step arrays in again (20 % slower).
TRIM_SECONDS = 0.5
# A worker that has held its slot this long gives it up to anything waiting at the gate.
SLICE_SECONDS = 0.1


class Batcher:
    """The queue and the worker of one kind of work on one model id."""

    def __init__(self, kind: str, gate: ComputeGate, settings: Settings, pool: WorkerPool | None = None):
        self.kind, self.gate, self.settings, self.pool = kind, gate, settings, pool
        self.make_engine = KINDS[kind] if pool is None else partial(RemoteEngine, pool, kind)
        self._trimmed = 0.0
        self._lock = threading.Lock()
        self._pending: list[Job] = []
        self._threads = 0                          # threads running passes
        # Passes at once: in this process one (two time loops would share a core through the
        # GIL); with worker processes one per worker, each pass on a core of its own.
        self.max_passes = 1 if pool is None else max(1, len(pool.workers))
        self._alone = False                        # a request runs alone in its own thread
        self.passes = 0                            # shared steps run, for tests and the bench
        self.alone_runs = 0

    def run(self, job: Job, alone: Callable[[], object]) -> object:
        """The job's answer: found alone by `alone()` in the caller's own thread and slot
        when nothing of its kind runs on the model (no hand-over to a thread, the lone code
        path), else from a shared pass. ComputeBusy (503) when there is no room."""
        with self._lock:
            idle = not (self._threads or self._alone or self._pending)
            if idle:
                self._alone = True
            else:
                self.gate.check()                  # the server is full: refused as at the gate
                if len(self._pending) >= PENDING_PER_BATCH * self.settings.max_batch:
                    raise ComputeBusy(f"the server is busy: {len(self._pending)} requests queued for this model "
                                      f"(the limit, twice RNNSCOPE_MAX_BATCH); try again shortly",
                                      self.gate.retry_after())
                self._pending.append(job)
                if self._threads < self.max_passes:
                    self._threads += 1
                    threading.Thread(target=self._work, name="rnnscope-batcher", daemon=True).start()
        if idle:
            try:
                with self.gate.expect(job.seconds):
                    result = alone() if self.pool is None else self._alone_in_worker(job)
                self.alone_runs += 1
                return result
            finally:
                with self._lock:
                    self._alone = False
        deadline = time.monotonic() + self.settings.max_wait_seconds
        while not job.done.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                if job in self._pending:           # waited too long to join: leave the queue
                    self._pending.remove(job)
                    raise ComputeBusy(f"the server is busy: no room in a pass within "
                                      f"{self.settings.max_wait_seconds:g} s (setting RNNSCOPE_MAX_WAIT_SECONDS); "
                                      "try again shortly", self.gate.retry_after())
            job.done.wait()                        # in a pass (or refused with the queue): it ends
            break
        if job.error is not None:
            raise job.error
        return job.result

    def _alone_in_worker(self, job: Job) -> object:
        """A lone request in a worker process, by the lone code path (engines.ALONE), which
        the route's `alone` runs too."""
        return self.pool.alone(self.kind, job.model, job.payload)

    def _admit(self, engine: Engine | None) -> tuple[Engine | None, list[Job]]:
        """Under the lock: the queued jobs that join the pass, first come first, stopping at
        the first that cannot (another model, or over the batch's bounds). The first job of
        an empty pass always joins, whatever its size: alone it is within the request limits."""
        joined: list[Job] = []
        if engine is not None and engine.jobs and not engine.continuous:
            return engine, joined
        try:
            while self._pending:
                job = self._pending[0]
                empty = engine is None or not (engine.jobs or joined)
                if empty and (engine is None or engine.model is not job.model):
                    self._closed(engine)
                    engine = self.make_engine(job.model, self.settings)
                if job.model is not engine.model or not (empty or engine.fits(job, joined)):
                    break
                self._pending.pop(0)
                joined.append(job)
        except Exception as e:
            # Those taken from the queue, and the one being looked at, fail with the error
            # rather than wait forever (or be looked at again, failing again, for ever).
            for job in joined + [self._pending.pop(0)]:
                job.finish(error=e)
            raise
        return engine, joined

    def _closed(self, engine: Engine | None, always: bool = False) -> Engine | None:
        """The engine to keep once a pass has ended: a worker's pass is closed (its worker is
        free for others); an engine in this process is kept for the next pass unless it failed."""
        if isinstance(engine, RemoteEngine):
            engine.close()
            return None
        return None if always else engine

    def _work(self) -> None:
        engine: Engine | None = None
        while True:
            with self._lock:
                if not self._pending:
                    self._threads -= 1
                    break
            try:
                # A pass is expected to take about as long as its longest job alone: up to
                # max_batch rows a step costs about what one row does.
                with self._lock:
                    expected = max((j.seconds for j in self._pending), default=UNKNOWN_SECONDS)
                with self.gate.slot(seconds=expected, measured=False, yields=True):   # joiners make it longer
                    held = time.monotonic()
                    while True:
                        with self._lock:
                            engine, joined = self._admit(engine)
                        for job in joined:
                            try:
                                engine.admit(job)
                            except Exception as e:     # noqa: BLE001 - a bad request fails alone, as a 500
                                job.finish(error=e)
                        if not engine or not engine.jobs:
                            break
                        engine.step()
                        self.passes += 1
                        # Mid-pass only: after the step that answered its last request the
                        # worker ends at once (and trims when idle), free for a lone request.
                        if engine.jobs and time.monotonic() - self._trimmed > TRIM_SECONDS:
                            release_free_memory()
                            self._trimmed = time.monotonic()
                        if time.monotonic() - held > SLICE_SECONDS:
                            left = max(j.seconds for j in engine.jobs) if engine.jobs else UNKNOWN_SECONDS
                            held = self.gate.let_waiting_go_first(held, left)
                engine = self._closed(engine)
            except ComputeBusy as e:
                # No slot: whatever waits here would have been refused at the gate alike,
                # unless another pass of this kind runs: it takes them in, and this one ends.
                with self._lock:
                    others = self._threads > 1
                    failed, self._pending = ([], self._pending) if others else (self._pending, [])
                    if others:
                        self._threads -= 1
                for job in failed + (engine.jobs if engine else []):
                    job.finish(error=e)
                engine = self._closed(engine, always=True)
                if others:
                    break
            except Exception as e:
                log.exception("a batched pass failed")
                for job in (engine.jobs if engine else []):
                    job.finish(error=e)
                engine = self._closed(engine, always=True)
        # Idle: the passes' arrays are freed; give their pages back rather than sit at the peak.
        engine = None
        release_free_memory()




class Batchers:
    """Every batcher of one app, by (model id, kind)."""

    def __init__(self, gate: ComputeGate, settings: Settings, pool: WorkerPool | None = None):
        self.gate, self.settings, self.pool = gate, settings, pool
        self.enabled = settings.max_batch > 1
        self._lock = threading.Lock()
        self._batchers: dict[tuple[str, str], Batcher] = {}

    def get(self, model_id: str, kind: str) -> Batcher:
        with self._lock:
            found = self._batchers.get((model_id, kind))
            if found is None:
                found = self._batchers[model_id, kind] = Batcher(kind, self.gate, self.settings, self.pool)
            return found

    def run(self, model_id: str, kind: str, model: LanguageModel, payload: object, weight: float,
            alone: Callable[[], object], seconds: float = UNKNOWN_SECONDS) -> object:
        """The answer to one request expected to take `seconds` alone: `alone()` when nothing
        of its kind runs on the model (or batching is off), else from a pass shared with the
        model's other requests."""
        if not self.enabled and self.pool is None:
            with self.gate.expect(seconds):
                return alone()
        return self.get(model_id, kind).run(Job(model, payload, weight, seconds=seconds), alone)

    @property
    def passes(self) -> int:
        return sum(b.passes for b in self._batchers.values())


_lock = threading.Lock()


async def get_batchers(request: Request, gate: ComputeSlots) -> Batchers:
    """The app's batchers, made on first use around its compute gate (a dependency of the
    gate, so /openapi.json declares the 503 of every route that batches)."""
    state = request.app.state
    with _lock:
        found = getattr(state, "batchers", None)
        if found is None or found.gate is not gate:
            found = state.batchers = Batchers(gate, state.settings, getattr(state, "compute_pool", None))
    return found


BatchersDep = Annotated[Batchers, Depends(get_batchers)]
