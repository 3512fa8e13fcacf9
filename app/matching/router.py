"""Select, find, match: the units on in stretches of text a person selected, and the other
places in the model's validation text (or a text sent) where a set of them is on together."""
from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request

from rnnscope.model.data import split
from rnnscope.model.match import match, rank_for_spans, read_piece, unit_layout
from rnnscope.model.probes import Activations

from ..inference.checks import check_unit, readable_text
from ..inference.compute import CHUNK, every_unit, reading_bytes, rounded
from ..inference.costs import expected_seconds
from ..inference.corpus_index import training_corpus, val_fraction
from ..inference.deps import (ActivationsDep, ComputeSlots, LibraryDep, ModelDep, RenderedInThread, SettingsDep,
                              get_corpus_library)
from ..inference.lru import LRU, kept_on_app
from ..inference.registry import Entry
from ..inference.reading_files import DiskFull, ReadingFiles
from ..inference.warming import Preparation
from ..inference.worker_pool import run_pure
from ..probes.schemas import RankedNeuron
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid, vet_text
from .schemas import MatchFound, MatchRequest, MatchResponse, MatchUnit, SelectRequest, SelectResponse

router = APIRouter(prefix="/api/models/{model_id}", tags=["neurons"],
                   responses=BAD_BODY | NOT_FOUND | TOO_LARGE, route_class=RenderedInThread)

# Characters of a reading computed at a time: four of model.read's chunks, so the values are
# bit for bit the whole read's; ~1 s of a 2x256 LSTM and 50 MB of float16, so the warmer gives
# way to a waiting request within half a second and a piece is a modest message to a worker.
READING_PIECE = 4 * CHUNK


class ValidationReadings(LRU):
    """Per model, its validation text and every unit's value over it (float16), kept in a
    memory-mapped file (app/inference/reading_files.py), least recently used dropped and its
    file deleted first: reading 100,000 characters of a 2x256 LSTM takes 6 to 8 s, matching
    the reading a few milliseconds. The reading is computed a piece at a time where compute
    runs (a worker process, a Ray replica or this thread)."""

    def __init__(self, settings):
        super().__init__(settings.match_cache_models)
        self.files = ReadingFiles(settings.data_dir / "cache", settings.min_free_bytes)
        self._reading = threading.Lock()        # one cold read at a time: two would cost twice the work

    def reading(self, state, entry: Entry, text: str) -> Activations:
        # id(model): a training run's model keeps its id while its weights are replaced.
        key = (entry.id, id(entry.model))
        found = self._kept(key, text)
        if found is not None:                   # without waiting behind another model's first read
            return found
        with self._reading:
            found = self._kept(key, text)       # read while this request waited
            if found is not None:
                return found
            self.make_room()                    # first: the old reading's file goes before the new is written
            acts = self.read(state, entry.model, text, keep=True)
            self.put(key, (text, acts))
            return acts

    def prepare(self, state, entry: Entry, text: str, pause: Callable[[], None]) -> None:
        """As reading(), pausing for waiting requests between pieces, and without the one-read
        lock: a read paused for a request would hold it against that request."""
        key = (entry.id, id(entry.model))
        if self._kept(key, text) is None:
            self.make_room()
            self.put(key, (text, self.read(state, entry.model, text, keep=True, pause=pause)))

    def read(self, state, model, text: str, keep: bool, pause: Callable[[], None] = lambda: None) -> Activations:
        """Every unit's value over `text`, into a file when it is to be kept and the disk has
        room (a 507 if the disk fills meanwhile), else in memory."""
        ids = model.encode(text)
        rows, T = every_unit(model.config), len(ids)

        def pieces():
            carried = None
            for s in range(0, T, READING_PIECE):
                values, carried = run_pure(state, read_piece, model, ids[s:s + READING_PIECE], carried)
                yield s, values
                pause()

        if keep and self.files.room_for(rows * T * 2):
            try:
                values = self.files.write(rows, T, pieces())
            except DiskFull as e:
                raise HTTPException(507, f"{e.strerror}; the server's disk is full, so ask whoever runs it to "
                                         "free space, or send a text to search instead") from None
        else:
            values = np.empty((rows, T), np.float16)
            for s, piece in pieces():
                values[:, s:s + piece.shape[1]] = piece
        return Activations(values, *unit_layout(model))

    def read_bytes(self, model, chars: int, keep: bool) -> int:
        """A read's peak bytes: in a file, a piece in the worker and its copy here; else all of it."""
        cfg, units = model.config, every_unit(model.config)
        if keep and self.files.room_for(units * chars * 2):
            piece = min(chars, READING_PIECE)
            return reading_bytes(cfg, piece, units, itemsize=2) + 2 * piece * units * 2
        return reading_bytes(cfg, chars, units, itemsize=2) + min(chars, READING_PIECE) * units * 2

    def kept(self, entry: Entry, text: str) -> bool:
        """Whether the model's reading of `text` is kept (a match in it takes milliseconds)."""
        return self._kept((entry.id, id(entry.model)), text) is not None

    def _kept(self, key: tuple, text: str) -> Activations | None:
        found = self.get(key)
        return found[1] if found is not None and found[0] == text else None

    def dropped(self, key, value) -> None:
        ReadingFiles.remove(value[1].values)


get_readings = kept_on_app("match_readings", ValidationReadings)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The readings' files are this process's: removed when the app stops."""
    try:
        yield
    finally:
        readings = getattr(app.state, "match_readings", None)
        if readings is not None:
            readings.files.close()


ReadingsDep = Annotated[ValidationReadings, Depends(get_readings)]


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
def select(req: SelectRequest, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
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
        acts = cache.activations(entry, text)
        try:
            result = rank_for_spans(acts, spans, req.top, req.context)
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
