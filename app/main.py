"""Assembles the app: settings, a lifespan that loads the models once, static files, routers."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits

from . import errors, openapi
from .compute_gate import ComputeGate
from .security import SharedServer
from .slow_clients import BodyDeadline
from .runtime import fix_mmap_threshold, limit_malloc_arenas
from .registry import ModelRegistry
from .assets import ASSETS, STATIC_DIR, WARM_AT_START, AssetFiles, PagesRevalidated
from .routers import analysis, docs, health, imports, models, neuron_pages, neurons, pages, sample, vendor
from .routers import corpora, groups, learn, runs, select, states, train_page
from .settings import Settings, get_settings
from .baselines import router as baselines
from .training import service as training


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    threadpool_limits(settings.blas_threads)                # process-wide, as BLAS's pool is
    if settings.malloc_arenas:
        limit_malloc_arenas(settings.malloc_arenas)
    if settings.malloc_mmap_threshold:
        fix_mmap_threshold(settings.malloc_mmap_threshold)
    ASSETS.warm(WARM_AT_START)             # gzip Plotly & co. before the first page asks for them
    app.state.registry = await run_in_threadpool(ModelRegistry.load, settings)
    app.state.compute_slots = ComputeGate(settings.max_concurrent_jobs, settings.max_waiting_jobs,
                                          settings.max_wait_seconds, settings.memory_budget)
    app.openapi_schema = None            # made again, now with the models' ids
    async with training.lifespan(app):   # the background training worker
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """The rnnscope app, configured by `settings` (default: the environment's)."""
    settings = settings or get_settings()
    app = FastAPI(title="rnnscope", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None,        # app/routers/docs.py: no CDN
                  description="Look inside character-level RNN, GRU and LSTM language models: what each "
                              "neuron does, how gradients flow through time, what the model writes.")
    app.state.settings = settings
    errors.install(app, settings.max_body_bytes)
    openapi.install(app)
    for module in (health, imports, models, analysis, sample, neurons, vendor, docs, pages, neuron_pages):
        app.include_router(module.router)
    app.include_router(learn.router)
    app.include_router(select.router)
    app.include_router(groups.router)
    app.include_router(states.router)
    app.include_router(states.page_router)
    app.include_router(baselines.router)
    app.include_router(baselines.page_router)
    for module in (corpora, runs, train_page):
        app.include_router(module.router)
    app.include_router(runs.capacity_router)
    for exc, handler in training.STORAGE_ERROR_HANDLERS.items():
        app.add_exception_handler(exc, handler)
    app.add_middleware(PagesRevalidated)                  # HTML: no-cache; other responses untouched
    app.add_middleware(BodyDeadline, timeout_seconds=settings.body_timeout_seconds,   # a trickled body: 408
                       min_bytes_per_second=settings.body_min_bytes_per_second)
    # Outermost, so Host, Origin and the owner are settled before anything else runs.
    app.add_middleware(SharedServer, allowed_hosts=settings.hosts(),
                       token=settings.token.get_secret_value() if settings.token else None)
    app.mount("/static", AssetFiles(directory=STATIC_DIR), name="static")    # after vendor's /static/vendor
    return app
