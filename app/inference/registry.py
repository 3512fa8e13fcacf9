"""The models the server offers: the bundled ones and any checkpoint in <data_dir>/models/,
loaded once at start-up and read-only afterwards, so request threads share them freely."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnscope.model.analysis import recurrent_singular_values
from rnnscope.model.bundled import BUNDLED, bundled_paths
from rnnscope.model.checkpoint import CheckpointError, load_model
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig

from ..settings import Settings
from .lru import LRU

log = logging.getLogger(__name__)

# Ids appear in URLs and file names: keep them to characters that need no escaping; "@step"
# names a snapshot of a run's weights (run-7@1800).
MODEL_ID = re.compile(r"[a-z0-9_-]{1,64}(?:@[0-9]{1,12})?")


# Ids a "no such model" message names: a class's thousands of runs would make it a listing.
IDS_NAMED = 20


class UnknownModelError(LookupError):
    def __init__(self, model_id: str, known: Iterable[str]):
        known = sorted(known)
        self.model_id = model_id
        available = ", ".join(known[:IDS_NAMED]) if known else "none are loaded"
        if len(known) > IDS_NAMED:
            available += f" and {len(known) - IDS_NAMED:,} more (GET /api/models?owner=all lists them)"
        super().__init__(f"no model {model_id!r}; available: {available}")


class ModelCache(LRU):
    """The trained models kept in memory, least recently used unloaded first: a class's
    forty runs must not hold forty models. An unloaded model is read again from its file
    when next asked for (about 10 ms for a 2x256 LSTM)."""

    def __init__(self, size: int):
        super().__init__(size)
        self.loads = 0                                   # reads from disk, for tests and the bench

    def load(self, model_id: str, path: Path) -> LanguageModel:
        def read() -> LanguageModel:
            self.loads += 1
            return load_model(path)
        return self.get_or_make(model_id, read)


@dataclass(frozen=True, eq=False)
class Entry:
    id: str
    name: str
    path: Path
    bundled: bool
    config: ModelConfig
    num_parameters: int
    history: dict
    # Per layer (G, H), largest first; computed once because W_hh never changes. None until
    # first asked for (singular_values) for a run's snapshots, which are made on demand.
    spectrum: list[np.ndarray] | None
    # Bundled models stay loaded; the others live in the cache.
    pinned: LanguageModel | None = field(default=None, repr=False)
    cache: ModelCache | None = field(default=None, repr=False)
    # The owner (app/web/security.py's hash) of the run or import it came from; None for the
    # bundled models and files the operator placed, which every listing shows.
    owner: str | None = None
    # Snapshots of a run (run-7@1800) are served but not listed: the run lists them.
    listed: bool = True

    @property
    def model(self) -> LanguageModel:
        if self.pinned is not None:
            return self.pinned
        return self.cache.load(self.id, self.path)

    @property
    def singular_values(self) -> list[np.ndarray]:
        if self.spectrum is None:
            object.__setattr__(self, "spectrum", recurrent_singular_values(self.model))
        return self.spectrum


def block_names(model: LanguageModel) -> list[str]:
    """A name for each H-row block of W_hh: the gates, or "h" for the vanilla RNN's one block."""
    return list(model.cell.gate_names) or ["h"]


