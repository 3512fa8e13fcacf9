"""Select, find, match (after LSTMVis, Strobelt et al. 2017): from stretches of text a
person selects, rank the units that are on there and off around it; then find other
places where a chosen set of units is on together for a stretch of similar length.

A selected span is a binary concept like any other (probes.py): 1 inside a span, 0 outside,
so the ranking is `rank_units` with AUC, sign and Youden's threshold. Matching works on the
on/off pattern alone: unit m is on at t when sign_m * (v_m[t] - threshold_m) > 0, so any
monotone encoding of the values (float16 here) gives the same matches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .lm import LanguageModel
from .probes import Activations, Probe, activations, rank_units


def spans_indicator(spans: list[tuple[int, int]], T: int) -> np.ndarray:
    """1 for every character inside one of the half-open spans [start, end), else 0 (T,)."""
    edges = np.zeros(T + 1, np.int32)
    for start, end in spans:
        if not 0 <= start < end <= T:
            raise ValueError(f"span [{start}, {end}) is not a non-empty stretch of a text of {T} characters")
        edges[start] += 1
        edges[end] -= 1
    return (np.cumsum(edges[:T]) > 0).astype(np.float32)


def rank_for_spans(acts: Activations, spans: list[tuple[int, int]], top: int = 20,
                   context: int | None = 20) -> Probe:
    """Every unit of every layer and quantity ranked by the AUC with which it separates the
    characters inside the spans from those outside, strongest first, with its sign and best
    threshold. Outside is the `context` characters on either side of each span (None: the
    whole rest of the text): a unit need only be off around the selection, as LSTMVis asks,
    since a text usually holds unselected instances of what was selected (a quote cell is
    on in every other quotation too). ValueError when nothing is outside.

    Each Ranked's `row` is its row in acts.values; its low and high are over the characters
    compared."""
    T = acts.values.shape[1]
    indicator = spans_indicator(spans, T)
    if context is None:
        cols = np.arange(T)
    else:
        near = np.zeros(T + 1, np.int32)
        for start, end in spans:
            near[max(0, start - context)] += 1
            near[min(T, end + context)] -= 1
        cols = np.flatnonzero(np.cumsum(near[:T]) > 0)
    if indicator[cols].all():
        raise ValueError("the spans cover every character compared, so nothing is outside them")
    if len(cols) < T:
        acts = Activations(acts.values[:, cols], acts.layers, acts.quantities, acts.units)
    result = rank_units(acts, indicator[cols], graded=False, top=top)
    inside = indicator[cols] != 0
    for k, r in enumerate(result.ranked):
        result.ranked[k] = replace(r, threshold=middle_cut(acts.values[r.row], inside, r.sign, r.threshold))
    return result


def middle_cut(values: np.ndarray, inside: np.ndarray, sign: int, threshold: float) -> float:
    """When a unit separates inside from outside completely, the middle of the gap between
    them; else `threshold` (Youden's). J is the same anywhere in the gap, and best_threshold
    takes the cut next to the outside values: a few selected characters then make a cut that
    the same thing elsewhere, a little weaker, falls short of."""
    v_in, v_out = values[inside].astype(np.float64), values[~inside].astype(np.float64)
    if sign > 0 and v_in.min() > v_out.max():
        return float((v_in.min() + v_out.max()) / 2)
    if sign < 0 and v_in.max() < v_out.min():
        return float((v_in.max() + v_out.min()) / 2)
    return threshold


def read_all(model: LanguageModel, ids: np.ndarray, dtype=np.float16, chunk: int = 1024) -> Activations:
    """probes.activations stored as `dtype`: float16 halves a long text's memory (3,072 units x
    100,000 characters of a 2x256 LSTM is 614 MB) and keeps three digits of each value, which
    is all an on/off test against a threshold needs."""
    return activations(model, ids, chunk, dtype=dtype)


@dataclass
class Match:
    start: int
    end: int                   # exclusive
    score: float               # agreement: the fraction of units on, averaged over [start, end)


def agreement(values: np.ndarray, thresholds: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """The fraction of the M units on at each character (T,), from values (M, T)."""
    thr = np.asarray(thresholds, np.float64)[:, None]
    s = np.asarray(signs, np.float64)[:, None]
    on = (values - thr) * s > 0                                          # (M, T); float16 upcast per row
    return on.mean(axis=0)


def match(values: np.ndarray, thresholds, signs, length: float, top: int = 10, tolerance: float = 4.0,
          quorum: float = 0.5, gap: int = 1) -> list[Match]:
    """Where the units of values (M, T) are on together for a stretch of similar length.

    A candidate is a maximal run of characters where at least `quorum` of the units are on,
    runs apart by at most `gap` characters joined (a unit dips for a character at a space
    inside a long quotation); it must be from length / tolerance to length * tolerance
    characters long. Candidates are ranked by agreement (the fraction of units on, averaged
    over the run), then by how close their length is to `length` (on a log scale: twice as
    long is as far as half as long), then by position. Runs never overlap, so neither do
    the matches. Linear in T: one comparison per value, then run edges and a cumulative sum.
    """
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError("values must be (M, T) with at least one unit")
    if length <= 0 or tolerance < 1 or not 0 < quorum <= 1 or gap < 0:
        raise ValueError("length must be positive, tolerance at least 1, quorum in (0, 1] and gap at least 0")
    a = agreement(values, thresholds, signs)                              # (T,)
    # A hair under the quorum, so 1 of 2 units is exactly half, not a rounding error below it.
    inside = np.concatenate([[False], a >= quorum - 1e-9, [False]])
    edges = np.flatnonzero(inside[1:] != inside[:-1])                     # run starts and ends, alternating
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) == 0:
        return []
    apart = starts[1:] - ends[:-1] > gap
    starts, ends = starts[np.concatenate([[True], apart])], ends[np.concatenate([apart, [True]])]
    n = ends - starts
    keep = (n >= max(1, math.floor(length / tolerance))) & (n <= math.ceil(length * tolerance))
    starts, ends, n = starts[keep], ends[keep], n[keep]
    if len(starts) == 0:
        return []
    total = np.concatenate([[0.0], np.cumsum(a)])                         # (T + 1,)
    score = (total[ends] - total[starts]) / n
    score = np.round(score, 9)                                            # equal agreements tie exactly
    off = np.abs(np.log(n / length))
    order = np.lexsort((starts, off, -score))[:top]
    return [Match(int(starts[i]), int(ends[i]), float(score[i])) for i in order]
