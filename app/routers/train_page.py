"""The Train page: upload a corpus, start a run, watch it learn. Its data comes from
/api/corpora and /api/runs."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .pages import templates

router = APIRouter(tags=["pages"])


@router.get("/train", response_class=HTMLResponse, include_in_schema=False)
def train_page(request: Request):
    """Upload a text, train a model on it in the background, and watch it learn."""
    state = {"run": request.query_params.get("run", "")}
    settings = request.app.state.settings
    return templates.TemplateResponse(request, "train.html", {
        "page": "train", "state": state, "token_required": settings.token is not None and settings.create_needs_token,
        "max_upload_bytes": settings.max_upload_bytes,
    })
