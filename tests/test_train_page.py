"""The Train page in Chromium: upload an excerpt of tinyshakespeare, read the preflight,
start a short run, watch the loss curve grow, cancel and resume, let it finish, and open
the new model in the neuron explorer. Screenshots go to test-artifacts/.

Debian's /usr/bin/chromium driven by Python playwright; without it the tests skip, unless
RNNSCOPE_REQUIRE_BROWSER=1 (CI), when they fail.
"""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.training_app import Server, excerpt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ENV = {"RNNSCOPE_CHECKPOINT_EVERY_STEPS": "25", "RNNSCOPE_SAMPLE_EVERY_STEPS": "25",
       "RNNSCOPE_FLUSH_SECONDS": "0.1"}
# Slow enough (tens of milliseconds a step) to watch, quick enough to finish in seconds.
FORM = {"hidden_size": "48", "num_layers": "2", "seq_length": "64", "batch_size": "16",
        "learning_rate": "0.01", "max_steps": "150"}


def serve(tmp_path_factory, **env) -> Server:
    return Server(tmp_path_factory.mktemp("data"), ENV | env).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = serve(tmp_path_factory)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "shakespeare-excerpt.txt"
    path.write_text(excerpt(40_000), encoding="utf-8")
    return path


@pytest.fixture
def page(page):
    """conftest's page, with time for a run to train."""
    page.set_default_timeout(30_000)
    return page


def shoot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def trace_points(pg, element_id: str, trace: int = 0) -> int:
    return pg.evaluate(f"() => (document.getElementById('{element_id}').data?.[{trace}]?.x || []).length")


