"""What a feature gives the app, so main.py assembles every feature the same way: its routers,
what it starts and stops with the app (its lifespan, entered in the order main.py lists the
features, after those before it), and the handlers of the errors it raises."""
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
