"""The API's interactive documentation, /docs (Swagger UI) and /redoc (ReDoc), drawn with
the copies of their scripts this server vendors instead of FastAPI's CDN defaults."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from markupsafe import escape

from .vendor import url

router = APIRouter(tags=["docs"], include_in_schema=False)

OAUTH2_REDIRECT = "/docs/oauth2-redirect"      # FastAPI's default path for it

# The docs pages may load from this server only: nothing a script of theirs asks for can slip
# through. (ReDoc's menu would show its maker's logo from their CDN; the served ReDoc does not
# ask for it, see app/web/assets.py's VENDOR_PATCHES.)
SAME_ORIGIN_ONLY = {"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data: blob:"}


# A bar above Swagger UI and ReDoc with the way back to the site (neither has one of its own).
# In the page's flow, not fixed, so it covers nothing of theirs; ReDoc's menu sticks to the top
# once it is scrolled past.
BACK_LINK = (
    '<style>body { margin: 0 }</style>'
    '<nav class="rnnscope-back" aria-label="rnnscope" style="font: 15px/1.4 system-ui, sans-serif; '
    'padding: 8px 16px; background: #1d2330; color: #fff">'
    '<a href="{home}" style="color: #fff; font-weight: 600; text-decoration: none">&larr; rnnscope</a>'
    '<span style="opacity: .75"> &middot; back to the models and their pages</span></nav>')


def with_back_link(page: HTMLResponse, root: str) -> HTMLResponse:
    """The docs page with BACK_LINK first in its body, and the same-origin policy."""
    html = page.body.decode()
    bar = BACK_LINK.replace("{home}", escape(root + "/"))
    html = html.replace("<body>", "<body>\n" + bar, 1)
    return HTMLResponse(html, status_code=page.status_code, headers=SAME_ORIGIN_ONLY)


def root_path(request: Request) -> str:
    """The prefix the app is mounted under behind a proxy, as FastAPI's own docs use it."""
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the OpenAPI document: every route, tried from the browser."""
    app, root = request.app, root_path(request)
    page = get_swagger_ui_html(
        openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
        swagger_js_url=root + url("swagger-ui-bundle.js"), swagger_css_url=root + url("swagger-ui.css"),
        swagger_favicon_url=root + url("favicon.png"),
        oauth2_redirect_url=root + OAUTH2_REDIRECT,
        init_oauth=app.swagger_ui_init_oauth, swagger_ui_parameters=app.swagger_ui_parameters)
    return with_back_link(page, root)


@router.get(OAUTH2_REDIRECT, response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    """Where Swagger UI's OAuth2 sign-in returns, as FastAPI's default docs provide."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the same document: the API as one readable page."""
    app, root = request.app, root_path(request)
    page = get_redoc_html(openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
                          redoc_js_url=root + url("redoc.standalone.js"),
                          redoc_favicon_url=root + url("favicon.png"),
                          with_google_fonts=False)     # ReDoc falls back to the system's fonts
    return with_back_link(page, root)
