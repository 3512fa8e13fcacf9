"""Cells forming, in Chromium (issue 23): the Train page draws each concept's strength
against step as a run trains and marks where a cell appears; the explorer's checkpoint
slider shows the same neuron at the run's kept snapshots. Screenshots go to test-artifacts/."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.training_app import Server, excerpt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Every 25 steps a checkpoint, each recorded (a tiny model's steps are shorter than a
# recording, so the 5 % share would skip most), 4 snapshots kept.
ENV = {"RNNSCOPE_CHECKPOINT_EVERY_STEPS": "25", "RNNSCOPE_SAMPLE_EVERY_STEPS": "0", "RNNSCOPE_FLUSH_SECONDS": "0.1",
       "RNNSCOPE_CONCEPT_SHARE": "1", "RNNSCOPE_CONCEPT_TEXT_CHARS": "1500", "RNNSCOPE_RUN_SNAPSHOTS": "4"}
OWNER = {"X-Rnnscope-Owner": "concepts-page"}
# line_start and word_start pass 0.85 within 75 steps of this run (seed 0), vowel later.
RUN = {"cell": "lstm", "hidden_size": 48, "num_layers": 2, "seq_length": 64, "batch_size": 16,
       "learning_rate": 0.01, "max_steps": 150}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("data"), ENV).start()
    yield s
    s.stop()


@pytest.fixture
def page(page):
    page.set_default_timeout(60_000)
    return page


def shoot(pg, name: str, selector: str | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target = pg.locator(selector) if selector else pg
    target.screenshot(path=str(ARTIFACTS / f"{name}.png"), **({} if selector else {"full_page": True}))


def start_run(server) -> int:
    files = {"file": ("excerpt.txt", excerpt(40_000).encode(), "text/plain")}
    corpus = httpx.post(f"{server.url}/api/corpora", files=files, headers=OWNER, timeout=60).json()
    r = httpx.post(f"{server.url}/api/runs", json={"corpus_id": corpus["id"], **RUN}, headers=OWNER, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_concept_curves_grow_live_and_mark_where_a_cell_appears(page, server):
    run_id = start_run(server)
    page.goto(f"{server.url}/train?run={run_id}")
    # Live: the first checkpoint's points arrive while the run trains.
    page.wait_for_function("() => (document.getElementById('concepts-chart').data?.[0]?.x || []).length >= 1")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=180_000)
    page.wait_for_function("() => (document.getElementById('concepts-chart').data?.[0]?.x || []).length === 6")
    history = httpx.get(f"{server.url}/api/runs/{run_id}/concepts").json()
    assert history["steps"] == [25, 50, 75, 100, 125, 150]
    drawn = page.evaluate("() => document.getElementById('concepts-chart').data.map((t) => [t.name, t.y])")
    assert drawn == [[c["concept"], [u and u["strength"] for u in c["best"]]] for c in history["concepts"]]
    # Each cell that formed is marked where the API says, and named with its unit in words.
    formed = {c["concept"]: c for c in history["concepts"] if c["formed_step"] is not None}
    assert formed, "no concept passed the threshold in this run"
    notes = page.evaluate("() => document.getElementById('concepts-chart').layout.annotations.map((a) => [a.x, a.text])")
    assert sorted(notes) == sorted([c["formed_step"], f"{name} cell, step {c['formed_step']}"] for name, c in formed.items())
    for name, c in formed.items():
        unit = c["best"][history["steps"].index(c["formed_step"])]
        line = page.locator(f"#concepts-formed [data-concept='{name}']").inner_text()
        assert f"step {c['formed_step']}" in line and f"layer {unit['layer']} {unit['quantity']} {unit['unit']}" in line
        # ... with a link to that unit in the explorer, at a kept snapshot.
        href = page.get_attribute(f"#concepts-formed [data-concept='{name}'] a", "href")
        assert f"model=run-{run_id}" in href and f"neuron={unit['unit']}" in href and "at=" in href
    assert "digit" in page.inner_text("#concepts-skipped")        # left out, with the reason
    page.locator("#concepts-block").scroll_into_view_if_needed()
    shoot(page, "concepts-train", "#concepts-block")


def test_the_explorer_slider_shows_one_neuron_at_each_kept_checkpoint(page, server):
    run_id = start_run(server)
    deadline_ms = 180_000
    page.goto(f"{server.url}/train?run={run_id}")
    page.locator("#done-banner:not([hidden])").wait_for(timeout=deadline_ms)
    steps = [s["step"] for s in httpx.get(f"{server.url}/api/runs/{run_id}/snapshots").json()]
    assert len(steps) == 4 and steps[0] == 25 and steps[-1] == 150

    page.goto(f"{server.url}/explore?model=run-{run_id}&layer=1&quantity=c&neuron=7")
    page.locator("#checkpoint-field:not([hidden])").wait_for()
    page.locator("#charmap .ch").first.wait_for()
    assert page.get_attribute("#checkpoint", "max") == str(len(steps))      # the snapshots, then the latest
    assert "latest" in page.inner_text("#checkpoint-label")

    def colours() -> list[str]:
        return page.evaluate("() => [...document.querySelectorAll('#charmap .ch')].slice(0, 200)"
                             ".map((s) => s.style.backgroundColor)")

    latest = colours()
    seen = []
    for k, step in enumerate(steps):
        with page.expect_response(lambda r: f"/api/models/run-{run_id}%40{step}/trace" in r.url) as answer:
            page.evaluate(f"() => {{ const s = document.getElementById('checkpoint'); s.value = '{k}'; "
                          "s.dispatchEvent(new Event('input')); }")
        assert answer.value.status == 200
        page.wait_for_function(f"() => new URLSearchParams(location.search).get('at') === '{step}'")
        page.wait_for_function("() => !document.getElementById('status').dataset.state")
        assert page.inner_text("#checkpoint-label") == f"step {step}"
        # The same neuron at every step.
        assert (page.input_value("#layer"), page.input_value("#quantity"), page.input_value("#neuron")) == ("1", "c", "7")
        seen.append(colours())
    assert seen[0] != seen[-1] and seen[0] != latest            # the unit changed as the run trained
    shoot(page, "concepts-explore-slider")

    # A snapshot step that is not kept falls back to the run's model, saying nothing false.
    page.goto(f"{server.url}/explore?model=run-{run_id}&at=26&layer=1&quantity=c&neuron=7")
    page.locator("#charmap .ch").first.wait_for()
    assert "latest" in page.inner_text("#checkpoint-label")
