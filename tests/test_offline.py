"""Nothing a page loads comes from another server.

Every page is found from the app's routes (a GET route outside the API schema, without path
parameters, that answers HTML), fetched with the TestClient, and read for what a browser would
load from it: src and href attributes, CSS url() and @import, and scripts, inline or linked,
that fetch or insert an absolute URL. Every script, stylesheet and icon a page references is
fetched too (each must answer 200) and read the same way, as are the files a stylesheet's url()
names. A URL in prose, a comment, a licence header or an XML namespace is no load and passes.
Finally chromium opens every page with every request to another origin refused and recorded:
what the scans cannot see (a URL put together at run time) shows there.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from fastapi.routing import iter_route_contexts

# The pages the site has today; the routes may add more, never fewer.
KNOWN_PAGES = {"/", "/explore", "/gradients", "/gates", "/sample", "/probe", "/compare", "/train",
               "/docs", "/redoc"}

ABSOLUTE = r"(?:https?:|wss?:)?//[^\s\"'`()<>\\]+"         # with a scheme, or protocol-relative
QUOTE = r"\\?[\"'`]"                                          # a quote, maybe escaped inside a string

# Places where a URL in a stylesheet is loaded.
CSS_LOADS = [re.compile(rf"url\(\s*{QUOTE}?\s*({ABSOLUTE})", re.I),
             re.compile(rf"@import\s+(?:url\()?\s*{QUOTE}?({ABSOLUTE})", re.I)]
# Places where a URL in a script is loaded: a fetch or request of a literal, an element's src set
# to one, markup or CSS written into the page with one.
JS_LOADS = [re.compile(rf"\b(?:fetch|EventSource|WebSocket|importScripts|import|sendBeacon)\s*\(\s*{QUOTE}({ABSOLUTE})"),
            re.compile(rf"\.open\(\s*{QUOTE}[A-Za-z]+{QUOTE}\s*,\s*{QUOTE}({ABSOLUTE})"),
            re.compile(rf"\.(?:src|srcset)\s*=\s*{QUOTE}({ABSOLUTE})"),
            re.compile(rf"\b(?:src|srcSet)\s*:\s*{QUOTE}({ABSOLUTE})"),          # an element's props
            re.compile(rf"\bsetAttribute\(\s*{QUOTE}(?:src|href){QUOTE}\s*,\s*{QUOTE}({ABSOLUTE})"),
            re.compile(rf"<(?:script|img|iframe|link|source|video|audio)\b[^<>]*?\b(?:src|href)\s*=\s*{QUOTE}({ABSOLUTE})",
                       re.I),
            *CSS_LOADS]
# HTML attributes whose value the browser loads or navigates to.
URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "formaction", "background",
                  "xlink:href", "manifest", "icon"}

# Loads inside vendored libraries that no page triggers, each with the reason it is harmless.
VENDOR_ALLOWED = {
    ("/static/vendor/plotly.min.js", "https://cdn.jsdelivr.net/npm/@mapbox/maki@"):
        "marker icons for map traces; no page draws a map",
}


def page_candidates(app) -> list[str]:
    """GET routes outside the API schema without path parameters: pages, and a few others.
    (FastAPI keeps an included router as one entry of app.routes; this walks into them.)"""
    return sorted({r.path for r in iter_route_contexts(app.routes) if "GET" in (r.methods or ())
                   and not r.param_convertors and not getattr(r, "include_in_schema", True)})


def is_html(response) -> bool:
    return response.headers.get("content-type", "").startswith("text/html")


class PageReader(HTMLParser):
    """Collects, from one HTML document, every URL-valued attribute, the local files it needs
    (scripts, stylesheets, icons, images), and its inline scripts and styles."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.attributes: list[tuple[str, str, str]] = []       # (tag, attribute, value)
        self.needs: list[str] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._inline: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        for name, value in attrs.items():
            if name in URL_ATTRIBUTES:
                self.attributes.append((tag, name, value))
            elif name == "style":
                self.styles.append(value)
        if tag in ("script", "img", "iframe", "source", "embed", "video", "audio") and attrs.get("src"):
            self.needs.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.needs.append(attrs["href"])
        self._inline = tag if tag in ("script", "style") and not attrs.get("src") else None

    def handle_data(self, data):
        if self._inline == "script":
            self.scripts.append(data)
        elif self._inline == "style":
            self.styles.append(data)

    def handle_endtag(self, tag):
        self._inline = None


def read_page(html: str) -> PageReader:
    reader = PageReader()
    reader.feed(html)
    reader.close()
    return reader


def loads(text: str, patterns) -> list[str]:
    return [m.group(1) for p in patterns for m in p.finditer(text)]


def external_in_page(html: str) -> list[str]:
    """Every absolute URL a browser would load or follow from this HTML itself."""
    page = read_page(html)
    found = [f"<{tag} {name}={value!r}>" for tag, name, value in page.attributes
             if not value.strip().startswith("data:")
             and any(re.match(ABSOLUTE, part.strip()) for part in value.split(","))]
    found += loads("\n".join(page.scripts), JS_LOADS)
    found += loads("\n".join(page.styles), CSS_LOADS)
    return found


def external_in_asset(path: str, content_type: str, text: str) -> list[str]:
    """Every absolute URL a script or stylesheet would load, less the vendored ones allowed."""
    patterns = CSS_LOADS if "css" in content_type else JS_LOADS if "javascript" in content_type else []
    return [u for u in loads(text, patterns)
            if not any(path == p and u.startswith(prefix) for p, prefix in VENDOR_ALLOWED)]


