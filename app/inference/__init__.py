"""The inference layer the model views share: the registry of models, the compute gate and
its memory budget, request batching, encodings for the wire, the corpus library, caches,
the regex worker pool, the checks every view makes of its request, their dependencies, and the
warmer that prepares the views' caches ahead of requests."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from rnnscope.model.layers import set_blas_threads

from ..feature import Feature
from ..settings import Settings
from . import pattern_pool, warming
from .compute_gate import ComputeGate
from .lru import close_kept
from .registry import ModelRegistry
from .runtime import fix_mmap_threshold, limit_malloc_arenas


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The process's limits, the models loaded once, the compute gate and the regex workers."""
    settings: Settings = app.state.settings
    set_blas_threads(settings.blas_threads)                 # process-wide, as BLAS's pool is
    if settings.malloc_arenas:
        limit_malloc_arenas(settings.malloc_arenas)
    if settings.malloc_mmap_threshold:
        fix_mmap_threshold(settings.malloc_mmap_threshold)
    app.state.registry = await run_in_threadpool(ModelRegistry.load, settings)
    app.state.compute_slots = ComputeGate(settings.max_concurrent_jobs, settings.max_waiting_jobs,
                                          settings.max_wait_seconds, settings.memory_budget,
                                          settings.max_expected_wait_seconds)
    app.openapi_schema = None            # made again, now with the models' ids
    try:
        async with pattern_pool.lifespan(app):
            yield
    finally:
        close_kept(app.state)


feature = Feature(lifespan=lifespan)
# Listed last in app/main.py: it starts once every model is registered, and stops first.
warming_feature = Feature(lifespan=warming.lifespan)
