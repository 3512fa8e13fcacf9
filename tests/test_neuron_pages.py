"""Browser tests of the Probes and Compare pages and the Sample page's memorisation marks.
Screenshots go to test-artifacts/ for a person to look at; assertions never depend on them."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Inside the vocabulary of conftest's models (the start of tinyshakespeare).
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n")


def test_probe_page_ranks_neurons_and_links_to_the_explorer(page, live_server):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{live_server}/probe?model=lstm&concept=upper&text={quote(TEXT)}")
    page.wait_for_selector(".neuron-item")
    items = page.locator(".neuron-item")
    assert items.count() == 12
    assert "Top 12 of 384 neurons" in page.locator("#results-title").inner_text()
    # The concept map marks exactly the upper-case characters.
    marked = page.eval_on_selector_all("#indicator .ch", "els => els.map(e => e.style.backgroundColor)")
    chars = [c for c in TEXT]
    assert len(marked) == len(chars)
    assert [c != "rgb(255, 255, 255)" for c in marked] == [c.isupper() for c in chars]
    first = items.first
    head = first.locator(".neuron-head").inner_text()
    assert re.search(r"AUC 0\.\d{3}|AUC 1\.000", head)
    # Eight upper-case letters: too few to trust a ranking of 384 neurons, and the page says so.
    summary = page.locator("#concept-summary").inner_text()
    assert "Too few have it to rank by" in summary and "separate 8 characters from the rest by chance" in summary, summary
    page.screenshot(path=str(ARTIFACTS / "probe.png"), full_page=True)
    # Top contexts: this server has no corpus file, so the page falls back to the text sent.
    first.locator('[data-act="contexts"]').click()
    first.locator(".snippet").first.wait_for()
    assert first.locator(".snippet").count() >= 6               # at most 5 a side, 30 characters apart
    assert "the probed text" in first.locator(".neuron-extra").inner_text()
    # Silencing the neuron shows the loss change and both samples.
    second = items.nth(1)
    second.locator('[data-act="ablate"]').click()
    second.locator("pre.sample-text").first.wait_for()
    assert "mean loss" in second.locator(".neuron-extra").inner_text()
    assert second.locator("pre.sample-text").count() == 2
    first.screenshot(path=str(ARTIFACTS / "probe-contexts.png"))
    second.screenshot(path=str(ARTIFACTS / "probe-ablation.png"))
    # Vowels, 45 of 148 characters: enough, so no warning.
    page.goto(f"{live_server}/probe?model=lstm&concept=vowel&text={quote(TEXT)}")
    page.wait_for_selector(".neuron-item")
    summary = page.locator("#concept-summary").inner_text()
    assert "45 of 148 characters" in summary and "Too few" not in summary, summary
    # One click to the explorer, on the same neuron.
    layer, quantity, unit = (first.get_attribute(f"data-{k}") for k in ("layer", "quantity", "unit"))
    first.locator("a.button").click()
    page.wait_for_url(re.compile(r"/explore\?"))
    assert f"layer={layer}" in page.url and f"quantity={quantity}" in page.url and f"neuron={unit}" in page.url


def test_probe_page_reports_a_concept_absent_from_the_text(page, live_server):
    page.goto(f"{live_server}/probe?model=gru&concept=digit&text={quote(TEXT)}")
    page.wait_for_selector('#status[data-state="error"]')
    assert "holds nowhere" in page.locator("#status").inner_text()
    # A regex that matches: results appear, and the URL keeps it.
    page.select_option("#concept", "regex")
    page.fill("#regex", "Citizen")
    page.click("#go")
    page.wait_for_selector(".neuron-item")
    assert "regex=Citizen" in page.url and "concept=regex" in page.url


def test_compare_page_draws_every_model_on_aligned_axes(page, live_server):
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{live_server}/compare?models=rnn,gru,lstm&text={quote(TEXT)}&position=60")
    page.wait_for_function("document.querySelector('#chars-chart .main-svg') && "
                           "document.querySelectorAll('#horizon-table tbody tr').length === 3")
    data = page.evaluate("document.getElementById('chars-chart').data.map(t => [t.legendgroup, t.yaxis, t.x.length])")
    assert sorted({g for g, _, _ in data}) == ["gru", "lstm", "rnn"]
    assert {(y, n) for _, y, n in data} == {("y", len(TEXT) - 1), ("y2", 61), ("y3", 61)}
    rows = page.locator("#horizon-table tbody tr").all_inner_texts()
    assert sorted(r.split()[0] for r in rows) == ["gru", "lstm", "rnn"]
    gates = page.evaluate("document.getElementById('gates-chart').data.map(t => t.name)")
    assert "lstm open" in gates and not any(n.startswith("rnn") for n in gates)
    assert "position=60" in page.url
    page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=True)


def test_sample_page_marks_spans_copied_from_the_corpus(page, live_server):
    """The spans the API reports are underlined and counted (the API's own answer is tested
    against a real corpus in test_neurons_api.py; here it is fixed, to check the drawing)."""
    seen = []

    def memorised(route):
        seen.append(route.request.post_data_json)
        route.fulfill(json={"available": True, "corpus": "tiny.txt", "count": 2, "memorised_chars": 30,
                            "spans": [{"start": 5, "end": 25, "corpus_position": 100},
                                      {"start": 40, "end": 50, "corpus_position": 7}]})

    page.route("**/api/models/*/memorised", memorised)
    page.goto(f"{live_server}/sample?model=lstm&length=80&seed=3&min_span=10")
    page.wait_for_selector("dt.memorised-row")
    marked = page.eval_on_selector_all("#output .ch", "els => els.map(e => e.classList.contains('memorised'))")
    assert len(marked) == 80
    assert [i for i, m in enumerate(marked) if m] == list(range(5, 25)) + list(range(40, 50))
    assert seen[-1]["min_length"] == 10 and len(seen[-1]["text"]) == 80
    assert "2 spans of 10+ characters, 30 characters (38%)" in page.locator("#sample-stats").inner_text()
    assert "min_span=10" in page.url
    page.screenshot(path=str(ARTIFACTS / "sample-memorised.png"), full_page=True)


def test_sample_page_says_when_the_corpus_is_not_here(page, live_server):
    page.goto(f"{live_server}/sample?model=gru&length=40&seed=1")
    page.wait_for_selector("dt.memorised-row")
    assert "not on this server" in page.locator("#sample-stats").inner_text()


def test_compare_page_overlays_the_loss_curves_of_runs_on_one_corpus(page, live_server):
    """Runs come from /api/runs (tested in test_runs.py); here they are fixed, to check the drawing."""
    config = {"cell": "lstm", "hidden_size": 64, "num_layers": 1, "batch_size": 8, "seq_length": 50}
    runs = [{"id": i, "name": f"run {i}", "corpus_name": corpus, "step": 30, "config": {**config, "batch_size": 8 * i}}
            for i, corpus in ((1, "poems.txt"), (2, "poems.txt"), (3, "code.txt"))]

    def metrics(route):
        route.fulfill(json={"step": [10, 20, 30], "loss": [3.0, 2.5, 2.2], "grad_norm": [1, 1, 1],
                            "clipped": [False] * 3, "chars_per_sec": [1, 1, 1], "learning_rate": [1, 1, 1],
                            "val_step": [30], "val_loss": [2.4], "stride": 1})

    page.route("**/api/runs", lambda route: route.fulfill(json=runs))
    page.route("**/api/runs/*/metrics*", metrics)
    page.goto(f"{live_server}/compare?models=lstm&text={quote(TEXT)}")
    page.wait_for_function("document.getElementById('runs-chart').data?.length === 4")
    assert page.locator("#corpus option").all_inner_texts() == ["poems.txt (2 runs)", "code.txt (1 run)"]
    xs = page.evaluate("document.getElementById('runs-chart').data.filter(t => t.mode).map(t => t.x[0])")
    assert xs == [30 * 8 * 50, 30 * 16 * 50]               # by characters seen, not steps
    page.select_option("#corpus", "code.txt")
    page.wait_for_function("document.getElementById('runs-chart').data.length === 2")
