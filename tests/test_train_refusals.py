"""/train (its upload, its runs and the model import on it) and the home page say a refusal the
way every other page does (common.js refusal): a 503 or 429 in plain words, the server's own
detail (which names its RNNSCOPE_ setting) folded away under it. A GET refused as busy is tried
again once after Retry-After with a countdown; an upload or a run's start is never sent twice by
itself (a second corpus, a second run): its message says when to try again.

The refusals are made by routing the page's own requests in the browser (page.route), so the
tests do not depend on the machine's load. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training_app import excerpt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BUSY_DETAIL = ("the server is busy: 2 jobs running and 8 waiting, the limit (setting RNNSCOPE_MAX_WAITING_JOBS); "
               "try again shortly")
# What app/training/router.py's queue_refusal says for the two kinds of full queue.
EVERYONES_QUEUE = ("the server's queued and running runs have 7,200 s (2.0 h) of training still to do and this one "
                   "adds 600 s (0.2 h); the limit for everyone's together is 7,200 s (2.0 h) (setting "
                   "RNNSCOPE_MAX_QUEUED_SECONDS): try again later or lower max_steps")
YOUR_QUEUE = ("3 of your runs are queued already, the limit (setting RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER); wait for "
              "one to start or cancel one")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "refusals-excerpt.txt"
    path.write_text(excerpt(6_000), encoding="utf-8")
    return path


def refuse(route, status: int, detail: str, retry_after: int):
    route.fulfill(status=status, headers={"Retry-After": str(retry_after)}, content_type="application/json",
                  body=json.dumps({"detail": detail}))


def headline_and_detail(page, status_id: str) -> tuple[str, str]:
    status = page.locator(f"#{status_id}[data-state='error']")
    status.wait_for()
    return status.locator("p").first.inner_text(), status.locator("details").text_content()


def test_a_busy_upload_reads_plainly_and_is_not_sent_again(page, live_server, corpus_file):
    page.goto(f"{live_server}/train")
    posted = []

    def busy(route):
        if route.request.method != "POST":
            return route.continue_()
        posted.append(route.request.url)
        refuse(route, 503, BUSY_DETAIL, retry_after=1)
    page.route("**/api/corpora", busy)
    page.set_input_files("#file", str(corpus_file))
    headline, detail = headline_and_detail(page, "upload-status")
    page.locator("#upload-status").screenshot(path=str(ARTIFACTS / "train-upload-busy.png"))
    assert "busy with other people" in headline and "Try again in 1 s" in headline, headline
    assert "RNNSCOPE_" not in headline and "RNNSCOPE_MAX_WAITING_JOBS" in detail
    page.wait_for_timeout(1500)                       # past its Retry-After: still asked once
    assert len(posted) == 1 and page.locator("#upload-status[data-state='error']").count() == 1


def test_a_full_training_queue_reads_plainly_and_the_run_is_not_started_again(page, live_server, corpus_file):
    page.goto(f"{live_server}/train")
    page.set_input_files("#file", str(corpus_file))
    page.locator("#config-card:not([hidden])").wait_for()
    refusals = [EVERYONES_QUEUE, YOUR_QUEUE]
    posted = []

    def full(route):
        if route.request.method != "POST":
            return route.continue_()
        posted.append(route.request.post_data_json)
        refuse(route, 429, refusals[len(posted) - 1], retry_after=60)
    page.route("**/api/runs", full)
    page.click("#start")
    headline, detail = headline_and_detail(page, "start-status")
    page.locator("#start-status").screenshot(path=str(ARTIFACTS / "train-queue-full.png"))
    assert "training queue is full with other people’s runs" in headline and "in 60 s" in headline, headline
    assert "fewer steps" in headline and "RNNSCOPE_" not in headline
    assert "RNNSCOPE_MAX_QUEUED_SECONDS" in detail
    assert len(posted) == 1
    page.click("#start")                             # the person's own share of the queue is full
    page.wait_for_function("document.querySelector('#start-status p')?.innerText.includes('You already have')")
    headline, detail = headline_and_detail(page, "start-status")
    assert "cancel one" in headline and "RNNSCOPE_" not in headline, headline
    assert "RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER" in detail
    assert len(posted) == 2


def test_a_busy_import_reads_plainly(page, live_server, tmp_path):
    weights = tmp_path / "tiny.safetensors"
    weights.write_bytes(b"not read: the request is refused before")
    page.goto(f"{live_server}/train")
    posted = []

    def busy(route):
        posted.append(route.request.method)
        refuse(route, 503, BUSY_DETAIL, retry_after=2)
    page.route("**/api/models/import", busy)
    page.set_input_files("#import-model", str(weights))
    page.click("#import-submit")
    headline, detail = headline_and_detail(page, "import-status")
    assert "busy with other people" in headline and "RNNSCOPE_" not in headline, headline
    assert "RNNSCOPE_MAX_WAITING_JOBS" in detail and posted == ["POST"]


def test_a_busy_list_of_runs_is_asked_again_after_a_countdown(page, live_server):
    asked = []

    def busy_once(route):
        if route.request.method != "GET":
            return route.continue_()
        asked.append(route.request.url)
        if len(asked) == 1:
            return refuse(route, 503, BUSY_DETAIL, retry_after=1)
        route.continue_()
    page.route("**/api/runs", busy_once)
    page.goto(f"{live_server}/train")
    page.wait_for_function("document.getElementById('runs-status').innerText.includes('trying again in')")
    page.locator("#runs-status[data-state='empty'], #runs-table tbody tr").first.wait_for()
    assert len(asked) == 2
    assert page.locator("#runs-status[data-state='error']").count() == 0


def test_the_home_page_asks_again_for_its_models_and_folds_the_operators_detail(page, live_server):
    asked = []

    def busy(route):
        asked.append(route.request.url)
        refuse(route, 503, BUSY_DETAIL, retry_after=1)
    page.route("**/api/models", busy)
    page.goto(live_server + "/")
    page.wait_for_function("document.getElementById('models-status').innerText.includes('trying again in')")
    headline, detail = headline_and_detail(page, "models-status")
    page.screenshot(path=str(ARTIFACTS / "home-busy.png"), full_page=True)
    assert "busy with other people" in headline and "RNNSCOPE_" not in headline, headline
    assert "RNNSCOPE_MAX_WAITING_JOBS" in detail and len(asked) == 2
