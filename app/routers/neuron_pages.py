"""The pages that find and explain neurons (/probe) and set models side by side (/compare).
Their data comes from the neuron routes and the analysis routes."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from rnnscope.model.probes import CONCEPTS

from . import pages

router = APIRouter(tags=["pages"])

# Query parameters each page keeps in its URL, validated by the page's script.
STATE = {
    "probe": ("model", "concept", "regex", "text"),
    "compare": ("models", "text", "position"),
}


def render(request: Request, page: str) -> HTMLResponse:
    return pages.render(request, page, STATE[page], concepts=list(CONCEPTS.values()))


@router.get("/probe", response_class=HTMLResponse, include_in_schema=False)
def probe_page(request: Request):
    """Concept probes: which neurons track a concept, each shown over the text."""
    return render(request, "probe")


@router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(request: Request):
    """Models side by side on one text: loss, gradient through time, memory horizon, gates."""
    return render(request, "compare")
