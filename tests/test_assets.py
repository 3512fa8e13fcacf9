"""Static files served compressed and cacheable (issue 19), pages never cached stale, event
streams never compressed nor held back; /docs and /redoc clean in a browser, with a way back."""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.routing import Mount

from rnnscope.app.web.assets import (ASSETS, COMPRESS_INLINE_BYTES, DIGEST_CHARS, PLOTLY_JS, PLOTLY_PAGES_JS,
                                     STATIC_DIR, VENDOR_FILES, AssetCache, AssetFiles, accepts_gzip)
from tests.conftest import serving
from tests.training_app import ENDLESS, FAST, OWNER, build_app, new_corpus, start

GZIP = {"accept-encoding": "gzip"}
IDENTITY = {"accept-encoding": "identity"}
YEAR = 31536000


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def linked(html: str, name: str) -> str:
    """The URL a page links /static/<name> by."""
    found = re.findall(rf'(?:src|href)="(/static/{re.escape(name)}(?:\?[^"]*)?)"', html)
    assert len(found) == 1, found
    return found[0]


def plotly_compressed(client) -> httpx.Response:
    """plotly.min.js as a browser gets it once the server has compressed it (in the background)."""
    ASSETS.warm([PLOTLY_JS]).join()
    return client.get("/static/vendor/plotly.min.js", headers=GZIP)


# --- compression ----------------------------------------------------------------------------

def test_accept_encoding_is_read_as_http_says():
    assert accepts_gzip("gzip, deflate, br, zstd")               # chromium's
    assert accepts_gzip("deflate, gzip;q=0.5") and accepts_gzip("*") and accepts_gzip("x-gzip")
    assert not accepts_gzip("") and not accepts_gzip("identity") and not accepts_gzip("br, zstd")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("gzip;q=0.000, *;q=1")
    assert not accepts_gzip("*;q=0") and not accepts_gzip("gzip;q=junk")


def test_scripts_and_styles_are_gzipped_when_asked_and_only_then(client):
    for path, source in (("/static/js/common.js", STATIC_DIR / "js" / "common.js"),
                         ("/static/css/site.css", STATIC_DIR / "css" / "site.css")):
        r = client.get(path, headers=GZIP)
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert r.headers["vary"] == "Accept-Encoding"
        assert int(r.headers["content-length"]) < source.stat().st_size / 2
        assert r.content == source.read_bytes()                   # httpx undoes the gzip
        for refused in (IDENTITY, {"accept-encoding": "gzip;q=0"}, {"accept-encoding": "br"}):
            plain = client.get(path, headers=refused)
            assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"
            assert plain.content == source.read_bytes()
            assert int(plain.headers["content-length"]) == source.stat().st_size


def test_plotly_goes_out_as_a_third_of_its_size_compressed_once(client):
    r = plotly_compressed(client)
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.content == PLOTLY_JS.read_bytes()
    assert int(r.headers["content-length"]) < PLOTLY_JS.stat().st_size / 3
    # The same bytes object each time: compressed once, not per request.
    assert ASSETS.get(PLOTLY_JS).gzipped is ASSETS.get(PLOTLY_JS).gzipped
    head = client.head("/static/vendor/plotly.min.js", headers=GZIP)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == r.headers["content-length"]
    plain = client.get("/static/vendor/plotly.min.js", headers=IDENTITY)
    assert "content-encoding" not in plain.headers and plain.content == PLOTLY_JS.read_bytes()


def test_images_are_not_compressed_again(client):
    r = client.get("/static/img/python-string-card.png", headers=GZIP)
    assert r.status_code == 200 and "content-encoding" not in r.headers and "vary" not in r.headers
    assert r.content == (STATIC_DIR / "img" / "python-string-card.png").read_bytes()


