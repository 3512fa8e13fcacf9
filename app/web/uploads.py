"""Reading a multipart upload under a byte limit: refused by its declared Content-Length at
once, and while it streams as soon as the bytes received pass the limit, so an upload is
never received whole before it is refused. Corpus uploads and model imports both read so."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import invalid


async def limited(stream: AsyncIterator[bytes], limit: int, refusal: Callable[[], Exception]) -> AsyncIterator[bytes]:
    """The request body, raising refusal() as soon as it passes `limit` bytes."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise refusal()
        yield chunk


async def read_form(request: Request, limit: int, hint: str, declared_refusal: Callable[[int], Exception],
                    streamed_refusal: Callable[[], Exception], **parser_limits) -> FormData:
    """The multipart form of `request` (files spooled to disk past 1 MB); 422 with `hint` when
    the body is not multipart, declared_refusal(size) when Content-Length is over `limit`,
    streamed_refusal() once the bytes received are. `parser_limits`: MultiPartParser's
    max_files, max_fields and max_part_size."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid(("body",), hint)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise declared_refusal(int(declared))
    parser = MultiPartParser(request.headers, limited(request.stream(), limit, streamed_refusal), **parser_limits)
    try:
        return await parser.parse()
    except MultiPartException as e:
        raise invalid(("body",), f"the multipart body cannot be read: {e}") from None
