"""The one bounded cache the server keeps things in: models, activations, readings, fits,
timed step shapes, corpus indexes. Every such cache is bounded by a setting, so memory is
too; least recently used items go first."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from starlette.requests import Request

from ..settings import Settings

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A thread-safe map keeping its `size` most recently used items (0: keeps none)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[K, threading.Event] = {}    # keys some caller's make() is making now

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            replaced = self._items.get(key)
            if replaced is not None and replaced is not value:
                self.dropped(key, replaced)
            self._items[key] = value
            self._items.move_to_end(key)
            self._shrink(self.size)

    def get_or_make(self, key: K, make: Callable[[], V], shared: bool = True) -> V:
        """The kept value, or make() kept. make() runs outside the lock, so other keys are
        served meanwhile. A caller missing a key another caller is making waits for that
        value instead of making it a second time (and makes it itself if that make fails).
        shared=False: a make others must not wait for (one that pauses while requests wait,
        as the warmer's does, would wait for them in turn); it waits for no one either."""
        mine = threading.Event() if shared else None
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
                making = self._making.get(key) if shared else None
                if making is None:
                    if mine is not None:
                        self._making[key] = mine
                    break
            making.wait()                        # then found above, or made by this caller
        try:
            value = make()
            self.put(key, value)
            return value
        finally:
            if mine is not None:
                with self._lock:
                    self._making.pop(key, None)
                mine.set()

    def wait_if_making(self, key: K) -> None:
        """Return once no caller is making `key`: a request waits here, before it takes a
        compute slot, for a value another request is computing."""
        with self._lock:
            making = self._making.get(key)
        if making is not None:
            making.wait()

    def drop(self, key: K) -> None:
        with self._lock:
            if key in self._items:
                self.dropped(key, self._items.pop(key))

    def dropped(self, key: K, value: V) -> None:
        """Called (under the lock) for each item the cache lets go: a cache whose items own
        something outside memory (a file) releases it here."""

    def make_room(self) -> None:
        """Drop items until one more fits: before making a big one, so the old and the new
        are never held at once."""
        with self._lock:
            self._shrink(max(self.size - 1, 0))

    def _shrink(self, size: int) -> None:
        while len(self._items) > size:
            self.dropped(*self._items.popitem(last=False))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        """Whether `key` is kept, without counting as a use of it."""
        with self._lock:
            return key in self._items


# The names of everything kept on an app this way, for close_kept.
KEPT: set[str] = set()


def kept_on_app(name: str, make: Callable[[Settings], object]):
    """A dependency that gives what the app keeps as app.state.<name>, made on first use by
    make(settings): every router's cache (and the corpus library) lives, and is bounded by
    its setting, the same way; what has a close() is closed when the app stops (close_kept)."""
    lock = threading.Lock()
    KEPT.add(name)

    def on(state):
        with lock:
            kept = getattr(state, name, None)
            if kept is None:
                kept = make(state.settings)
                setattr(state, name, kept)
        return kept

    async def dependency(request: Request):
        return on(request.app.state)

    # The same object off a request, from app.state: for the caches prepared ahead of
    # requests (app/inference/warming.py).
    dependency.on = on
    return dependency


def close_kept(state) -> None:
    """The app stops: close whatever it kept that holds more than memory (a cache's files)."""
    for name in sorted(KEPT):
        close = getattr(getattr(state, name, None), "close", None)
        if close is not None:
            close()
