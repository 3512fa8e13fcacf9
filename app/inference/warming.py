"""The views' caches prepared ahead of requests: after start-up every model's, bundled first,
and each new model's once a run that trained it ends or it is imported. A class's first
state-space view of a model read and fitted its validation text in a compute slot (2.6 to
3.1 s on a quiet machine) while the clicks behind it waited; now the warmer has done it.

Each view says what it prepares where it lives (its feature's `prepare` steps, app/feature.py):
given a model, a step returns Preparations, each its cost estimated from its shape before any
work (the same estimate as its route's) and the work itself. The warmer runs them one at a
time on its own thread, in a slot it takes only while the compute gate is idle and gives up
between pieces of the work to any request that waits (ComputeGate.when_idle), holding their
bytes of the memory budget like any job. The caches stay bounded by their own settings, so a
step warms only as many models as its cache keeps (`rank` below its size): the first ones.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException
from fastapi.concurrency import run_in_threadpool

from .compute_gate import ComputeGate, GaveWay, Stopped
from .registry import Entry, ModelRegistry, UnknownModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preparation:
    """One piece of a view's preparation of one model."""

    what: str                              # "the state-space fit of lstm's layer 0", for the logs
    seconds: float                         # expected, by the cost model: the cheapest go first
    nbytes: int                            # its peak, estimated from its shape before it runs
    run: Callable[[Callable[[], None]], None]   # the work, given `pause` to call between pieces


# A step: (app.state, entry, rank) -> the work that would fill its caches for that model
# (nothing once they hold it). rank: 0 for a new model, else its place in the start-up walk.
PrepareStep = Callable[[object, Entry, int], list[Preparation]]


class Warmer:
    """A thread that prepares the views' caches for the models queued, one Preparation at a
    time in an idle slot of the gate. `idle` is set while nothing is queued or being prepared."""

    def __init__(self, state, registry: ModelRegistry, gate: ComputeGate, steps: tuple[PrepareStep, ...]):
        self.state, self.registry, self.gate, self.steps = state, registry, gate, steps
        self.idle = threading.Event()
        self.idle.set()
        self.prepared = 0                  # Preparations done, for tests and the bench
        self._queue: deque[tuple[str, int]] = deque()     # (model id, rank)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, models: list[Entry]) -> None:
        """Queue `models` in their order, and start preparing."""
        with self._wake:
            for rank, entry in enumerate(models):
                self._queue.append((entry.id, rank))
            if self._queue:
                self.idle.clear()
        self._thread = threading.Thread(target=self._loop, name="rnnscope-warmer", daemon=True)
        self._thread.start()

    def queue(self, model_id: str) -> None:
        """Prepare a new model's caches next (its rank 0: whoever trained or imported it looks
        at it next, so it may take a cache's place from a model warmed at start-up)."""
        with self._wake:
            if self._stop.is_set() or (model_id, 0) in self._queue:
                return
            self._queue.appendleft((model_id, 0))
            self.idle.clear()
            self._wake.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop at the work's next pause (a piece of a read: well under a second) and join."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self.gate.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stop.is_set():
                    self.idle.set()
                    self._wake.wait()
                if self._stop.is_set():
                    return
                queued = list(self._queue)
                self._queue.clear()
            try:
                self._prepare(queued)
            except Stopped:
                return

    def _plan(self, queued: list[tuple[str, int]]) -> list[tuple[float, int, str, int, Preparation]]:
        """Every step's work for the models queued, the cheapest first: a state-space fit
        of each model before any model's minutes-long reading for matching."""
        plans = []
        for model_id, rank in queued:
            try:
                entry = self.registry.get(model_id)
                for step in self.steps:
                    plans += [(p.seconds, len(plans), model_id, rank, p) for p in step(self.state, entry, rank)]
            except UnknownModelError:       # deleted since it was queued
                continue
            except Exception:               # one model's failure must not stop the others'
                log.exception("planning the caches of model %r failed", model_id)
        return sorted(plans, key=lambda plan: plan[:2])

    def _prepare(self, queued: list[tuple[str, int]]) -> None:
        for _, _, model_id, rank, preparation in self._plan(queued):
            try:
                with self.gate.when_idle(preparation.nbytes, preparation.what, self._stop) as pause:
                    preparation.run(pause)
            except GaveWay:
                # A request waits for the bytes this held: it goes first, and the model is
                # queued again, its work planned afresh once this round is done.
                with self._wake:
                    if (model_id, rank) not in self._queue:
                        self._queue.append((model_id, rank))
                continue
            except HTTPException as e:      # OverBudget: more than the whole budget; never fits
                log.warning("not preparing %s: %s", preparation.what, e.detail)
                continue
            except Stopped:
                raise
            except Exception:
                log.exception("preparing %s failed", preparation.what)
                continue
            self.prepared += 1
            log.info("prepared %s", preparation.what)


def warmed_order(registry: ModelRegistry) -> list[Entry]:
    """The models a start-up warms, in order: the bundled ones, then the rest as listed."""
    return sorted(registry, key=lambda e: not e.bundled)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Entered after every other feature's (every model is registered) and left before them:
    prepare what the features' views need per model, unless settings.warm_on_start is off."""
    state = app.state
    if not state.settings.warm_on_start:
        yield
        return
    steps = tuple(step for step in getattr(state, "prepare_steps", ()))
    warmer = Warmer(state, state.registry, state.compute_slots, steps)
    state.registry.on_ready = warmer.queue
    state.warmer = warmer
    warmer.start(warmed_order(state.registry))
    try:
        yield
    finally:
        state.registry.on_ready = lambda model_id: None
        await run_in_threadpool(warmer.close)
