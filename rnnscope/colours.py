"""The colour maths of the pages, for the notebook's coloured text.

The browser's copy is static/js/common.js (DIVERGING, SEQUENTIAL, colourAt, inkOn, showChar);
tests/test_library.py runs that file in Node and holds both equal value by value, so a cell in
a notebook and a character on /explore get the same colour for the same activation.
"""
from __future__ import annotations

import math
import unicodedata

import numpy as np

Stops = list[tuple[float, tuple[int, int, int]]]

# ColorBrewer's RdBu (diverging, for tanh quantities in [-1, 1]) and Greens (sequential, for
# sigmoid gates in [0, 1]); colours between stops are linear in RGB and rounded.
DIVERGING: Stops = [(-1, (33, 102, 172)), (-0.5, (146, 197, 222)), (0, (247, 247, 247)),
                    (0.5, (244, 165, 130)), (1, (178, 24, 43))]
SEQUENTIAL: Stops = [(0, (247, 252, 245)), (0.25, (199, 233, 192)), (0.5, (116, 196, 118)),
                     (0.75, (35, 139, 69)), (1, (0, 68, 27))]
# Surprise for sampled characters: p = 1 is paper-white, p -> 0 is deep orange.
SURPRISE: Stops = [(0, (179, 48, 0)), (0.1, (241, 105, 19)), (0.3, (253, 174, 107)),
                   (0.6, (254, 230, 206)), (1, (255, 255, 255))]

TANH_QUANTITIES = frozenset({"h", "c", "g", "n"})


def scale_for(quantity: str) -> Stops:
    return DIVERGING if quantity in TANH_QUANTITIES else SEQUENTIAL


def unit_range(quantity: str) -> tuple[float, float]:
    return (-1.0, 1.0) if quantity in TANH_QUANTITIES else (0.0, 1.0)


def js_round(x: float) -> int:
    """Math.round: halves go up, unlike Python's round, which goes to even."""
    return math.floor(x + 0.5)


def colour_at(stops: Stops, v: float) -> tuple[int, int, int]:
    """(r, g, b) for value v on a stop list, clamped to its ends (common.js colourAt)."""
    lo, hi = stops[0][0], stops[-1][0]
    x = min(hi, max(lo, v)) if math.isfinite(v) else lo
    k = 1
    while k < len(stops) - 1 and x > stops[k][0]:
        k += 1
    (x0, c0), (x1, c1) = stops[k - 1], stops[k]
    u = (x - x0) / (x1 - x0)
    return tuple(js_round(a + u * (b - a)) for a, b in zip(c0, c1))


def ink_on(colour: tuple[int, int, int]) -> str:
    """Ink that stays readable on the background (WCAG relative luminance; common.js inkOn)."""
    def linear(v: float) -> float:
        v /= 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = colour
    return "#1d2330" if 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b) > 0.28 else "#ffffff"


def rgb(colour: tuple[int, int, int]) -> str:
    return "rgb({}, {}, {})".format(*colour)


def css_gradient(stops: Stops) -> str:
    lo, hi = stops[0][0], stops[-1][0]
    return "linear-gradient(to right, " + ", ".join(
        f"{rgb(c)} {(x - lo) / (hi - lo) * 100:g}%" for x, c in stops) + ")"


def plotly_scale(stops: Stops) -> list[list]:
    lo, hi = stops[0][0], stops[-1][0]
    return [[(x - lo) / (hi - lo), rgb(c)] for x, c in stops]


def own_scale(column: np.ndarray, quantity: str) -> tuple[float, float]:
    """A unit's own range: its 1st and 99th percentiles (as float32, as the page sorts them),
    symmetric about 0 for tanh quantities so white stays 0."""
    ordered = np.sort(np.asarray(column, np.float32))
    lo = float(ordered[math.floor(0.01 * (len(ordered) - 1))])
    hi = float(ordered[math.ceil(0.99 * (len(ordered) - 1))])
    if quantity in TANH_QUANTITIES:
        m = max(abs(lo), abs(hi)) or 1.0
        return -m, m
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def display_range(column: np.ndarray, quantity: str, kind: str = "auto") -> tuple[float, float]:
    """What /explore colours a unit over: "unit" is the quantity's own range, "fit" the unit's
    percentiles, "auto" the unit range unless the unit runs past it (c can, by far)."""
    a, b = unit_range(quantity)
    if kind == "unit":
        return a, b
    if kind not in ("auto", "fit"):
        raise ValueError(f"range must be auto, fit or unit, not {kind!r}")
    runs_past = float(np.min(column)) < a - 1e-3 or float(np.max(column)) > b + 1e-3
    return own_scale(column, quantity) if kind == "fit" or runs_past else (a, b)


# Control characters go by their ASCII abbreviations (form feed FF), as the pages write them:
# common fonts lack Unicode's control pictures.
NAMED_CHARS = {" ": "␣", "\n": "↵", "\t": "⇥", "\x7f": "DEL"}
C0_NAMES = ["NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR", "SO", "SI",
            "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"]
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"}


def show_char(c: str) -> str:
    """How a character reads in labels (common.js showChar)."""
    if c in NAMED_CHARS:
        return NAMED_CHARS[c]
    code = ord(c)
    if code < 0x20:
        return C0_NAMES[code]
    if unicodedata.category(c) in INVISIBLE_CATEGORIES:
        return f"U+{code:04X}"
    return c
