"""Select and match: the units that follow a selected span, and where else they fire."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router,), prepare=(router.prepare,))
