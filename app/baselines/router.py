"""POST /api/models/{id}/errors and the /errors page: thin; the work is model/ngram.py,
model/errors.py and service.py."""
from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from rnnscope.model import errors as analyses
from rnnscope.model.attribution import losses

from ..inference.compute import encode_array
from ..inference.costs import NGRAM_SECONDS_PER_CHAR, expected_seconds
from ..inference.deps import ComputeSlots, LibraryDep, ModelDep, RenderedInThread, SettingsDep
from ..inference.lru import kept_on_app
from ..inference.worker_pool import run_pure
from ..web import pages
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, finite, invalid, vet_text
from .schemas import Breakdown, Category, DistanceBin, ErrorsRequest, ErrorsResponse
from .service import NGramCache, cost_bytes, model_texts

router = APIRouter(prefix="/api/models/{model_id}", tags=["analysis"],
                   responses=BAD_BODY | NOT_FOUND | TOO_LARGE, route_class=RenderedInThread)
page_router = APIRouter(tags=["pages"])

CacheDep = Annotated[NGramCache, Depends(kept_on_app("ngram_cache", NGramCache))]


@router.post("/errors", response_model=ErrorsResponse)
def errors(req: ErrorsRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
           library: LibraryDep, cache: CacheDep) -> ErrorsResponse:
    """Where the model beats counting: its loss per character against the best n-gram model
    (interpolated Kneser-Ney, orders 1..max_order, counted on the model's own training text),
    how often it wins on closing brackets and quotes by their distance to the opener, and its
    errors peeled by the oracles of Karpathy, Johnson & Fei-Fei (2015), sec. 4.3-4.4."""
    m = entry.model
    texts = model_texts(entry, library)
    if texts is None:
        raise invalid(("path", "model_id"), "the n-grams count the model's own training text, and this model's "
                      "corpus is not on this server (an import, or a run whose corpus was deleted)",
                      "corpus_missing")
    if req.text is None:
        text, dropped, source = texts.validation[:settings.max_errors_chars], [], "validation"
    else:
        text, dropped = vet_text(m.vocab, req.text, req.drop_unknown, settings.max_errors_chars, "max_errors_chars")
        source = "request"
    if len(text) < 2:
        raise invalid(("body", "text"), "the text needs at least two characters", "too_short", min_length=2)
    persist = source == "validation"
    counted = cache.counted(texts, text, req.max_order, persist)
    counting = 0.0 if counted else NGRAM_SECONDS_PER_CHAR * len(texts.train)
    seconds = expected_seconds(m.config, counting, errors=len(text))
    with slots.job(cost_bytes(m, len(texts.train), len(text), req.max_order), "an error analysis", seconds):
        ngram = cache.losses(texts, m, text, req.max_order, persist=persist)
        model_loss = run_pure(request.app.state, losses, m, m.encode(text))     # a chunk at a time: bounded memory
        train_words = cache.train_words(texts)
    comparison = analyses.compare(model_loss, ngram.loss)
    bins = analyses.long_range(text, comparison.difference)
    far_share, far_closers = analyses.advantage_beyond(text, comparison.difference, 20)
    found = analyses.breakdown(text, model_loss, ngram.loss, train_words)
    return ErrorsResponse(
        text=text, source=source, corpus=texts.corpus_name, train_chars=len(texts.train),
        best_order=comparison.best_order, model_mean=comparison.model_mean, ngram_means=comparison.ngram_means,
        model_loss=encode_array(model_loss.astype(np.float32), "float16"),
        ngram_loss=encode_array(ngram.loss[comparison.best_order - 1], "float16"),
        long_range=[DistanceBin(low=b.low, high=b.high, count=b.count, model_wins=finite(b.model_wins),
                                mean_advantage=finite(b.mean_advantage)) for b in bins],
        far_share=finite(far_share), far_closers=finite(far_closers),
        breakdown=Breakdown(errors=found.errors, characters=found.characters,
                            categories=[Category(name=n, count=c, meaning=w) for n, c, w in found.categories]),
        dropped=dropped)


@page_router.get("/errors", response_class=HTMLResponse, include_in_schema=False)
def errors_page(request: Request):
    """The model against n-gram counting, and what its errors are."""
    return pages.render(request, "errors", ("model", "text"))
