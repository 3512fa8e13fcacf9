"""The training worker: a thread that takes queued runs one at a time and calls the pure
model.train.train on each, logging what its progress callback sees to the store.

Durability rests on one ordering. At every checkpoint the logged metrics are committed
first, then the model and the training state are written (each atomically), then the
checkpoint step is committed. Whatever moment the process dies at, the training state on
disk is at a step the database has every metric for; resuming truncates the history to
that step and redoes the rest bit for bit (model.train resumes exactly).
"""
from __future__ import annotations

import errno
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from model import network
from model.analysis import gradient_through_time
from model.checkpoint import CheckpointError, load_train_state, save_model, save_train_state
from model.data import split
from model.layers import softmax_cross_entropy
from model.lm import LanguageModel
from model.network import ModelConfig
from model.optim import OPTIMIZERS, clip_by_global_norm
from model.sample import sample
from model.train import TrainConfig, TrainEvent, TrainingDiverged, TrainState, corpus_sha256, train
from model.vocab import Vocab

from .store import DataPaths, Store, model_id
from .train_schemas import RunConfig

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

# Whoever trains or times a training step holds BLAS at one thread, so the API keeps the
# other core: model.layers.one_blas_thread, the one counted holder for the whole process.
OneThread = Callable[[], AbstractContextManager]

VAL_FRACTION = 0.1        # as model.train's default and the shared corpora's convention


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


def storage_stop(e: OSError | sqlite3.Error) -> str:
    """A run's error when the disk stopped it: the machine, not the run, so it resumes."""
    return (f"stopped by the server's storage: {getattr(e, 'strerror', None) or e}; resume the run once it is "
            "fixed, to continue from its last checkpoint")


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


@dataclass
class Job:
    """Everything fixed about one attempt at a run."""

    run_id: int
    name: str
    config: RunConfig
    text: str
    vocab: Vocab
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    corpus_name: str
    passage: str

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


