"""State space: a text's path through a layer's hidden states, and fixed points; the /states page."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router, router.page_router), prepare=(router.prepare,))
