"""Wording a new user stumbled on (a trial of the pages): the explorer's spinners name the text
they read (the model's validation text, or the text on screen when its corpus is not on the
server), not both; tables write negative numbers with the minus sign (U+2212), not a hyphen;
/train's "everyone's runs" and the model menus' "everyone's" boxes say what ticking them shows.
Screenshots go to test-artifacts/."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from tests.test_select import PAGE_TEXT, drag

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
EXPLORE = "/explore?model=lstm&layer=1&quantity=h&neuron=0&text=" + quote(PAGE_TEXT)

# Every text a status panel shows, kept as it changes: a spinner's is gone once the answer comes.
RECORD_STATUS = """(id) => {
  window.seen = [];
  new MutationObserver(() => window.seen.push(document.getElementById(id).innerText))
    .observe(document.getElementById(id), { childList: true, subtree: true, characterData: true });
}"""


def spinner_texts(page, status_id: str, button: str, done: str) -> str:
    page.evaluate(RECORD_STATUS, status_id)
    page.click(button)
    page.locator(done).first.wait_for()
    return " | ".join(page.evaluate("window.seen"))


def test_the_groups_spinner_names_the_text_it_factorises(page, live_server):
    page.goto(live_server + EXPLORE)
    page.wait_for_selector("#charmap .ch")
    seen = spinner_texts(page, "groups-status", "#groups-run", "#groups-list .group-row")
    # The test models' corpus is not on this server: the text on screen is read, and only it is named.
    assert "the text above" in seen and "validation text" not in seen, seen


def test_the_groups_spinner_names_the_corpus_when_the_server_has_it(page, live_server):
    # The server's passages answer says which corpus it holds for the model.
    page.route("**/api/models/lstm/passages", lambda route: route.fulfill(
        json={"passages": [], "corpus": "tinyshakespeare.txt"}))
    page.goto(live_server + EXPLORE)
    page.wait_for_selector("#charmap .ch")
    seen = spinner_texts(page, "groups-status", "#groups-run", "#groups-list .group-row")
    assert "tinyshakespeare.txt’s validation text" in seen and "the text above" not in seen, seen


def test_the_select_table_writes_negative_thresholds_with_the_minus_sign(page, live_server):
    def negative_first(route):
        response = route.fetch()
        data = response.json()
        data["neurons"][0]["threshold"] = -0.25         # a negative threshold, whatever the test models give
        route.fulfill(response=response, json=data)
    page.route("**/api/models/lstm/select", negative_first)
    page.goto(live_server + EXPLORE)
    page.wait_for_selector("#charmap .ch")
    first = PAGE_TEXT.index("Speak")
    drag(page, first, first + 4)
    page.click("#select-find")
    rows = page.locator("#select-units tbody tr")
    rows.first.wait_for()
    assert "−0.250" in rows.first.inner_text(), rows.first.inner_text()
    table = page.locator("#select-units").inner_text()
    assert not re.search(r"-\d", table), table
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#select-units").screenshot(path=str(ARTIFACTS / "select-units-minus.png"))


def test_the_everyone_boxes_say_what_ticking_them_shows(page, live_server):
    page.goto(f"{live_server}/train")
    box = page.locator("#runs-everyone")
    hint = page.locator("#" + box.get_attribute("aria-describedby")).inner_text()
    assert "everyone's runs" in page.locator("label", has=box).inner_text()
    # What ticking it lists, and what one may do with someone else's run.
    assert "newest 100" in hint and "watch" in hint and "cancel or resume" in hint, hint
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#runs-card").screenshot(path=str(ARTIFACTS / "train-everyones-runs.png"))
    # The model menus' box says what it lists too, in its label and at more length in its title.
    page.goto(f"{live_server}/states")
    toggle = page.locator(".everyone-toggle")
    assert toggle.inner_text().strip().lower() == "everyone's models"
    assert "other people" in toggle.get_attribute("title") and "newest 500" in toggle.get_attribute("title")
