"""Training from the browser, assembled: the service the routes share (store, worker,
executor, data paths), its dependency, and the lifespan that starts and stops it.

In app/main.py: `app.add_exception_handler(...)` with STORAGE_ERROR_HANDLERS, and inside the
lifespan, once app.state.registry exists, `async with service.lifespan(app): yield`.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from rnnscope.model.checkpoint import CheckpointError
from rnnscope.model.data import num_batches
from rnnscope.model.layers import one_blas_thread
from rnnscope.model.network import ModelConfig

from ..inference.compute import (HISTORY_BYTES_PER_STEP, checkpoint_bytes, every_unit, reading_bytes,
                                 training_peak_bytes)
from ..inference.compute_gate import ComputeGate
from ..inference.limits import Limit
from ..inference.lru import LRU
from ..inference.registry import Entry, ModelRegistry, UnknownModelError, make_entry
from ..settings import Settings
from ..web.errors import ErrorResponse, invalid, on_unexpected_error
from ..web.schemas import ErrorMessage
from .attempt import gradient_passage, seconds_per_step
from .corpora import parameters
from .executors import make_executor
from .schemas import RunConfig
from .snapshots import remove_snapshots, snapshot_bytes
from .store import DataPaths, QueueLimits, Store, is_sha256, model_id, snapshot_id
from .worker import Trainer

log = logging.getLogger(__name__)


SNAPSHOT_ID = re.compile(r"run-([0-9]{1,16})@([0-9]{1,12})")
INSUFFICIENT_STORAGE = {507: {"model": ErrorMessage, "description": "The server's disk is (nearly) full; "
                                                                   "the message says how much is free."}}
# Timed step shapes kept: each answer is a few numbers, a new shape costs a real step.
STEP_TIMES_KEPT = 256


class DataDirError(RuntimeError):
    """The data directory cannot be used; the message names it and says what to do."""


def open_store(data_dir: Path) -> tuple[DataPaths, Store]:
    """The data directory's paths and store, or DataDirError in one line that names it."""
    paths = DataPaths(data_dir)
    try:
        paths.make_dirs()
        probe = paths.root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return paths, Store(paths.database)
    except (OSError, sqlite3.Error) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise DataDirError(f"cannot use the data directory {data_dir.resolve()}: {reason}; make it writable "
                           "or choose another with RNNSCOPE_DATA_DIR (or --data-dir)") from None


