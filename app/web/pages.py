"""The HTML pages' shared frame: the Jinja environment, and `render`, which fills a page's
template from the query parameters it keeps. Each page's data comes from the JSON API by
fetch(), so a page shows nothing a script could not get; each feature routes its own pages."""
from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.routing import NoMatchFound

from .assets import TEMPLATES_DIR, module_imports, static_url

templates = Jinja2Templates(directory=TEMPLATES_DIR)


def has_route(request: Request, name: str) -> bool:
    """Whether the app serves the named route: base.html links optional pages only then."""
    try:
        request.app.url_path_for(name)
    except NoMatchFound:
        return False
    return True


templates.env.globals["has_route"] = has_route


templates.env.globals["static_url"] = static_url      # /static/<name>?v=<hash>
templates.env.globals["module_imports"] = module_imports   # what a page's module imports, to preload


# Passages of tinyshakespeare, the Shakespeare models' corpus: the first lines of the file,
# then three from the last 10 %, which the models never trained on. The Learn page reads
# them; the other pages offer each model passages of its own corpus instead.
PASSAGES = [
    ("First Citizen (training text)",
     "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
     "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
     "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n"),
    ("Petruchio and Baptista (validation)",
     "PETRUCHIO:\nI see you do not mean to part with her,\nOr else you like not of my company.\n\n"
     "BAPTISTA:\nMistake me not; I speak but as I find.\nWhence are you, sir? what may I call your name?\n\n"
     "PETRUCHIO:\nPetruchio is my name; Antonio's son,\nA man well known throughout all Italy.\n"),
    ("Kate mistakes an old man (validation)",
     "PETRUCHIO:\nWhy, how now, Kate! I hope thou art not mad:\nThis is a man, old, wrinkled, faded, "
     "wither'd,\nAnd not a maiden, as thou say'st he is.\n\nKATHARINA:\nPardon, old father, my mistaking "
     "eyes,\nThat have been so bedazzled with the sun\nThat everything I look on seemeth green:\n"),
    ("Ariel reports (validation)",
     "ARIEL:\nSafely in harbour\nIs the king's ship; in the deep nook, where once\nThou call'dst me up at "
     "midnight to fetch dew\nFrom the still-vex'd Bermoothes, there she's hid:\nThe mariners all under "
     "hatches stow'd;\n"),
]


# Query parameters each page keeps in its URL; values pass through as strings and the
# page's script validates them, so a mistyped link still opens the page.
PAGE_STATE = {
    "explore": ("model", "layer", "quantity", "neuron", "range", "text"),
    "gradients": ("text", "position", "models"),
    "gates": ("model", "text"),
    "sample": ("model", "prime", "temperature", "length", "top_k", "seed", "min_span"),
}


def render(request: Request, page: str, state_keys: tuple[str, ...] | None = None, **context) -> HTMLResponse:
    """The page's template with the query parameters it keeps (PAGE_STATE unless given);
    `context` adds what a page's template needs besides. Passages to read come from each
    model's own corpus, by the pages' scripts (GET /api/models/{id}/passages)."""
    keys = PAGE_STATE.get(page, ()) if state_keys is None else state_keys
    state = {k: request.query_params.get(k, "") for k in keys}
    return templates.TemplateResponse(request, f"{page}.html",
                                      {"page": page, "state": state, **context})
