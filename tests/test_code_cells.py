"""docs/analyses.md's cells in Python source: each unit the guide names for the bundled python
model still tracks its concept on the model's own validation text (the last 10 % of
python-stdlib.txt), as well as the guide says, on both stretches it reports."""
from __future__ import annotations

import numpy as np
import pytest

from rnnscope.model.bundled import bundled_paths
from rnnscope.model.checkpoint import load_model
from rnnscope.model.data import split
from rnnscope.model.probes import CONCEPTS, auc, correlation
from tests.corpus import shared_corpus

# The guide's three stretches: up to 50,000 characters (whole lines) from the start of each
# file; pathlib.py runs to the end of the text, past the 200,000 characters the trainer
# chose its checkpoint on.
STRETCHES = {"inspect.py": 0, "typing.py": 1, "pathlib.py": 2}
STRETCH_CHARS = 50_000

# concept, layer, quantity, unit, sign (+1 rises on the concept, -1 falls), and the floor on
# each stretch for the unit's strength in that direction: AUC (1 - AUC when it falls) or
# r (-r). The guide's figures, about 0.02 lower.
CELLS = [
    ("inline_string", 1, "h", 221, -1, (0.91, 0.82, 0.78)),       # AUC 0.070 / 0.154 / 0.201
    ("inline_string", 1, "c", 221, -1, (0.92, 0.87, 0.88)),       # AUC 0.058 / 0.105 / 0.102
    ("string", 1, "c", 117, +1, (0.86, 0.74, 0.79)),              # AUC 0.887 / 0.764 / 0.817
    ("comment", 0, "h", 42, +1, (0.83, 0.82, 0.87)),              # AUC 0.850 / 0.847 / 0.892
    ("indentation", 0, "c", 146, +1, (0.75, 0.71, 0.64)),         # r 0.771 / 0.737 / 0.663
    ("bracket_depth", 1, "c", 203, +1, (0.74, 0.68, 0.62)),       # r 0.765 / 0.702 / 0.640
    ("code_bracket_depth", 1, "c", 203, +1, (0.74, 0.62, 0.67)),  # r 0.759 / 0.645 / 0.694
    ("line_position", 1, "c", 159, +1, (0.72, 0.70, 0.75)),       # r 0.747 / 0.721 / 0.776
]


def stretch(val: str, module: str) -> str:
    """STRETCH_CHARS of whole lines from the `# ---- Lib/<module> ----` header on."""
    start = val.index(f"# ---- Lib/{module} ----")
    return val[start:val.rindex("\n", start, start + STRETCH_CHARS) + 1]


@pytest.fixture(scope="module")
def readings():
    """Per stretch: its text and the named units' values over it, read from a zero state."""
    if "python" not in bundled_paths():
        pytest.fail("model/weights/python.safetensors is missing")
    model = load_model(bundled_paths()["python"])
    _, val = split(shared_corpus("python-stdlib.txt"), model.train_config["val_fraction"])
    wanted = {(layer, q) for _, layer, q, _, _, _ in CELLS}
    out = {}
    for module in STRETCHES:
        text = stretch(val, module)
        values = {k: [] for k in wanted}
        for _, _, cache in model.read(model.encode(text)):
            for layer, q in wanted:
                values[layer, q].append(model.internals(cache, layer, q))
        out[module] = text, {k: np.concatenate(v) for k, v in values.items()}        # (T, H) each
    return out


@pytest.mark.parametrize("concept,layer,quantity,unit,sign,floors", CELLS,
                         ids=[f"{c[0]}-L{c[1]}{c[2]}{c[3]}" for c in CELLS])
def test_the_named_unit_tracks_its_concept_on_validation_text(readings, concept, layer, quantity, unit, sign,
                                                              floors):
    c = CONCEPTS[concept]
    for module, k in STRETCHES.items():
        text, values = readings[module]
        x = values[layer, quantity][:, unit][None]                                 # (1, T)
        target = c.indicator(text)
        if c.graded:
            strength = sign * float(correlation(x, target)[0])
        else:
            a = float(auc(x, target)[0])
            strength = a if sign > 0 else 1.0 - a
        assert strength >= floors[k], f"{concept}: L{layer} {quantity}[{unit}] on {module}: {strength:.3f}"