def fill_form(pg, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        pg.fill(f"#{name}", value)


def test_upload_train_watch_and_explore(page, server, corpus_file):
    page.goto(f"{server.url}/train")
    page.locator("#runs-status[data-state='empty']").wait_for()
    assert page.locator(".site-nav a[aria-current='page']").inner_text() == "Train"
    shoot(page, "train-empty")

    # Pick a file -> the preflight -> a form with defaults chosen from it.
    page.set_input_files("#file", str(corpus_file))
    page.locator("#config-card:not([hidden])").wait_for()
    text = corpus_file.read_text(encoding="utf-8")
    stats = page.inner_text("#corpus-stats")
    assert "40.0k" in stats and str(len(set(text))) in stats
    assert page.locator("#vocab .v").count() == len(set(text))
    recommend = page.inner_text("#recommend")
    assert "char-rnn" in recommend and "LSTM" in recommend
    corpus = httpx.get(f"{server.url}/api/corpora?owner=all").json()[0]      # the page's, not this client's
    rec = httpx.get(f"{server.url}/api/corpora/{corpus['id']}").json()["preflight"]["recommended"]
    assert page.input_value("#hidden_size") == str(rec["hidden_size"])
    assert page.input_value("#max_steps") == str(rec["max_steps"])
    page.locator("#estimate b").first.wait_for()                  # the form's time estimate
    shoot(page, "train-preflight")

    # Start -> live curves.
    fill_form(page, FORM)
    page.fill("#run-name-input", "browser test run")
    page.click("#start")
    page.locator("#run-card:not([hidden])").wait_for()
    assert page.inner_text("#run-name") == "browser test run"
    assert "run=" in page.url
    page.wait_for_function("() => (document.getElementById('loss-chart').data?.[0]?.x || []).length >= 10")
    early, status = page.evaluate("() => [document.getElementById('loss-chart').data[0].x.length, "
                                  "document.getElementById('run-status').dataset.status]")
    assert status == "running" and early < 150                     # caught mid-run...
    shoot(page, "train-running")

    # Let it finish: validation points, samples, the gradient heatmap, the clipping threshold.
    page.locator("#done-banner:not([hidden])").wait_for(timeout=120_000)
    assert trace_points(page, "loss-chart") == 150                  # ...and the curve grew to the end
    assert trace_points(page, "grad-chart") == 150
    assert trace_points(page, "loss-chart", 1) >= 10                 # validation every max_steps / 20 steps
    run = httpx.get(f"{server.url}/api/runs?owner=all").json()[0]
    losses = page.evaluate("() => document.getElementById('loss-chart').data[0].y")
    metrics = httpx.get(f"{server.url}/api/runs/{run['id']}/metrics").json()
    assert losses == pytest.approx(metrics["loss"])                  # the page drew what the API logged
    threshold = page.evaluate("() => document.getElementById('grad-chart').layout.shapes[0].y0")
    assert threshold == run["config"]["grad_clip"]
    assert page.locator("#samples .sample-set").count() == 6         # steps 25, 50, ..., 150
    assert page.locator("#samples .sample-set").first.get_attribute("data-step") == "150"
    page.wait_for_function("() => document.getElementById('gtt-chart').data?.[0]?.type === 'heatmap'")
    assert page.evaluate("() => document.getElementById('gtt-chart').data[0].x.length") == 6
    assert page.locator("#gtt-chart .heatmaplayer image").is_visible()
    assert page.get_attribute("#run-status", "data-status") == "completed"
    assert page.locator("#runs-table tbody tr").count() == 1
    assert page.get_attribute("#runs-table tbody tr .pill", "data-status") == "completed"
    page.locator("#run-card").scroll_into_view_if_needed()
    shoot(page, "train-completed")

    # Open the new model in the neuron explorer.
    page.click("#done-explore")
    page.wait_for_url(f"**/explore?model=run-{run['id']}*")
    page.wait_for_function(f"() => document.getElementById('model').value === 'run-{run['id']}'")
    page.locator("#charmap .ch").first.wait_for()
    assert "browser test run" in page.locator("#model option:checked").inner_text()
    shoot(page, "train-explore")


def test_cancel_resume_and_reload(page, server, corpus_file):
    page.goto(f"{server.url}/train")
    page.set_input_files("#file", str(corpus_file))
    page.locator("#config-card:not([hidden])").wait_for()
    fill_form(page, FORM | {"max_steps": "100000"})
    page.click("#start")
    page.wait_for_function("() => (document.getElementById('loss-chart').data?.[0]?.x || []).length >= 30")
    page.click("#cancel")
    page.locator("#run-status[data-status='cancelled']").wait_for()
    assert page.locator("#resume").is_visible() and not page.locator("#cancel").is_visible()
    stopped = trace_points(page, "loss-chart")
    shoot(page, "train-cancelled")

    # A reload draws the history from the API; resuming continues the same curve.
    page.reload()
    page.wait_for_function(f"() => document.getElementById('loss-chart').data?.[0]?.x.length === {stopped}")
    page.click("#resume")
    page.wait_for_function(f"() => document.getElementById('loss-chart').data[0].x.length > {stopped + 20}")
    steps = page.evaluate("() => document.getElementById('loss-chart').data[0].x")
    assert steps == list(range(1, len(steps) + 1))                  # no gap, no repeat across the resume
    page.click("#cancel")
    page.locator("#run-status[data-status='cancelled']").wait_for()


def test_a_refused_upload_says_why(page, server, tmp_path):
    png = tmp_path / "picture.txt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    page.goto(f"{server.url}/train")
    page.set_input_files("#file", str(png))
    status = page.locator("#upload-status[data-state='error']")
    status.wait_for()
    assert "PNG image" in status.inner_text() and "UTF-8" in status.inner_text()
    assert page.locator("#config-card").is_hidden()
    shoot(page, "train-refused")


def test_the_token_is_asked_once_per_tab(page, tmp_path_factory, corpus_file):
    server = serve(tmp_path_factory, RNNSCOPE_TOKEN="open sesame", RNNSCOPE_CREATE_NEEDS_TOKEN="true")
    try:
        page.goto(f"{server.url}/train")
        assert page.locator("#token-note").is_visible()
        page.set_input_files("#file", str(corpus_file))
        dialog = page.locator("#token-dialog[open]")
        dialog.wait_for()
        shoot(page, "train-token")
        page.fill("#token-input", "wrong")
        page.click("#token-ok")
        page.locator("#token-error:not([hidden])").wait_for()        # asked again, saying why
        page.fill("#token-input", "open sesame")
        page.click("#token-ok")
        page.locator("#config-card:not([hidden])").wait_for()
        assert page.evaluate("() => sessionStorage.getItem('rnnscope-token')") == "open sesame"
        # Starting the run needs the token too; it is not asked for again.
        fill_form(page, FORM | {"max_steps": "30"})
        page.click("#start")
        page.locator("#done-banner:not([hidden])").wait_for(timeout=60_000)
        assert page.locator("#token-dialog[open]").count() == 0
    finally:
        server.stop()


def test_two_students_share_a_server_and_keep_their_own_runs(browser, tmp_path_factory, corpus_file):
    """Issue 8: two browsers (two students) each upload and train. Neither can cancel or
    delete the other's run, from the page or the API; both see and open each other's models."""
    server = serve(tmp_path_factory)
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    try:
        pages = [c.new_page() for c in contexts]
        run_ids = []
        for i, pg in enumerate(pages):
            pg.set_default_timeout(30_000)
            pg.goto(f"{server.url}/train")
            text = corpus_file.parent / f"student-{i}.txt"
            text.write_text(corpus_file.read_text()[: 30_000 + 1000 * i])
            pg.set_input_files("#file", str(text))
            pg.locator("#config-card:not([hidden])").wait_for()
            fill_form(pg, FORM | {"max_steps": "100000", "hidden_size": "16", "num_layers": "1"})
            pg.click("#start")
            pg.wait_for_function("() => new URLSearchParams(location.search).get('run')")
            run_ids.append(int(pg.evaluate("() => new URLSearchParams(location.search).get('run')")))
        mine, theirs = run_ids
        alice, bob = pages
        # Alice looks at Bob's run: she can watch it, not cancel it.
        alice.goto(f"{server.url}/train?run={theirs}")
        alice.locator("#run-owner:not([hidden])").wait_for()
        assert alice.locator("#cancel").is_hidden()
        # Her runs table lists hers (issue 18); everyone's once she ticks the box.
        alice.locator(f'#runs-table tr[data-run="{mine}"]').wait_for()
        assert alice.locator(f'#runs-table tr[data-run="{theirs}"]').count() == 0
        alice.check("#runs-everyone")
        alice.locator(f'#runs-table tr[data-run="{theirs}"] .others').wait_for()
        assert alice.locator(f'#runs-table tr[data-run="{theirs}"] button').count() == 0   # no Delete
        shoot(alice, "train-someone-elses-run")
        # Nor through the API with her browser's cookie.
        for method, path in [("POST", "cancel"), ("POST", "resume")]:
            r = alice.request.fetch(f"{server.url}/api/runs/{theirs}/{path}", method=method,
                                    headers={"Origin": server.url})
            assert r.status == 403, (path, r.status)
        assert alice.request.delete(f"{server.url}/api/runs/{theirs}", headers={"Origin": server.url}).status == 403
        # Each cancels their own.
        for pg, rid in zip(pages, run_ids):
            pg.goto(f"{server.url}/train?run={rid}")
            pg.locator("#cancel:not([hidden])").click()
            pg.locator('#run-status[data-status="cancelled"]').wait_for()
        # Each lists their own (issue 18), both with ?owner=all, and a link opens the other's.
        for pg, own in zip(pages, (mine, theirs)):
            ids = {m["id"] for m in pg.request.get(f"{server.url}/api/models").json()}
            assert f"run-{own}" in ids and len(ids & {f"run-{mine}", f"run-{theirs}"}) == 1
            ids = {m["id"] for m in pg.request.get(f"{server.url}/api/models?owner=all").json()}
            assert {f"run-{mine}", f"run-{theirs}"} <= ids
        alice.goto(f"{server.url}/explore?model=run-{theirs}")
        alice.wait_for_function("() => document.querySelectorAll('#charmap .ch').length > 0")
    finally:
        for c in contexts:
            c.close()
        server.stop()


def test_the_runs_table_follows_every_run_live_and_says_where_they_train(page, tmp_path_factory, corpus_file):
    """The thread executor's side of issue 14's page: the training line, a queued run's place,
    every row's status and steps refreshed without a reload (not only the run on the card),
    the refreshing stopping once nothing trains and starting again with a new run."""
    server = serve(tmp_path_factory)
    # The page's GET /api/runs requests. Playwright delivers events during its own calls, so
    # the waits below are page.wait_for_timeout, not time.sleep.
    listed: list[str] = []
    page.on("request", lambda r: r.url.endswith("/api/runs") and r.method == "GET" and listed.append(r.url))
    try:
        page.goto(f"{server.url}/train")
        page.locator("#training-capacity:not([hidden])").wait_for()
        summary = page.locator("#training-capacity .summary")
        assert summary.inner_text() == "Training on this server · 1 run at a time · none training now"
        assert page.locator("#training-capacity .nodes").is_hidden()      # one machine: no list of them
        page.evaluate("() => { window.notReloaded = true; }")
        page.set_input_files("#file", str(corpus_file))
        page.locator("#config-card:not([hidden])").wait_for()
        ids = []
        for name in ("first in line", "second in line"):
            fill_form(page, FORM | {"max_steps": "400"})
            page.fill("#run-name-input", name)
            page.click("#start")
            page.wait_for_function("(known) => { const id = new URLSearchParams(location.search).get('run');"
                                   " return id && !known.includes(Number(id)); }", arg=ids)
            ids.append(int(page.evaluate("() => new URLSearchParams(location.search).get('run')")))
        first, second = ids
        # One trains, one waits; the card (the second run) says why and where it stands.
        page.wait_for_function("() => document.querySelector('#training-capacity .summary').textContent"
                               ".endsWith('1 running, 1 waiting')")
        page.wait_for_function("() => document.getElementById('run-message').textContent.includes("
                               "'Waiting for a free slot: 1 run trains at a time on this server; this one is next.')")
        row = page.locator(f'#runs-table tr[data-run="{first}"]')
        assert row.locator(".where").inner_text() == "on this server"
        assert page.locator(f'#runs-table tr[data-run="{second}"] .where').inner_text() == "next"
        page.wait_for_function(f"() => parseFloat(document.querySelector('#runs-table tr[data-run=\"{first}\"] "
                               ".bar > div').style.width) > 0")
        shoot(page, "train-queue")
        # The first run's row moves on by itself, though the card follows the second.
        row.locator(".pill[data-status='completed']").wait_for(timeout=120_000)
        assert row.locator(".steps").inner_text() == "400 / 400" and row.locator(".bar").is_hidden()
        page.locator(f'#runs-table tr[data-run="{second}"] .pill[data-status="completed"]').wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelector('#training-capacity .summary').textContent"
                               ".endsWith('none training now')")
        assert page.evaluate("() => window.notReloaded === true")
        # Nothing trains: the table stops asking ...
        page.wait_for_timeout(1000)
        quiet = len(listed)
        page.wait_for_timeout(5000)
        assert len(listed) == quiet, "the table kept refreshing with no run training"
        # ... until a run starts again.
        fill_form(page, FORM | {"max_steps": "100000"})
        page.click("#start")
        page.locator("#cancel:not([hidden])").wait_for()
        started = len(listed)
        page.wait_for_timeout(5000)
        assert len(listed) >= started + 2, (started, len(listed))
        page.click("#cancel")
        page.locator("#run-status[data-status='cancelled']").wait_for()
    finally:
        server.stop()
