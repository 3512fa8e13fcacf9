"""The showcase cells on code the model never saw (issue 23, part 3): how sharply the bundled
python model's string, comment, indentation, bracket and line-position units track their
concepts on standard-library modules that are not in python-stdlib.txt.

The held-out text is HELD_OUT below, read from the running interpreter's own Lib/ folder and
prepared as the corpus was (model/bundled.py build_python_corpus: the `# ---- Lib/<path> ----`
header, CRLF made LF, tabs expanded), the first --cells-chars characters (whole lines) of each.
None of these modules is in the corpus, so neither training nor checkpoint selection saw them.

For every concept two figures per model, as the Probe page scores them (model/probes.py
rank_units: |2 AUC - 1| for a yes/no concept, |r| for a graded one), over the layers' h and c:
- "chosen": the unit ranked first on the model's own validation stretch (the first
  --cells-chars of inspect.py, as docs/analyses.md picks its cells), scored on the held-out
  code: a unit picked before looking at the test text;
- "best": the strongest unit on the held-out code itself (an upper bound: picked on it).
Several models (--cells-model PATH, repeated) are scored in one run, side by side.
"""
from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

import numpy as np

from rnnscope.model.bundled import bundled_paths, corpus_file, read_text
from rnnscope.model.checkpoint import load_model
from rnnscope.model.data import split
from rnnscope.model.lm import LanguageModel
from rnnscope.model.probes import CONCEPTS, Activations, activations, constant_reason, rank_units

from .common import machine_info, render_table

# Standard-library modules of CPython 3.11 that python-stdlib.txt leaves out (its packages are
# asyncio, email, http, logging, collections, concurrent, importlib, urllib, xml,
# multiprocessing, unittest, sqlite3, wsgiref, zoneinfo and tomllib, then inspect, typing and
# pathlib): ordinary code with docstrings, comments, strings and nested brackets.
HELD_OUT = ("argparse.py", "dataclasses.py", "configparser.py", "textwrap.py", "json/encoder.py")
CONCEPT_NAMES = ("comment", "prose", "inline_string", "string", "indentation", "bracket_depth", "line_position")
QUANTITIES = ("h", "c")
VALIDATION_MODULE = "inspect.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cells suite")
    g.add_argument("--cells-model", type=Path, action="append",
                   help="a python checkpoint to score (repeat to compare; default: the bundled python model)")
    g.add_argument("--cells-chars", type=int, default=40_000,
                   help="characters read from each module (default: 40,000)")


def whole_lines(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:text.rindex("\n", 0, chars) + 1]


def held_out_texts(chars: int) -> dict[str, str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = {}
    for name in HELD_OUT:
        path = lib / name
        if path.is_file():
            body = path.read_text(encoding="utf-8").replace("\r\n", "\n").expandtabs()
            texts[name] = whole_lines(f"# ---- Lib/{name} ----\n{body}", chars)
    return texts


def validation_stretch(model: LanguageModel, chars: int) -> str:
    _, val = split(read_text(corpus_file("python-stdlib.txt")), model.train_config["val_fraction"])
    start = val.index(f"# ---- Lib/{VALIDATION_MODULE} ----")
    return whole_lines(val[start:], chars)


def read_h_and_c(model: LanguageModel, text: str) -> Activations:
    """The layers' h and c over `text` from a zero state, unit-major: (L * 2 * H, T)."""
    return activations(model, model.encode(text), quantities=QUANTITIES)


def strength_of(acts: Activations, row: int, indicator: np.ndarray, graded: bool) -> float:
    one = Activations(acts.values[row:row + 1], acts.layers[row:row + 1], [acts.quantities[row]],
                      acts.units[row:row + 1])
    return rank_units(one, indicator, graded, top=1).ranked[0].strength


def score_model(path: Path, texts: dict[str, str], chars: int) -> dict:
    model = load_model(path)
    val_text = validation_stretch(model, chars)
    val_acts = read_h_and_c(model, val_text)
    chosen = {}
    for name in CONCEPT_NAMES:
        c = CONCEPTS[name]
        first = rank_units(val_acts, c.indicator(val_text), c.graded, top=1).ranked[0]
        chosen[name] = (first.row, f"{first.layer} {first.quantity}[{first.unit}]", first.strength)
    del val_acts
    per_module = {}
    for module, text in texts.items():
        acts = read_h_and_c(model, text)
        row = {}
        for name in CONCEPT_NAMES:
            c = CONCEPTS[name]
            indicator = c.indicator(text)
            if constant_reason(indicator, c.graded):          # e.g. no comment in a short stretch
                continue
            best = rank_units(acts, indicator, c.graded, top=1).ranked[0]
            row[name] = {"chosen": strength_of(acts, chosen[name][0], indicator, c.graded),
                         "best": best.strength, "best_unit": f"{best.layer} {best.quantity}[{best.unit}]"}
        per_module[module] = row
    def over_modules(name: str, key: str) -> list[float]:
        return [m[name][key] for m in per_module.values() if name in m]

    summary = {name: {"unit": chosen[name][1], "on_validation": chosen[name][2],
                      "chosen_mean": float(np.mean(over_modules(name, "chosen"))),
                      "chosen_min": float(np.min(over_modules(name, "chosen"))),
                      "best_mean": float(np.mean(over_modules(name, "best")))}
               for name in CONCEPT_NAMES}
    return {"model": str(path), "best_val_loss": model.history.get("best_val_loss"),
            "steps": model.history.get("steps"), "modules": per_module, "concepts": summary}


def run(args) -> dict:
    paths = args.cells_model or [bundled_paths()["python"]]
    texts = held_out_texts(args.cells_chars)
    if not texts:
        sys.exit(f"none of {', '.join(HELD_OUT)} is in {sysconfig.get_paths()['stdlib']}")
    return {"machine": machine_info(), "python": sys.version.split()[0],
            "held_out": {m: len(t) for m, t in texts.items()},
            "models": [score_model(Path(p), texts, args.cells_chars) for p in paths]}


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"CPU: {m.get('cpu')}; Python {result['python']}; held out: "
             + ", ".join(f"{k} ({v:,} chars)" for k, v in result["held_out"].items())]
    for scored in result["models"]:
        steps, loss = scored["steps"], scored["best_val_loss"]
        lines.append(f"\n{scored['model']}: "
                     + (f"{steps:,} steps" if steps is not None else "its steps not recorded") + ", "
                     + (f"best validation loss {loss:.4f}" if loss is not None else "no validation loss recorded"))
        rows = [[name, s["unit"], f"{s['on_validation']:.3f}", f"{s['chosen_mean']:.3f}",
                 f"{s['chosen_min']:.3f}", f"{s['best_mean']:.3f}"] for name, s in scored["concepts"].items()]
        lines.append(render_table(["concept", "unit (chosen on inspect.py)", "on inspect.py",
                                   "held out, mean", "held out, worst module", "best unit held out, mean"], rows))
    return "\n".join(lines)
