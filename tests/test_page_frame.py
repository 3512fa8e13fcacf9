"""The page frame (templates/base.html): each page fills its head, names what it labels, links
its own script, and loads plotly.js exactly when it has a chart to draw.

A page fills the frame's blocks, so a block it forgets renders as an empty element rather than
an error: these tests read every page the app serves for what the frame should hold."""
from __future__ import annotations

from html.parser import HTMLParser

from tests.test_offline import page_candidates

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Elements(HTMLParser):
    """Every element of a document, in order, with its attributes, its parent and the text
    inside it (its descendants' included)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = {"tag": tag, "attrs": {k: v or "" for k, v in attrs}, "text": "",
                   "parent": self._open[-1] if self._open else None}
        self.elements.append(element)
        if tag not in VOID:
            self._open.append(element)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data


def classes(element: dict) -> list[str]:
    return element["attrs"].get("class", "").split()


def framed_pages(app, client) -> dict[str, list[dict]]:
    """Path -> elements of every page the app serves from templates/ (their <body> names the page)."""
    pages = {}
    for path in page_candidates(app):
        r = client.get(path)
        if r.status_code == 200 and "<body data-page=" in r.text:
            pages[path] = Elements(r.text).elements
    assert {"/", "/explore", "/gradients", "/gates", "/sample", "/states", "/learn"} <= pages.keys()
    return pages


def test_every_page_fills_the_head_and_names_what_it_labels(app, client):
    for path, elements in framed_pages(app, client).items():
        headings = [e for e in elements if e["tag"] == "h1"]
        assert len(headings) == 1 and headings[0]["text"].strip(), path
        for head in [e for e in elements if e["tag"] == "header" and "page-head" in classes(e)]:
            parts = [next(iter(classes(e)), e["tag"]) for e in elements
                     if e["parent"] is head and e["tag"] in ("p", "h1") and "verdict" not in classes(e)]
            assert parts == ["eyebrow", "h1", "lede"], path
            assert all(e["text"].strip() for e in elements if e["parent"] is head
                       and e["attrs"].get("class") != "verdict"), path
        unnamed = [e["tag"] + "#" + e["attrs"].get("id", "") for e in elements
                   if "aria-label" in e["attrs"] and not e["attrs"]["aria-label"].strip()]
        assert not unnamed, (path, unnamed)


def test_every_page_links_its_own_module_once(app, client):
    for path, elements in framed_pages(app, client).items():
        page = next(e for e in elements if e["tag"] == "body")["attrs"]["data-page"]
        modules = [e["attrs"]["src"] for e in elements
                   if e["tag"] == "script" and e["attrs"].get("type") == "module"]
        assert sum(src.startswith(f"/static/js/{page}.js?v=") for src in modules) == 1, (path, modules)


def test_plotly_is_loaded_once_by_exactly_the_pages_that_draw_charts(app, client):
    with_charts = set()
    for path, elements in framed_pages(app, client).items():
        # Deferred, or preloaded and run by the page's script once its own requests are out.
        plotly = [e["attrs"] for e in elements if (e["tag"] == "script" and e["attrs"].get("id") == "plotly-js")
                  or (e["tag"] == "link" and e["attrs"].get("id") == "plotly-js-preload")]
        if any("chart" in classes(e) for e in elements):
            with_charts.add(path)
            assert len(plotly) == 1, path
            url = plotly[0].get("src") or plotly[0].get("href")
            assert url.startswith("/static/vendor/plotly-pages.min.js?v="), path
            # Never blocking the page.
            assert "defer" in plotly[0] or (plotly[0].get("rel") == "preload" and plotly[0].get("as") == "script"), \
                (path, plotly[0])
        else:
            assert not plotly, path
    assert {"/explore", "/gradients", "/gates"} <= with_charts and "/" not in with_charts
