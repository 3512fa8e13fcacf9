"""What a page does when a request fails or is refused (a new user's trial): the plot it
keeps is marked as showing the previous settings and the address keeps those settings, and a
503 "busy" answer reads in plain words, is tried again once after its Retry-After with a
countdown (not when the controls change meanwhile), and keeps the operator's detail aside.

The refusals are made by routing the page's own request in the browser (page.route), so the
test does not depend on how loaded the machine is. Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n")
# What the compute gate answers when full (app/inference/compute_gate.py): it names a setting.
BUSY_DETAIL = ("the server is busy: 2 jobs running and 8 waiting, the limit (setting RNNSCOPE_MAX_WAITING_JOBS); "
               "try again shortly")


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


def fail(route):
    route.fulfill(status=500, content_type="application/json", body=json.dumps({"detail": "the server failed"}))


def refuse(route, retry_after: int = 1):
    route.fulfill(status=503, headers={"Retry-After": str(retry_after)}, content_type="application/json",
                  body=json.dumps({"detail": BUSY_DETAIL}))


def open_states(page, live_server):
    page.goto(f"{live_server}/states?model=lstm&layer=0&text={quote(TEXT)}")
    page.wait_for_selector("#chart[data-points]")
    assert query(page.url)["layer"] == "0"


def test_states_marks_the_kept_plot_stale_and_keeps_the_address_when_busy(page, live_server):
    ARTIFACTS.mkdir(exist_ok=True)
    open_states(page, live_server)
    asked = []

    def busy(route):
        asked.append(route.request.post_data_json["layer"])
        refuse(route)
    page.route("**/api/models/*/states", busy)
    page.select_option("#layer", "1")
    page.wait_for_selector('#status[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "states-busy-stale.png"), full_page=True)
    assert asked == [1, 1], asked                     # tried again once by itself, then gave up
    status = page.locator("#status")
    headline = status.locator("p").first.inner_text()
    assert "busy with other people" in headline and "RNNSCOPE_" not in headline, headline
    # The operator's detail is kept, out of the headline.
    assert "RNNSCOPE_MAX_WAITING_JOBS" in status.locator("details").text_content()
    # The plot kept is marked as the previous settings', and the address names those.
    card = page.locator("section.card.stale")
    assert card.count() == 1
    note = card.locator(".stale-note").inner_text()
    assert "layer 0" in note and "layer 1" not in note, note
    assert query(page.url)["layer"] == "0"
    # Stepping through the kept plot does not write the failed settings either.
    page.locator("#scrub").focus()
    page.keyboard.press("ArrowRight")
    assert query(page.url)["layer"] == "0"
    # Once the server answers, the plot is the new one's, unmarked, and the address follows.
    page.unroute("**/api/models/*/states")
    page.click("#project")
    page.wait_for_function("!document.querySelector('section.card.stale') && location.search.includes('layer=1')")
    assert page.locator(".stale-note").count() == 0
    page.screenshot(path=str(ARTIFACTS / "states-after-busy.png"), full_page=True)


def test_a_busy_answer_is_tried_again_after_retry_after_with_a_countdown(page, live_server):
    open_states(page, live_server)
    asked = []

    def busy_once(route):
        asked.append(route.request.post_data_json["layer"])
        if len(asked) == 1:
            refuse(route, retry_after=2)
        else:
            route.continue_()
    page.route("**/api/models/*/states", busy_once)
    page.select_option("#layer", "1")
    page.wait_for_function("document.getElementById('status').innerText.includes('trying again in')")
    countdown = page.locator("#status").inner_text()
    page.locator("#status").screenshot(path=str(ARTIFACTS / "states-busy-countdown.png"))
    assert "busy with other people" in countdown and "RNNSCOPE_" not in countdown, countdown
    page.wait_for_function("location.search.includes('layer=1')")
    assert asked == [1, 1]
    assert page.locator('#status[data-state="error"]').count() == 0
    assert page.locator(".stale-note").count() == 0


def test_changing_the_controls_cancels_the_retry(page, live_server):
    page.clock.install()
    open_states(page, live_server)
    asked = []

    def busy_for_h(route):
        quantity = route.request.post_data_json["quantity"]
        asked.append(quantity)
        if quantity == "h":
            refuse(route, retry_after=5)
        else:
            route.continue_()
    page.route("**/api/models/*/states", busy_for_h)
    page.select_option("#layer", "1")
    page.wait_for_function("document.getElementById('status').innerText.includes('trying again in')")
    page.select_option("#quantity", "c")             # a new request supersedes the waiting one
    page.wait_for_function("location.search.includes('quantity=c')")
    page.clock.run_for(10_000)                        # past the refused request's Retry-After
    page.evaluate("new Promise((resolve) => requestAnimationFrame(resolve))")
    assert asked == ["h", "c"], asked                 # the refused request was not tried again
    assert query(page.url)["layer"] == "1"


def test_compare_keeps_its_charts_marked_stale_and_its_address_after_a_failure(page, live_server):
    page.goto(f"{live_server}/compare?models=rnn,gru,lstm&text={quote(TEXT)}&position=60")
    page.wait_for_function("document.querySelectorAll('#horizon-table tbody tr').length === 3")
    page.route("**/api/models/*/trace", fail)
    page.fill("#position", "30")
    page.click("#go")
    page.wait_for_selector('#status[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "compare-failed-stale.png"), full_page=True)
    assert query(page.url)["position"] == "60"
    assert page.locator("section.card.stale").count() == 3      # per character, horizon, gates
    note = page.locator(".stale-note")
    assert note.count() == 1 and "position 60" in note.inner_text(), note.all_inner_texts()
    page.unroute("**/api/models/*/trace")
    page.click("#go")
    page.wait_for_function("!document.querySelector('.stale') && location.search.includes('position=30')")


def test_gates_keeps_its_scatter_marked_stale_and_its_address_after_a_failure(page, live_server):
    page.goto(f"{live_server}/gates?model=lstm&text={quote(TEXT)}")
    page.wait_for_selector("#summary:not([hidden]) tbody tr")
    page.route("**/api/models/*/gates", lambda route: refuse(route))
    page.select_option("#model", "gru")
    page.wait_for_selector('#status[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "gates-busy-stale.png"), full_page=True)
    assert "busy with other people" in page.locator("#status p").first.inner_text()
    assert query(page.url)["model"] == "lstm"                  # the address names the scatter kept
    card = page.locator("section.card.stale")
    assert card.count() == 1 and page.locator("#chart").is_visible()
    note = card.locator(".stale-note").inner_text()
    assert "model lstm" in note and "gru" not in note, note
    # A vanilla RNN takes the scatter away for a message: nothing stale is left, and the address follows.
    page.select_option("#model", "rnn")
    page.wait_for_function("!document.querySelector('.stale') && location.search.includes('model=rnn')")
    page.unroute("**/api/models/*/gates")
    page.select_option("#model", "gru")
    page.wait_for_function("location.search.includes('model=gru')")
    page.wait_for_selector("#summary:not([hidden]) tbody tr")
    assert page.locator(".stale-note").count() == 0


def test_learn_keeps_a_chapters_figure_marked_stale_and_its_address_after_a_failure(page, live_server):
    page.goto(f"{live_server}/learn?chapter=3")
    page.wait_for_function("document.getElementById('power-chart').layout?.meta === 'power'")
    page.route("**/api/learn/power", fail)
    page.evaluate("""() => { const el = document.getElementById('power-w11'); el.value = 0.3;
        el.dispatchEvent(new Event('input')); }""")
    page.wait_for_selector('#power-status[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "learn-failed-stale.png"), full_page=True)
    assert "w" not in query(page.url)                           # the defaults the figure still shows
    figure = page.locator("[data-chapter='3'] .learn-figure.stale")
    assert figure.count() == 1 and page.locator("#power-chart").is_visible()
    assert page.locator("#power-eigen.stale").count() == 1      # its eigenvalues are the old ones too
    assert "chapter 3" in figure.locator(".stale-note").inner_text()
    # Another chapter shown: the one put away does not hold the address.
    page.click("#chapters [data-chapter='2']")
    page.wait_for_function("location.search.includes('chapter=2')")
    # Back to the stale one: asked again, and once drawn the address follows it.
    page.unroute("**/api/learn/power")
    page.click("#chapters [data-chapter='3']")
    page.wait_for_function("!document.querySelector('.stale') && location.search.includes('w=0.3')")
    assert "chapter=3" in page.url


def open_compare(page, live_server):
    page.goto(f"{live_server}/compare?models=rnn,gru,lstm&text={quote(TEXT)}&position=60")
    page.wait_for_function("document.querySelectorAll('#horizon-table tbody tr').length === 3")
    assert page.locator("#verdict").is_visible()


def test_compare_marks_its_verdict_stale_with_the_charts(page, live_server):
    open_compare(page, live_server)
    page.route("**/api/models/*/trace", fail)
    page.fill("#position", "30")
    page.click("#go")
    page.wait_for_selector('#status[data-state="error"]')
    # The headline sentence is the old horizons' answer: dimmed with them.
    assert page.locator("#verdict.stale").count() == 1
    assert page.evaluate("Number(getComputedStyle(document.getElementById('verdict')).opacity)") < 0.5
    page.unroute("**/api/models/*/trace")
    page.click("#go")
    page.wait_for_function("!document.querySelector('.stale') && location.search.includes('position=30')")


def test_compare_marks_only_what_still_shows_the_old_answer_when_a_later_request_fails(page, live_server):
    open_compare(page, live_server)
    page.route("**/api/models/gru/horizon", fail)
    page.fill("#position", "30")
    page.click("#go")
    page.wait_for_selector('#status[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "compare-horizon-failed-stale.png"), full_page=True)
    # The per-character chart was redrawn for position 30; the horizons, gates and verdict were not.
    assert page.locator("section.card[aria-label='Per character'].stale").count() == 0
    assert page.locator("section.card[aria-label='Memory horizon'].stale").count() == 1
    assert page.locator("section.card[aria-label='Gate saturation'].stale").count() == 1
    assert page.locator("#verdict.stale").count() == 1
    note = page.locator(".stale-note")
    assert note.count() == 1 and "position 60" in note.inner_text(), note.all_inner_texts()
    assert query(page.url)["position"] == "60"


# Every text the status panel shows, in order, kept as it changes.
RECORD_STATUS = """() => {
  window.seen = [];
  const status = document.getElementById('status');
  new MutationObserver(() => window.seen.push(status.innerText))
    .observe(status, { childList: true, subtree: true, characterData: true });
}"""


def test_compare_counts_down_once_for_requests_refused_together(page, live_server):
    open_compare(page, live_server)
    page.evaluate(RECORD_STATUS)
    waits = {"rnn": 1, "gru": 3, "lstm": 2}
    held, refused = [], set()

    def busy_once(route):
        model = route.request.url.split("/api/models/")[1].split("/")[0]
        if model in refused:
            return route.continue_()
        refused.add(model)
        held.append((model, route))
    page.route("**/api/models/*/trace", busy_once)
    page.fill("#position", "30")
    page.click("#go")
    for _ in range(600):                          # until all three are asked (a bound, not a timing)
        if len(held) == 3:
            break
        page.wait_for_timeout(50)
    assert sorted(model for model, _ in held) == ["gru", "lstm", "rnn"]
    # Refused longest wait first, so whatever the machine's speed the one countdown starts at 3:
    # each request counting down on its own would write 3, then 2 and 1 over it, then 3's rest.
    for model, route in sorted(held, key=lambda m: -waits[m[0]]):
        refuse(route, retry_after=waits[model])
    page.wait_for_function("location.search.includes('position=30')")
    seen = page.evaluate("window.seen")
    counted = [int(m.group(1)) for text in seen if (m := re.search(r"trying again in (\d+) s", text))]
    # One countdown, from the longest wait down: never a shorter wait's number, then a longer one's.
    assert counted and counted[-1] == 1 and max(counted) == 3, seen
    assert all(a >= b for a, b in zip(counted, counted[1:])), counted
    assert "trying again" not in page.locator("#status").inner_text()


# Counts the trace answers the page has read (their JSON parsed): what api() acts on next.
COUNT_TRACE_ANSWERS_READ = """
window.traceAnswersRead = 0;
const parse = Response.prototype.json;
Response.prototype.json = async function () {
  const data = await parse.call(this);
  if (this.url.includes("/trace")) window.traceAnswersRead += 1;
  return data;
};
"""


def test_compare_never_says_an_empty_card_shows_previous_settings(page, live_server):
    """On a first visit, one model's per-character answer came and another's failed: the first's
    success had marked every card as drawn, so the failure dimmed the still empty cards under
    "This still shows the previous settings". Held until the other two models' answers are in,
    the GRU's then fails: the error is said, and no card is dimmed or says it shows anything."""
    held = []
    page.add_init_script(COUNT_TRACE_ANSWERS_READ)
    page.route("**/api/models/*/trace", lambda route: held.append(route) if "/models/gru/" in route.request.url
               else route.continue_())
    with page.expect_response("**/api/models/rnn/trace") as rnn, page.expect_response("**/api/models/lstm/trace") as lstm:
        page.goto(f"{live_server}/compare?models=rnn,gru,lstm&text={quote(TEXT)}&position=60")
    for answer in (rnn, lstm):
        assert answer.value.ok
        answer.value.finished()
    # The page has read both answers, and api() has acted on them (a task later than its microtasks).
    page.wait_for_function("window.traceAnswersRead >= 2")
    page.evaluate("new Promise((done) => setTimeout(done, 0))")
    assert len(held) == 1
    fail(held[0])
    page.wait_for_selector('#status[data-state="error"]')
    page.screenshot(path=str(ARTIFACTS / "compare-first-visit-failed.png"), full_page=True)
    assert page.locator(".stale").count() == 0
    assert page.locator(".stale-note").count() == 0, page.locator(".stale-note").all_inner_texts()
    # Asked again with the GRU answering: drawn, and the address names what is drawn.
    page.unroute("**/api/models/*/trace")
    page.click("#go")
    page.wait_for_function("document.querySelectorAll('#horizon-table tbody tr').length === 3")
    assert page.locator(".stale").count() == 0
