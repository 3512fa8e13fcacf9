"""The OpenAPI document, with the loaded models' ids as the choices for {model_id}, so
/docs offers them in a drop-down and generated clients (and schemathesis) know them."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = FastAPI.openapi(app)                  # FastAPI's own document, which it caches
    registry = getattr(app.state, "registry", None)
    if registry is None or not len(registry):
        app.openapi_schema = None               # made again once models are loaded
        return doc
    for path in doc["paths"].values():
        for operation in path.values():
            for param in operation.get("parameters", ()):
                if param["name"] == "model_id":
                    param["schema"]["enum"] = registry.ids()
    return doc


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)
