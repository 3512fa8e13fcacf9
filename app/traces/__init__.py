"""Looking inside a model while it reads a text: the trace of its internals, gradients through
time, gate saturation; the /explore, /gradients and /gates pages."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router, router.page_router))
