"""The training worker: a scheduler thread that takes queued runs, up to the executor's
number at once, and a driver thread per running run that launches its attempts on the
executor and applies their messages to the store. The server is the only writer of the
store and of the checkpoint files, whichever executor trains.

Durability rests on one ordering. At every checkpoint the logged metrics are committed
first, then the model and the training state are written (each atomically), then the
checkpoint step is committed. Whatever moment the process dies at, the training state on
disk is at a step the database has every metric for; resuming truncates the history to
that step and redoes the rest bit for bit (model.train resumes exactly). An attempt whose
worker process or machine is lost is retried the same way, from the last checkpoint,
up to RNNSCOPE_MAX_RUN_RETRIES times.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rnnscope.model.checkpoint import CheckpointError, load_train_state, save_model, save_train_state
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.train import TrainState
from rnnscope.model.vocab import Vocab

from ..inference.compute import HISTORY_JSON_BYTES_PER_STEP
from ..inference.compute_gate import ComputeGate
from .attempt import (Cadence, Checkpoint, Ended, Job, Message, Progress, Started, gradient_passage,
                      train_config)
from .execution import Execution, Executor, WorkerLost
from .schemas import RunConfig
from .snapshots import keep_snapshot, remove_snapshots, snapshot_bytes
from .store import DataPaths, Store, model_id

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)


def storage_stop(e: OSError | sqlite3.Error) -> str:
    """A run's error when the disk stopped it: the machine, not the run, so it resumes."""
    return (f"stopped by the server's storage: {getattr(e, 'strerror', None) or e}; resume the run once it is "
            "fixed, to continue from its last checkpoint")


def checkpoint_size(c: Checkpoint, snapshots: bool = False) -> int:
    """Bytes a checkpoint's two files take: the model's weights, and the training state's
    weights, moments, best weights and history (as JSON, HISTORY_JSON_BYTES_PER_STEP a step);
    with `snapshots`, and the weight snapshot written beside them."""
    arrays = [*c.model.params.values(), *c.state.params.values(), *c.state.optimizer.values(),
              *(c.state.best_params or {}).values()]
    snapshot = snapshot_bytes(sum(getattr(a, "nbytes", 0) for a in c.state.params.values())) if snapshots else 0
    return (sum(getattr(a, "nbytes", 0) for a in arrays) + HISTORY_JSON_BYTES_PER_STEP * len(c.state.history.step)
            + 100_000 + snapshot)          # headers: names, shapes, config, vocabulary


class Recorder:
    """Applies one attempt's messages to the store and the data directory."""

    def __init__(self, trainer: Trainer, run_id: int, attempt: int):
        self.trainer, self.run_id, self.attempt = trainer, run_id, attempt
        self.store, self.paths = trainer.store, trainer.paths
        self.ended: Ended | None = None

    def __call__(self, message: Message) -> None:
        if isinstance(message, Progress):
            self.commit(message)
        elif isinstance(message, Checkpoint):
            self.checkpoint(message)
        elif isinstance(message, Started):
            self.store.set_attempt_where(self.run_id, self.attempt, message.where)
        elif isinstance(message, Ended):
            self.ended = message

    def commit(self, p: Progress) -> None:
        self.store.log(self.run_id, p.rows, p.run_fields, p.samples)

    def checkpoint(self, c: Checkpoint) -> None:
        """Metrics first, then the files, then the checkpoint step: see the module docstring."""
        self.commit(c.progress)
        # Room for both files above the margin, as each is written beside the one it replaces:
        # a checkpoint never spends the margin, nor the store's reserve behind it.
        keep = self.trainer.settings.run_snapshots
        size = checkpoint_size(c, snapshots=keep > 0)
        low = self.store.low_space(self.trainer.settings.min_free_bytes + size)
        if low:
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} for a checkpoint of {size / 1e6:,.1f} MB: {low}")
        paths = (self.paths.model(self.run_id), self.paths.train_state(self.run_id))
        first = not any(path.exists() for path in paths)
        try:
            save_model(c.model, paths[0])
            save_train_state(paths[1], c.model, c.state)
        except BaseException:
            if first:                      # nothing of a first checkpoint that failed stays behind
                for path in paths:
                    path.unlink(missing_ok=True)
            raise
        # The weights the concepts were read from (the current ones, not the best kept for the
        # model), so the explorer at this step shows what the curves measured.
        current = LanguageModel(c.model.config, c.model.vocab, c.state.params, c.model.train_config, c.model.history)
        keep_snapshot(self.paths, self.run_id, current, c.state.step, keep)
        self.store.log(self.run_id, [], {"checkpoint_step": c.state.step, "model_id": model_id(self.run_id),
                                         "seconds": c.state.seconds}, profile=(c.state.step, c.profile),
                       concepts=None if c.concepts is None else (c.state.step, c.concepts))
        self.trainer.on_model(self.run_id)


