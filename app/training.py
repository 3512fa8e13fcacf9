"""Training from the browser, assembled: the service the routes share (store,
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
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from model.checkpoint import CheckpointError

from .jobs import OneBlasThread, Trainer
from .registry import ModelRegistry, UnknownModelError, make_entry
from .settings import Settings
from .store import DataPaths, Store, model_id

log = logging.getLogger(__name__)


class Training:
    """What the corpus and run routes share: settings, data paths, store and worker."""

    def __init__(self, data_dir: Path, settings: Settings, registry: ModelRegistry | None,
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


# ---- assembly ------------------------------------------------------------------------------------

def install(app: FastAPI) -> None:
    """Add the corpus, run and Train page routes."""
    from .routers import corpora, runs, train_page      # they import this module's dependencies
    for module in (corpora, runs, train_page):
        app.include_router(module.router)
    app.openapi_schema = None


@asynccontextmanager
async def lifespan(app: FastAPI, data_dir: Path | None = None) -> AsyncIterator[Training]:
    """Open the store, mark runs a dead process left running as interrupted, start the
    worker; on the way out, stop it, which checkpoints the run in progress."""
    data_dir = data_dir or app.state.settings.data_dir

    def models_changed() -> None:
        app.openapi_schema = None                # the {model_id} choices in /docs include the new model

    training = await run_in_threadpool(Training, data_dir, app.state.settings,
                                       getattr(app.state, "registry", None), models_changed)
    await run_in_threadpool(training.start)
    app.state.training = training
    try:
        yield training
    finally:
        await run_in_threadpool(training.stop)
