"""Neurons in groups: a layer's units factorised into groups that act together."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router,))
