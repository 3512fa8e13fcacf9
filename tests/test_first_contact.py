"""Issue 9: what a first visit shows, and the defects a first visit ran into. Browser tests
(Debian's chromium through playwright; they skip without it, as in test_pages.py) and the
per-model passages route."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

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
