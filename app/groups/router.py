"""Neurons in groups: one layer's units factorised into K groups over the model's validation
text (model/groups.py), each with its heaviest units and its track over a passage."""
from __future__ import annotations

import hashlib
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from rnnscope.model.data import split
from rnnscope.model.groups import groups_of, tracks_of

from ..inference.checks import check_unit
from ..inference.compute import reading_bytes
from ..inference.costs import expected_seconds
from ..inference.corpus_index import training_corpus, val_fraction
from ..inference.deps import ComputeSlots, LibraryDep, ModelDep, RenderedInThread, SettingsDep
from ..inference.lru import LRU, kept_on_app
from ..inference.registry import Entry
from ..inference.worker_pool import run_pure
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid, vet_text
from .schemas import Group, GroupUnit, GroupsRequest, GroupsResponse

router = APIRouter(prefix="/api/models/{model_id}", tags=["neurons"],
                   responses=BAD_BODY | NOT_FOUND | TOO_LARGE, route_class=RenderedInThread)


# Factorisations per (model, layer, quantity, K, text fitted), least recently used dropped
# first: reading and fitting take seconds, a kept one answers at once.
get_groups_cache = kept_on_app("groups_cache", lambda s: LRU(s.groups_cache_size))


GroupsCacheDep = Annotated[LRU, Depends(get_groups_cache)]


def check_layer(req: GroupsRequest, entry: Entry) -> None:
    cfg = entry.model.config
    check_unit(entry.model, req.layer, req.quantity)
    if req.components > cfg.hidden_size:
        raise invalid(("body", "components"), f"{req.components} groups of {cfg.hidden_size} units: ask for at "
                      f"most {cfg.hidden_size}", "less_than_equal", le=cfg.hidden_size)


@router.post("/groups", response_model=GroupsResponse)
def groups(req: GroupsRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
           library: LibraryDep, cache: GroupsCacheDep) -> GroupsResponse:
    """Factorise a layer's units into groups by NMF over the model's validation text: each
    group's heaviest units and its track over the passage sent (or a validation passage)."""
    m = entry.model
    check_layer(req, entry)
    passage, dropped = (None, [])
    if req.text is not None:
        passage, dropped = vet_text(m.vocab, req.text, req.drop_unknown, settings.max_text_chars, "max_text_chars")
        if not passage:
            raise invalid(("body", "text"), "nothing is left to read", "too_short")
    corpus = training_corpus(entry, library)
    if corpus is not None:
        _, val = split(library.text(corpus), val_fraction(m))
        fitted, _ = vet_text(m.vocab, val[: settings.max_groups_chars], True, settings.max_groups_chars,
                             "max_groups_chars")
        source, text_key = "validation", None
    elif passage is not None:
        fitted, source = passage[: settings.max_groups_chars], "text"
        text_key = hashlib.sha256(fitted.encode("utf-8", "surrogatepass")).hexdigest()
    else:
        raise invalid(("body", "text"), "the model's training corpus is not available on this server, so "
                      "send a text to group the units over instead", "corpus_unavailable")
    if len(fitted) < req.components:
        raise invalid(("body", "components"), f"{req.components} groups need at least as many characters to "
                      f"fit on; there are {len(fitted)}", "too_short")
    if passage is None:
        passage = fitted[: req.shown]
    # id(model): a training run's model keeps its id while its weights are replaced.
    key = (entry.id, id(m), req.layer, req.quantity, req.components, text_key)
    # One layer's quantity over the fitted text (float32), and NMF's factors and copies of it.
    # Measured at 4 groups; NMF's iterations grow with the groups.
    fit_chars = 0 if cache.get(key) is not None else len(fitted) * max(req.components, 4) // 4
    track_chars = 0 if fitted.startswith(passage) else len(passage)
    seconds = expected_seconds(m.config, groups_fit=fit_chars, states=track_chars)
    nbytes = reading_bytes(m.config, len(fitted), 4 * m.config.hidden_size)
    with slots.job(nbytes, "this factorisation", seconds):
        found = cache.get(key)
        cached = found is not None
        if found is None:
            try:
                found = run_pure(request.app.state, groups_of, m, m.encode(fitted), req.layer, req.quantity,
                                 req.components)
            except ValueError as e:
                raise invalid(("body", "text"), str(e), "constant") from None
            cache.put(key, found)
        if fitted.startswith(passage):
            tracks = found.tracks[: len(passage)]
        else:
            tracks = run_pure(request.app.state, tracks_of, m, found, m.encode(passage), req.layer, req.quantity)
    high = np.percentile(found.tracks, 99, axis=0)
    out = [Group(index=k, share=float(found.share[k]),
                 units=[GroupUnit(unit=u, weight=round(w, 4)) for u, w in found.heaviest(k, req.top)],
                 track=np.round(tracks[:, k].astype(np.float64), 3).tolist(), high=float(high[k]))
           for k in range(req.components)]
    return GroupsResponse(source=source, corpus=None if corpus is None else corpus.name, chars=len(fitted),
                          layer=req.layer, quantity=req.quantity, error=found.error,
                          explained=1.0 - found.error ** 2, cached=cached, text=passage, groups=out,
                          dropped=dropped)
