"""Slow clients are cut off, so a thousand connections that trickle a byte at a time cannot
hold the server's sockets (and their tasks and buffers) for as long as they like.

- **Headers**: a request's line and headers must arrive within header_timeout_seconds of
  its first byte (or of the connection). uvicorn has no such timer: its keep-alive timer
  stops at the first byte a client sends. The same timer closes a connection whose client
  goes on sending a body after its response was sent (a body no route read).
  `HeaderDeadline(settings)` is the protocol class `rnnscope serve` gives uvicorn.
- **Bodies**: the time a route spends waiting for the body's bytes may add up to
  body_timeout_seconds, plus a second per body_min_bytes_per_second bytes received (the
  rule of Apache's mod_reqtimeout): a client at ordinary speed never comes near it however
  large its upload, and the time the server spends on what it has received is not counted
  against the client. Past it the request is answered 408 and the connection closed.
  `BodyDeadline` is an ASGI middleware, so it holds however the app is served.
"""
from __future__ import annotations

import asyncio
import logging
import time

import anyio
import h11
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def header_deadline(timeout_seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on request headers (see the module docstring)."""

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_watch()
            super().connection_lost(exc)

        def _waiting_on_client(self) -> bool:
            """Whether the connection waits for the client to finish sending: a request's
            headers begun but not complete, or a body sent after its response was."""
            if self.conn.their_state is h11.IDLE:
                return self.cycle is None or self.cycle.response_complete
            return (self.conn.their_state is h11.SEND_BODY and self.cycle is not None
                    and self.cycle.response_complete)

        def _watch(self) -> None:
            if self.transport.is_closing() or not self._waiting_on_client():
                self._stop_watch()
            elif self._deadline is None and self.timeout_keep_alive_task is None:
                # Between requests uvicorn's keep-alive timer governs; this one starts with a byte.
                self._deadline = self.loop.call_later(timeout_seconds, self._too_slow)

        def _stop_watch(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing() and self._waiting_on_client():
                self.transport.close()

    return HeaderDeadline


class BodyDeadline:
    """Answers 408 (and closes the connection) when a request's body arrives slower than
    the allowance in the module docstring."""

    def __init__(self, app: ASGIApp, timeout_seconds: float, min_bytes_per_second: float):
        self.app, self.timeout_seconds, self.min_rate = app, timeout_seconds, min_bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        waited, received, complete = 0.0, 0, False

        async def timed_receive() -> Message:
            nonlocal waited, received, complete
            if complete:                  # after the body, receive() only waits for a disconnect
                return await receive()
            allowance = self.timeout_seconds + received / self.min_rate - waited
            started = time.monotonic()
            try:
                with anyio.fail_after(max(allowance, 0.0)):
                    message = await receive()
            except TimeoutError:
                log.info("%s %s: the client sent %d bytes of its body too slowly; answered 408",
                         scope.get("method"), scope.get("path"), received)
                raise HTTPException(408, f"the request body came too slowly: {received:,} bytes in "
                                         f"{waited + time.monotonic() - started:.0f} s (settings "
                                         "RNNSCOPE_BODY_TIMEOUT_SECONDS, RNNSCOPE_BODY_MIN_BYTES_PER_SECOND)",
                                    headers={"Connection": "close"}) from None
            waited += time.monotonic() - started
            received += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)
