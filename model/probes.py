"""Concept probes: which neuron tracks a property of the text, and how well.

A concept is a number per character of a text: binary (inside double quotes, a vowel...)
or graded (position in line, bracket depth). Values are aligned with the trace: entry t
describes the state after reading character t, so an opening quote is already inside
and a closing quote is already outside.

Every unit of every layer and quantity (h, c, gates) is ranked at once: binary concepts
by the area under the ROC curve (the probability that the unit is higher on a random
concept character than on a random other one), graded concepts by Pearson correlation.
Both carry a sign: AUC < 0.5 or r < 0 is a unit that goes down on the concept.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .lm import LanguageModel
from .patterns import Pattern, compile_pattern, matches


# ---- the concept library -----------------------------------------------------------------

def _chars(text: str) -> np.ndarray:
    """Code points (T,) for vectorised character classes."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _member(text: str, chars: str) -> np.ndarray:
    return np.isin(_chars(text), _chars(chars)).astype(np.float32)


def _where(text: str, test: Callable[[str], bool]) -> np.ndarray:
    return np.fromiter((test(c) for c in text), dtype=np.float32, count=len(text))


def regex_indicator(text: str, pattern: str | Pattern, max_seconds: float | None = None) -> np.ndarray:
    """1 for every character inside a match of `pattern` (Python's syntax, matched by RE2:
    see patterns.py), else 0. PatternError for a pattern it cannot match, or one that takes
    over `max_seconds`."""
    if isinstance(pattern, str):
        pattern = compile_pattern(pattern)
    return span_indicator(len(text), matches(pattern, text, max_seconds))


