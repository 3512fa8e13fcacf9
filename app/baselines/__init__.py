"""What the network knows that counting cannot: n-gram baselines of a model's own training
text and the error analysis of Karpathy, Johnson & Fei-Fei (2015) over them (model/ngram.py,
model/errors.py). router: the REST route and the /errors page; schemas: their bodies;
service: finding the texts, the budget and the cache."""
from __future__ import annotations

from ..feature import Feature
from . import router

feature = Feature(routers=(router.router, router.page_router))
