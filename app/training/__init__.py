"""Training from the browser, top-down: each module imports only those listed after it.

    router, corpora_router   the routes: runs, training capacity, the /train page; corpora
    corpus_uploads  storing an uploaded corpus: quotas, the text stored once by content
    service         the Training service the routes share, its dependency and lifespan
    worker          the scheduler and a driver per running run: the store's only writer
    executors       where attempts run: this process's threads, or Ray (ray_executor)
    execution       what an executor promises, and how it fails
    corpora         uploaded corpora: ingest, preflight, estimate
    attempt         one attempt at a run, pure: train() in, messages out
    store, schemas  the SQLite store and the data directory; the API's training models
"""
from __future__ import annotations

from ..feature import Feature
from . import corpora_router, router, service

feature = Feature(routers=(corpora_router.router, router.router, router.capacity_router, router.page_router),
                  lifespan=service.lifespan, exception_handlers=service.STORAGE_ERROR_HANDLERS)
