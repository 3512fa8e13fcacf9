"""State space and fixed points: a text's trajectory of one layer's h (or c) in principal
components fitted on the model's validation text, and the fixed points of the layer's update
with one character held constant, drawn in the same projection (model/dynamics.py)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from rnnscope.model.data import split
from rnnscope.model.dynamics import (CHAR_CLASSES, PCA, LayerReading, char_class, fixed_points_for, held_input,
                                     layer_input, layer_pca, read_layer, read_layer_piece,
                                     reading_width, sample_starts)
from rnnscope.model.probes import CONCEPTS

from ..inference.checks import check_unit, readable_text
from ..inference.compute import FLOAT, reading_bytes
from ..inference.corpus_index import training_corpus
from ..inference.costs import UNKNOWN_SECONDS, expected_seconds
from ..inference.deps import ComputeSlots, LibraryDep, ModelDep, RenderedInThread, SettingsDep, get_corpus_library
from ..inference.lru import LRU, kept_on_app
from ..inference.registry import Entry
from ..inference.reading_files import ReadingFiles
from ..inference.readings import READING_PIECE, on_reading, put_together, read_in_pieces
from ..inference.warming import Preparation
from ..inference.worker_pool import run_pure
from ..settings import Settings
from ..web import pages
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid, vet_text
from .schemas import FixedPointOut, FixedPointsRequest, FixedPointsResponse, StatesRequest, StatesResponse

router = APIRouter(prefix="/api/models/{model_id}", tags=["neurons"],
                   responses=BAD_BODY | NOT_FOUND | TOO_LARGE, route_class=RenderedInThread)
page_router = APIRouter(tags=["pages"])

EIGENVALUES_SHOWN = 6
FLOAT64 = np.dtype(np.float64).itemsize
# A reading's PCA fits: one per quantity (h, c) and number of components (2, 3).
PCA_KINDS = 4


class FitReadings(LRU):
    """Per (model, layer, fitted text) its reading and a PCA per (quantity, components), least
    recently used dropped first: the page asks for one projection again and again. Both are
    made once for everyone: a request that wants what another is making waits for it (lru.py).

    A reading (20,000 characters of a 2x256 LSTM's layer: 41-61 MB) is kept in a memory-mapped
    file (reading_files.py) when the disk has room, and the work that touches all of it (the
    PCA fits, a held input's mean) runs in a local worker that maps the file; this process
    reads only the few states a fixed-point search starts from."""

    def __init__(self, size: int, settings: Settings):
        super().__init__(size)
        self.files = ReadingFiles(settings.data_dir / "cache", settings.min_free_bytes, np.float32)

    def reading(self, state, entry: Entry, layer: int, text: str,
                pause: Callable[[], None] | None = None) -> tuple[LayerReading, LRU]:
        """Kept, or read a piece at a time where compute runs (`pause` between pieces: the
        warmer's). Requests asking for a reading another request is reading wait for it."""
        def read() -> tuple[LayerReading, LRU]:
            m = entry.model
            ids = m.encode(text)
            pieces = read_in_pieces(state, read_layer_piece, m, ids, pause or (lambda: None), layer)
            shape = (len(ids), reading_width(m, layer))
            values = put_together(self.files, shape, ((s, piece.values) for s, piece in pieces), 0,
                                  self.files.room_for_values(shape[0] * shape[1]))
            reading = LayerReading(ids, values, m.config.hidden_size, m.cell.has_cell_state, layer > 0)
            self.files.owned_by(reading, values)
            return reading, LRU(PCA_KINDS)
        # The warmer's read pauses while requests wait, so none may wait for it (lru.py).
        return self.get_or_make(self._key(entry, layer, text), read, shared=pause is None)

    def wait_for_fit(self, entry: Entry, layer: int, text: str, quantity: str, components: int) -> None:
        """Return once no request is reading this layer of `text` or fitting the PCA asked for:
        called before a request takes its compute slot, so that it neither reads nor fits a
        second time, nor holds a slot idle while it waits."""
        key = self._key(entry, layer, text)
        self.wait_if_making(key)
        found = self.get(key)
        if found is not None:
            found[1].wait_if_making((quantity, components))

    def fit_chars(self, entry: Entry, layer: int, text: str) -> int:
        """Characters a request must read to fit on `text`: none once its reading is kept."""
        return 0 if self.get(self._key(entry, layer, text)) is not None else len(text)

    def fit_bytes(self, entry: Entry, layer: int, chars: int) -> int:
        """This process's peak bytes for reading `chars` characters of a layer: a piece arriving
        from where it was computed, and beside it the piece's reading when it goes to a file,
        else all of it."""
        m = entry.model
        width = reading_width(m, layer)
        piece = min(chars, READING_PIECE)
        kept = piece if chars and self.files.room_for_values(chars * width) else chars
        return reading_bytes(m.config, kept, width) + piece * width * FLOAT

    def pca_bytes(self, entry: Entry, layer: int, text: str, quantity: str, components: int) -> int:
        """A PCA fit's peak (layer_pca): its quantity over `text` as float64 and centred, two
        (T, H) copies; none once fitted."""
        found = self.get(self._key(entry, layer, text))
        if found is not None and (quantity, components) in found[1]:
            return 0
        return 2 * len(text) * entry.model.config.hidden_size * FLOAT64

    def pca(self, state, entry: Entry, found: tuple[LayerReading, LRU], quantity: str, components: int) -> PCA:
        # Shared even with the warmer: a fit, unlike a reading, never pauses half-way.
        reading, fits = found
        return fits.get_or_make((quantity, components),
                                lambda: on_reading(state, layer_pca, entry.model, reading, quantity, components))

    def close(self) -> None:
        """The app stops: every reading's file goes."""
        self.files.close()

    @staticmethod
    def _key(entry: Entry, layer: int, text: str) -> tuple:
        # id(model): a training run's model keeps its id while its weights are replaced.
        return entry.id, id(entry.model), layer, hash(text), len(text)


get_fit_readings = kept_on_app("state_readings", lambda s: FitReadings(s.state_cache_readings, s))

# What the page asks first (static/js/states.js): layer 0's h in 2 components.
FIRST_VIEW = (0, "h", 2)


def prepare(state, entry: Entry, rank: int) -> list[Preparation]:
    """The page's first view of a model fitted ahead of it: its validation text's reading of
    layer 0 and its PCA, for as many models as the cache keeps readings (the first ones)."""
    fits = get_fit_readings.on(state)
    layer, quantity, components = FIRST_VIEW
    if rank >= fits.size:
        return []
    fitted = fit_text(entry, get_corpus_library.on(state), state.settings, None)
    if fitted is None or not fits.fit_chars(entry, layer, fitted[0]):
        return []                       # no validation text here, or it is fitted already
    text, m = fitted[0], entry.model

    def run(pause) -> None:
        fits.pca(state, entry, fits.reading(state, entry, layer, text, pause), quantity, components)

    nbytes = fits.fit_bytes(entry, layer, len(text)) + fits.pca_bytes(entry, layer, text, quantity, components)
    return [Preparation(f"the state-space fit of {entry.id}'s layer {layer}",
                        expected_seconds(m.config, states_fit=len(text)), nbytes, run)]


FitDep = Annotated[FitReadings, Depends(get_fit_readings)]

# A step map's batch holds about this many (batch, gate blocks x H) float64 arrays at once
# (pre-activations, gates, their derivatives, the vector-Jacobian product's terms).
STEP_MAP_ARRAYS = 8


def fixed_point_bytes(model, starts: int) -> int:
    """A fixed-point search's peak (model/dynamics.py find_fixed_points, in float64): the
    layer's weights, and a batch of the larger of the starts and one Jacobian's S unit
    vectors (S the state's size), at most four gate blocks of H a state."""
    H, V = model.config.hidden_size, model.config.vocab_size
    S = H * (2 if model.cell.has_cell_state else 1)
    weights = 4 * H * (H + max(H, V)) * FLOAT64
    return weights + STEP_MAP_ARRAYS * max(starts, S) * 4 * H * FLOAT64


def check_layer(entry: Entry, layer: int, quantity: str) -> None:
    cell = entry.model.cell
    check_unit(entry.model, layer)
    if quantity == "c" and not cell.has_cell_state:
        raise invalid(("body", "quantity"), f"a {cell.name} has no cell state c; project h",
                      "not_available", available=["h"])


def fit_text(entry: Entry, library, settings: Settings, fallback: str | None):
    """The text the PCA is fitted on: the first max_state_fit_chars of the model's validation
    text, or `fallback` (the text sent) when the corpus is not on this server.
    Returns (text, source, corpus name) or None when there is neither."""
    corpus = training_corpus(entry, library)
    if corpus is not None:
        config = entry.model.train_config if isinstance(entry.model.train_config, dict) else {}
        _, val = split(library.text(corpus), float(config.get("val_fraction", 0.1)))
        text, _ = vet_text(entry.model.vocab, val[: settings.max_state_fit_chars], True,
                           settings.max_state_fit_chars, "max_state_fit_chars")
        if len(text) >= 2:
            return text, "validation", corpus.name
    if fallback is None:
        return None
    return fallback[: settings.max_state_fit_chars], "text", None


@router.post("/states", response_model=StatesResponse)
def states(req: StatesRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
           library: LibraryDep, fits: FitDep) -> StatesResponse:
    """A text's trajectory of one layer's h (or c), projected on the top principal components
    of that layer's states over the model's validation text, with a colour per step."""
    m = entry.model
    check_layer(entry, req.layer, req.quantity)
    text, dropped = readable_text(req, m.vocab, settings, min_chars=2)
    fit_source, source, corpus = fit_text(entry, library, settings, text)
    if req.colour_by == "char_class":
        description, graded, colour, classes = "the class of the character just read", False, char_class(text), \
            list(CHAR_CLASSES)
    else:
        concept = CONCEPTS[req.colour_by]
        description, graded, colour, classes = concept.description, concept.graded, concept.indicator(text), None
    # The fitted text's reading (unless kept), and the trajectory's: one layer's h, c and input.
    fits.wait_for_fit(entry, req.layer, fit_source, req.quantity, req.components)
    fit_chars = fits.fit_chars(entry, req.layer, fit_source)
    nbytes = (fits.fit_bytes(entry, req.layer, fit_chars)
              + fits.pca_bytes(entry, req.layer, fit_source, req.quantity, req.components)
              + reading_bytes(m.config, len(text), reading_width(m, req.layer)))
    seconds = expected_seconds(m.config, states_fit=fit_chars, states=len(text))
    with slots.job(nbytes, "this state-space request", seconds):
        found = fits.reading(request.app.state, entry, req.layer, fit_source)
        pca = fits.pca(request.app.state, entry, found, req.quantity, req.components)
        trajectory = run_pure(request.app.state, read_layer, m, m.encode(text), req.layer).quantity(req.quantity)
        coords = pca.project(trajectory)
    return StatesResponse(text=text, layer=req.layer, quantity=req.quantity, fitted_on=source, corpus=corpus,
                          fit_chars=len(fit_source), explained=[round(float(e), 5) for e in pca.explained],
                          coords=np.round(coords, 4).tolist(), colour_by=req.colour_by, description=description,
                          graded=graded, colour=np.round(colour.astype(float), 4).tolist(), classes=classes,
                          dropped=dropped)


@router.post("/fixed-points", response_model=FixedPointsResponse)
def fixed_points(req: FixedPointsRequest, request: Request, entry: ModelDep, settings: SettingsDep,
                 slots: ComputeSlots, library: LibraryDep, fits: FitDep) -> FixedPointsResponse:
    """Fixed points of one layer's update with one input character held constant, found from
    states along the validation text's trajectory, classified by the Jacobian's eigenvalues
    and given in the /states projection."""
    m = entry.model
    check_layer(entry, req.layer, req.quantity)
    if req.char not in m.vocab.index:
        raise invalid(("body", "char"), f"{req.char!r} is not in the model's vocabulary", "unknown_characters")
    sent = None
    if req.text is not None:
        sent, _ = vet_text(m.vocab, req.text, req.drop_unknown, settings.max_text_chars, "max_text_chars")
        if len(sent) < 2:
            raise invalid(("body", "text"), "the text needs at least two characters", "too_short", min_length=2)
    fitted = fit_text(entry, library, settings, sent) if sent is None else (sent, "text", None)
    if fitted is None:
        raise invalid(("body", "text"), "the model's training corpus is not available on this server, so send a "
                      "text to start the search from", "corpus_unavailable")
    fit_source, source, _ = fitted
    H = m.config.hidden_size
    # The search's own time is bounded by settings (starts, iterations), not measured here.
    fits.wait_for_fit(entry, req.layer, fit_source, req.quantity, req.components)
    fit_chars = fits.fit_chars(entry, req.layer, fit_source)
    seconds = expected_seconds(m.config, UNKNOWN_SECONDS, states_fit=fit_chars)
    # The fitted text's reading (unless kept), its PCA (unless fitted), the starts and their search.
    nbytes = (fits.fit_bytes(entry, req.layer, fit_chars)
              + fits.pca_bytes(entry, req.layer, fit_source, req.quantity, req.components)
              + fixed_point_bytes(m, req.starts))
    with slots.job(nbytes, "this fixed-point search", seconds):
        started = time.monotonic()
        found = fits.reading(request.app.state, entry, req.layer, fit_source)
        reading = found[0]
        pca = fits.pca(request.app.state, entry, found, req.quantity, req.components)
        char_id = m.vocab.encode(req.char)[0]
        try:
            x = layer_input(m, 0, char_id) if req.layer == 0 else \
                on_reading(request.app.state, held_input, m, reading, char_id)
        except ValueError as e:
            raise invalid(("body", "char"), str(e), "char_unseen") from None
        search = run_pure(request.app.state, fixed_points_for, m, req.layer, x,
                          sample_starts(reading.state(), req.starts, req.seed), settings.fixed_point_iterations,
                          settings.fixed_point_polished, settings.fixed_point_tolerance)
        seconds = time.monotonic() - started
    half = slice(0, H) if req.quantity == "h" else slice(H, 2 * H)
    points = []
    for p in search.points:
        eig = p.eigenvalues[:EIGENVALUES_SHOWN]
        points.append(FixedPointOut(coords=np.round(pca.project(p.state[None, half])[0], 4).tolist(),
                                    q=float(p.q), kind=p.kind,
                                    eigenvalues=[[round(float(e.real), 5), round(float(e.imag), 5)] for e in eig],
                                    unstable_directions=int((np.abs(p.eigenvalues) > 1).sum())))
    state = f"h ({H})" if not m.cell.has_cell_state else f"(h, c) ({2 * H})"
    return FixedPointsResponse(layer=req.layer, char=req.char, state=state, fitted_on=source,
                               explained=[round(float(e), 5) for e in pca.explained], starts=req.starts,
                               points=points,
                               slowest_q=None if not np.isfinite(search.slowest_q) else float(search.slowest_q),
                               tolerance=settings.fixed_point_tolerance, seconds=round(seconds, 3))


@page_router.get("/states", response_class=HTMLResponse, include_in_schema=False)
def states_page(request: Request):
    """A text's trajectory through one layer's state space, with fixed points."""
    return pages.render(request, "states", ("model", "layer", "quantity", "colour", "text", "t", "char", "dims"),
                        concepts=list(CONCEPTS.values()), classes=CHAR_CLASSES)
