"""Concurrent requests on one model share one pass through the time loop (issue 10).

Each (model, kind of work) has a Batcher. A request that finds nothing of its kind running on
its model runs alone, in its own thread and compute slot, by the same code as before
batching. Requests that arrive while anything of their kind runs there queue instead, and
one worker thread runs them as shared passes in a compute slot, taking in whatever arrived
meanwhile, the way inference servers batch. There is no fixed window, so a lone request
waits for nothing. A queued request waits at most one piece of a pass under way: traces
join between chunks of TRACE_CHUNK characters, samples between characters
(model/batch.py, model/sample.py), and gradients, one BPTT pass each, join the next pass.

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
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from rnnscope.model.batch import Reader, gradients_through_time
from rnnscope.model.lm import LanguageModel
from rnnscope.model.sample import BatchSampler

from ..settings import Settings
from .compute import ReadingBuilder
from .compute_gate import ComputeBusy, ComputeGate
from .costs import UNKNOWN_SECONDS
from .deps import ComputeSlots
from .runtime import release_free_memory

log = logging.getLogger(__name__)

# Requests per pass: Settings.max_batch (RNNSCOPE_MAX_BATCH, 1 switches batching off); each
# batcher queues at most PENDING_PER_BATCH times that many beyond its pass.
PENDING_PER_BATCH = 2
# Characters a trace pass reads before new requests may join: a newcomer waits one chunk
# (~40 ms for 16 rows of a 2x256 LSTM), per-chunk overhead stays under a few per cent, and
# the chunk's cache is 16 x 128 x 28 kB = 57 MB at most (256 made the server's peak 517 MB).
TRACE_CHUNK = 128
# A trace batch's arrays as sent (the estimate max_trace_bytes bounds per request) add up to
# at most max_trace_bytes: a batch holds no more than the largest single trace did.
TRACE_BATCH_BYTES_FACTOR = 1
# A gradient batch reads rows x longest span characters of BPTT (~60 kB a character for a
# 2x256 LSTM): max_gradient_chars, 120 MB at the default, as the largest single request held.
# Twice that made the server's peak 517 MB for little: a BPTT step's elementwise work grows
# with the rows, so 4 rows of 1,000 took 1.1-1.3x less than one at a time, 2 rows the same.
GRADIENT_BATCH_FACTOR = 1
# A worker in a pass hands the heap's free pages back at most this often: under the 20-client
# load the peak was 321 MB without it and 285 MB with it, at no cost in requests served (every
# step cost a quarter of them). A fixed mmap threshold did as well for memory, but made the
# server's own training runs fault their per-step arrays in again (20 % slower).
TRIM_SECONDS = 0.5
# A worker that has held its slot this long gives it up to anything waiting at the gate.
SLICE_SECONDS = 0.1


@dataclass(eq=False)
class Job:
    """One request's work and, once done, its answer or its error."""

    model: LanguageModel
    payload: object
    weight: float                                  # what it adds to its batch's bound
    seconds: float = UNKNOWN_SECONDS               # expected alone (app/inference/costs.py)
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class Engine:
    """One model's pass in progress: jobs join it (admit) and each step serves them all."""

    continuous = True                              # jobs may join between steps

    def __init__(self, model: LanguageModel, settings: Settings):
        self.model, self.settings = model, settings
        self.jobs: list[Job] = []

    def fits(self, job: Job, joining: list[Job]) -> bool:
        """Whether the job may join the jobs in the pass and those joining with it."""
        return len(self.jobs) + len(joining) < self.settings.max_batch

    def admit(self, job: Job) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError


@dataclass
class TraceWork:
    ids: np.ndarray
    wanted: list[tuple[int, str]]
    k: int


class TraceEngine(Engine):
    """Traces read together in chunks; each job gets its Reading when its text is read."""

    def __init__(self, model, settings):
        super().__init__(model, settings)
        self.reader = Reader(model, TRACE_CHUNK)
        self.builders: dict[Job, ReadingBuilder] = {}

    def fits(self, job, joining):
        budget = self.settings.max_trace_bytes * TRACE_BATCH_BYTES_FACTOR
        return super().fits(job, joining) and sum(j.weight for j in self.jobs + joining) + job.weight <= budget

    def admit(self, job):
        w: TraceWork = job.payload
        self.builders[job] = ReadingBuilder(self.model, w.ids, w.wanted, w.k)
        self.reader.add(job, w.ids)
        self.jobs.append(job)

    def step(self):
        for piece in self.reader.step():
            builder = self.builders[piece.key]
            builder.add(piece.start, piece.logits, lambda l, q, piece=piece: piece.internals(self.model, l, q))
            if piece.done:
                self.jobs.remove(piece.key)
                piece.key.finish((self.builders.pop(piece.key).reading, None))   # as alone(), not encoded


@dataclass
class SampleWork:
    prime: str
    length: int
    temperature: float
    top_k: int
    seed: int


class SampleEngine(Engine):
    """Samples stepped together a character at a time; each job gets its (char, prob) pairs."""

    def __init__(self, model, settings):
        super().__init__(model, settings)
        self.sampler = BatchSampler(model)
        self.pairs: dict[Job, list[tuple[str, float]]] = {}

    def admit(self, job):
        w: SampleWork = job.payload
        self.sampler.add(job, w.prime, w.length, w.temperature, w.top_k, w.seed)
        if w.length == 0:
            job.finish([])
            return
        self.pairs[job] = []
        self.jobs.append(job)

    def step(self):
        for job, char, prob, last in self.sampler.step():
            self.pairs[job].append((char, prob))
            if last:
                self.jobs.remove(job)
                job.finish(self.pairs.pop(job))


