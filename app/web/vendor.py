"""Browser libraries served from installed Python packages (app/web/assets.py's VENDOR_FILES), so
the site, /docs and /redoc included, works offline; compressed and cached as static/ is."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from .assets import ASSETS, PLOTLY_JS, VENDOR_FILES, VENDOR_URL, static_url

__all__ = ["PLOTLY_JS", "router", "url"]

router = APIRouter(prefix=VENDOR_URL, include_in_schema=False)


def url(name: str) -> str:
    """Where the app serves the vendored file `name`, with its content's hash."""
    if name not in VENDOR_FILES:
        raise KeyError(name)
    return static_url(f"vendor/{name}")


@router.api_route("/{name}", methods=["GET", "HEAD"])
def vendor_file(name: str, request: Request) -> Response:
    """A browser library's file, from the Python package that ships it."""
    path = VENDOR_FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no vendored file {name!r}; there are {', '.join(VENDOR_FILES)}")
    return ASSETS.response(path, request.scope)
