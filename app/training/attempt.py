"""One attempt at a training run, as a pure function both executors call: it trains with
model.train.train and hands everything worth keeping to `emit` as messages, never touching
the store or the data directory. The server applies the messages (app/training/worker.py);
whether they arrive by a function call (the thread executor) or from another machine (the
Ray executor) is the executor's business.

    Started      where the attempt trains (sent by the executor, not by run_attempt)
    Progress     metric rows, samples and the run's summary fields, committed together
    Checkpoint   a Progress to commit first, then the model and the training state to write
                 (atomically, by the server), then the gradient profile, the concept strengths
                 (when recorded) and the checkpoint step
    Ended        how train() stopped, or why the run failed

Every message and the Job are plain picklable data, so Ray carries them as bytes.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field

import numpy as np

from rnnscope.model import network
from rnnscope.model.analysis import gradient_through_time
from rnnscope.model.data import split
from rnnscope.model.layers import softmax_cross_entropy
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.optim import OPTIMIZERS, clip_by_global_norm
from rnnscope.model.probes import strongest_units
from rnnscope.model.sample import sample
from rnnscope.model.train import TrainConfig, TrainEvent, TrainingDiverged, TrainState, corpus_sha256, train
from rnnscope.model.vocab import Vocab

from .schemas import RunConfig

VAL_FRACTION = 0.1        # as model.train's default and the shared corpora's convention

# Whoever trains or times a training step in the server's process holds BLAS at one thread,
# so the API keeps the other core: model.layers.one_blas_thread, the one counted holder.
OneThread = Callable[[], AbstractContextManager]


def seconds_per_step(cfg: ModelConfig, batch_size: int, seq_length: int, one_thread: OneThread,
                     budget: float = 0.25, max_work: float = 3e9) -> float:
    """Time real training steps (forward, backward, clip, Adam) of this size on random ids:
    one, and two more if the first took under `budget` seconds; the fastest counts, as
    the first pays for allocating buffers. A step of more than `max_work` parameter-
    characters (a 2x256 LSTM on 32 x 100 is 2.8e9) is timed on fewer streams and a shorter
    span and scaled up: its time is linear in both, and an estimate must stay cheap."""
    n_params = sum(int(np.prod(s)) for s in network.param_shapes(cfg).values())
    B = max(1, min(batch_size, int(max_work // n_params)))
    T = max(1, min(seq_length, int(max_work // (n_params * B))))
    rng = np.random.default_rng(0)
    params = network.init_params(cfg, 0)
    x = rng.integers(cfg.vocab_size, size=(B, T))
    y = rng.integers(cfg.vocab_size, size=(B, T))
    optimizer = OPTIMIZERS["adam"](params)

    def step() -> float:
        start = time.perf_counter()
        logits, _, cache = network.forward(cfg, params, x)
        _, dlogits, _ = softmax_cross_entropy(logits, y)
        grads = network.backward(cfg, params, dlogits, cache).params
        clip_by_global_norm(grads, 5.0)
        optimizer.step(params, grads, 2e-3)
        return time.perf_counter() - start

    with one_thread():
        times = [step()]
        if times[0] < budget:
            times += [step(), step()]
    return min(times) * (batch_size / B) * (seq_length / T)


def eval_every(cfg: RunConfig) -> int:
    """A validation curve of about 20 points, each pass at least 10 steps apart."""
    return cfg.eval_every or max(10, min(500, cfg.max_steps // 20))


def train_config(cfg: RunConfig) -> TrainConfig:
    return TrainConfig(batch_size=cfg.batch_size, seq_length=cfg.seq_length, learning_rate=cfg.learning_rate,
                       grad_clip=cfg.grad_clip, dropout=cfg.dropout, max_steps=cfg.max_steps,
                       val_fraction=VAL_FRACTION, eval_every=eval_every(cfg), seed=cfg.seed)


def gradient_passage(text: str, chars: int) -> str:
    """The fixed passage whose gradient profile is recorded: the validation text from its
    first line start (the split falls mid-line), or from the cut if no line starts soon."""
    _, val = split(text, VAL_FRACTION)
    val = val if len(val) >= 2 else text
    newline = val.find("\n", 0, chars)
    if 0 <= newline and len(val) - newline - 1 >= min(chars, len(val)) // 2:
        val = val[newline + 1:]
    return val[:chars]


def finite_list(a: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, np.float64)]


@dataclass(frozen=True)
class Cadence:
    """When an attempt reports: the server's settings that shape the messages."""

    checkpoint_every_steps: int
    checkpoint_every_seconds: float
    flush_seconds: float
    sample_every_steps: int
    sample_temperatures: tuple[float, ...]
    sample_length: int
    # Concept strengths are recorded at a checkpoint only while the attempt's recordings,
    # this one included (estimated as long as the last), stay within this share of its time.
    concept_share: float = 0.05

    @classmethod
    def of(cls, settings) -> Cadence:
        return cls(settings.checkpoint_every_steps, settings.checkpoint_every_seconds, settings.flush_seconds,
                   settings.sample_every_steps, tuple(settings.sample_temperatures), settings.sample_length,
                   settings.concept_share)


