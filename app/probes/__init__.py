"""Finding and explaining neurons: concept probes, top contexts, clamping, saliency, the memory
horizon, memorisation; the /probe and /compare pages."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router, router.page_router))
