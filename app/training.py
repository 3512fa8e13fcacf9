"""Training from the browser, assembled: its settings, the service the routes share (store,
worker, data paths), the lifespan that starts and stops the worker, and `install`, which
adds the routes to the app.

In app/main.py: `training.install(app)` in create_app, and inside the lifespan, once
app.state.registry exists, `async with training.lifespan(app): yield`.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.checkpoint import CheckpointError

from .jobs import OneBlasThread, Trainer
from .registry import ModelRegistry, UnknownModelError, make_entry
from .store import DataPaths, Store, model_id

log = logging.getLogger(__name__)


class TrainingSettings(BaseSettings):
    """Limits and intervals of training from the browser, each overridable as RNNSCOPE_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="RNNSCOPE_", frozen=True, extra="ignore")

    # When set, uploads, starts, cancels, resumes and deletes need `Authorization: Bearer <token>`.
    token: SecretStr | None = None
    # tinyshakespeare is 1.1 MB; 50 MB trains for days on a CPU, so more is a mistake, not a corpus.
    max_upload_bytes: int = Field(50_000_000, ge=1)
    # The output layer has one row per character; past a few hundred the text is not one language.
    max_vocab: int = Field(1000, ge=2)
    # Below this the validation 10% is a sentence or two and its loss means nothing.
    min_corpus_chars: int = Field(200, ge=3)
    # 2048 units of LSTM is 33M weights per layer: hours a step on two cores.
    max_hidden_size: int = Field(1024, ge=1)
    # Weights, Adam's two moments and the best copy: 20M parameters is ~320 MB of float32.
    max_parameters: int = Field(20_000_000, ge=1)
    # Characters per step (batch_size x seq_length) bound the activations BPTT keeps: ten
    # times char-rnn's 32 x 100.
    max_step_chars: int = Field(32_768, ge=1)
    max_queued_runs: int = Field(20, ge=1)
    # A checkpoint of a 2x256 LSTM with its Adam moments is ~14 MB; every 200 steps (a minute
    # or so) bounds what a crash loses without writing all the time.
    checkpoint_every_steps: int = Field(200, ge=1)
    checkpoint_every_seconds: float = Field(120.0, gt=0)    # for big models, whose 200 steps take long
    sample_every_steps: int = Field(100, ge=0)             # 0: no samples
    sample_temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    sample_length: int = Field(200, ge=1, le=5000)
    # Metrics are committed in batches: a commit per step of a tiny model would cost more than the step.
    flush_seconds: float = Field(0.5, gt=0)
    gradient_passage_chars: int = Field(100, ge=2, le=2000)
    # The preflight's default max_steps aims at this much training time.
    target_run_seconds: float = Field(600.0, gt=0)
    # How often an event stream looks for new steps; each look is one indexed query.
    events_poll_seconds: float = Field(0.25, gt=0)
    # An event stream ends after this long and the browser reconnects with Last-Event-ID, so a
    # server shutdown never waits on a watcher for longer.
    events_max_seconds: float = Field(30.0, gt=0)


@lru_cache
def get_training_settings() -> TrainingSettings:
    return TrainingSettings()


class Training:
    """What the corpus and run routes share: settings, data paths, store and worker."""

    def __init__(self, data_dir: Path, settings: TrainingSettings, registry: ModelRegistry | None,
                 on_models_changed=lambda: None):
        self.settings = settings
        self.paths = DataPaths(data_dir)
        self.paths.make_dirs()
        # An upload the last process was reading when it died.
        for stray in (self.paths.root / "corpora").glob(".upload-*.tmp"):
            stray.unlink(missing_ok=True)
        self.store = Store(self.paths.database)
        self.registry = registry
        self.on_models_changed = on_models_changed
        self.one_thread = OneBlasThread()
        self.trainer = Trainer(self.store, self.paths, settings, self.publish, self.one_thread)

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
                self.registry.put(dataclasses.replace(entry, name=run["name"]))

    def stop(self) -> None:
        self.trainer.stop()
        self.store.close()

    # ---- the model registry --------------------------------------------------------------

    def publish(self, run_id: int) -> None:
        """Serve the run's model file under its run name (again, after each checkpoint)."""
        run = self.store.get_run(run_id)
        path = self.paths.model(run_id)
        if self.registry is None or run is None or not path.exists():
            return
        try:
            entry = make_entry(model_id(run_id), path, bundled=False, name=run["name"])
        except CheckpointError as e:
            log.warning("cannot serve the model of run %d: %s", run_id, e)
            return
        self.registry.put(entry)
        self.on_models_changed()

    def unpublish(self, run_id: int) -> None:
        if self.registry is not None:
            self.registry.remove(model_id(run_id))
            self.on_models_changed()


# ---- dependencies ----------------------------------------------------------------------------

async def get_training(request: Request) -> Training:
    return request.app.state.training


TrainingDep = Annotated[Training, Depends(get_training)]


async def get_app_training_settings(request: Request) -> TrainingSettings:
    return request.app.state.training_settings


TrainingSettingsDep = Annotated[TrainingSettings, Depends(get_app_training_settings)]


# ---- assembly ------------------------------------------------------------------------------------

def install(app: FastAPI, settings: TrainingSettings | None = None) -> None:
    """Add the corpus, run and Train page routes. Calling it again only swaps the settings."""
    app.state.training_settings = settings or get_training_settings()
    if getattr(app.state, "training_installed", False):
        return
    from .routers import corpora, runs, train_page      # they import this module's dependencies
    for module in (corpora, runs, train_page):
        app.include_router(module.router)
    app.state.training_installed = True
    app.openapi_schema = None


@asynccontextmanager
async def lifespan(app: FastAPI, data_dir: Path | None = None) -> AsyncIterator[Training]:
    """Open the store, mark runs a dead process left running as interrupted, start the
    worker; on the way out, stop it, which checkpoints the run in progress."""
    data_dir = data_dir or app.state.settings.data_dir

    def models_changed() -> None:
        app.openapi_schema = None                # the {model_id} choices in /docs include the new model

    training = await run_in_threadpool(Training, data_dir, app.state.training_settings,
                                       getattr(app.state, "registry", None), models_changed)
    await run_in_threadpool(training.start)
    app.state.training = training
    try:
        yield training
    finally:
        await run_in_threadpool(training.stop)