@dataclass
class Job:
    """Everything fixed about one run, read by the server and shipped to whoever trains it."""

    run_id: int
    name: str
    config: RunConfig
    text: str
    vocab: Vocab
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    corpus_name: str
    passage: str
    cadence: Cadence
    concept_text: str = ""                  # the fixed stretch of validation text concepts are probed on

    def model(self, params: dict[str, np.ndarray], state: TrainState | None = None,
              stopped: str | None = None) -> LanguageModel:
        """A LanguageModel of `params` whose history summary is what model.train writes."""
        summary = {}
        if state is not None:
            summary = state.history.summary() | {
                "corpus_name": self.corpus_name, "corpus_sha256": corpus_sha256(self.text),
                "corpus_chars": len(self.text), "seconds": round(state.seconds, 1), "stopped": stopped,
            }
        return LanguageModel(self.model_cfg, self.vocab, params, asdict(self.train_cfg), summary)


# ---- the messages ------------------------------------------------------------------------------

@dataclass
class Started:
    where: str                              # "this server", "ray node 10.0.0.7 (1a2b3c4d)"


@dataclass
class Progress:
    rows: list[tuple]                       # (step, loss, grad_norm, clipped, chars/s, lr, epoch, eta, val_loss)
    samples: list[tuple[int, float, str]]   # (step, temperature, text)
    run_fields: dict = field(default_factory=dict)


@dataclass
class Checkpoint:
    progress: Progress
    state: TrainState
    model: LanguageModel
    profile: dict                           # the gradient profile at state.step, JSON-ready
    concepts: dict | None = None            # concept strengths of state.params, when recorded


@dataclass
class Ended:
    stopped: str | None                     # train()'s reason ("max_steps", "cancelled", ...), None if failed
    error: str | None = None


Message = Started | Progress | Checkpoint | Ended
Emit = Callable[[Message], None]


def run_attempt(job: Job, resume: TrainState | None, emit: Emit, should_stop: Callable[[], bool]) -> None:
    """Train `job` from `resume` (or from scratch) until it ends or `should_stop()`, the
    last message always an Ended. Exceptions from `emit` propagate: they are the server's."""
    reporter = Reporter(job, resume, emit, should_stop)
    try:
        if resume is not None and resume.step >= job.train_cfg.max_steps:
            state, stopped = resume, "max_steps"     # died between the last step and marking it done
            model = job.model(state.best_params or state.params, state, stopped)
        else:
            result = train(job.text, job.model_cfg, job.train_cfg, progress=reporter, should_stop=should_stop,
                           corpus_name=job.corpus_name, vocab=job.vocab, resume=resume)
            state, stopped, model = result.state, result.stopped, result.model
    except (TrainingDiverged, ValueError) as e:
        reporter.flush()
        emit(Ended(None, str(e)))
        return
    reporter.checkpoint(state, model)
    emit(Ended(stopped))


