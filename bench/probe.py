"""Concept probes (issue 5, "Speed"): ranking every neuron of the bundled 2x256 LSTM over
10,000 characters must answer in under a second. Matching (issue 11): a set of units found
by selecting spans must be matched over 100,000 validation characters in under a second
once the server keeps the reading of them.

A probe is one chunked read that keeps every quantity of every layer (3,072 units for a
2x256 LSTM), then one rank pass; the server keeps the reading of the last texts, so a
second probe of the same text is the rank pass alone: AUC for a binary concept, correlation for a graded one,
and the best threshold of the top units. The bundled checkpoint is used when present;
otherwise random weights of the same shape (the time hardly depends on the weights; a
trained model's saturated gates add ties, which the AUC resolves in a slower path).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from rnnscope.model import network
from rnnscope.model.bundled import bundled_paths
from rnnscope.model.checkpoint import load_model
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.match import match, rank_for_spans, read_all
from rnnscope.model.probes import CONCEPTS, activations, rank_units
from rnnscope.model.vocab import Vocab

from .common import machine_info, render_table

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
TARGET_SECONDS = 1.0
CONCEPT_NAMES = ("upper", "line_position")      # a binary concept (AUC) and a graded one (r)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("probe suite")
    g.add_argument("--probe-chars", type=int, default=10_000, help="characters probed (default: 10,000)")
    g.add_argument("--probe-rounds", type=int, default=5, help="timed rounds per concept (default: 5)")
    g.add_argument("--match-chars", type=int, default=100_000,
                   help="validation characters matched over (default: 100,000)")


def load() -> tuple[LanguageModel, str]:
    text = CORPUS.read_text(encoding="utf-8")
    path = bundled_paths().get("lstm")
    if path is not None:
        return load_model(path), "bundled lstm"
    vocab = Vocab.from_text(text)
    cfg = ModelConfig("lstm", len(vocab), 256, 2)
    return LanguageModel(cfg, vocab, network.init_params(cfg, seed=0)), "random 2x256 LSTM (no bundled checkpoint)"


def run(args) -> dict:
    model, which = load()
    text = CORPUS.read_text(encoding="utf-8")
    chars = args.probe_chars
    passage = text[-chars:]                           # validation text: the last 10 %
    rounds = 2 if args.quick else args.probe_rounds
    result = {"suite": "probe", "quick": args.quick, "machine": machine_info(), "model": which,
              "chars": len(passage), "target_seconds": TARGET_SECONDS, "concepts": []}
    ids = model.encode(passage)
    with threadpool_limits(1):                        # the server's blas_threads
        for name in CONCEPT_NAMES:
            concept = CONCEPTS[name]
            indicator = concept.indicator(passage)
            read_s, rank_s = [], []
            for _ in range(rounds):
                start = time.perf_counter()
                acts = activations(model, ids)
                mid = time.perf_counter()
                ranked = rank_units(acts, indicator, concept.graded, top=20)
                end = time.perf_counter()
                read_s.append(mid - start)
                rank_s.append(end - mid)
                units = ranked.total_units
                del acts
            total = [a + b for a, b in zip(read_s, rank_s)]
            result["concepts"].append({
                "concept": name, "graded": concept.graded, "units": units,
                "read_seconds": statistics.median(read_s), "rank_seconds": statistics.median(rank_s),
                "total_seconds": statistics.median(total), "total_rounds": total,
                "best": {"layer": ranked.ranked[0].layer, "quantity": ranked.ranked[0].quantity,
                         "unit": ranked.ranked[0].unit, "score": ranked.ranked[0].score},
            })
        result["match"] = time_match(model, text, args.match_chars, rounds)
        result["views"] = time_views(model, text, 5_000 if args.quick else 20_000)
    return result


def time_views(model: LanguageModel, text: str, chars: int) -> dict:
    """Issue 11's other two views as the server computes them on its first request per model
    (reading `chars` validation characters, then fitting) and on a later one (the fit kept):
    state space (PCA of layer 1's h, a 1,000-character projection), fixed points (layer 0,
    a space held, 64 starts), neurons in groups (NMF of layer 1's c into 8 groups)."""
    from rnnscope.model.dynamics import find_fixed_points, fit_pca, layer_input, read_layer, sample_starts, step_map
    from rnnscope.model.groups import factorise, layer_values

    val = text[len(text) - int(round(len(text) * 0.1)):][:chars]
    ids, shown = model.encode(val), model.encode(val[:1000])

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    reading, read_s = timed(lambda: read_layer(model, ids, 1))
    pca, fit_s = timed(lambda: fit_pca(reading.h, 3))
    _, project_s = timed(lambda: pca.project(read_layer(model, shown, 1).h))
    layer0, read0_s = timed(lambda: read_layer(model, ids, 0))
    F = step_map(model, 0, layer_input(model, 0, model.vocab.encode(" ")[0]))
    found, search_s = timed(lambda: find_fixed_points(F, sample_starts(layer0.state(), 64)))
    values, values_s = timed(lambda: layer_values(model, ids, 1, "c"))
    groups, nmf_s = timed(lambda: factorise(values, 8))
    _, track_s = timed(lambda: groups.track(layer_values(model, shown, 1, "c")))
    return {"chars": len(val), "rows": [
        ["state space: PCA of layer 1 h", f"{read_s + fit_s:.2f}", f"{project_s:.3f}",
         f"variance explained by 3 components {float(pca.explained.sum()):.0%}"],
        ["fixed points: layer 0, space held, 64 starts", f"{read0_s + search_s:.2f}", f"{search_s:.2f}",
         f"{len(found.points)} found"],
        ["groups: NMF of layer 1 c into 8", f"{values_s + nmf_s:.2f}", f"{track_s:.3f}",
         f"reconstruction error {groups.error:.3f}"],
    ]}


def time_match(model: LanguageModel, text: str, chars: int, rounds: int) -> dict:
    """Select the speakers' names ("ROMEO:") in a passage, take the top three units, then
    match them over the first `chars` validation characters: cold (reading the text, as the
    server's first match does) and cached (the kept reading: gather the units' rows, match)."""
    val = text[len(text) - int(round(len(text) * 0.1)):][:chars]
    passage = val[:3000]
    spans = [(i, passage.index(":", i)) for i in range(len(passage) - 1)
             if (i == 0 or passage[i - 1] == "\n") and passage[i].isupper() and ":" in passage[i:i + 20]]
    ranked = rank_for_spans(activations(model, model.encode(passage)), spans[:2], top=3).ranked
    length = sum(b - a for a, b in spans[:2]) / 2
    thresholds, signs = [r.threshold for r in ranked], [r.sign for r in ranked]
    ids = model.encode(val)
    start = time.perf_counter()
    acts = read_all(model, ids)
    read_s = time.perf_counter() - start
    cached_s = []
    for _ in range(max(3, rounds)):
        start = time.perf_counter()
        found = match(acts.values[[r.row for r in ranked]], thresholds, signs, length, top=20)
        cached_s.append(time.perf_counter() - start)
    cached = statistics.median(cached_s)
    # AUC as the unit's sign reads it: a unit lower inside the selection has 1 - AUC.
    units = [f"L{r.layer} {r.quantity}[{r.unit}] AUC {r.score if r.sign > 0 else 1 - r.score:.3f}"
             f"{'' if r.sign > 0 else ' (below)'}" for r in ranked]
    return {"chars": len(val), "units": units,
            "cache_bytes": acts.values.nbytes, "read_seconds": read_s, "cold_seconds": read_s + cached,
            "cached_seconds": cached, "cached_rounds": cached_s, "matches": len(found),
            "first": val[found[0].start:found[0].end] if found else None}


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"rnnscope probe benchmark{' (--quick: indicative only)' if result['quick'] else ''}: "
             f"{result['model']}, {result['chars']:,} characters, 1 thread",
             f"{m['cpu']}, load {m['load_average'][0]:.2f} at the start"]
    rows = []
    for c in result["concepts"]:
        ok = "yes" if c["total_seconds"] < result["target_seconds"] else "NO"
        b = c["best"]
        again = "yes" if c["rank_seconds"] < result["target_seconds"] else "NO"
        rows.append([c["concept"], "r" if c["graded"] else "AUC", c["units"], f"{c['read_seconds']:.3f}",
                     f"{c['rank_seconds']:.3f}", f"{c['total_seconds']:.3f}", ok, again,
                     f"L{b['layer']} {b['quantity']}[{b['unit']}] {b['score']:.3f}"])
    lines.append(render_table(["concept", "score", "units", "read s", "rank s", "total s",
                               f"< {result['target_seconds']:g} s", "again < 1 s", "best neuron"], rows))
    lines.append("read: one pass keeping every quantity (the model's forward speed); rank: AUC or r of every unit "
                 "and the top units' thresholds. The server keeps a text's reading (probe_cache_texts), so probing "
                 "the same text again costs the rank alone ('again').")
    mt = result.get("match")
    if mt:
        lines.append("")
        target = result["target_seconds"]
        ok = "yes" if mt["cached_seconds"] < target else "NO"
        row = [f"{mt['chars']:,} chars", ", ".join(mt["units"]), f"{mt['cold_seconds']:.2f}",
               f"{mt['cached_seconds']:.4f}", ok, f"{mt['cache_bytes'] / 1e6:.0f} MB"]
        lines.append(render_table(["match over", "units", "cold s", "cached s", f"cached < {target:g} s",
                                   "kept reading"], [row]))
        lines.append("match: units ranked for two selected speaker names, matched over the validation text; "
                     "cold reads every unit as float16 first (the server's first match per model), cached is "
                     "the kept reading (match_cache_models).")
    views = result.get("views")
    if views:
        lines.append("")
        lines.append(render_table([f"view (over {views['chars']:,} validation chars)", "first request s",
                                   "later request s", ""], views["rows"]))
        lines.append("first: reading the validation text and fitting, as the server's first request per model; "
                     "later: with the fit kept (the server's caches), projecting 1,000 characters.")
    return "\n".join(lines)
