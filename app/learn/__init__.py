"""The guided path through the RNN lecture: the /learn page and its chapters' experiments."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router, router.page_router))
