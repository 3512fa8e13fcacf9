"""Assembles the app: the web layer around every feature, then each feature the same way: its
routers included, its lifespan entered (in this order: the models before training, the store
before the imports it restores, the warmer last), its error handlers added, and what its views
prepare ahead of requests collected for the warmer."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from . import baselines, groups, inference, learn, matching, models, probes, sampling, states, traces, training
from . import web
from .inference import worker_pool as compute_workers
from .settings import Settings, get_settings

FEATURES = (web.feature, inference.feature, training.feature, compute_workers.feature, models.feature, traces.feature, sampling.feature,
            probes.feature, matching.feature, groups.feature, states.feature, learn.feature, baselines.feature,
            inference.warming_feature)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for feature in FEATURES:
            if feature.lifespan is not None:
                await stack.enter_async_context(feature.lifespan(app))
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """The rnnscope app, configured by `settings` (default: the environment's)."""
    settings = settings or get_settings()
    app = FastAPI(title="rnnscope", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None,        # web/docs.py: no CDN
                  description="Look inside character-level RNN, GRU and LSTM language models: what each "
                              "neuron does, how gradients flow through time, what the model writes.")
    app.state.settings = settings
    web.install(app, settings)
    for feature in FEATURES:
        for router in feature.routers:
            app.include_router(router)
        for exc, handler in feature.exception_handlers.items():
            app.add_exception_handler(exc, handler)
    app.state.prepare_steps = tuple(step for feature in FEATURES for step in feature.prepare)
    web.mount_static(app)
    return app
