"""What handlers receive by dependency: the settings, the model registry, the model a URL
names, and the slots that bound concurrent NumPy work. All live on app.state, set by
create_app and its lifespan; tests pass their own Settings to create_app or swap any of
these with app.dependency_overrides."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from ..settings import Settings
from .compute_gate import ComputeGate
from .corpus_index import CorpusLibrary
from .lru import kept_on_app
from .registry import Entry, ModelRegistry, UnknownModelError

# The getters are async only because they never block: FastAPI then calls them on the
# event loop instead of hopping to a worker thread.


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def get_entry(model_id: Annotated[str, Path(description="A model id from GET /api/models.")],
                    registry: RegistryDep) -> Entry:
    try:
        return registry.get(model_id)
    except UnknownModelError as e:
        raise HTTPException(404, str(e)) from None


ModelDep = Annotated[Entry, Depends(get_entry)]


async def get_compute_slots(request: Request) -> ComputeGate:
    return request.app.state.compute_slots


ComputeSlots = Annotated[ComputeGate, Depends(get_compute_slots)]


def rendered_in_thread(endpoint: Callable[..., BaseModel]) -> Callable[..., Response]:
    """Render a sync endpoint's answer to JSON in its worker thread. FastAPI serialises a
    response model on the event loop, and a trace of every quantity is tens of megabytes:
    rendering it there held /healthz and every page for as long. The route keeps its
    response_model for /docs; the model was validated when it was built."""
    @functools.wraps(endpoint)
    def wrapper(*args, **kwargs) -> Response:
        answer = endpoint(*args, **kwargs)
        if isinstance(answer, BaseModel):
            return Response(answer.model_dump_json(), media_type="application/json")
        return answer
    return wrapper


class RenderedInThread(APIRoute):
    """The route class of the compute routers: their sync endpoints render in the thread."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        if not inspect.iscoroutinefunction(endpoint) and not inspect.isgeneratorfunction(endpoint):
            endpoint = rendered_in_thread(endpoint)
        super().__init__(path, endpoint, **kwargs)


# One library per app, made on first use, so its indexes outlive requests.
get_corpus_library = kept_on_app("corpus_library", CorpusLibrary)


LibraryDep = Annotated[CorpusLibrary, Depends(get_corpus_library)]
