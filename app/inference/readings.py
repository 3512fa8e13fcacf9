"""Every unit's value over a text, kept per (model, text) for the views that rank or search
all units (probe, select, match), in memory-mapped files (reading_files.py) instead of the
server's memory, and worked on where compute runs.

A reading is computed a piece at a time in the compute workers (or this thread), each piece
written into the reading's file as it comes, so no process holds all of it; the work on it
that touches every unit (a probe's ranking, a selection's) runs in a local worker that maps
the same file: the API process holds a piece at a time and the answer, and the pages the
kernel caches are shared by every process that maps them. Where the disk has no room the
reading is kept in memory instead (the estimate says so before the work is admitted) and
worked on here.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Annotated

import numpy as np
from fastapi import Depends, HTTPException

from rnnscope.model.probes import Activations, read_units, unit_layout

from .compute import CHUNK, every_unit, reading_bytes
from .lru import LRU, kept_on_app
from .reading_files import DiskFull, ReadingFiles
from .registry import Entry
from .worker_pool import run_local, run_pure

# Characters of a reading computed at a time: four of model.read's chunks, so the values are
# bit for bit the whole read's; ~0.5 s of a 2x256 LSTM and 25 MB of float16 (50 of float32), so
# the warmer gives way to a waiting request within half a second and a piece is a modest message.
READING_PIECE = 4 * CHUNK


class Readings(LRU):
    """The `size` readings last used, as `dtype`, least recently used dropped (and its file
    deleted) first."""

    def __init__(self, size: int, settings, dtype):
        super().__init__(size)
        self.dtype = np.dtype(dtype)
        self.files = ReadingFiles(settings.data_dir / "cache", settings.min_free_bytes, self.dtype)
        self._reading = threading.Lock()        # one cold read at a time: two would cost twice the work

    def reading(self, state, entry: Entry, text: str) -> Activations:
        """The model's reading of `text`, kept, or read and kept."""
        key = self._key(entry, text)
        found = self.get(key)
        if found is not None:                   # without waiting behind another model's first read
            return found
        with self._reading:
            found = self.get(key)               # read while this request waited
            if found is not None:
                return found
            self.make_room()                    # first: the old reading's file goes before the new is written
            acts = self.read(state, entry.model, text, keep=True)
            self.put(key, acts)
            return acts

    def prepare(self, state, entry: Entry, text: str, pause: Callable[[], None]) -> None:
        """As reading(), pausing for waiting requests between pieces, and without the one-read
        lock: a read paused for a request would hold it against that request."""
        key = self._key(entry, text)
        if self.get(key) is None:
            self.make_room()
            self.put(key, self.read(state, entry.model, text, keep=True, pause=pause))

    def kept(self, entry: Entry, text: str) -> bool:
        """Whether the model's reading of `text` is kept (for a request's expected cost)."""
        return self.get(self._key(entry, text)) is not None

    def read(self, state, model, text: str, keep: bool, pause: Callable[[], None] = lambda: None) -> Activations:
        """Every unit's value over `text`: into a file when it is to be kept and the disk has
        room (a 507 if the disk fills meanwhile), else in memory."""
        ids = model.encode(text)
        rows, T = every_unit(model.config), len(ids)

        pieces = read_in_pieces(state, read_units, model, ids, pause, self.dtype)
        values = put_together(self.files, (rows, T), pieces, 1, keep and self.files.room_for_values(rows * T))
        acts = Activations(values, *unit_layout(model))
        self.files.owned_by(acts, values)
        return acts

    def read_bytes(self, model, chars: int, keep: bool) -> int:
        """A read's peak bytes: in a file, a piece in the worker and its copy here; else all of it."""
        cfg, units = model.config, every_unit(model.config)
        piece = min(chars, READING_PIECE)
        if keep and self.files.room_for_values(units * chars):
            return reading_bytes(cfg, piece, units, self.dtype.itemsize) + 2 * piece * units * self.dtype.itemsize
        return reading_bytes(cfg, chars, units, self.dtype.itemsize) + piece * units * self.dtype.itemsize

    def close(self) -> None:
        """The app stops: every reading's file goes (a mapping still open keeps its pages)."""
        self.files.close()

    @staticmethod
    def _key(entry: Entry, text: str) -> tuple:
        # id(model): a training run's model keeps its id while its weights are replaced.
        return entry.id, id(entry.model), hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def read_in_pieces(state, function: Callable, model, ids: np.ndarray, pause: Callable[[], None] = lambda: None,
                   *arguments) -> Iterator[tuple[int, object]]:
    """(start, piece) for READING_PIECE characters of ids at a time, each piece
    function(model, ids[piece], carried, *arguments) -> (piece, carried) computed where compute
    runs (run_pure), the model's state carried from one to the next, `pause` called between
    (the warmer gives its slot to waiting requests there)."""
    carried = None
    for s in range(0, len(ids), READING_PIECE):
        piece, carried = run_pure(state, function, model, ids[s:s + READING_PIECE], carried, *arguments)
        yield s, piece
        pause()


def put_together(files: ReadingFiles, shape: tuple[int, int], pieces: Iterator[tuple[int, np.ndarray]], axis: int,
                 on_disk: bool) -> np.ndarray:
    """A reading of `shape` from `pieces`, (start, values), each a slice of it along `axis`:
    written into a file of `files` when `on_disk` (a full disk answered with a 507 that says
    what to do), else into one array in memory, a piece at a time."""
    if on_disk:
        try:
            return files.write(shape, pieces, axis)
        except DiskFull as e:
            raise HTTPException(507, f"{e.strerror}; the server's disk is full: ask whoever runs it to free "
                                     "space, or try again later") from None
    values = np.empty(shape, files.dtype)
    for start, piece in pieces:
        values[(slice(None),) * axis + (slice(start, start + piece.shape[axis]),)] = piece
    return values


def on_reading(state, function: Callable, model, reading, *arguments):
    """function(reading, *arguments) where the reading is: in a local worker that maps its file,
    or here when it is in memory. `reading` is a dataclass whose `values` may map a file (an
    Activations, a LayerReading); `function` is pure and defined at a module's top level."""
    path = getattr(reading.values, "filename", None)
    if path is None:
        return function(reading, *arguments)
    # The rest of the reading travels as it is (unit labels, ids: small), its values by name.
    return run_local(state, _mapped, model, str(path), dataclasses.replace(reading, values=None), function, *arguments)


def _mapped(model, path: str, rest, function: Callable, *arguments):
    """In a worker: the reading with its values mapped from `path`, given to function."""
    return function(dataclasses.replace(rest, values=np.load(path, mmap_mode="r")), *arguments)


# The last few texts' activations, every unit as float32: reading is most of a probe's cost
# (about 1.3 s of 1.6 s for 10,000 characters on a 2x256 LSTM), and the page probes one text
# for one concept after another.
get_activation_cache = kept_on_app("activation_cache", lambda s: Readings(s.probe_cache_texts, s, np.float32))

ActivationsDep = Annotated[Readings, Depends(get_activation_cache)]
