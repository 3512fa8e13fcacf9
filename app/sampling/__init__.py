"""Sampling: what a model writes, every character with its probability; the /sample page."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router, router.page_router))
