"""What a batched pass does (app/inference/batching.py schedules it): one Engine per model and
kind of work, which requests join (admit) and whose steps serve them all. The same engines run
in this process's threads or in a worker process (app/inference/workers.py), so an answer
does not depend on where it was computed."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rnnscope.model.analysis import gradient_through_time
from rnnscope.model.batch import Reader, gradients_through_time
from rnnscope.model.lm import LanguageModel
from rnnscope.model.sample import BatchSampler, generate

from ..settings import Settings
from .compute import Reading, ReadingBuilder, encode_array, read
from .costs import UNKNOWN_SECONDS
from .schemas import Encoding

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
    encoding: Encoding | None = None     # encode the internals where they are computed (None: leave them)


class TraceEngine(Engine):
    """Traces read together in chunks; each job gets its Reading when its text is read."""

    def __init__(self, model, settings):
        super().__init__(model, settings)
        self.reader = Reader(model, TRACE_CHUNK)
        self.builders: dict[Job, ReadingBuilder] = {}

    def fits(self, job, joining):
        budget = self.settings.max_trace_bytes * TRACE_BATCH_BYTES_FACTOR
        return Engine.fits(self, job, joining) and sum(j.weight for j in self.jobs + joining) + job.weight <= budget

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
                piece.key.finish(traced(self.builders.pop(piece.key).reading, piece.key.payload))   # as alone()


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
        return Engine.fits(self, job, joining) and len(rows) * max(j.weight for j in rows) <= budget

    def admit(self, job):
        self.jobs.append(job)

    def step(self):
        jobs, self.jobs = self.jobs, []
        for job, profile in zip(jobs, gradients_through_time(self.model, [(j.payload.ids, j.payload.position)
                                                                         for j in jobs])):
            job.finish(profile)


KINDS: dict[str, Callable[[LanguageModel, Settings], Engine]] = {
    "trace": TraceEngine, "sample": SampleEngine, "gradients": GradientEngine}


# A request that finds nothing of its kind running on its model is answered alone, by the
# lone code path (a trace through the one-row forward, a sample by generate, one BPTT pass),
# in the caller's thread or in a worker process alike: the same function, so the same answer.
def trace_alone(model: LanguageModel, work: TraceWork) -> tuple[Reading, dict | None]:
    return traced(read(model, work.ids, work.wanted, work.k), work)


def traced(reading: Reading, work: TraceWork) -> tuple[Reading, dict | None]:
    """A trace's answer: its reading, and its internals encoded as the request asked, by
    (layer, quantity), taken out of the reading. Encoded where the trace was computed, a
    worker sends the API process an int8 trace a quarter of the float32 one's size."""
    if work.encoding is None:
        return reading, None
    # Each float array is dropped once encoded, so they do not all outlive the encoding.
    return reading, {key: encode_array(reading.internals.pop(key), work.encoding) for key in work.wanted}


def sample_alone(model: LanguageModel, work: SampleWork) -> list[tuple[str, float]]:
    return list(generate(model, work.prime, work.length, work.temperature, work.top_k, work.seed))


def gradients_alone(model: LanguageModel, work: GradientWork):
    return gradient_through_time(model, model.vocab.decode(work.ids), work.position)


ALONE: dict[str, Callable[[LanguageModel, object], object]] = {
    "trace": trace_alone, "sample": sample_alone, "gradients": gradients_alone}