class Trainer:
    """Runs queued runs one at a time on a background thread."""

    def __init__(self, store: Store, paths: DataPaths, settings: Settings,
                 on_model: Callable[[int], None], one_thread: OneThread):
        self.store, self.paths, self.settings = store, paths, settings
        self.on_model = on_model          # called with a run id after its model file is (re)written
        self.one_thread = one_thread
        self._wake = threading.Condition()
        self._stopping = False
        self._current: int | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- control, from the API's threads ---------------------------------------------------

    def start(self) -> list[int]:
        """Mark the runs a dead process left running as interrupted; start the worker.
        Returns the interrupted run ids."""
        interrupted = self.store.interrupt_running()
        self._thread = threading.Thread(target=self._loop, name="rnnscope-trainer", daemon=True)
        self._thread.start()
        return interrupted

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current step: the run is checkpointed and marked interrupted."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def poke(self) -> None:
        """A run was queued."""
        with self._wake:
            self._wake.notify_all()

    def cancel(self, run_id: int) -> bool:
        """Ask the running run to stop after its current step; False if it is not running."""
        with self._wake:
            if self._current != run_id:
                return False
            self._cancel.set()
        try:
            self.store.update_run(run_id, cancel_requested=1)
        except (OSError, sqlite3.Error) as e:     # the flag only tells the pages; the event stops the run
            log.warning("run %d: cannot record the cancel request: %s", run_id, e)
        return True

    # ---- the worker thread ------------------------------------------------------------------

    def is_training(self, run_id: int) -> bool:
        return self._current == run_id

    def _loop(self) -> None:
        """The supervisor: whatever escapes the worker's loop (a bug, or a disk so full that
        even recording a failure fails) is logged, the run it held is marked interrupted,
        and the loop starts again, backing off while the failure repeats."""
        pause = 1.0
        while not self._stopping:
            try:
                self._serve()
                return
            except Exception:
                log.exception("the training worker failed; restarting it in %.0f s", pause)
            with self._wake:
                self._current = None
                self._wake.wait(timeout=pause)
            pause = min(pause * 2, 60.0)
            try:
                self.store.interrupt_running("the training worker failed while this run was training")
            except Exception:
                log.exception("cannot mark the stranded run interrupted yet; trying again")

    def _serve(self) -> None:
        while True:
            with self._wake:
                run_id = None
                while not self._stopping:
                    run_id = self.store.next_queued()
                    if run_id is not None and self.store.set_status_if(
                            run_id, ("queued",), status="running", started=time.time(), finished=None,
                            error=None, cancel_requested=0):
                        break
                    run_id = None
                    self._wake.wait(timeout=5.0)      # the timeout only guards against a lost wake-up
                if self._stopping:
                    return
                self._current = run_id
                self._cancel.clear()
            try:
                self._execute(run_id)
            except Exception as e:                    # a bug here must not kill the worker
                log.exception("run %d stopped", run_id)
                # Reading the checkpoint or recording the outcome can meet the disk too.
                storage = isinstance(e, (OSError, sqlite3.Error))
                self.store.update_run(run_id, status="interrupted" if storage else "failed",
                                      error=storage_stop(e) if storage else f"internal error: {e}",
                                      finished=time.time(), eta_seconds=None)
            finally:
                with self._wake:
                    self._current = None

    def should_stop(self) -> bool:
        return self._stopping or self._cancel.is_set()

    def _job(self, run: dict) -> Job | str:
        """The job for a run, or why it cannot train."""
        cfg = RunConfig.model_validate(run["config"])
        corpus = None if run["corpus_id"] is None else self.store.get_corpus(run["corpus_id"])
        path = self.paths.corpus(cfg.corpus_id)
        if corpus is None or not path.exists():
            return f"the corpus {cfg.corpus_id} has been deleted"
        text = path.read_text(encoding="utf-8")
        vocab = Vocab.from_text(text)
        model_cfg = ModelConfig(cfg.cell, len(vocab), cfg.hidden_size, cfg.num_layers)
        return Job(run["id"], run["name"], cfg, text, vocab, model_cfg, train_config(cfg), corpus["name"],
                   gradient_passage(text, self.settings.gradient_passage_chars))

    def _execute(self, run_id: int) -> None:
        run = self.store.get_run(run_id)
        job = self._job(run)
        if isinstance(job, str):
            self.store.update_run(run_id, status="failed", error=job, finished=time.time())
            return
        resume = None
        state_path = self.paths.train_state(run_id)
        if state_path.exists():
            try:
                _, resume = load_train_state(state_path)
            except CheckpointError as e:
                self.store.update_run(run_id, status="failed", finished=time.time(),
                                      error=f"the last checkpoint cannot be read: {e}")
                return
        start_step = 0 if resume is None else resume.step
        self.store.truncate_history(run_id, start_step)
        attempt = self.store.start_attempt(run_id, start_step)
        logger = RunLogger(self, job, resume)
        outcome, error = "completed", None
        try:
            if resume is not None and resume.step >= job.train_cfg.max_steps:
                state, stopped = resume, "max_steps"     # died between the last step and marking it done
                model = job.model(state.best_params or state.params, state, stopped)
            else:
                with self.one_thread():
                    result = train(job.text, job.model_cfg, job.train_cfg, progress=logger,
                                   should_stop=self.should_stop, corpus_name=job.corpus_name,
                                   vocab=job.vocab, resume=resume)
                state, stopped, model = result.state, result.stopped, result.model
            if stopped == "cancelled":
                outcome = "cancelled" if self._cancel.is_set() else "interrupted"
                if outcome == "interrupted":
                    error = "the server was stopped; resume the run to continue from this checkpoint"
            logger.finish(state, model)
        except (TrainingDiverged, ValueError) as e:
            outcome, error = "failed", str(e)
            logger.flush_if_possible()
        except (OSError, sqlite3.Error) as e:
            # The machine, not the run: a full disk, a permission, an I/O error. The last
            # checkpoint is intact (files are replaced atomically), so the run can resume.
            outcome, error = "interrupted", storage_stop(e)
            log.warning("run %d interrupted: %s", run_id, e)
            logger.flush_if_possible()
        except Exception as e:
            outcome, error = "failed", f"internal error: {e}"
            log.exception("run %d failed", run_id)
            logger.flush_if_possible()
        step = self.store.get_run(run_id)["step"]
        self.store.update_run(run_id, status=outcome, error=error, finished=time.time(), eta_seconds=None,
                              chars_per_sec=None, cancel_requested=0)
        self.store.end_attempt(run_id, attempt, step, outcome)


