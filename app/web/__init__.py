"""The web layer every feature shares: security (Host, Origin, owners, the admin token), errors
and their bodies, the OpenAPI document, slow-client deadlines, uploads, the page frame
(pages.py), static assets and vendored scripts, the docs pages and /healthz."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from ..feature import Feature
from . import docs, errors, health, openapi, vendor
from .assets import ASSETS, STATIC_DIR, WARM_AT_START, AssetFiles, PagesRevalidated
from .security import SharedServer, default_allowed_hosts
from .slow_clients import BodyDeadline

if TYPE_CHECKING:
    from ..settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """What wraps every feature: error bodies, the OpenAPI document's settings, caching of pages,
    body deadlines and, outermost, the shared-server checks. Call before including features."""
    errors.install(app, settings.max_body_bytes)
    openapi.install(app)
    app.add_middleware(PagesRevalidated)                  # HTML: no-cache; other responses untouched
    app.add_middleware(BodyDeadline, timeout_seconds=settings.body_timeout_seconds,   # a trickled body: 408
                       min_bytes_per_second=settings.body_min_bytes_per_second)
    # Outermost, so Host, Origin and the owner are settled before anything else runs. The hosts
    # served: RNNSCOPE_ALLOWED_HOSTS, or the default for the bind address.
    hosts = list(settings.allowed_hosts) or default_allowed_hosts(settings.host)
    app.add_middleware(SharedServer, allowed_hosts=hosts,
                       token=settings.token.get_secret_value() if settings.token else None)


def mount_static(app: FastAPI) -> None:
    """/static, after every router: the vendor router's /static/vendor routes must match first."""
    app.mount("/static", AssetFiles(directory=STATIC_DIR), name="static")


@asynccontextmanager
async def warm_assets(app: FastAPI) -> AsyncIterator[None]:
    """gzip Plotly & co. before the first page asks for them."""
    ASSETS.warm(WARM_AT_START)
    yield


feature = Feature(routers=(health.router, docs.router, vendor.router), lifespan=warm_assets)
