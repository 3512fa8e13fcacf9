"""Refusals with a message a person can act on, and the safety net behind them.

Every error body is JSON of the shape /docs declares: {"detail": "..."} for 400, 404 and
413, FastAPI's {"detail": [{loc, msg, type, ctx}]} for every 422, including the ones the
handlers raise after looking at the model (unknown characters, a layer it lacks).
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rnnscope.model.vocab import UnknownCharactersError, Vocab

from .schemas import ErrorMessage

log = logging.getLogger(__name__)

NOT_FOUND = {404: {"model": ErrorMessage, "description": "No model with that id."}}
BAD_BODY = {400: {"model": ErrorMessage, "description": "The body is not UTF-8 text."}}
TOO_LARGE = {413: {"model": ErrorMessage, "description": "Text or length over a limit; the message names "
                                                          "the limit and its setting."}}


# The stream route's media type is text/event-stream; its refusals are still JSON.
STREAM_ERRORS = {
    code: {"description": spec["description"],
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}
    for code, spec in (BAD_BODY | NOT_FOUND | TOO_LARGE).items()
}


def too_large(what: str, size: int, limit: int, setting: str) -> HTTPException:
    return HTTPException(413, f"{what} is {size:,} characters; the limit is {limit:,} "
                              f"(setting RNNSCOPE_{setting.upper()})")


def invalid(loc: tuple[str | int, ...], msg: str, kind: str = "value_error",
            **ctx: Any) -> RequestValidationError:
    """A 422 in the same shape pydantic's own refusals have."""
    error = {"loc": loc, "msg": msg, "type": kind}
    if ctx:
        error["ctx"] = ctx
    return RequestValidationError([error])


def vet_text(vocab: Vocab, text: str, drop_unknown: bool, limit: int, setting: str,
             field: str = "text") -> tuple[str, list[str]]:
    """The text a model can read, and the distinct characters dropped from it.
    Refuses (413) a text over `limit`, and (422) characters outside the vocabulary
    unless asked to drop them."""
    if len(text) > limit:
        raise too_large(f"the {field}", len(text), limit, setting)
    unknown = vocab.unknown(text)
    if unknown and not drop_unknown:
        raise invalid(("body", field), f"{UnknownCharactersError(unknown)}; remove them or send "
                      "drop_unknown: true", "unknown_characters", chars=unknown)
    if unknown:
        text = text.translate(dict.fromkeys(map(ord, unknown)))
    return text, unknown


def finite(obj: Any) -> Any:
    """JSON has no NaN or Infinity, yet json.loads accepts them in a request, and an
    error may echo them back."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


class ErrorResponse(JSONResponse):
    """ASCII-escaped JSON: a lone surrogate from a request (legal in JSON text, not in
    UTF-8) can be echoed in an error without failing to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(finite(content), ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    # The offending input is left out: it may be a 20,000-character text the client already has.
    errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
    return ErrorResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def allowed_methods(request: Request) -> set[str]:
    """Every method some route serves at this path: Starlette's 405 names only the first
    route's, and a path is often served by one route per method."""
    path, allowed = request.scope["path"], set()
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and route.methods and regex.match(path):
            allowed |= route.methods
    return allowed


async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code in (204, 304) or exc.status_code < 200:
        return Response(status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
    detail = exc.detail
    if isinstance(exc.__cause__, UnicodeDecodeError):        # FastAPI's "error parsing the body"
        detail = f"the request body is not UTF-8 text: {exc.__cause__}"
    return ErrorResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def on_unexpected_error(request: Request, exc: Exception) -> Response:
    """The safety net: a bug must still answer JSON; the log has the traceback to fix it."""
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return ErrorResponse({"detail": "internal error; the server log has the details"}, status_code=500)


async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
    """A client that went away while sending its request (an upload cancelled, a tab closed):
    an everyday event, one line in the log. The answer reaches no one."""
    log.info("%s %s: the client went away before sending all of its request (Content-Length %s)",
             request.method, request.url.path, request.headers.get("content-length", "not given"))
    return Response(status_code=400)


class BodyLimit:
    """Refuses a request body over `max_bytes` with a JSON 413 naming the setting: at once
    when Content-Length declares it, else as soon as the bytes read pass the limit.
    Multipart uploads are left to their route, which streams them to disk under its own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def refusal(self, size: int | None) -> HTTPException:
        limit = f"{self.max_bytes:,} bytes (setting RNNSCOPE_MAX_BODY_BYTES)"
        if size is None:
            return HTTPException(413, f"the request body is over the limit of {limit}")
        return HTTPException(413, f"the request body is {size:,} bytes; the limit is {limit}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ()))
        if scope["type"] != "http" or headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            e = self.refusal(int(declared))
            return await ErrorResponse({"detail": e.detail}, status_code=413)(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self.refusal(None)      # FastAPI passes an HTTPException from here to its handler
            return message

        await self.app(scope, limited_receive, send)


def install(app: FastAPI, max_body_bytes: int) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
