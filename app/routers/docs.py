"""The API's interactive documentation, /docs (Swagger UI) and /redoc (ReDoc), drawn with
the copies of their scripts this server vendors instead of FastAPI's CDN defaults."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

from .vendor import url

router = APIRouter(tags=["docs"], include_in_schema=False)

OAUTH2_REDIRECT = "/docs/oauth2-redirect"      # FastAPI's default path for it

# The docs pages may load from this server only. ReDoc's menu shows its maker's logo from their
# CDN; this refuses it, ReDoc then leaves the logo out, and nothing else can slip through.
SAME_ORIGIN_ONLY = {"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data: blob:"}


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
    page.headers.update(SAME_ORIGIN_ONLY)
    return page


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
    page.headers.update(SAME_ORIGIN_ONLY)
    return page