def make_entry(model_id: str, path: Path, bundled: bool, name: str | None = None,
               cache: ModelCache | None = None, owner: str | None = None, listed: bool = True) -> Entry:
    """Load and check one checkpoint; raises CheckpointError when it cannot be served.
    Without a display name, one is made from the file name and the architecture. A model
    with a cache is kept there; without one (the bundled models) it stays loaded."""
    if not MODEL_ID.fullmatch(model_id):
        raise CheckpointError(f"{path}: the id {model_id!r} (the file name) must match "
                              f"{MODEL_ID.pattern}; rename the file")
    model = load_model(path)
    # NaN weights would turn every answer into nulls the API promises never to send.
    bad = [k for k, v in model.params.items() if not np.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values in {', '.join(bad)}")
    cfg = model.config
    name = name or f"{path.stem} ({cfg.cell.upper()} {cfg.num_layers}x{cfg.hidden_size})"
    if cache is not None:
        cache.put(model_id, model)
    history = model.history if isinstance(model.history, dict) else {}
    return Entry(model_id, name, path, bundled, cfg, model.num_parameters, history,
                 recurrent_singular_values(model), pinned=None if cache is not None else model, cache=cache,
                 owner=owner, listed=listed)


class ModelRegistry:
    def __init__(self, entries: Iterable[Entry] = (), cache: ModelCache | None = None):
        self.cache = cache or ModelCache(8)
        # Makes the entry of an id not loaded, or None: a run's snapshots (run-7@1800), which
        # are served on demand rather than loaded at start-up or at each checkpoint.
        self.resolve: Callable[[str], Entry | None] | None = None
        # Called with a model's id once its weights are final and served (the run that trained
        # it ended, an import was saved): the warmer prepares the views' caches for it (warming.py).
        self.on_ready: Callable[[str], None] = lambda model_id: None
        self._entries: dict[str, Entry] = {}
        for e in entries:
            if e.id in self._entries:
                raise ValueError(f"two models with id {e.id!r}")
            self._entries[e.id] = e

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """The bundled models (unless settings.load_bundled is off), then every
        <data_dir>/models/*.safetensors by file name. A file that cannot be served is
        logged and skipped: one bad upload must not keep the server from starting."""
        entries: dict[str, Entry] = {}
        cache = ModelCache(settings.max_loaded_models)
        candidates: list[tuple[str, str | None, Path, bool]] = []
        if settings.load_bundled:
            candidates += [(mid, BUNDLED[mid], path, True) for mid, path in bundled_paths().items()]
        user_dir = settings.data_dir / "models"
        if user_dir.is_dir():
            candidates += [(p.stem, None, p, False) for p in sorted(user_dir.glob("*.safetensors"))]
        for model_id, name, path, bundled in candidates:
            if model_id in entries:
                log.warning("skipping %s: the id %r is taken by %s", path, model_id, entries[model_id].path)
                continue
            try:
                entries[model_id] = make_entry(model_id, path, bundled, name, None if bundled else cache)
            except CheckpointError as e:
                log.warning("skipping a model: %s", e)
                continue
            log.info("loaded model %r from %s", model_id, path)
        return cls(entries.values(), cache)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries.values())

    def ids(self) -> list[str]:
        return list(self._entries)

    def listing(self, owner: str | None, limit: int, offset: int) -> tuple[list[Entry], int]:
        """The models a listing shows: those nobody owns (bundled, placed by the operator)
        always, then a page of the owned ones, newest first: all of them (`owner` None) or
        one owner's. And how many owned ones there are in all."""
        entries = [e for e in self._entries.values() if e.listed]     # one copy: put() replaces the dict
        shared = [e for e in entries if e.owner is None]
        owned = [e for e in reversed(entries) if e.owner is not None and (owner is None or e.owner == owner)]
        return shared + owned[offset:offset + limit], len(owned)

    def put(self, entry: Entry) -> None:
        """Add or replace a model (a training run's newest checkpoint). The dict is replaced
        whole, never mutated, so a request iterating the old one is undisturbed."""
        self._entries = {**self._entries, entry.id: entry}

    def remove(self, model_id: str) -> None:
        self._entries = {k: v for k, v in self._entries.items() if k != model_id}
        self.cache.drop(model_id)

    def get(self, model_id: str) -> Entry:
        try:
            return self._entries[model_id]
        except KeyError:
            entry = self.resolve(model_id) if self.resolve is not None else None
            if entry is None:
                raise UnknownModelError(model_id, [e.id for e in self._entries.values() if e.listed]) from None
            self.put(entry)
            return entry
