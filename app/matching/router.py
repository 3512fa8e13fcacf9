"""Select, find, match: the units on in stretches of text a person selected, and the other
places in the model's validation text (or a text sent) where a set of them is on together."""
from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request

from rnnscope.model.data import split
from rnnscope.model.match import match, rank_for_spans

from ..inference.checks import check_unit, readable_text
from ..inference.compute import every_unit, reading_bytes, rounded
from ..inference.costs import expected_seconds
from ..inference.corpus_index import training_corpus, val_fraction
from ..inference.deps import (ComputeSlots, LibraryDep, ModelDep, RenderedInThread, SettingsDep,
                              get_corpus_library)
from ..inference.lru import kept_on_app
from ..inference.readings import ActivationsDep, Readings, on_reading
from ..inference.registry import Entry
from ..inference.warming import Preparation
from ..probes.schemas import RankedNeuron
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid, vet_text
from .schemas import MatchFound, MatchRequest, MatchResponse, MatchUnit, SelectRequest, SelectResponse

router = APIRouter(prefix="/api/models/{model_id}", tags=["neurons"],
                   responses=BAD_BODY | NOT_FOUND | TOO_LARGE, route_class=RenderedInThread)

# Per model, its validation text's reading (every unit, float16: 614 MB for 100,000 characters of
# a 2x256 LSTM, in a file, app/inference/readings.py): reading it takes 6 to 8 s, matching in
# it a few milliseconds.
get_readings = kept_on_app("match_readings", lambda s: Readings(s.match_cache_models, s, np.float16))


ReadingsDep = Annotated[Readings, Depends(get_readings)]


def validation_text(entry: Entry, library, settings) -> tuple[str, list[str]] | None:
    """The stretch of the model's validation text a match searches, and the characters its
    vocabulary dropped; None when its corpus is not on this server."""
    corpus = training_corpus(entry, library)
    if corpus is None:
        return None
    _, val = split(library.text(corpus), val_fraction(entry.model))
    return vet_text(entry.model.vocab, val[: settings.max_match_chars], True, settings.max_match_chars,
                    "max_match_chars")


def prepare(state, entry: Entry, rank: int) -> list[Preparation]:
    """A model's validation reading ahead of its first match, for as many models as the cache
    keeps (match_cache_models; the first ones)."""
    readings = get_readings.on(state)
    if rank >= readings.size:
        return []
    found = validation_text(entry, get_corpus_library.on(state), state.settings)
    if found is None or not found[0] or readings.kept(entry, found[0]):
        return []
    text, m = found[0], entry.model
    return [Preparation(f"the validation reading of {entry.id} for matching",
                        expected_seconds(m.config, match_read=len(text)), readings.read_bytes(m, len(text), keep=True),
                        lambda pause: readings.prepare(state, entry, text, pause))]


@router.post("/select", response_model=SelectResponse)
def select(req: SelectRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
           cache: ActivationsDep) -> SelectResponse:
    """Rank every unit of every layer and quantity by how well it separates the selected
    spans from the characters around them (AUC), with its sign and threshold."""
    m = entry.model
    text, dropped = readable_text(req, m.vocab, settings, min_chars=2)
    spans = [(a, b) for a, b in req.spans]
    for i, (a, b) in enumerate(spans):
        if not a < b <= len(text):
            raise invalid(("body", "spans", i), f"span [{a}, {b}] is not a non-empty stretch of the "
                          f"{len(text)} characters read (start < end <= {len(text)})", "span_outside")
    # Every unit's values over the text (float32), and the ranking's copies of them.
    seconds = expected_seconds(m.config, **{"ranking" if cache.kept(entry, text) else "probe": len(text)})
    with slots.job(reading_bytes(m.config, len(text), 2 * every_unit(m.config)), "this selection", seconds):
        acts = cache.reading(request.app.state, entry, text)
        try:
            result = on_reading(request.app.state, rank_for_spans, m, acts, spans, req.top, req.context)
        except ValueError as e:
            raise invalid(("body", "spans"), f"{e}; select less of the text", "spans_cover_all") from None
        del acts
    neurons = [RankedNeuron(layer=r.layer, quantity=r.quantity, unit=r.unit, score=r.score,
                            strength=r.strength, sign=r.sign, threshold=r.threshold,
                            separation=r.separation, low=r.low, high=r.high) for r in result.ranked]
    return SelectResponse(text=text, inside=result.positives, compared=len(result.indicator),
                          units=result.total_units, neurons=neurons, dropped=dropped)


def unit_rows(units: list[MatchUnit], entry: Entry) -> list[int]:
    """Each unit's row in read_all's layout (layer, quantity, unit), or a 422 naming it."""
    cfg, cell = entry.model.config, entry.model.cell
    rows = []
    for i, u in enumerate(units):
        check_unit(entry.model, u.layer, u.quantity, u.unit, at=("body", "units", i))
        block = u.layer * len(cell.quantities) + cell.quantities.index(u.quantity)
        rows.append(block * cfg.hidden_size + u.unit)
    return rows


@router.post("/match", response_model=MatchResponse)
def match_units(req: MatchRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
                library: LibraryDep, readings: ReadingsDep) -> MatchResponse:
    """Where a set of units is on together for a stretch of about the selection's length in
    the model's validation text (or the text sent), best agreement first, each with a
    snippet and the units' values over it."""
    m = entry.model
    rows = unit_rows(req.units, entry)
    corpus = training_corpus(entry, library) if req.text is None else None
    if req.text is not None:
        text, dropped = vet_text(m.vocab, req.text, req.drop_unknown, settings.max_text_chars,
                                 "max_text_chars")
        source = "text"
    elif corpus is not None:
        text, dropped = validation_text(entry, library, settings)
        source = "validation"
    else:
        raise invalid(("body", "text"), "the model's training corpus is not available on this server, so "
                      "send a text to search instead", "corpus_unavailable")
    if not text:
        raise invalid(("body", "text"), "nothing is left to read", "too_short")
    thresholds = [u.threshold for u in req.units]
    signs = [u.sign for u in req.units]
    # Every unit's values over the text as float16: the validation reading is kept for the
    # next match, in a file of which a match reads only its units' rows.
    keep = source == "validation"
    kept = keep and readings.kept(entry, text)
    seconds = expected_seconds(m.config, **{"match" if kept else "match_read": len(text)})
    nbytes = reading_bytes(m.config, 0, 0) if kept else readings.read_bytes(m, len(text), keep)
    with slots.job(nbytes + len(text) * len(rows) * 2, "this match", seconds):
        if keep:
            acts = readings.reading(request.app.state, entry, text)
        else:
            acts = readings.read(request.app.state, m, text, keep=False)
        values = np.asarray(acts.values[rows])                                   # (M, T) float16
        del acts
        found = match(values, thresholds, signs, req.length, req.top, req.tolerance, req.quorum, req.gap)
        on = ((values - np.array(thresholds)[:, None]) * np.array(signs)[:, None] > 0).mean(axis=1)
    w = req.width
    matches = []
    for f in found:
        a, b = max(0, f.start - w), min(len(text), f.end + w)
        matches.append(MatchFound(start=f.start, end=f.end, score=f.score, snippet_start=a, snippet=text[a:b],
                                  values=rounded(values[:, a:b], 3)))
    return MatchResponse(source=source, corpus=None if corpus is None else corpus.name, chars=len(text),
                         on=[float(x) for x in on], matches=matches,
                         dropped=dropped if source == "text" else [])
