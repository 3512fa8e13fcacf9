"""The models on offer: the listing, one model's detail and passages, the home page, and models
imported from PyTorch (imports.py), restored at start-up."""
from __future__ import annotations

from ..feature import Feature
from . import router
from .imports import restored

# The import routes first: POST /api/models/import must not reach GET /api/models/{model_id}.
feature = Feature(routers=(router.import_router, router.router, router.page_router), lifespan=restored)