@dataclass
class GradientWork:
    ids: np.ndarray
    position: int


class GradientEngine(Engine):
    """One BPTT pass over the jobs admitted before it: a gradient cannot be joined midway."""

    continuous = False

    def fits(self, job, joining):
        budget = self.settings.max_gradient_chars * GRADIENT_BATCH_FACTOR
        rows = self.jobs + joining + [job]
        return super().fits(job, joining) and len(rows) * max(j.weight for j in rows) <= budget

    def admit(self, job):
        self.jobs.append(job)

    def step(self):
        jobs, self.jobs = self.jobs, []
        for job, profile in zip(jobs, gradients_through_time(self.model, [(j.payload.ids, j.payload.position)
                                                                         for j in jobs])):
            job.finish(profile)


class Batcher:
    """The queue and the worker of one kind of work on one model id."""

    def __init__(self, engine: Callable[[LanguageModel, Settings], Engine], gate: ComputeGate,
                 settings: Settings):
        self.make_engine, self.gate, self.settings = engine, gate, settings
        self._trimmed = 0.0
        self._lock = threading.Lock()
        self._pending: list[Job] = []
        self._working = False                      # a worker thread runs passes
        self._alone = False                        # a request runs alone in its own thread
        self.passes = 0                            # shared steps run, for tests and the bench
        self.alone_runs = 0

    def run(self, job: Job, alone: Callable[[], object]) -> object:
        """The job's answer: found alone by `alone()` in the caller's own thread and slot
        when nothing of its kind runs on the model (no hand-over to a thread, the lone code
        path), else from a shared pass. ComputeBusy (503) when there is no room."""
        with self._lock:
            idle = not (self._working or self._alone or self._pending)
            if idle:
                self._alone = True
            else:
                self.gate.check()                  # the server is full: refused as at the gate
                if len(self._pending) >= PENDING_PER_BATCH * self.settings.max_batch:
                    raise ComputeBusy(f"the server is busy: {len(self._pending)} requests queued for this model "
                                      f"(the limit, twice RNNSCOPE_MAX_BATCH); try again shortly",
                                      self.gate.retry_after())
                self._pending.append(job)
                if not self._working:
                    self._working = True
                    threading.Thread(target=self._work, name="rnnscope-batcher", daemon=True).start()
        if idle:
            try:
                with self.gate.expect(job.seconds):
                    result = alone()
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

    def _admit(self, engine: Engine | None) -> tuple[Engine | None, list[Job]]:
        """Under the lock: the queued jobs that join the pass, first come first, stopping at
        the first that cannot (another model, or over the batch's bounds). The first job of
        an empty pass always joins, whatever its size: alone it is within the request limits."""
        joined: list[Job] = []
        if engine is not None and engine.jobs and not engine.continuous:
            return engine, joined
        while self._pending:
            job = self._pending[0]
            empty = engine is None or not (engine.jobs or joined)
            if empty and (engine is None or engine.model is not job.model):
                engine = self.make_engine(job.model, self.settings)
            if job.model is not engine.model or not (empty or engine.fits(job, joined)):
                break
            self._pending.pop(0)
            joined.append(job)
        return engine, joined

    def _work(self) -> None:
        engine: Engine | None = None
        while True:
            with self._lock:
                if not self._pending:
                    self._working = False
                    break
            try:
                # A pass is expected to take about as long as its longest job alone: up to
                # max_batch rows a step costs about what one row does.
                with self._lock:
                    expected = max((j.seconds for j in self._pending), default=UNKNOWN_SECONDS)
                with self.gate.slot(seconds=expected, measured=False):   # joiners make it longer
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
            except ComputeBusy as e:
                # No slot: whatever waits here would have been refused at the gate alike.
                with self._lock:
                    failed, self._pending = self._pending, []
                for job in failed + (engine.jobs if engine else []):
                    job.finish(error=e)
                engine = None
            except Exception as e:
                log.exception("a batched pass failed")
                for job in (engine.jobs if engine else []):
                    job.finish(error=e)
                engine = None
        # Idle: the passes' arrays are freed; give their pages back rather than sit at the peak.
        engine = None
        release_free_memory()


KINDS: dict[str, Callable[[LanguageModel, Settings], Engine]] = {
    "trace": TraceEngine, "sample": SampleEngine, "gradients": GradientEngine}


class Batchers:
    """Every batcher of one app, by (model id, kind)."""

    def __init__(self, gate: ComputeGate, settings: Settings):
        self.gate, self.settings = gate, settings
        self.enabled = settings.max_batch > 1
        self._lock = threading.Lock()
        self._batchers: dict[tuple[str, str], Batcher] = {}

    def get(self, model_id: str, kind: str) -> Batcher:
        with self._lock:
            found = self._batchers.get((model_id, kind))
            if found is None:
                found = self._batchers[model_id, kind] = Batcher(KINDS[kind], self.gate, self.settings)
            return found

    def run(self, model_id: str, kind: str, model: LanguageModel, payload: object, weight: float,
            alone: Callable[[], object], seconds: float = UNKNOWN_SECONDS) -> object:
        """The answer to one request expected to take `seconds` alone: `alone()` when nothing
        of its kind runs on the model (or batching is off), else from a pass shared with the
        model's other requests."""
        if not self.enabled:
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
            found = state.batchers = Batchers(gate, state.settings)
    return found


BatchersDep = Annotated[Batchers, Depends(get_batchers)]


BatchersDep = Annotated[Batchers, Depends(get_batchers)]
