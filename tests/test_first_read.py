"""/explore's first read (issue 19): for a link that names no text, the page says which trace
it will ask for first and brings that model's detail and passages (#first-read), so its script
asks before plotly.js runs; the trace the page then needs is that one, asked for once."""
from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from tests.conftest import TEST_HOSTS, serving, watched_page


@pytest.fixture(scope="module")
def bundled_app(tmp_path_factory):
    """The bundled models, whose own texts ship with them: the first passage is known."""
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("data"), allowed_hosts=TEST_HOSTS))


@pytest.fixture(scope="module")
def client(bundled_app):
    with TestClient(bundled_app) as c:
        yield c


def first_read(client, query: str = "") -> dict | None:
    html = client.get("/explore" + query).text
    found = re.search(r'<script type="application/json" id="first-read">(.*?)</script>', html, re.S)
    return None if found is None else json.loads(found.group(1))


def test_the_first_read_is_what_the_page_would_ask_for(client):
    hint = first_read(client)
    first = client.get("/api/models").json()[0]
    passages = client.get(f"/api/models/{first['id']}/passages").json()["passages"]
    assert hint == {"model": first["id"], "text": passages[0]["text"], "layer": first["num_layers"] - 1,
                    "quantity": "h", "detail": client.get(f"/api/models/{first['id']}").json(),
                    "passages": client.get(f"/api/models/{first['id']}/passages").json()}


def test_the_link_chooses_the_model_layer_and_quantity(client):
    hint = first_read(client, "?model=gru&layer=0&quantity=z")
    assert (hint["model"], hint["layer"], hint["quantity"]) == ("gru", 0, "z")
    assert hint["text"] == client.get("/api/models/gru/passages").json()["passages"][0]["text"]


def test_a_link_with_its_own_text_or_bad_parts_gets_no_wrong_hint(client):
    assert first_read(client, "?text=hello") is None
    # A model the server does not hold (or makes only when asked, as a run's snapshot): no hint.
    assert first_read(client, "?model=nope") is None and first_read(client, "?model=run-1@20") is None
    default = first_read(client)
    for query in ("?layer=99", "?layer=-1", "?layer=abc", "?quantity=%3Cscript%3E"):
        assert first_read(client, query) == default, query
    html = client.get("/explore?model=%3C%2Fscript%3E%3Cscript%3Ealert(1)").text
    assert "<script>alert(1)" not in html


def test_the_page_asks_for_its_first_trace_once_and_draws_it(bundled_app, browser):
    with serving(bundled_app) as url, watched_page(browser, 60_000) as (pg, errors):
        traces, api = [], []
        pg.on("request", lambda r: r.method == "POST" and r.url.endswith("/trace") and traces.append(r.url))
        pg.on("request", lambda r: "/api/" in r.url and api.append(r.url[len(url):]))
        pg.goto(url + "/explore")
        pg.wait_for_selector("#heatmap .main-svg", timeout=60_000)
        pg.wait_for_timeout(500)
        assert traces == [url + "/api/models/lstm/trace"], traces
        # Asked for first, before the three requests it used to wait on; the model's detail and
        # passages came with the page.
        assert api[:2] == ["/api/models/lstm/trace", "/api/models"], api
        assert "/api/models/lstm" not in api and "/api/models/lstm/passages" not in api, api
        assert pg.locator("#charmap .ch").count() > 100
        # Another layer is another trace, asked for as before.
        pg.select_option("#layer", "0")
        pg.wait_for_function("document.querySelector('#layer').value === '0'")
        pg.wait_for_timeout(1500)
        assert len(traces) == 2
    assert not errors, errors