def local_references(page_path: str, html: str) -> list[str]:
    """The same-server files a page needs, as paths."""
    refs = [urljoin(page_path, ref) for ref in read_page(html).needs if not ref.startswith("data:")]
    return [urlsplit(r).path for r in refs if not urlsplit(r).netloc]


def css_references(css_path: str, css: str) -> list[str]:
    refs = re.findall(r"url\(\s*[\"']?([^\"')\s]+)", css)
    return [urlsplit(urljoin(css_path, r)).path for r in refs
            if not r.startswith(("data:", "#")) and not re.match(ABSOLUTE, r)]


def test_the_scans_see_what_a_browser_loads():
    """The detectors catch loads and let mentions pass."""
    assert external_in_page('<script src="https://cdn.example.org/x.js"></script>')
    assert external_in_page('<link rel="stylesheet" href="//cdn.example.org/x.css">')
    assert external_in_page('<div style="background: url(https://example.org/a.png)"></div>')
    assert external_in_page("<script>fetch('https://example.org/api')</script>")
    assert external_in_page('<script>s.src = "https://example.org/x.js"</script>')
    assert external_in_page("<style>@import 'https://fonts.example.org/f.css';</style>")
    assert not external_in_page("<p>See https://example.org for more.</p>")
    assert not external_in_page("<link rel=icon href=\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'\">")
    assert not external_in_page('<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    assert not external_in_page("<script>// docs: https://example.org/guide\nfetch('/api/models')</script>")
    assert external_in_asset("/a.js", "text/javascript", 'e.innerHTML=\'<img src="https://x.org/a.png">\'')
    assert external_in_asset("/a.js", "text/javascript", 'h("img",{alt:"logo",src:"https://x.org/l.svg"})')
    assert not external_in_asset("/a.js", "text/javascript", "/*! licence: https://x.org/LICENSE */")
    assert external_in_asset("/a.css", "text/css", ".a{background:url( 'https://x.org/a.png' )}")
    assert not external_in_asset("/a.css", "text/css", ".a{background:url(data:image/png;base64,AAAA)}")


def test_every_page_and_asset_is_local(app, client):
    pages = {}
    for path in page_candidates(app):
        r = client.get(path)
        if r.status_code == 200 and is_html(r):
            pages[path] = r.text
    missing = KNOWN_PAGES - set(pages)
    assert not missing, f"pages not found among the app's routes: {sorted(missing)}"

    problems, fetched = [], {}
    for path, html in pages.items():
        problems += [f"{path}: {u}" for u in external_in_page(html)]
        queue = local_references(path, html)
        assert any(ref.endswith(".js") for ref in queue) or path == "/docs/oauth2-redirect", \
            f"{path} references no script: the page reader is broken"
        while queue:
            ref = queue.pop()
            if ref in fetched:
                continue
            r = client.get(ref)
            fetched[ref] = r.status_code
            if r.status_code != 200:
                problems.append(f"{path} needs {ref}: {r.status_code}")
                continue
            kind = r.headers.get("content-type", "")
            if "javascript" in kind or "css" in kind:
                problems += [f"{ref}: {u}" for u in external_in_asset(ref, kind, r.text)]
            if "css" in kind:
                queue += css_references(ref, r.text)
    assert {"/static/vendor/swagger-ui-bundle.js", "/static/vendor/swagger-ui.css",
            "/static/vendor/redoc.standalone.js", "/static/vendor/favicon.png",
            "/static/vendor/plotly-pages.min.js", "/static/css/site.css"} <= set(fetched)
    assert not problems, "\n".join(problems)


def test_docs_pages_load_from_this_server_only(client):
    """The browser itself refuses other origins on /docs and /redoc, whatever their scripts ask."""
    for path in ("/docs", "/redoc"):
        directive, *sources = client.get(path).headers["content-security-policy"].split()
        assert directive == "default-src" and ";" not in sources[-1]
        assert set(sources) <= {"'self'", "'unsafe-inline'", "'unsafe-eval'", "data:", "blob:"}, sources


def test_unknown_vendor_file_is_404(client):
    r = client.get("/static/vendor/jquery.js")
    assert r.status_code == 404
    assert "plotly.min.js" in r.json()["detail"]


def test_docs_render_offline_in_a_browser(browser, live_server, app):
    """Swagger UI and ReDoc draw the API, and no page asks another origin for anything."""
    origin = urlsplit(live_server).netloc
    paths = [p for p in page_candidates(app) if p in KNOWN_PAGES or p.startswith("/docs")]
    elsewhere: list[str] = []

    def route(r):
        scheme, netloc = urlsplit(r.request.url)[:2]
        if scheme in ("http", "https", "ws", "wss") and netloc != origin:
            elsewhere.append(r.request.url)
            return r.abort()
        return r.continue_()

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        context.route("**/*", route)
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        for path in paths:
            pg.goto(live_server + path, wait_until="load")
            if path == "/docs":
                pg.wait_for_selector(".swagger-ui .opblock")           # drawn from /openapi.json
            elif path == "/redoc":
                pg.wait_for_selector(".redoc-wrap .api-content h1")    # the title, from the document
            try:
                pg.wait_for_load_state("networkidle", timeout=5_000)
            except Exception:                   # a page that keeps a stream open never idles
                pass
    finally:
        context.close()
    assert not elsewhere, "\n".join(elsewhere)