def span_indicator(length: int, spans: Iterable[tuple[int, int]]) -> np.ndarray:
    """1 for every character inside one of the (start, end) spans, else 0: (length,)."""
    out = np.zeros(length, np.float32)
    for start, end in spans:
        out[start:end] = 1.0
    return out


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening double quote up to (not including) its closing one."""
    q = _chars(text) == ord('"')
    # The number of quotes read so far is odd exactly inside.
    return (np.cumsum(q) % 2).astype(np.float32)


BRACKETS = {"(": ")", "[": "]", "{": "}"}


def bracket_depth(text: str, counted: np.ndarray | None = None) -> np.ndarray:
    """How many (, [ or { are open after reading each character; never below 0. With
    `counted` (T,) only the brackets where it is non-zero open or close."""
    codes = _chars(text)
    step = np.isin(codes, _chars("([{")).astype(np.int64) - np.isin(codes, _chars(")]}"))
    if counted is not None:
        step *= counted != 0
    depth = np.cumsum(step)
    # A stray closer must not make the rest of the text "negative depth": clip the
    # running sum at 0 (the running minimum of the unclipped sum is what to lift by).
    depth -= np.minimum(np.minimum.accumulate(depth), 0)
    return depth.astype(np.float32)


def line_position(text: str) -> np.ndarray:
    """Characters since the start of the line: 0 for the first of each line; the newline
    ending a line counts as its last character."""
    idx = np.arange(len(text))
    starts = np.zeros(len(text), np.int64)
    nl = np.flatnonzero(_chars(text) == ord("\n"))
    starts[nl[nl + 1 < len(text)] + 1] = nl[nl + 1 < len(text)] + 1
    return (idx - np.maximum.accumulate(starts)).astype(np.float32)


def indentation(text: str) -> np.ndarray:
    """Every character carries its line's leading whitespace (a tab counts 4)."""
    out = np.zeros(len(text), np.float32)
    pos = 0
    for line in text.split("\n"):
        stripped = line.lstrip(" \t")
        lead = line[: len(line) - len(stripped)]
        out[pos:pos + len(line) + 1] = len(lead) + 3 * lead.count("\t")
        pos += len(line) + 1
    return out


def is_word_char(c: str) -> bool:
    return c.isalnum() or c in "_'"


def word_start(text: str) -> np.ndarray:
    w = _where(text, is_word_char)
    prev = np.concatenate([[0.0], w[:-1]])
    return (w * (1.0 - prev)).astype(np.float32)


def line_start(text: str) -> np.ndarray:
    """The first character of each line."""
    out = np.zeros(len(text), np.float32)
    if len(text):
        out[0] = 1.0
        nl = np.flatnonzero(_chars(text)[:-1] == ord("\n"))
        out[nl + 1] = 1.0
    return out


URL = compile_pattern(r"(?:https?://|www\.)[^\s\"'<>()]+")


class Literals(NamedTuple):
    """0/1 per character (T,) of a Python text."""

    string: np.ndarray         # inside any string literal
    comment: np.ndarray        # inside a comment
    triple: np.ndarray         # inside a triple-quoted literal (a docstring, mostly)


def python_literals(text: str) -> Literals:
    """Where Python's tokenizer would see a string literal, a triple-quoted one among them,
    and a comment.

    A string runs from its opening quote (inside) to its closing one (outside), like
    `inside_quotes`; of a closing triple quote the first two are still inside, since a
    reader cannot yet tell them from quotes in the text. A backslash keeps the next
    character from closing it; a single-quoted string also ends, unterminated, at a
    newline (the newline outside), and any string at the end of the text. Prefixes
    (r, b, f, u and pairs) never change where a literal ends, so they are code. A comment
    runs from a # outside strings to the end of its line, the newline excluded.

    Only quotes, #, backslashes and newlines can change the state, so the scan visits
    those positions alone, each once: linear in the text.
    """
    T = len(text)
    marks = np.flatnonzero(np.isin(_chars(text), _chars("\"'#\\\n"))).tolist()
    edges = np.zeros((3, T + 1), np.int32)          # +1 where a span starts, -1 past its end
    k, n = 0, len(marks)
    while k < n:
        p = marks[k]
        c = text[p]
        if c == "#":
            end = text.find("\n", p)
            end = T if end < 0 else end
            edges[1, p] += 1
            edges[1, end] -= 1
            while k < n and marks[k] < end:
                k += 1
            continue
        if c not in "'\"":                          # a backslash or newline in code
            k += 1
            continue
        delim = c * 3 if text.startswith(c * 3, p) else c
        k += 1
        while k < n and marks[k] < p + len(delim):
            k += 1
        end = T
        while k < n:
            q = marks[k]
            d = text[q]
            if d == "\\":                              # the escaped character cannot close
                while k < n and marks[k] < q + 2:
                    k += 1
                continue
            if d == "\n" and len(delim) == 1:
                end = q
                break
            if d == c and text.startswith(delim, q):
                end = q + len(delim) - 1
                k += 1
                while k < n and marks[k] < q + len(delim):
                    k += 1
                break
            k += 1
        for row in (0, 2) if len(delim) == 3 else (0,):
            edges[row, p] += 1
            edges[row, end] -= 1
    inside = (np.cumsum(edges[:, :T], axis=1) > 0).astype(np.float32)
    return Literals(inside[0], inside[1], inside[2])


def code_only(text: str) -> np.ndarray:
    """1 for characters of Python code: outside string literals and comments."""
    found = python_literals(text)
    return ((found.string + found.comment) == 0).astype(np.float32)


@dataclass(frozen=True)
class Concept:
    name: str
    description: str
    graded: bool                          # correlation instead of AUC
    indicator: Callable[[str], np.ndarray]


CONCEPTS: dict[str, Concept] = {c.name: c for c in (
    Concept("quotes", "inside double quotes (the opening quote included)", False, inside_quotes),
    Concept("string", "inside a Python string literal: '...', \"...\", triple-quoted, escapes and prefixes "
            "understood (the opening quote included)", False, lambda t: python_literals(t).string),
    Concept("inline_string", "inside a one-line Python string literal, '...' or \"...\" (not triple-quoted, so "
            "not a docstring)", False, lambda t: (lambda s: s.string - s.triple)(python_literals(t))),
    Concept("brackets", "inside parentheses, brackets or braces", False,
            lambda t: (bracket_depth(t) > 0).astype(np.float32)),
    Concept("bracket_depth", "how many brackets are open", True, bracket_depth),
    # One "[" in a string would otherwise leave the rest of a source file "inside brackets".
    Concept("code_bracket_depth", "how many brackets are open in Python code (those in strings and comments "
            "not counted)", True, lambda t: bracket_depth(t, code_only(t))),
    Concept("line_position", "characters since the start of the line", True, line_position),
    Concept("line_start", "the first character of a line", False, line_start),
    Concept("word_start", "the first character of a word", False, word_start),
    Concept("in_word", "a letter, digit, underscore or apostrophe", False, lambda t: _where(t, is_word_char)),
    Concept("vowel", "a, e, i, o, u in either case", False, lambda t: _member(t, "aeiouAEIOU")),
    Concept("upper", "an upper-case letter", False, lambda t: _where(t, str.isupper)),
    Concept("digit", "a digit", False, lambda t: _where(t, str.isdigit)),
    Concept("whitespace", "space, newline or tab", False, lambda t: _where(t, str.isspace)),
    Concept("url", "inside a URL (http://, https:// or www.)", False, lambda t: regex_indicator(t, URL)),
    Concept("comment", "inside a comment: # to the end of the line, outside string literals", False,
            lambda t: python_literals(t).comment),
    Concept("prose", "inside a comment or a string literal: a Python file's words rather than its code (the cell "
            "Karpathy et al. saw turn on inside comments and quotes)", False, lambda t: 1.0 - code_only(t)),
    Concept("indentation", "the leading whitespace of the character's line", True, indentation),
)}


# ---- ranking -------------------------------------------------------------------------------

@dataclass
class Activations:
    """Every probed unit's value over a text: values (M, T), with unit m being
    unit `units[m]` of quantity `quantities[m]` in layer `layers[m]`."""

    values: np.ndarray
    layers: np.ndarray          # (M,) int
    quantities: list[str]       # (M,) per row
    units: np.ndarray           # (M,) int


def activations(model: LanguageModel, ids: np.ndarray, chunk: int = 1024,
                quantities: Iterable[str] | None = None, dtype=None) -> Activations:
    """Read ids (T,) from a zero state and keep every quantity of every layer (or only
    `quantities`, in the cell's order), unit-major, as `dtype` (default: the model's)."""
    values, _ = read_units(model, ids, None, model.dtype if dtype is None else dtype, chunk, quantities)
    return Activations(values, *unit_layout(model, quantities))


def read_units(model: LanguageModel, ids: np.ndarray, state=None, dtype=np.float16, chunk: int = 1024,
               quantities: Iterable[str] | None = None) -> tuple[np.ndarray, object]:
    """The values (M, T) of every unit (unit_layout's rows) over the characters ids (T,), read
    on from `state` (None: the zero state), and the state after them: a text read in pieces
    whose lengths are multiples of `chunk` gives exactly the whole read's values, as the model
    reads in the same chunks."""
    H, T = model.config.hidden_size, len(ids)
    keys = _unit_keys(model, quantities)
    values = np.empty((len(keys), H, T), dtype)                          # (K, H, T)
    for s in range(0, T, chunk):
        logits, state, cache = model.forward(ids[None, s:s + chunk], state)
        for k, (l, q) in enumerate(keys):
            block = model.internals(cache, l, q).T
            # float16 tops out at 65,504: a cell state past it is clipped, still "on" or "off".
            values[k, :, s:s + logits.shape[1]] = np.clip(block, -6e4, 6e4) if values.dtype == np.float16 else block
    return values.reshape(len(keys) * H, T), state


def unit_layout(model: LanguageModel, quantities: Iterable[str] | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Each row's layer, quantity and unit in read_units' values: layer-major, then quantity
    in the cell's order, then unit."""
    H, keys = model.config.hidden_size, _unit_keys(model, quantities)
    return (np.repeat([l for l, _ in keys], H), [q for _, q in keys for _ in range(H)],
            np.tile(np.arange(H), len(keys)))


def _unit_keys(model: LanguageModel, quantities: Iterable[str] | None) -> list[tuple[int, str]]:
    cell = model.cell
    kept = cell.quantities if quantities is None else [q for q in cell.quantities if q in set(quantities)]
    return [(l, q) for l in range(model.config.num_layers) for q in kept]


def auc(values: np.ndarray, labels: np.ndarray, block: int = 256) -> np.ndarray:
    """Area under the ROC curve of each row of values (M, T) against binary labels (T,),
    by the rank-sum (Mann-Whitney) formula: AUC = (R+ - n+(n+ + 1)/2) / (n+ n-), R+ the
    sum of the positives' ranks.

    One np.sort per block of rows orders values and labels together: the label rides in
    the least significant mantissa bit of the float32 value. That moves a value by one ulp
    (6e-8 relative), so it can only reorder values equal to seven digits, and it is four
    times faster than argsort and a gather. Values equal once the bit is cleared again
    (saturated gates are exactly 0 or 1 for long stretches) share their average rank.
    """
    y = labels.astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the concept needs both positive and negative characters")
    M, T = values.shape
    # Ranks centred on their mean keep float32 sums of thousands of them exact to ~1e-6 AUC.
    centre = (T + 1) / 2.0
    ranks = (np.arange(1, T + 1) - centre).astype(np.float32)
    out = np.empty(M, np.float64)
    bit = y.astype(np.uint32)
    for s in range(0, M, block):
        v = np.array(values[s:s + block], np.float32, order="C")         # a row-major copy to mark
        v += 0.0                                                         # -0.0 -> +0.0
        u = v.view(np.uint32)
        u &= np.uint32(0xFFFFFFFE)
        u |= bit
        v.sort(axis=1)
        # Labels in sorted order, read from the low byte only (little-endian): a quarter of the traffic.
        pos = (u.view(np.uint8)[:, ::4] & 1).astype(np.float32)          # (b, T)
        u &= np.uint32(0xFFFFFFFE)
        out[s:s + block] = pos @ ranks + n_pos * centre
        out[s:s + block] += tie_correction(v, pos)
    return (out - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def tie_correction(v: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Per row of sorted values v (b, T) with labels pos (b, T) in the same order: what
    giving each run of equal values its average rank adds to the positives' rank sum.
    Works on the tied elements only, which continuous rows have few of."""
    b, T = v.shape
    tie = v[:, 1:] == v[:, :-1]                                          # (b, T-1): t+1 equals t
    if not tie.any():
        return np.zeros(b)
    in_run = np.zeros((b, T), bool)
    in_run[:, 1:] |= tie
    in_run[:, :-1] |= tie
    flat = np.flatnonzero(in_run)                                        # row-major: runs contiguous
    col = flat % T
    starts = np.ones(len(flat), bool)
    starts[1:] = ~tie.ravel()[(flat[1:] - flat[1:] // T - 1)]            # tie with the element before?
    starts[1:] |= col[1:] == 0
    run = np.cumsum(starts) - 1
    first = col[starts]
    last = np.append(col[np.flatnonzero(starts)[1:] - 1], col[-1])
    avg = (first + last)[run] / 2.0
    gain = pos.ravel()[flat] * (avg - col)
    return np.bincount(flat // T, weights=gain, minlength=b)


def correlation(values: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r of each row of values (M, T) with target (T,); 0 for a constant row."""
    t = target.astype(np.float64)
    t = t - t.mean()
    t_norm = np.sqrt(t @ t)
    if t_norm == 0:
        raise ValueError("the concept is constant over the text")
    v = values.astype(np.float64)
    v -= v.mean(axis=1, keepdims=True)
    v_norm = np.sqrt(np.einsum("mt,mt->m", v, v))
    r = (v @ t) / np.where(v_norm > 0, v_norm * t_norm, 1.0)
    return np.where(v_norm > 0, r, 0.0)


def best_threshold(values: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """For one unit's values (T,): the cut that best separates the concept, by Youden's
    J = TPR - FPR, and which side is the concept's. Returns (threshold, J, sign): with
    sign +1 the concept is predicted above the threshold, with -1 below."""
    y = labels.astype(bool)
    order = np.argsort(values, kind="stable")
    v, yo = values[order], y[order]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    below_pos = np.cumsum(yo)                          # positives at or below each cut
    below_neg = np.arange(1, len(v) + 1) - below_pos
    # Predicting "concept above the cut": TPR = 1 - below_pos/n+, FPR = 1 - below_neg/n-.
    j = below_neg / n_neg - below_pos / n_pos
    # Only cuts between distinct values can be realised by a threshold.
    valid = np.append(v[1:] > v[:-1], False)
    j = np.where(valid, j, 0.0)
    k = int(np.argmax(np.abs(j)))
    if not valid[k]:
        return float(v[0]), 0.0, 1.0
    return float((v[k] + v[k + 1]) / 2.0), float(abs(j[k])), 1.0 if j[k] >= 0 else -1.0


@dataclass
class Ranked:
    layer: int
    quantity: str
    unit: int
    score: float               # AUC (binary) or r (graded)
    strength: float            # |AUC - 0.5| * 2 or |r|: what the ranking sorts by, in [0, 1]
    sign: int                  # +1: higher on the concept, -1: lower
    threshold: float | None    # binary concepts: the best separating cut
    separation: float | None   # Youden's J at that cut
    low: float                 # the unit's 1st and 99th percentiles over the text,
    high: float                # for colouring it on its own scale
    row: int                   # its row in Activations.values


@dataclass
class Probe:
    graded: bool
    positives: int             # characters with the concept (binary), or non-zero (graded)
    total_units: int
    ranked: list[Ranked]
    indicator: np.ndarray      # (T,)


def rank_units(acts: Activations, indicator: np.ndarray, graded: bool, top: int = 20) -> Probe:
    """Score every unit against the concept and return the `top` strongest, strongest first."""
    if graded:
        score = correlation(acts.values, indicator)
        strength = np.abs(score)
    else:
        score = auc(acts.values, indicator)
        strength = np.abs(score - 0.5) * 2.0
    top = min(top, len(score))
    best = np.argpartition(-strength, top - 1)[:top] if top < len(score) else np.arange(len(score))
    best = best[np.argsort(-strength[best], kind="stable")]
    ranked = []
    for m in best:
        v = acts.values[m]
        low, high = np.percentile(v, [1, 99])
        threshold = separation = None
        if not graded:
            threshold, separation, _ = best_threshold(v, indicator)
        ranked.append(Ranked(int(acts.layers[m]), acts.quantities[m], int(acts.units[m]), float(score[m]),
                             float(strength[m]), 1 if (score[m] > (0 if graded else 0.5)) else -1,
                             threshold, separation, float(low), float(high), int(m)))
    return Probe(graded, int((indicator != 0).sum()), len(score), ranked, indicator)


def unit_values(model: LanguageModel, ids: np.ndarray, layer: int, quantity: str, unit: int) -> np.ndarray:
    """One unit's values over ids (T,), read from a zero state: (T,) float32."""
    values = np.empty(len(ids), np.float32)
    for s, logits, cache in model.read(ids):
        values[s:s + len(logits)] = model.internals(cache, layer, quantity)[:, unit]
    return values


def ranked_values(acts: Activations, indicator: np.ndarray, graded: bool, top: int = 20) -> tuple[Probe, np.ndarray]:
    """rank_units, and the ranked units' values over the text (T, top), as the probe page draws them."""
    result = rank_units(acts, indicator, graded, top)
    return result, np.stack([acts.values[r.row] for r in result.ranked], axis=1)


def probe(model: LanguageModel, text: str, indicator: np.ndarray, graded: bool, top: int = 20) -> Probe:
    """Read `text` and rank every unit of the model against the indicator (T,)."""
    if len(indicator) != len(text):
        raise ValueError("the indicator needs one value per character")
    if not graded:
        n = int((indicator != 0).sum())
        if n == 0 or n == len(text):
            raise ValueError("the concept must hold for some characters of the text and not for others; "
                             f"it holds for {n} of {len(text)}")
    elif np.ptp(indicator) == 0:
        raise ValueError("the concept is constant over the text")
    return rank_units(activations(model, model.encode(text)), indicator, graded, top)


@dataclass
class Strongest:
    """The best unit for one concept over a text, as rank_units ranks it first."""

    concept: str
    graded: bool
    layer: int
    quantity: str
    unit: int
    score: float               # AUC (binary) or r (graded)
    strength: float            # |2 AUC - 1| or |r|, in [0, 1]


def constant_reason(indicator: np.ndarray, graded: bool) -> str | None:
    """Why no unit can be ranked against the indicator (T,) on this text, or None."""
    if graded:
        return "constant on the text" if len(indicator) == 0 or np.ptp(indicator) == 0 else None
    n = int((indicator != 0).sum())
    if n == 0:
        return "holds nowhere in the text"
    if n == len(indicator):
        return "holds everywhere in the text"
    return None


def strongest_units(model: LanguageModel, text: str, concepts: Iterable[Concept] | None = None
                    ) -> tuple[list[Strongest], dict[str, str]]:
    """For each concept (default: all of CONCEPTS) the unit that tracks it best over `text`,
    reading the text once; concepts constant on the text are left out, with the reason
    (name -> why). The scores are rank_units', so they agree with a probe of the same text."""
    concepts = list(CONCEPTS.values() if concepts is None else concepts)
    indicators, skipped = {}, {}
    for c in concepts:
        indicator = c.indicator(text)
        why = constant_reason(indicator, c.graded)
        if why is None:
            indicators[c.name] = indicator
        else:
            skipped[c.name] = why
    if not indicators:
        return [], skipped
    acts = activations(model, model.encode(text))
    found = []
    for c in concepts:
        if c.name in indicators:
            best = rank_units(acts, indicators[c.name], c.graded, top=1).ranked[0]
            found.append(Strongest(c.name, c.graded, best.layer, best.quantity, best.unit, best.score,
                                   best.strength))
    return found, skipped


# ---- top-activating contexts --------------------------------------------------------------

@dataclass
class Context:
    position: int              # the character read when the unit took `value`
    value: float


def top_contexts(values: np.ndarray, k: int, min_gap: int) -> tuple[list[Context], list[Context]]:
    """The k positions where values (T,) is highest and the k where it is lowest, at least
    `min_gap` characters apart, so one long run does not fill the list with neighbours."""

    def pick(order: np.ndarray) -> list[Context]:
        chosen: list[int] = []
        taken = np.zeros(len(values), bool)
        for t in order:
            if taken[t]:
                continue
            chosen.append(int(t))
            taken[max(0, t - min_gap + 1): t + min_gap] = True
            if len(chosen) == k:
                break
        return [Context(t, float(values[t])) for t in chosen]

    order = np.argsort(values, kind="stable")
    return pick(order[::-1]), pick(order)