def test_a_large_file_is_served_plain_until_its_gzip_is_ready(tmp_path):
    """Compressing a large file happens in the background, never in the request that asked."""
    big = tmp_path / "big.js"
    big.write_bytes(b"var x = 1;\n" * (COMPRESS_INLINE_BYTES // 8))
    cache = AssetCache()
    first = cache.get(big)
    assert first.gzipped is None                                  # the request did not wait
    deadline = time.monotonic() + 30
    while cache.get(big).gzipped is None:
        assert time.monotonic() < deadline, "the background compression never finished"
        time.sleep(0.02)
    assert gzip.decompress(cache.get(big).gzipped) == big.read_bytes()
    assert cache.get(big).digest == first.digest == digest(big.read_bytes())


# --- validators and caching -----------------------------------------------------------------

def test_pages_link_their_files_by_content_hash_and_those_urls_are_immutable(client):
    html = client.get("/explore").text
    for name, source in (("vendor/plotly-pages.min.js", PLOTLY_PAGES_JS),
                         ("css/site.css", STATIC_DIR / "css" / "site.css"),
                         ("js/explore.js", STATIC_DIR / "js" / "explore.js")):
        url = linked(html, name)
        assert url == f"/static/{name}?v={digest(source.read_bytes())}"
        r = client.get(url, headers=GZIP)
        assert r.status_code == 200 and r.headers["cache-control"] == f"public, max-age={YEAR}, immutable"
        # Without the hash, or with another file's, the URL may hold anything: reuse only after asking.
        for other in (f"/static/{name}", f"/static/{name}?v=0123456789abcdef0123"):
            assert client.get(other, headers=GZIP).headers["cache-control"] == "no-cache"


def test_an_etag_per_representation_and_304_for_what_the_browser_holds(client):
    plotly_compressed(client)
    for path in ("/static/vendor/plotly.min.js", "/static/js/common.js", "/static/img/python-string-card.png"):
        for encoding in (GZIP, IDENTITY):
            r = client.get(path, headers=encoding)
            etag = r.headers["etag"]
            assert re.fullmatch(r'"[0-9a-f]{20}(-gzip)?"', etag)
            again = client.get(path, headers={**encoding, "if-none-match": etag})
            assert again.status_code == 304 and again.content == b""
            assert again.headers["etag"] == etag and again.headers["cache-control"] == r.headers["cache-control"]
            weak = client.get(path, headers={**encoding, "if-none-match": f'"other", W/{etag}'})
            assert weak.status_code == 304
            stale = client.get(path, headers={**encoding, "if-none-match": '"0123456789abcdef0123"'})
            assert stale.status_code == 200 and stale.content == r.content
        if path.endswith(".js"):
            gz = client.get(path, headers=GZIP).headers["etag"]
            plain = client.get(path, headers=IDENTITY).headers["etag"]
            assert gz != plain and gz.startswith(plain[:-1])
            # The plain copy's ETag does not validate the gzipped one.
            assert client.get(path, headers={**GZIP, "if-none-match": plain}).status_code == 200


def test_an_edited_file_gets_a_new_hash_url_and_etag(tmp_path):
    (tmp_path / "page.js").write_text("export const version = 1;\n")
    app = Starlette(routes=[Mount("/static", AssetFiles(directory=tmp_path))])
    with TestClient(app) as client:
        first = client.get("/static/page.js", headers=GZIP)
        (tmp_path / "page.js").write_text("export const version = 22;\n")      # another size, another mtime
        second = client.get("/static/page.js", headers={**GZIP, "if-none-match": first.headers["etag"]})
        assert second.status_code == 200 and second.text == "export const version = 22;\n"
        assert second.headers["etag"] != first.headers["etag"]
        assert second.headers["etag"] == f'"{digest(b"export const version = 22;" + bytes([10]))}-gzip"'
        for bad in ("/static/../page.js", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/nothing.js"):
            assert client.get(bad).status_code == 404


def test_the_vendor_route_refuses_what_it_does_not_serve(client):
    assert client.post("/static/vendor/plotly.min.js").status_code == 405
    assert client.get("/static/vendor/..%2f..%2fapp%2fmain.py").status_code == 404
    r = client.get("/static/vendor/..%5cmain.py")
    assert r.status_code == 404 and "plotly.min.js" in r.json()["detail"]


# --- pages and streams ----------------------------------------------------------------------

def test_pages_are_never_reused_without_asking(client):
    for path in ("/", "/explore", "/compare", "/train", "/docs", "/redoc"):
        r = client.get(path, headers=GZIP)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["cache-control"] == "no-cache", path
    # JSON keeps whatever its route said.
    assert "cache-control" not in client.get("/api/models").headers


def test_sample_stream_is_neither_compressed_nor_held_back(live_server):
    body = {"prime": "ROMEO:", "length": 120, "seed": 3}
    with httpx.Client(base_url=live_server, timeout=30, headers=GZIP) as http:
        with http.stream("POST", "/api/models/lstm/sample/stream", json=body) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in r.headers
            chunks = [line for line in r.iter_lines() if line.startswith("event: ")]
    assert chunks[0] == "event: chunk" and chunks[-1] == "event: done"


def test_run_events_arrive_while_the_run_trains_uncompressed(tmp_path):
    """An endless run's stream never ends: its events can only be read if nothing buffers it."""
    with serving(build_app(tmp_path, **FAST)) as url, \
            httpx.Client(base_url=url, timeout=30, headers={**OWNER, **GZIP}) as http:
        run_id = start(http, new_corpus(http), max_steps=ENDLESS)
        steps = []
        try:
            with http.stream("GET", f"/api/runs/{run_id}/events") as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                assert "content-encoding" not in r.headers
                for line in r.iter_lines():
                    if line.startswith("event: step"):
                        steps.append(line)
                        if len(steps) == 3:
                            break
        finally:
            http.post(f"/api/runs/{run_id}/cancel")
    assert len(steps) == 3


# --- /docs and /redoc -----------------------------------------------------------------------

def test_served_redoc_asks_no_cdn_for_its_logo(client):
    original = VENDOR_FILES["redoc.standalone.js"].read_bytes()
    assert b"https://cdn.redoc.ly/redoc/logo-mini.svg" in original      # what the patch is for
    served = client.get("/static/vendor/redoc.standalone.js").content
    assert b"cdn.redoc.ly" not in served and len(served) > 0.99 * len(original)
    assert client.get("/redoc").text.count(f"redoc.standalone.js?v={digest(served)}") == 1


def test_position_may_be_left_out_and_the_schema_says_so_without_conflict(client):
    doc = client.get("/openapi.json").json()
    for name in ("GradientsRequest", "SaliencyRequest"):
        schema = doc["components"]["schemas"][name]
        # ReDoc merges the `if` into the property: a `type` there would clash with integer.
        assert "type" not in json.dumps(schema["if"])
        assert schema["if"] == {"properties": {"position": {"enum": [None]}}}
    long = "ab" * 2000
    for body in ({"text": long}, {"text": long, "position": None}):
        r = client.post("/api/models/lstm/gradients", json=body)
        assert r.status_code == 422 and "without a position" in r.text.lower()
    assert client.post("/api/models/lstm/gradients", json={"text": long, "position": 10}).status_code == 200


@pytest.mark.parametrize("path,drawn", [("/redoc", ".redoc-wrap .api-content h1"), ("/docs", ".swagger-ui .opblock")])
def test_docs_pages_are_clean_in_a_browser_and_lead_back_to_the_app(browser, live_server, path, drawn):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        pg = context.new_page()
        messages: list[str] = []
        pg.on("console", lambda m: m.type in ("error", "warning") and messages.append(f"{m.type}: {m.text}"))
        pg.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        pg.goto(live_server + path)
        pg.wait_for_selector(drawn, timeout=30_000)
        if path == "/redoc":                   # the menu footer where the logo was
            pg.wait_for_selector("text=API docs by Redocly")
        pg.wait_for_load_state("networkidle")
        assert not messages, messages
        pg.click("nav.rnnscope-back a")
        pg.wait_for_url(live_server + "/")
        assert pg.title().endswith("rnnscope")
    finally:
        context.close()


def test_the_pages_plotly_bundle_has_every_trace_type_they_draw(browser, live_server):
    """The pages load plotly.js with only the trace types they draw, not the full one: a trace type outside it
    would draw nothing."""
    import plotly.graph_objects as go
    from plotly.basedatatypes import BaseTraceType

    every_type = {cls().type for name in dir(go) if isinstance(cls := getattr(go, name), type)
                  and issubclass(cls, BaseTraceType) and cls is not BaseTraceType}
    named = {t for f in (STATIC_DIR / "js").glob("*.js")
             for t in re.findall(r"""\btype:\s*["'](\w+)["']""", f.read_text())}
    drawn = named & every_type
    assert {"scatter", "heatmap", "bar"} <= drawn                     # the scan finds them
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(live_server + "/explore")
        pg.wait_for_function("window.Plotly && Plotly.PlotSchema")
        assert pg.evaluate("Plotly.version") in PLOTLY_JS.read_text()[:200]   # the same plotly.js
        in_bundle = set(pg.evaluate("Object.keys(Plotly.PlotSchema.get().traces)"))
    finally:
        context.close()
    assert drawn <= in_bundle, drawn - in_bundle
    assert "scattergl" not in in_bundle                                # the small bundle, not the full one
