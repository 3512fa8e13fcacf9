"""What a feature gives the app, so main.py assembles every feature the same way: its routers,
what it starts and stops with the app (its lifespan, entered in the order main.py lists the
features, after those before it), the handlers of the errors it raises, and what its views
prepare ahead of requests."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI


@dataclass(frozen=True)
class Feature:
    routers: tuple[APIRouter, ...] = ()
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None
    exception_handlers: Mapping[type[Exception], Callable] = field(default_factory=dict)
    # What its views prepare per model before they are asked (app/inference/warming.py): each
    # step, given app.state, a model's entry and its rank among the models warmed, says what
    # work would fill its caches (Preparation), or nothing when they are full already.
    prepare: tuple[Callable, ...] = ()
