"""`python -m bench cells` (issue 23, part 3) scores the python model's cells on code it never
saw: the held-out modules must truly be absent from its corpus, readable in its vocabulary,
and the suite's figures must be the Probe page's scores of the same units on the same text."""
from __future__ import annotations

import argparse

import numpy as np

from bench import cells
from rnnscope.model.bundled import bundled_paths, corpus_file, read_text
from rnnscope.model.checkpoint import load_model
from rnnscope.model.probes import CONCEPTS, probe


def test_held_out_modules_are_not_in_the_corpus_and_the_model_can_read_them():
    corpus = read_text(corpus_file("python-stdlib.txt"))
    texts = cells.held_out_texts(5000)
    assert set(texts) == set(cells.HELD_OUT), "the interpreter's Lib/ lacks a held-out module"
    model = load_model(bundled_paths()["python"])
    for name, text in texts.items():
        assert f"# ---- Lib/{name} ----" not in corpus
        # No 200-character stretch of it appears in the corpus either (no copy under another name).
        body = text.split("\n", 1)[1]
        for start in range(0, len(body) - 200, 997):
            assert body[start:start + 200] not in corpus, (name, start)
        model.encode(text)                                  # raises on a character it does not know


def test_the_suite_scores_units_as_the_probe_page_does():
    args = argparse.Namespace(cells_model=None, cells_chars=3000)
    result = cells.run(args)
    scored = result["models"][0]
    model = load_model(bundled_paths()["python"])
    text = cells.held_out_texts(3000)["argparse.py"]
    for name in ("comment", "indentation"):
        c = CONCEPTS[name]
        page = probe(model, text, c.indicator(text), c.graded, top=3072)
        hc = [r for r in page.ranked if r.quantity in cells.QUANTITIES]
        figures = scored["modules"]["argparse.py"][name]
        assert figures["best"] == hc[0].strength
        assert figures["best_unit"] == f"{hc[0].layer} {hc[0].quantity}[{hc[0].unit}]"
        layer, rest = scored["concepts"][name]["unit"].split(" ")
        quantity, unit = rest[0], int(rest[2:-1])
        chosen = next(r for r in hc if (r.layer, r.quantity, r.unit) == (int(layer), quantity, unit))
        np.testing.assert_allclose(figures["chosen"], chosen.strength, rtol=1e-6)
        assert 0.0 <= figures["chosen"] <= figures["best"] <= 1.0
    assert "held out, mean" in cells.table(result)
