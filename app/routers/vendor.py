"""Browser libraries served from installed Python packages, so the site works offline."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(prefix="/static/vendor", include_in_schema=False)

# Found without importing plotly, whose import costs more than the whole app's.
PLOTLY_JS = Path(find_spec("plotly").submodule_search_locations[0]) / "package_data" / "plotly.min.js"


@router.api_route("/plotly.min.js", methods=["GET", "HEAD"])
def plotly_js() -> FileResponse:
    """Plotly.js as the `plotly` package ships it."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})
