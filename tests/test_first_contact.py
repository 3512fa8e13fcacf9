"""Issue 9: what a first visit shows, and the defects a first visit ran into. Browser tests
(Debian's chromium through playwright; they skip without it, as in test_pages.py) and the
per-model passages route."""
from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from threadpoolctl import threadpool_limits

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def shoot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# ---- Sample page ---------------------------------------------------------------------------

def test_sample_page_counts_overlapping_copied_spans_once(page, live_server):
    """/memorised may answer 147-171 and 150-174 for one copied passage: the page counts one."""
    def memorised(route):
        route.fulfill(json={"available": True, "corpus": "tiny.txt", "count": 4, "memorised_chars": 40,
                            "spans": [{"start": 5, "end": 25, "corpus_position": 100},
                                      {"start": 8, "end": 30, "corpus_position": 103},
                                      {"start": 30, "end": 35, "corpus_position": 300},
                                      {"start": 50, "end": 60, "corpus_position": 7}]})

    page.route("**/api/models/*/memorised", memorised)
    page.goto(f"{live_server}/sample?model=lstm&length=80&seed=3&min_span=5")
    page.wait_for_selector("dt.memorised-row")
    marked = page.eval_on_selector_all("#output .ch", "els => els.map(e => e.classList.contains('memorised'))")
    assert [i for i, m in enumerate(marked) if m] == list(range(5, 35)) + list(range(50, 60))
    assert "2 spans of 5+ characters, 40 characters (50%)" in page.locator("#sample-stats").inner_text()


def test_sample_page_curl_carries_the_seed_the_server_drew(page, live_server):
    with page.expect_response(lambda r: r.url.endswith("/api/models/gru/sample")) as answer:
        page.goto(f"{live_server}/sample?model=gru&length=30")
    seed = answer.value.json()["seed"]
    page.wait_for_function("() => document.querySelectorAll('#output .ch').length === 30")
    page.wait_for_function("seed => document.getElementById('curl').textContent.includes(`\"seed\": ${seed}`)",
                           arg=seed)
    curl = page.inner_text("#curl")
    body = json.loads(re.search(r"-d '(.*)'", curl, re.S).group(1))
    # The command reproduces the text on screen.
    again = httpx.post(f"{live_server}/api/models/gru/sample", json=body, timeout=30).json()
    shown = page.eval_on_selector_all("#output .ch", "els => els.map(e => e.textContent).join('')")
    assert again["text"].replace("\n", "↵") == shown


# ---- A server with a second LSTM of another depth -------------------------------------------

# Inside the vocabulary of conftest's models (the start of tinyshakespeare).
TEXT = "ROMEO:\nbut soft, what light through yonder window breaks?\nit is the east.\n"


@contextmanager
def serving(settings):
    """The app served by uvicorn on a free port in a background thread, as conftest's live_server."""
    import uvicorn

    from app.main import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def two_lstms(tmp_path_factory, data_dir, corpus):
    """conftest's models plus run-2: an LSTM of one layer (theirs have two), as a training
    run adds; served on its own."""
    from app.settings import Settings
    from model.checkpoint import save_model
    from model.network import ModelConfig
    from model.train import TrainConfig, train

    root = tmp_path_factory.mktemp("two-lstms")
    (root / "models").mkdir()
    for f in (data_dir / "models").glob("*.safetensors"):
        shutil.copy(f, root / "models" / f.name)
    with threadpool_limits(1):
        run = train(corpus, ModelConfig("lstm", 1, 16, 1), TrainConfig(batch_size=4, seq_length=16, max_steps=5,
                                                                      eval_every=5), corpus_name="tinyshakespeare.txt")
    save_model(run.model, root / "models" / "run-2.safetensors")
    with serving(Settings(data_dir=root, load_bundled=False)) as url:
        yield url


def swatch_colours(pg, selector: str) -> dict[str, str]:
    """model id -> the background of its chip's swatch."""
    return pg.evaluate(f"""() => Object.fromEntries([...document.querySelectorAll('{selector} label')].map(
        (l) => [l.querySelector('input').value, getComputedStyle(l.querySelector('.swatch')).backgroundColor]))""")


def css_colour(pg, colour: str) -> str:
    return pg.evaluate("c => { const d = document.createElement('div'); d.style.color = c; document.body.append(d); "
                       "const v = getComputedStyle(d).color; d.remove(); return v; }", colour)


# ---- Gradients page ------------------------------------------------------------------------

def test_gradients_grid_lines_are_what_the_caption_says(page, live_server):
    page.goto(f"{live_server}/gradients?text={quote(TEXT * 3)}")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    ticks = page.evaluate("""() => { const fl = document.getElementById('grad-chart')._fullLayout;
        return Object.keys(fl).filter((k) => /^yaxis\\d*$/.test(k)).map((k) => fl[k].dtick); }""")
    assert ticks and len(set(ticks)) == 1, ticks
    k = ticks[0]
    assert isinstance(k, int) and k >= 1, k                    # a grid line every 10^k, on every panel
    caption = page.inner_text("#grad-scale")
    factor = "10" if k == 1 else "10" + "".join("⁰¹²³⁴⁵⁶⁷⁸⁹"[int(d)] for d in str(k))
    assert f"each grid line down is a factor of {factor} smaller" in caption


def test_model_colours_agree_and_every_model_has_a_legend_entry(page, two_lstms):
    page.goto(f"{two_lstms}/gradients?models=lstm,run-2&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('grad-chart').data?.length > 0")
    chips = swatch_colours(page, "#models")
    traces = page.evaluate("() => document.getElementById('grad-chart').data")
    for model in ("lstm", "run-2"):
        lines = [t for t in traces if t["meta"][0] == model]
        assert lines, model
        assert {css_colour(page, t["line"]["color"]) for t in lines} == {chips[model]}, model
        assert any(t.get("showlegend", True) for t in lines), f"{model} has no legend entry"
    assert chips["lstm"] != chips["run-2"]
    rows = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#summary tbody tr')].map(
        (tr) => [tr.dataset.model, getComputedStyle(tr.querySelector('.swatch')).backgroundColor]))""")
    assert rows == {m: chips[m] for m in ("lstm", "run-2")}
    shoot(page, "gradients-two-lstms")

    # The Compare page colours each model as the Gradients page does.
    page.goto(f"{two_lstms}/compare?models=lstm,run-2&text={quote(TEXT)}")
    page.wait_for_function("() => document.getElementById('chars-chart').data?.length > 0")
    assert swatch_colours(page, "#models") == chips
    for t in page.evaluate("() => document.getElementById('chars-chart').data"):
        if t.get("legendgroup") in chips and "line" in t:
            assert css_colour(page, t["line"]["color"]) == chips[t["legendgroup"]]
