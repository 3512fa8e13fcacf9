"""The OpenAPI document as the server's exact contract: the loaded models' ids as the choices
for {model_id} (so /docs offers them and schemathesis knows them), and every limit a field
takes from the settings (schemas.Limit) written in as maxLength, maxItems or maximum, with
the same values the requests are validated against."""
from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import iter_route_contexts

from ..inference.deps import get_compute_slots
from ..settings import Settings
from .schemas import LIMIT_KEY, REQUEST_SETTINGS

# What the model behind {model_id} decides, and a schema shared by every model cannot say.
MODEL_RULES = ("Validation Error: a value outside the schema, or one this model cannot take: characters outside "
               "its vocabulary (unless drop_unknown), a layer, unit or quantity it does not have, a position "
               "past the text, too little text left once unknown characters are dropped; for a probe, a "
               "regex that is not one or needs backtracking, or a concept that holds everywhere or nowhere "
               "in the text. `loc`, `type` and `ctx` say which.")


async def bind_settings(request: Request) -> None:
    """Lets the request bodies' Limits check this app's settings. Async, so it runs in the
    request's own context, before FastAPI validates the body."""
    REQUEST_SETTINGS.set(request.app.state.settings)


def fill_limits(node: Any, settings: Settings) -> None:
    """Replace each Limit marker in a JSON schema with its keyword and the setting's value."""
    if isinstance(node, dict):
        marker = node.pop(LIMIT_KEY, None)
        if marker is not None:
            node[marker["keyword"]] = min(getattr(settings, s) for s in marker["settings"]) + marker["offset"]
            node["x-settings"] = [f"RNNSCOPE_{s.upper()}" for s in marker["settings"]]
        for value in node.values():
            fill_limits(value, settings)
    elif isinstance(node, list):
        for value in node:
            fill_limits(value, settings)


# Model ids the document offers as {model_id}'s choices, past the bundled ones.
MODEL_IDS_LISTED = 200

BUSY = {"description": "Every compute slot is busy and the queue for them is full (RNNSCOPE_MAX_WAITING_JOBS), "
                       "or no slot freed within RNNSCOPE_MAX_WAIT_SECONDS: try again after `Retry-After` seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}


def depends_on(dependant, call) -> bool:
    return any(d.call is call or depends_on(d, call) for d in dependant.dependencies)


def busy_operations(app: FastAPI) -> set[tuple[str, str]]:
    """(path, method) of every operation that waits for a compute slot, so may answer 503."""
    found = set()
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context.original_route, "dependant", None)
        if dependant is not None and depends_on(dependant, get_compute_slots):
            found |= {(context.path_format, m.lower()) for m in context.methods or ()}
    return found


def document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = FastAPI.openapi(app)                  # FastAPI's own document, which it caches
    fill_limits(doc, app.state.settings)
    for path, method in busy_operations(app):
        operation = doc["paths"].get(path, {}).get(method)
        if operation is not None:
            operation["responses"].setdefault("503", BUSY)
    for path, item in doc["paths"].items():
        for operation in item.values():
            if path.startswith("/api/models/{model_id}/") and "422" in operation.get("responses", {}):
                operation["responses"]["422"]["description"] = MODEL_RULES
    registry = getattr(app.state, "registry", None)
    if registry is None or not len(registry):
        app.openapi_schema = None               # made again once models are loaded
        return doc
    # The shared models and the newest others: a class's thousands of runs would make the
    # document megabytes (issue 18); any model's id still works in its URL.
    listed, _ = registry.listing(None, MODEL_IDS_LISTED, 0)
    for item in doc["paths"].values():
        for operation in item.values():
            for param in operation.get("parameters", ()):
                if param["name"] == "model_id":
                    param["schema"]["enum"] = [e.id for e in listed]
    return doc


def install(app: FastAPI) -> None:
    """Before the routers are included: every route they add gets bind_settings."""
    app.router.dependencies.append(Depends(bind_settings))
    app.openapi = lambda: document(app)