class Training:
    """What the corpus and run routes share: settings, data paths, store and worker."""

    def __init__(self, data_dir: Path, settings: Settings, registry: ModelRegistry | None,
                 on_models_changed=lambda: None):
        self.settings = settings
        self.paths, self.store = open_store(data_dir)
        # Placing and removing texts (corpora/<sha256>.txt), one at a time: an upload that finds a
        # text stored must not see it removed by a delete that found it unused a moment before.
        self.texts_lock = threading.Lock()
        # Admitting a run, one at a time: its quotas and disk checks and its row in the queue
        # together, so two runs started at once cannot both pass a quota only one fits.
        self.admission_lock = threading.Lock()
        self.remove_orphans()
        self.registry = registry
        if registry is not None:
            registry.resolve = self.snapshot_entry
        self.on_models_changed = on_models_changed
        self.one_thread = one_blas_thread
        self.executor = make_executor(settings, self.one_thread)
        self.trainer = Trainer(self.store, self.paths, settings, self.executor, self.publish)
        self.trainer.run_memory = self.training_memory
        self.trainer.on_ended = self.ended
        self.event_streams = Limit(settings.max_event_streams, "event streams",   # /api/runs/{id}/events
                                   "RNNSCOPE_MAX_EVENT_STREAMS")
        self._step_times: LRU[tuple, float] = LRU(STEP_TIMES_KEPT)

    def remove_orphans(self) -> None:
        """What a process killed mid-write leaves: temporary files, texts that nothing holds,
        and corpus rows without a text. Texts kept by corpus id (before they were stored by
        content) move to their sha256 first."""
        root = self.paths.root
        self.adopt_texts_by_id()
        # pathlib's * matches dot files too: .upload-*.tmp and .run-1.safetensors.*.tmp alike.
        strays = [(p, "left by a write that did not finish") for sub in ("corpora", "runs", "models", "snapshots")
                  for p in (root / sub).glob("*.tmp")]
        for path, why in strays:
            if not path.is_file():                # someone's directory: not ours to remove
                continue
            log.warning("removing %s: %s", path, why)
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("cannot remove %s: %s", path, e)
        for corpus in self.store.list_corpora()[0]:
            if not self.paths.blob(corpus["sha256"]).exists():
                log.warning("forgetting corpus %d: its file is gone", corpus["id"])
                self.store.delete_corpus(corpus["id"])
        self.remove_unused_texts()
        # Snapshots of a run deleted while the process died between its row and its files.
        for path in (root / "snapshots").glob("run-*@*.safetensors"):
            match = SNAPSHOT_ID.fullmatch(path.name[:-len(".safetensors")])
            if match and path.is_file() and self.store.get_run(int(match[1])) is None:
                log.warning("removing %s: its run was deleted", path)
                path.unlink(missing_ok=True)

    # ---- texts, stored once each (corpora/<sha256>.txt) ------------------------------------------

    def adopt_texts_by_id(self) -> None:
        for corpus in self.store.list_corpora()[0]:
            by_id, blob = self.paths.corpus(corpus["id"]), self.paths.blob(corpus["sha256"])
            try:
                if by_id.is_file():
                    if blob.exists():
                        by_id.unlink()
                    else:
                        os.replace(by_id, blob)
            except OSError as e:
                log.warning("cannot move %s to %s: %s", by_id, blob, e)

    def place_text(self, path: Path, sha256: str) -> bool:
        """Move an ingested text to its blob, unless that text is stored already (then the
        copy is dropped): whether this placed it. Call under texts_lock."""
        blob = self.paths.blob(sha256)
        if blob.is_file():
            path.unlink(missing_ok=True)
            return False
        os.replace(path, blob)
        return True

    def delete_corpus(self, corpus_id: int) -> None:
        """Delete a corpus entry, and its text if nothing else holds it: queued and running
        runs (anyone's) keep theirs and go on training."""
        with self.texts_lock:
            unused = self.store.delete_corpus(corpus_id)
            if unused is not None:
                self.paths.blob(unused).unlink(missing_ok=True)

    def remove_unused_texts(self) -> None:
        """Remove the texts no corpus entry and no queued or running run holds any more (those
        a finished run kept after its entry was deleted)."""
        with self.texts_lock:
            entries, runs_only = self.store.texts_in_use()
            ids = {str(i) for i in self.store.corpus_ids()}
            for path in (self.paths.root / "corpora").glob("*.txt"):
                name = path.stem
                # Only files this store names: a sha256, or a corpus id from before that no row has.
                if (is_sha256(name) and name not in entries | runs_only) or (name.isdigit() and name not in ids):
                    if path.is_file():
                        log.info("removing %s: no corpus entry or active run holds it", path)
                        path.unlink(missing_ok=True)

    def stored_text_bytes(self, db: sqlite3.Connection) -> int:
        """Bytes of text stored: each text once, whether entries or only active runs hold it."""
        _, runs_only = self.store.texts_in_use(db)
        kept = 0
        for sha in runs_only:
            try:
                kept += self.paths.blob(sha).stat().st_size
            except OSError:
                pass
        return self.store.total_corpus_bytes(db) + kept

    # ---- limits shared by runs and estimates ----------------------------------------------------

    def check_shape(self, cell: str, vocab_size: int, hidden_size: int, num_layers: int, batch_size: int,
                    seq_length: int, train_chars: int, recommended: dict, loc: str = "body") -> None:
        """Refuse (422) a model or batch a run may not have: the one check for starting a run
        and for timing one, so an estimate never costs what a run could not."""
        s = self.settings
        if hidden_size > s.max_hidden_size:
            raise invalid((loc, "hidden_size"), f"hidden_size is {hidden_size}; the limit is "
                          f"{s.max_hidden_size} (setting RNNSCOPE_MAX_HIDDEN_SIZE)")
        n = parameters(cell, vocab_size, hidden_size, num_layers)
        if n > s.max_parameters:
            raise invalid((loc, "hidden_size"), f"this model has {n:,} parameters; the limit is "
                          f"{s.max_parameters:,} (setting RNNSCOPE_MAX_PARAMETERS)")
        if batch_size * seq_length > s.max_step_chars:
            raise invalid((loc, "batch_size"), f"batch_size x seq_length is {batch_size * seq_length:,} "
                          f"characters a step; the limit is {s.max_step_chars:,} (setting RNNSCOPE_MAX_STEP_CHARS)")
        if num_batches(train_chars, batch_size, seq_length) < 1:
            raise invalid((loc, "batch_size"), f"the training text has {train_chars:,} characters, too few "
                          f"for one batch of {batch_size} x {seq_length}; lower batch_size or seq_length "
                          f"(the preflight recommends {recommended['batch_size']} x {recommended['seq_length']})")

    def seconds_per_step(self, cfg: ModelConfig, batch_size: int, seq_length: int,
                         gate: ComputeGate | None = None) -> float:
        """A real training step of this shape timed once (in a compute slot), then remembered:
        the Train page asks again at every change of a field."""
        key = (cfg.cell, cfg.vocab_size, cfg.hidden_size, cfg.num_layers, batch_size, seq_length)

        def timed() -> float:
            with gate if gate is not None else nullcontext():
                return seconds_per_step(cfg, batch_size, seq_length, self.one_thread)
        return self._step_times.get_or_make(key, timed)

    # ---- fair share: the queue's compute ----------------------------------------------------------

    def step_seconds(self, config: RunConfig, corpus: dict, gate: ComputeGate | None = None) -> float:
        """What a step of this run costs here: the same timing the estimate shows (cached per shape)."""
        cfg = ModelConfig(config.cell, corpus["preflight"]["vocab_size"], config.hidden_size, config.num_layers)
        return self.seconds_per_step(cfg, config.batch_size, config.seq_length, gate=gate)

    def queue_limits(self) -> QueueLimits:
        s = self.settings
        return QueueLimits(s.max_queued_runs, s.max_queued_runs_per_owner, s.max_queued_seconds,
                           s.max_queued_seconds_per_owner)

    # ---- budgets: a run's memory and disk, known from its shape before it is queued ---------------

    def run_budget(self, config: RunConfig, corpus: dict | None) -> tuple[int, int]:
        """(peak bytes of memory while it trains, bytes of its checkpoints and snapshots on disk).
        Without its corpus entry (deleted while the run waits), the vocabulary's limit stands in
        for its size."""
        memory, checkpoints, snapshots = self.run_parts(config, corpus)
        return memory, checkpoints + snapshots

    def run_parts(self, config: RunConfig, corpus: dict | None) -> tuple[int, int, int]:
        """run_budget's memory, and its disk in two: the checkpoints (replaced at each one) and
        the snapshots (written beside the others)."""
        vocab = corpus["preflight"]["vocab_size"] if corpus else self.settings.max_vocab
        chars = corpus["chars"] if corpus else self.settings.max_upload_bytes
        ascii_text = bool(corpus) and corpus["bytes"] <= corpus["chars"]      # UTF-8: a byte a character
        cfg = ModelConfig(config.cell, vocab, config.hidden_size, config.num_layers)
        memory = training_peak_bytes(cfg, config.batch_size, config.seq_length, chars, ascii_text,
                                     config.dropout, config.max_steps)
        if self.settings.concept_text_chars:
            # Recording concepts at a checkpoint reads every unit over the stretch (float32) and
            # ranks it (a float64 copy for graded concepts): 3 floats a unit and character, on
            # top of the training step's peak to be safe (it runs between steps).
            memory += reading_bytes(cfg, self.settings.concept_text_chars, 3 * every_unit(cfg))
        # Its weight snapshots count with its checkpoints: the bound, and one more while a new
        # one is written before the thinning drops one (the checkpoints' model file is a fifth).
        keep = self.settings.run_snapshots
        snapshots = (keep + 1) * snapshot_bytes((checkpoint_bytes(cfg) - 100_000) // 5) if keep else 0
        return memory, checkpoint_bytes(cfg, config.max_steps), snapshots

    def training_memory(self, run: dict) -> int:
        """The bytes a run holds of the memory budget while it trains in this process (none on
        a cluster's nodes); the trainer's scheduler takes them before starting it."""
        if self.executor.name != "thread":
            return 0
        corpus = None if run["corpus_id"] is None else self.store.get_corpus(run["corpus_id"])
        if corpus is None and run.get("corpus_sha256"):
            # Its entry deleted, the run trains on the text it kept: sized by the file, its
            # vocabulary by the limit.
            try:
                size = self.paths.blob(run["corpus_sha256"]).stat().st_size
            except (OSError, ValueError):
                size = None
            if size is not None:
                corpus = {"chars": size, "bytes": size + 1,
                          "preflight": {"vocab_size": self.settings.max_vocab}}
        return self.run_budget(RunConfig.model_validate(run["config"]), corpus)[0]

    def check_budgets(self, config: RunConfig, corpus: dict, owner: str | None) -> None:
        """Refuse a run that could never train within the memory budget (422), whose
        checkpoints would not fit the disk above its margin (507), or would pass the owner's
        or everyone's quota of stored models (413, 507)."""
        s = self.settings
        memory, checkpoints, snapshots = self.run_parts(config, corpus)
        disk = checkpoints + snapshots
        if memory > s.memory_budget:
            history = HISTORY_BYTES_PER_STEP * config.max_steps
            field, change = (("max_steps", f"its history of {config.max_steps:,} steps takes {history / 1e6:,.0f} MB "
                                           "of it: lower max_steps") if 2 * history > memory else
                             ("batch_size", "lower batch_size, seq_length, hidden_size or num_layers"))
            raise invalid(("body", field), f"this run needs about {memory / 1e6:,.0f} MB of memory at its peak "
                          "(the activations of batch_size x seq_length characters through every layer, the weights "
                          f"and Adam's moments, the history); the server's budget is {s.memory_budget / 1e6:,.0f} MB "
                          f"(setting RNNSCOPE_MEMORY_BUDGET): {change}")
        self.check_model_bytes(owner, disk, "this run's checkpoints" + " and snapshots" * (snapshots > 0))
        free = shutil.disk_usage(self.paths.root).free
        promised = self.promised_checkpoint_bytes()
        # While a checkpoint is replaced, the new training state sits beside the old one: 4/5 of it.
        if free - promised - disk - checkpoints * 4 // 5 < s.min_free_bytes:
            kept = f" and {snapshots / 1e6:,.0f} MB of snapshots (setting RNNSCOPE_RUN_SNAPSHOTS)" * (snapshots > 0)
            raise HTTPException(507, f"this run's checkpoints take {checkpoints / 1e6:,.0f} MB (and as much again "
                                     f"while one is replaced){kept}; the disk has {free / 1e6:,.0f} MB free, "
                                     f"{promised / 1e6:,.0f} MB of it promised to runs not yet checkpointed, and "
                                     f"{s.min_free_bytes / 1e6:,.0f} MB are kept free (setting "
                                     "RNNSCOPE_MIN_FREE_BYTES): a smaller model, or ask whoever runs the server")

    def run_files_bytes(self, run_id: int) -> int:
        total = 0
        snapshots = [self.paths.snapshot(run_id, s) for s in self.paths.snapshot_steps(run_id)]
        for path in (self.paths.model(run_id), self.paths.train_state(run_id), *snapshots):
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    def stored_model_bytes(self, owner: str | None = None) -> int:
        """Bytes of models kept, an owner's or everyone's: each run's checkpoints (what its
        shape will take while it is queued or training, what is on disk once it ended) and the
        imported models."""
        total = 0
        for run in self.store.list_runs(owner):
            if owner is not None and run["owner"] != owner:
                continue
            on_disk = self.run_files_bytes(run["id"])
            if run["status"] in ("queued", "running"):
                corpus = None if run["corpus_id"] is None else self.store.get_corpus(run["corpus_id"])
                on_disk = max(on_disk, self.run_budget(RunConfig.model_validate(run["config"]), corpus)[1])
            total += on_disk
        with self.store.read() as db:
            where, args = ("", ()) if owner is None else (" WHERE owner = ?", (owner,))
            total += db.execute("SELECT coalesce(sum(bytes), 0) FROM imports" + where, args).fetchone()[0]
        return total

    def promised_checkpoint_bytes(self) -> int:
        """Disk the queued and running runs will still take: their checkpoints' size less what
        they have written already."""
        promised = 0
        for run in self.store.list_runs():
            if run["status"] in ("queued", "running"):
                corpus = None if run["corpus_id"] is None else self.store.get_corpus(run["corpus_id"])
                disk = self.run_budget(RunConfig.model_validate(run["config"]), corpus)[1]
                promised += max(0, disk - self.run_files_bytes(run["id"]))
        return promised

    def check_model_bytes(self, owner: str | None, adding: int, what: str) -> None:
        """Refuse `adding` bytes of model files (a run's checkpoints, an imported model) past
        the owner's quota (413) or everyone's (507). For imports too: call before writing."""
        s = self.settings
        if owner is not None:
            mine = self.stored_model_bytes(owner)
            if mine + adding > s.max_model_bytes_per_owner:
                raise HTTPException(413, f"{what} take {adding / 1e6:,.0f} MB; your models and checkpoints take "
                                         f"{mine / 1e6:,.0f} MB of the {s.max_model_bytes_per_owner / 1e6:,.0f} MB each "
                                         "person may keep (setting RNNSCOPE_MAX_MODEL_BYTES_PER_OWNER): delete a "
                                         "run or model of yours first")
        everyone = self.stored_model_bytes()
        if everyone + adding > s.max_model_bytes_total:
            raise HTTPException(507, f"{what} take {adding / 1e6:,.0f} MB; everyone's models and checkpoints take "
                                     f"{everyone / 1e6:,.0f} MB of the {s.max_model_bytes_total / 1e6:,.0f} MB the "
                                     "server keeps (setting RNNSCOPE_MAX_MODEL_BYTES_TOTAL): ask whoever runs it")

    # ---- the disk ---------------------------------------------------------------------------------

    def check_free_space(self, what: str) -> None:
        """Refuse (507) to start writing when the disk has less than min_free_bytes free."""
        low = self.store.low_space(self.settings.min_free_bytes)
        if low:
            raise HTTPException(507, f"{what} is refused: {low} on the server; ask whoever runs it to free space")

    def storage_error(self, what: str, e: OSError) -> HTTPException:
        return HTTPException(507, f"{what} could not be written: {e.strerror or e}; the server's disk may be "
                                  "full, ask whoever runs it")

    def start(self) -> None:
        interrupted = self.trainer.start()
        if interrupted:
            log.warning("runs %s were training when the server stopped; marked interrupted", interrupted)
        if self.registry is None:
            return
        # The registry loaded models/run-<id>.safetensors by file name; give them their run names.
        for run in self.store.list_runs():
            if not run["model_id"]:
                continue
            try:
                entry = self.registry.get(run["model_id"])
            except UnknownModelError:
                self.publish(run["id"])
            else:
                self.registry.put(dataclasses.replace(entry, name=run["name"], owner=run["owner"]))

    def stop(self) -> None:
        try:
            self.trainer.stop()
        finally:
            self.executor.close()
            self.store.close()

    # ---- the model registry --------------------------------------------------------------

    def publish(self, run_id: int) -> None:
        """Serve the run's model file under its run name (again, after each checkpoint)."""
        run = self.store.get_run(run_id)
        path = self.paths.model(run_id)
        if self.registry is None or run is None or not path.exists():
            return
        try:
            entry = make_entry(model_id(run_id), path, bundled=False, name=run["name"], cache=self.registry.cache,
                               owner=run["owner"])
        except CheckpointError as e:
            log.warning("cannot serve the model of run %d: %s", run_id, e)
            return
        self.registry.put(entry)
        self.forget_thinned(run_id)
        self.on_models_changed()

    def ended(self, run_id: int) -> None:
        """A run stopped training (completed, cancelled, failed): its served model is final."""
        if self.registry is not None and model_id(run_id) in self.registry.ids():
            self.registry.on_ready(model_id(run_id))

    def forget_thinned(self, run_id: int) -> None:
        """No longer serve the run's snapshots thinned away since they were asked for."""
        on_disk = {snapshot_id(run_id, s) for s in self.paths.snapshot_steps(run_id)}
        prefix = model_id(run_id) + "@"
        for gone in [i for i in self.registry.ids() if i.startswith(prefix) and i not in on_disk]:
            self.registry.remove(gone)

    def snapshot_entry(self, wanted: str) -> Entry | None:
        """The registry's entry for a snapshot id (run-7@1800) whose file is kept, made when
        first asked for: the run's model's, but for its weights (loaded like any unloaded
        model, in the request's thread) and name; unlisted. None for any other id."""
        match = SNAPSHOT_ID.fullmatch(wanted)
        if match is None or self.registry is None:
            return None
        run_id, step = int(match[1]), int(match[2])
        if wanted != snapshot_id(run_id, step):         # one id a snapshot: run-7@20, not run-07@020
            return None
        path = self.paths.snapshot(run_id, step)
        try:
            run_model = self.registry.get(model_id(run_id))
        except UnknownModelError:
            return None
        if not path.is_file():
            return None
        return dataclasses.replace(run_model, id=wanted, name=f"{run_model.name} at step {step:,}", path=path,
                                   spectrum=None, pinned=None, cache=self.registry.cache, listed=False)

    def unpublish(self, run_id: int) -> None:
        if self.registry is not None:
            self.registry.remove(model_id(run_id))
            prefix = model_id(run_id) + "@"
            for sid in [i for i in self.registry.ids() if i.startswith(prefix)]:
                self.registry.remove(sid)
            self.on_models_changed()

    def concept_text(self, run: dict, chars: int) -> str:
        """The stretch of the run's validation text its concepts were recorded on ("" if its
        text is gone): the worker's choice (Job.concept_text), made again from the same text."""
        sha = run.get("corpus_sha256")
        try:
            text = self.paths.blob(sha).read_text(encoding="utf-8") if sha else ""
        except (OSError, ValueError):
            return ""
        return gradient_passage(text, chars) if text else ""

    def delete_run_files(self, run_id: int) -> None:
        """A deleted run's files: its model, training state and snapshots."""
        self.paths.model(run_id).unlink(missing_ok=True)
        self.paths.train_state(run_id).unlink(missing_ok=True)
        remove_snapshots(self.paths, run_id)


# ---- dependencies ----------------------------------------------------------------------------

async def get_training(request: Request) -> Training:
    return request.app.state.training


TrainingDep = Annotated[Training, Depends(get_training)]


# ---- assembly ------------------------------------------------------------------------------------

# What a full, failing or read-only disk raises: a request that meets one answers 507 with
# the reason, not a 500 that blames the server's code.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
STORAGE_SQLITE_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
                                  sqlite3.SQLITE_CANTOPEN})


