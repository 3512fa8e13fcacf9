"""Browser libraries served from installed Python packages, so the site, /docs and /redoc
included, works offline."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

PREFIX = "/static/vendor"
router = APIRouter(prefix=PREFIX, include_in_schema=False)


def package_dir(name: str) -> Path:
    """An installed package's folder, found without importing it: plotly's import costs
    more than the whole app's."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not installed; `pip install .` installs rnnscope's dependencies")
    return Path(spec.submodule_search_locations[0])


PLOTLY_JS = package_dir("plotly") / "package_data" / "plotly.min.js"

# Served name -> the file as its package ships it. fastapi-offline ships Swagger UI 5's and
# ReDoc 2's standalone builds and FastAPI's icon, the files /docs and /redoc would take from a CDN.
FILES = {
    PLOTLY_JS.name: PLOTLY_JS,
    **{name: package_dir("fastapi_offline") / "static" / name
       for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")},
}
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def url(name: str) -> str:
    """Where the app serves the vendored file `name`."""
    if name not in FILES:
        raise KeyError(name)
    return f"{PREFIX}/{name}"


@router.api_route("/{name}", methods=["GET", "HEAD"])
def vendor_file(name: str) -> FileResponse:
    """A browser library's file, from the Python package that ships it."""
    path = FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no vendored file {name!r}; there are {', '.join(FILES)}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                        headers={"Cache-Control": "public, max-age=86400"})