class Reporter:
    """train()'s progress callback: metrics in batches, samples and checkpoints on their
    intervals, each turned into a message."""

    def __init__(self, job: Job, resume: TrainState | None, emit: Emit, should_stop: Callable[[], bool]):
        self.job, self.emit, self.should_stop = job, emit, should_stop
        self.cadence = job.cadence
        self.pending: list[tuple] = []
        self.pending_samples: list[tuple[int, float, str]] = []
        self.latest: TrainEvent | None = None
        # The run's train_loss is the mean of the last 100 steps, as a checkpoint's summary has it.
        self.recent = deque(resume.history.loss[-100:] if resume else (), maxlen=100)
        self.base_seconds = resume.seconds if resume else 0.0
        self.started = time.monotonic()
        self.last_flush = self.last_checkpoint = self.started
        self.concept_seconds: float | None = None     # the last recording's time, None before the first
        self.concept_total = 0.0                      # all of this attempt's recordings

    def __call__(self, e: TrainEvent) -> None:
        self.latest = e
        self.recent.append(e.loss)
        self.pending.append((e.step, e.loss, e.grad_norm, int(e.clipped), e.chars_per_sec, e.learning_rate,
                             e.epoch, e.eta_seconds, e.val_loss))
        c = self.cadence
        # train() asks should_stop before calling back, and the flags never clear: once this
        # sees them set, train() stops at this step or the next.
        final = e.step >= e.max_steps or self.should_stop()
        if c.sample_every_steps and (e.step % c.sample_every_steps == 0 or final):
            # Before the flush below, so a step's samples are committed with the step.
            self.write_samples(e.step, e.params)
        due = (e.step % c.checkpoint_every_steps == 0
               or time.monotonic() - self.last_checkpoint >= c.checkpoint_every_seconds)
        if due and not final:                     # the last step's checkpoint is written by run_attempt
            state = e.snapshot()
            self.checkpoint(state, self.job.model(state.best_params or state.params, state))
        elif (e.val_loss is not None or self.pending_samples
              or time.monotonic() - self.last_flush >= c.flush_seconds):
            self.flush()

    def write_samples(self, step: int, params: dict[str, np.ndarray]) -> None:
        model = self.job.model(params)
        for t in self.cadence.sample_temperatures:
            text, _ = sample(model, "", self.cadence.sample_length, t, seed=step)
            self.pending_samples.append((step, t, text))

    def progress(self, **run_fields) -> Progress:
        """The pending metrics and samples with the run's summary, as one message."""
        e = self.latest
        if e is not None:
            run_fields = {"step": e.step, "epoch": e.epoch, "chars_per_sec": e.chars_per_sec,
                          "eta_seconds": e.eta_seconds, "best_val_loss": e.best_val_loss,
                          "train_loss": float(np.mean(self.recent)),
                          # TrainEvent carries no clock: the checkpointed time plus this attempt's is close.
                          "seconds": self.base_seconds + time.monotonic() - self.started} | run_fields
            if e.val_loss is not None:
                run_fields["val_loss"] = e.val_loss
        message = Progress(self.pending, self.pending_samples, run_fields)
        self.pending, self.pending_samples = [], []
        self.last_flush = time.monotonic()
        return message

    def flush(self) -> None:
        self.emit(self.progress())

    def checkpoint(self, state: TrainState, model: LanguageModel) -> None:
        current = self.job.model(state.params)
        concepts = self.concepts(current) if self.concepts_due() else None
        self.emit(Checkpoint(self.progress(), state, model, self.profile(current), concepts))
        self.last_checkpoint = time.monotonic()

    def concepts_due(self) -> bool:
        """Whether recording now keeps the attempt's recordings within concept_share of its
        time, this one estimated as long as the last: a checkpoint goes unrecorded rather
        than training slowed. The first is recorded whatever it costs, to learn its cost."""
        if not self.job.concept_text:
            return False
        if self.concept_seconds is None or self.cadence.concept_share >= 1:     # 1: every checkpoint
            return True
        spent = self.concept_total + self.concept_seconds
        return spent <= self.cadence.concept_share * (time.monotonic() - self.started)

    def concepts(self, model: LanguageModel) -> dict | None:
        """model.probes.strongest_units on the fixed stretch, JSON-ready; None without one."""
        if not self.job.concept_text:
            return None
        start = time.monotonic()
        found, skipped = strongest_units(model, self.job.concept_text)
        self.concept_seconds = time.monotonic() - start
        self.concept_total += self.concept_seconds
        # Weights gone non-finite make no strength: left out by name rather than stored as NaN,
        # which JSON cannot carry.
        kept = [f for f in found if math.isfinite(f.score) and math.isfinite(f.strength)]
        skipped |= {f.concept: "the model's values are not finite" for f in found if f not in kept}
        return {"chars": len(self.job.concept_text), "seconds": round(self.concept_seconds, 4),
                "concepts": [asdict(f) for f in kept], "skipped": skipped}

    def profile(self, model: LanguageModel) -> dict:
        """model.analysis.gradient_through_time on the fixed passage, JSON-ready."""
        g = gradient_through_time(model, self.job.passage)
        return {"passage": self.job.passage, "position": g.position,
                "target": self.job.passage[g.position + 1],
                "loss": float(g.loss) if math.isfinite(g.loss) else None,
                "h": [finite_list(a) for a in g.h_grad_norm],
                "c": None if g.c_grad_norm is None else [finite_list(a) for a in g.c_grad_norm]}