class RunLogger:
    """The progress callback of one attempt: metrics to the store in batches, samples and
    checkpoints on their intervals."""

    def __init__(self, trainer: Trainer, job: Job, resume: TrainState | None):
        self.trainer, self.job = trainer, job
        self.store, self.paths, self.settings = trainer.store, trainer.paths, trainer.settings
        self.pending: list[tuple] = []
        self.pending_samples: list[tuple[int, float, str]] = []
        self.latest: TrainEvent | None = None
        # The run's train_loss is the mean of the last 100 steps, as a checkpoint's summary has it.
        self.recent = deque(resume.history.loss[-100:] if resume else (), maxlen=100)
        self.base_seconds = resume.seconds if resume else 0.0
        self.started = time.monotonic()
        self.last_flush = self.last_checkpoint = self.started

    def __call__(self, e: TrainEvent) -> None:
        self.latest = e
        self.recent.append(e.loss)
        self.pending.append((e.step, e.loss, e.grad_norm, int(e.clipped), e.chars_per_sec, e.learning_rate,
                             e.epoch, e.eta_seconds, e.val_loss))
        s = self.settings
        # train() asks should_stop before calling back, and the flags never clear: once this
        # sees them set, train() stops at this step or the next.
        final = e.step >= e.max_steps or self.trainer.should_stop()
        if s.sample_every_steps and (e.step % s.sample_every_steps == 0 or final):
            # Before the flush below, so a step's samples are committed with the step.
            self.write_samples(e.step, e.params)
        due = (e.step % s.checkpoint_every_steps == 0
               or time.monotonic() - self.last_checkpoint >= s.checkpoint_every_seconds)
        if due and not final:                     # the last step's checkpoint is written by finish()
            state = e.snapshot()
            self.checkpoint(state, self.job.model(state.best_params or state.params, state))
        elif (e.val_loss is not None or self.pending_samples
              or time.monotonic() - self.last_flush >= s.flush_seconds):
            self.flush()

    def write_samples(self, step: int, params: dict[str, np.ndarray]) -> None:
        model = self.job.model(params)
        for t in self.settings.sample_temperatures:
            text, _ = sample(model, "", self.settings.sample_length, t, seed=step)
            self.pending_samples.append((step, t, text))

    def flush(self, **run_fields) -> None:
        """Commit the pending metrics and samples with the run's summary, in one transaction."""
        e = self.latest
        if e is not None:
            run_fields = {"step": e.step, "epoch": e.epoch, "chars_per_sec": e.chars_per_sec,
                          "eta_seconds": e.eta_seconds, "best_val_loss": e.best_val_loss,
                          "train_loss": float(np.mean(self.recent)),
                          # TrainEvent carries no clock: the checkpointed time plus this attempt's is close.
                          "seconds": self.base_seconds + time.monotonic() - self.started} | run_fields
            if e.val_loss is not None:
                run_fields["val_loss"] = e.val_loss
        self.store.log(self.job.run_id, self.pending, run_fields, self.pending_samples)
        self.pending, self.pending_samples = [], []
        self.last_flush = time.monotonic()

    def flush_if_possible(self) -> None:
        """Commit what is pending unless the store itself is what failed."""
        try:
            self.flush()
        except (OSError, sqlite3.Error) as e:
            log.warning("run %d: the last metrics could not be committed: %s", self.job.run_id, e)

    def checkpoint(self, state: TrainState, model: LanguageModel) -> None:
        """Metrics first, then the files, then the checkpoint step: see the module docstring."""
        self.flush()
        run_id = self.job.run_id
        low = self.store.low_space(self.settings.min_free_bytes)
        if low:
            raise OSError(errno.ENOSPC, low)
        save_model(model, self.paths.model(run_id))
        save_train_state(self.paths.train_state(run_id), model, state)
        profile = self.profile(self.job.model(state.params))
        self.store.log(run_id, [], {"checkpoint_step": state.step, "model_id": model_id(run_id),
                                    "seconds": state.seconds}, profile=(state.step, profile))
        self.last_checkpoint = time.monotonic()
        self.trainer.on_model(run_id)

    def profile(self, model: LanguageModel) -> dict:
        """model.analysis.gradient_through_time on the fixed passage, JSON-ready."""
        g = gradient_through_time(model, self.job.passage)
        return {"passage": self.job.passage, "position": g.position,
                "target": self.job.passage[g.position + 1],
                "loss": float(g.loss) if math.isfinite(g.loss) else None,
                "h": [finite_list(a) for a in g.h_grad_norm],
                "c": None if g.c_grad_norm is None else [finite_list(a) for a in g.c_grad_norm]}

    def finish(self, state: TrainState, model: LanguageModel) -> None:
        """The attempt's last checkpoint."""
        self.checkpoint(state, model)