async def on_storage_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "sqlite_errorcode", None)
    if not (exc.errno in STORAGE_ERRNOS if isinstance(exc, OSError)
            else code is not None and code & 0xFF in STORAGE_SQLITE_CODES):   # & 0xFF: the primary code
        return await on_unexpected_error(request, exc)
    log.warning("%s %s: the storage failed: %s", request.method, request.url.path, exc)
    reason = getattr(exc, "strerror", None) or exc
    return ErrorResponse({"detail": f"the server's storage failed: {reason}; its disk may be full, ask "
                                    "whoever runs it"}, status_code=507)


# For app.add_exception_handler: a request that meets a failing disk answers 507.
STORAGE_ERROR_HANDLERS = {OSError: on_storage_error, sqlite3.OperationalError: on_storage_error}


@asynccontextmanager
async def lifespan(app: FastAPI, data_dir: Path | None = None) -> AsyncIterator[Training]:
    """Open the store, mark runs a dead process left running as interrupted, start the
    worker; on the way out, stop it, which checkpoints the run in progress."""
    data_dir = data_dir or app.state.settings.data_dir

    def models_changed() -> None:
        app.openapi_schema = None                # the {model_id} choices in /docs include the new model

    training = await run_in_threadpool(Training, data_dir, app.state.settings,
                                       getattr(app.state, "registry", None), models_changed)
    # Runs training here hold their share of the memory budget the requests' gate counts.
    training.trainer.gate = getattr(app.state, "compute_slots", None)
    await run_in_threadpool(training.start)
    app.state.training = training
    try:
        yield training
    finally:
        await run_in_threadpool(training.stop)