class Trainer:
    """Trains queued runs on the executor, up to `executor.parallel_runs` at once."""

    def __init__(self, store: Store, paths: DataPaths, settings: Settings, executor: Executor,
                 on_model: Callable[[int], None]):
        self.store, self.paths, self.settings, self.executor = store, paths, settings, executor
        self.on_model = on_model          # called with a run id after its model file is (re)written
        # Called with a run id once its attempt has ended and its model file stays as it is, set by the service.
        self.on_ended: Callable[[int], None] = lambda run_id: None
        self._wake = threading.Condition()
        self._stopping = False
        self._active: dict[int, Execution | None] = {}      # run id -> its attempt, once launched
        self._cancelled: set[int] = set()
        self._drivers: dict[int, threading.Thread] = {}
        self._thread: threading.Thread | None = None
        # The memory budget (app/inference/compute_gate.py) and a run's share of it, set by the service:
        # a run starts only once the gate has its bytes, and gives them back when it ends.
        self.gate: ComputeGate | None = None
        self.run_memory: Callable[[dict], int] = lambda run: 0
        self._held: dict[int, int] = {}                     # run id -> bytes of the budget it holds

    # ---- control, from the API's threads ---------------------------------------------------

    def start(self) -> list[int]:
        """Mark the runs a dead process left running as interrupted; start the scheduler.
        Returns the interrupted run ids."""
        interrupted = self.store.interrupt_running()
        self._thread = threading.Thread(target=self._loop, name="rnnscope-trainer", daemon=True)
        self._thread.start()
        return interrupted

    def stop(self, timeout: float | None = None) -> None:
        """Stop every attempt after its current step: each is checkpointed and marked interrupted."""
        with self._wake:
            self._stopping = True
            for execution in self._active.values():
                if execution is not None:
                    execution.stop()
            self._wake.notify_all()
            drivers = list(self._drivers.values())
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in [self._thread, *drivers]:
            if thread is not None:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def poke(self) -> None:
        """A run was queued."""
        with self._wake:
            self._wake.notify_all()

    def cancel(self, run_id: int) -> bool:
        """Ask the running run to stop after its current step; False if it is not running."""
        with self._wake:
            if run_id not in self._active:
                return False
            self._cancelled.add(run_id)
            self._wake.notify_all()
            execution = self._active[run_id]
            if execution is not None:
                execution.stop()
        try:
            self.store.update_run(run_id, cancel_requested=1)
        except (OSError, sqlite3.Error) as e:     # the flag only tells the pages; stop() stops the run
            log.warning("run %d: cannot record the cancel request: %s", run_id, e)
        return True

    def is_training(self, run_id: int) -> bool:
        return run_id in self._active

    # ---- the scheduler thread -------------------------------------------------------------

    def _loop(self) -> None:
        """The supervisor: whatever escapes the scheduler (a disk so full that even reading
        the queue fails) is logged, and the scheduler starts again, backing off while the
        failure repeats."""
        pause = 1.0
        while not self._stopping:
            try:
                self._schedule()
                return
            except Exception:
                log.exception("the training scheduler failed; restarting it in %.0f s", pause)
            with self._wake:
                self._wake.wait(timeout=pause)
            pause = min(pause * 2, 60.0)

    def _schedule(self) -> None:
        with self._wake:
            while not self._stopping:
                waiting_for_memory = False
                if len(self._active) < self.executor.parallel_runs:
                    run_id = self.store.next_queued()
                    held = None if run_id is None else self._take_memory(run_id)
                    waiting_for_memory = run_id is not None and held is None
                    if held is not None and not self.store.set_status_if(
                            run_id, ("queued",), status="running", started=time.time(), finished=None,
                            error=None, cancel_requested=0):
                        if held and self.gate is not None:
                            self.gate.release(held)
                        held = None
                    if held is not None:
                        self._held[run_id] = held
                        self._active[run_id] = None
                        driver = threading.Thread(target=self._drive, args=(run_id,), name=f"rnnscope-run-{run_id}",
                                                  daemon=True)
                        self._drivers[run_id] = driver
                        driver.start()
                        continue
                # The timeout guards against a lost wake-up; a run waiting for memory looks again
                # soon, as requests that free it do not wake this thread.
                self._wake.wait(timeout=0.5 if waiting_for_memory else 5.0)

    def _take_memory(self, run_id: int) -> int | None:
        """The bytes of the memory budget the run will hold, taken now; None if they are not
        free yet. A run that could never fit the budget fails, naming the setting."""
        if self.gate is None:
            return 0
        run = self.store.get_run(run_id)
        nbytes = self.run_memory(run)
        budget = self.gate.memory_budget
        if budget is not None and nbytes > budget:
            self.store.set_status_if(run_id, ("queued",), status="failed", finished=time.time(), error=(
                f"this run needs about {nbytes / 1e6:,.0f} MB of memory at its peak; the server's budget is "
                f"{budget / 1e6:,.0f} MB (setting RNNSCOPE_MEMORY_BUDGET)"))
            return None
        return nbytes if self.gate.reserve(nbytes) else None

    # ---- one driver thread per running run ----------------------------------------------------

    def _drive(self, run_id: int) -> None:
        """Train one run to its end. Whatever escapes (a bug, or a disk so full that even
        recording a failure fails) leaves the run interrupted, retried until that sticks."""
        try:
            try:
                self._execute(run_id)
            except Exception as e:
                log.exception("run %d stopped", run_id)
                # Reading the checkpoint or recording the outcome can meet the disk too.
                storage = isinstance(e, (OSError, sqlite3.Error))
                self.store.update_run(run_id, status="interrupted" if storage else "failed",
                                      error=storage_stop(e) if storage else f"internal error: {e}",
                                      finished=time.time(), eta_seconds=None)
        except Exception:
            log.exception("the training worker failed while run %d was training", run_id)
            self._strand(run_id)
        finally:
            with self._wake:
                self._active.pop(run_id, None)
                self._cancelled.discard(run_id)
                self._drivers.pop(run_id, None)
                held = self._held.pop(run_id, 0)
                if held and self.gate is not None:
                    self.gate.release(held)
                self._wake.notify_all()
            self.store.release_thread()       # this thread ends: its connection and files with it

    def _strand(self, run_id: int) -> None:
        pause = 1.0
        while True:
            try:
                self.store.interrupt_running("the training worker failed while this run was training", run_id)
                return
            except Exception:
                log.exception("cannot mark run %d interrupted yet; trying again in %.0f s", run_id, pause)
            with self._wake:
                if self._stopping:           # the next start-up marks it interrupted
                    return
                self._wake.wait(timeout=pause)
            pause = min(pause * 2, 60.0)

    def _pause(self, run_id: int, seconds: float) -> None:
        """Wait, unless the server stops or the run is cancelled meanwhile."""
        with self._wake:
            self._wake.wait_for(lambda: self._stopping or run_id in self._cancelled, timeout=seconds)

    def _job(self, run: dict) -> Job | str:
        """The job for a run, or why it cannot train."""
        cfg = RunConfig.model_validate(run["config"])
        corpus = None if run["corpus_id"] is None else self.store.get_corpus(run["corpus_id"])
        # The run's own text, by content: it trains on even if its corpus entry was deleted since.
        sha = run.get("corpus_sha256") or (corpus["sha256"] if corpus else None)
        path = self.paths.blob(sha) if sha else None
        if path is None or not path.exists():
            return f"the corpus {cfg.corpus_id} has been deleted"
        text = path.read_text(encoding="utf-8")
        vocab = Vocab.from_text(text)
        model_cfg = ModelConfig(cfg.cell, len(vocab), cfg.hidden_size, cfg.num_layers)
        return Job(run["id"], run["name"], cfg, text, vocab, model_cfg, train_config(cfg),
                   corpus["name"] if corpus else f"corpus {cfg.corpus_id} (deleted)",
                   gradient_passage(text, self.settings.gradient_passage_chars), Cadence.of(self.settings),
                   gradient_passage(text, self.settings.concept_text_chars) if self.settings.concept_text_chars else "")

    def _resume_state(self, run_id: int) -> TrainState | None:
        """The last checkpoint's training state, None for a fresh start; CheckpointError if unreadable."""
        state_path = self.paths.train_state(run_id)
        return load_train_state(state_path)[1] if state_path.exists() else None

    def _execute(self, run_id: int) -> None:
        job = self._job(self.store.get_run(run_id))
        if isinstance(job, str):
            self.store.update_run(run_id, status="failed", error=job, finished=time.time())
            return
        lost = 0
        while True:
            try:
                resume = self._resume_state(run_id)
            except CheckpointError as e:
                self.store.update_run(run_id, status="failed", finished=time.time(),
                                      error=f"the last checkpoint cannot be read: {e}")
                return
            start_step = 0 if resume is None else resume.step
            self.store.truncate_history(run_id, start_step)
            remove_snapshots(self.paths, run_id, start_step)     # redone, bit for bit, by this attempt
            attempt = self.store.start_attempt(run_id, start_step)
            outcome, error = self._attempt(run_id, job, resume, attempt)
            attempt_outcome = outcome
            if outcome == "lost":
                lost += 1
                if lost <= self.settings.max_run_retries and not self._stopping and run_id not in self._cancelled:
                    self.store.end_attempt(run_id, attempt, self.store.get_run(run_id)["step"], "lost")
                    log.warning("run %d: %s; retrying from its last checkpoint (%d of %d)", run_id, error, lost,
                                self.settings.max_run_retries)
                    # At once the first time (another node is likely free), then backing off.
                    self._pause(run_id, 0.0 if lost == 1 else min(2.0 ** (lost - 1), 30.0))
                    continue
                if run_id in self._cancelled:
                    outcome, error = "cancelled", None
                elif self._stopping:
                    outcome, error = "interrupted", "the server was stopped; resume the run to continue"
                else:
                    outcome, error = "interrupted", (
                        f"{error}; gave up after {lost} lost attempt{'s' * (lost > 1)} (setting "
                        "RNNSCOPE_MAX_RUN_RETRIES); resume the run to continue from its last checkpoint")
            step = self.store.get_run(run_id)["step"]
            self.store.update_run(run_id, status=outcome, error=error, finished=time.time(), eta_seconds=None,
                                  chars_per_sec=None, cancel_requested=0)
            self.store.end_attempt(run_id, attempt, step, attempt_outcome)
            if not self._stopping:
                self.on_ended(run_id)
            return

    def _attempt(self, run_id: int, job: Job, resume: TrainState | None, attempt: int) -> tuple[str, str | None]:
        """One attempt on the executor -> (outcome, error); outcome "lost" when its worker died."""
        record = Recorder(self, run_id, attempt)
        try:
            execution = self.executor.launch(job, resume)
        except WorkerLost as e:
            return "lost", str(e)
        with self._wake:
            self._active[run_id] = execution
            if self._stopping or run_id in self._cancelled:
                execution.stop()
        try:
            execution.run(record)
        except WorkerLost as e:
            return "lost", str(e)
        except (OSError, sqlite3.Error) as e:
            # The machine, not the run: a full disk, a permission, an I/O error. The last
            # checkpoint is intact (files are replaced atomically), so the run can resume.
            execution.kill()
            if run_id in self._cancelled:         # asked to stop, and stopped: its last checkpoint stays
                log.warning("run %d cancelled without its final checkpoint: %s", run_id, e)
                return "cancelled", (f"cancelled; its final checkpoint could not be written "
                                     f"({getattr(e, 'strerror', None) or e}), so a resume starts from the one before")
            log.warning("run %d interrupted: %s", run_id, e)
            return "interrupted", storage_stop(e)
        except Exception as e:
            execution.kill()
            log.exception("run %d failed", run_id)
            return "failed", f"internal error: {e}"
        finally:
            with self._wake:
                self._active[run_id] = None
        ended = record.ended
        if ended is None:
            return "failed", "internal error: the attempt ended without saying how"
        if ended.stopped is None:
            return "failed", ended.error
        if ended.stopped == "cancelled":
            if run_id in self._cancelled:
                return "cancelled", None
            return "interrupted", "the server was stopped; resume the run to continue from this checkpoint"
        return "completed", None
