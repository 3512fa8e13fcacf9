"""The compute workers' place in the app's life (app/inference/workers.py, ray_workers.py): the
pool is made once the models are loaded and the training executor has joined its cluster, and
closed, every worker process and replica stopped, when the app stops."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from ..feature import Feature
from .workers import WorkerPool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """RNNSCOPE_COMPUTE_WORKERS processes and, on a Ray cluster (RNNSCOPE_EXECUTOR=ray, after
    the training feature has joined it), RNNSCOPE_RAY_COMPUTE_REPLICAS replicas; started before
    the first request and stopped after the last. The gate's slots grow by the replicas."""
    settings = app.state.settings
    remote = []
    if settings.executor == "ray" and settings.ray_compute_replicas != 0:
        from . import ray_workers
        remote = await run_in_threadpool(ray_workers.replicas, settings.ray_compute_replicas)
        app.state.compute_slots.slots += len(remote)
    size = settings.compute_workers
    if size is None:                 # one per compute slot, at most one per core: more would idle
        size = min(settings.max_concurrent_jobs, len(os.sched_getaffinity(0)))
    app.state.compute_pool = (await run_in_threadpool(WorkerPool, size, remote, app.state.compute_slots)
                              if size or remote else None)
    try:
        yield
    finally:
        if app.state.compute_pool is not None:
            await run_in_threadpool(app.state.compute_pool.close)


def run_pure(state, function: Callable, model, *arguments) -> object:
    """function(model, *arguments) in a compute worker when the app has them (retried once on
    another if its worker dies), else in the calling thread: the same function, so the same
    answer. `function` is pure and defined at a module's top level (it travels by name); the
    caller holds the compute slot and its bytes."""
    pool = getattr(state, "compute_pool", None)
    return function(model, *arguments) if pool is None else pool.run(function, model, *arguments)


def run_local(state, function: Callable, model, *arguments) -> object:
    """As run_pure, in a worker process on this machine (not a Ray replica elsewhere): for
    work on a file this process wrote."""
    pool = getattr(state, "compute_pool", None)
    if pool is None or pool.size == 0:
        return function(model, *arguments)
    return pool.run(function, model, *arguments, local=True)


feature = Feature(lifespan=lifespan)
