"""Character n-gram language models with interpolated Kneser-Ney smoothing: the baseline
Karpathy, Johnson & Fei-Fei (2015, "Visualizing and Understanding Recurrent Networks", sec. 4.4)
hold the LSTM against, to show where recurrence earns its keep.

For order n, the probability of w after the context u (the n-1 characters before it) is

    P_n(w | u) = max(c(uw) - D, 0) / c(u.)  +  D N1+(u.) / c(u.) * P_{n-1}(w | u')

with u' = u without its first character, c raw counts at the top order and continuation
counts N1+(.v) (how many distinct characters precede v) below it (Chen & Goodman 1998,
sec. 3.5), one discount per order and kind D = n1 / (n1 + 2 n2) (Ney et al. 1994), and a
uniform distribution over the V characters under the unigram level. A context seen at no
level falls through to the level below, so every P_n(. | u) sums to 1 over the vocabulary.

Nothing is stored for all contexts at once: one pass over the training text per order gives
each n-gram an exact integer id (the id of its first n-1 characters times V plus its last, made
dense by np.unique), looks the evaluated text's n-grams up in it, and keeps only what that text
needs. Memory is a few arrays the length of the training text, whatever the order; time is one
sort of the training text per order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ORDER = 20                 # as the paper's n-gram baselines


@dataclass
class NGramLosses:
    """loss[n - 1, t] = -ln P_n(text[t+1] | the n-1 characters up to text[t]), in nats."""

    loss: np.ndarray           # (max_order, T - 1) float32
    discounts: np.ndarray      # (max_order, 2): the top-order (raw) and lower-order (continuation) D

    @property
    def orders(self) -> np.ndarray:
        return np.arange(1, len(self.loss) + 1)

    def mean(self) -> np.ndarray:
        return self.loss.mean(axis=1) if self.loss.shape[1] else np.zeros(len(self.loss))

    def best_order(self) -> int:
        return int(np.argmin(self.mean())) + 1


def discount(counts: np.ndarray) -> float:
    """Ney's D = n1 / (n1 + 2 n2) from the counts of one order; 0.5 where it is undefined."""
    n1, n2 = int(np.count_nonzero(counts == 1)), int(np.count_nonzero(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def peak_bytes(train_chars: int, text_chars: int, max_order: int) -> int:
    """What kneser_ney_losses holds at its peak, about 128 bytes a training character: the
    gram ids of two orders, the pairs, and np.unique's sort, inverse and first indices of them
    (int64 each); the evaluated text's arrays beside them (tests/test_ngram.py measures it)."""
    return 128 * train_chars + 8 * 12 * text_chars + 4 * max_order * text_chars


class Level:
    """The n-grams of one order in the training text: their dense ids per position (-1 where
    no n-gram ends), the sorted keys those ids index, and each key's context id."""

    def __init__(self, ids_at: np.ndarray, keys: np.ndarray, context: np.ndarray, num_contexts: int):
        self.ids_at, self.keys, self.context, self.num_contexts = ids_at, keys, context, num_contexts

    @classmethod
    def unigrams(cls, x: np.ndarray, V: int) -> Level:
        return cls(x.astype(np.int64), np.arange(V, dtype=np.int64), np.zeros(V, np.int64), 1)

    def extend(self, x: np.ndarray, V: int) -> Level:
        """The n+1-grams: the n-gram ending at p-1 followed by x[p]."""
        prev = np.full(len(x), -1, np.int64)
        prev[1:] = self.ids_at[:-1]
        valid = prev >= 0
        pairs = prev[valid] * V + x[valid]
        keys, inverse = np.unique(pairs, return_inverse=True)
        ids_at = np.full(len(x), -1, np.int64)
        ids_at[valid] = inverse
        return Level(ids_at, keys, keys // V, len(self.keys))

    def lookup(self, prev_ids: np.ndarray, y: np.ndarray, V: int) -> np.ndarray:
        """Ids of the evaluated text's grams (prev gram id at p-1, then y[p]); -1 if unseen."""
        out = np.full(len(y), -1, np.int64)
        prev = np.full(len(y), -1, np.int64)
        prev[1:] = prev_ids[:-1]
        valid = np.flatnonzero(prev >= 0)
        if len(valid) and len(self.keys):
            pairs = prev[valid] * V + y[valid]
            at = np.minimum(np.searchsorted(self.keys, pairs), len(self.keys) - 1)
            hit = self.keys[at] == pairs
            out[valid[hit]] = at[hit]
        return out


def continuation_counts(level: Level, above: Level) -> np.ndarray:
    """N1+(. g) for each gram g of `level`: how many distinct grams one longer end in g."""
    # Each gram of `above` is (its first character) + (a gram of `level`): one position of it
    # names that suffix as the gram of `level` ending there.
    valid = np.flatnonzero(above.ids_at >= 0)
    _, first = np.unique(above.ids_at[valid], return_index=True)
    suffixes = level.ids_at[valid[first]]
    return np.bincount(suffixes, minlength=len(level.keys))


def interpolate(counts: np.ndarray, level: Level, gram: np.ndarray, context: np.ndarray,
                lower: np.ndarray, D: float) -> np.ndarray:
    """One level of the recursion at every evaluated position (see the module docstring)."""
    total = np.bincount(level.context, weights=counts, minlength=level.num_contexts)
    types = np.bincount(level.context, weights=counts > 0, minlength=level.num_contexts)
    seen = context >= 0
    tot = np.where(seen, total[np.where(seen, context, 0)], 0.0)
    kinds = np.where(seen, types[np.where(seen, context, 0)], 0.0)
    c = np.where(gram >= 0, counts[np.where(gram >= 0, gram, 0)], 0).astype(np.float64)
    safe = np.where(tot > 0, tot, 1.0)
    p = np.maximum(c - D, 0.0) / safe + D * kinds / safe * lower
    return np.where(tot > 0, p, lower)


def kneser_ney_losses(train: np.ndarray, text: np.ndarray, vocab_size: int,
                      max_order: int = MAX_ORDER) -> NGramLosses:
    """Per-character losses of the interpolated Kneser-Ney models of orders 1..max_order,
    counted on the ids `train`, predicting each next id of `text` (ids in 0..vocab_size-1)."""
    if max_order < 1:
        raise ValueError("max_order must be at least 1")
    x, y, V = np.asarray(train, np.int64), np.asarray(text, np.int64), int(vocab_size)
    if len(x) < 2:
        raise ValueError("the training text needs at least two characters")
    for name, ids in (("train", x), ("text", y)):
        if len(ids) and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"{name} holds ids outside 0..{V - 1}")
    T = len(y)
    loss = np.empty((max_order, max(T - 1, 0)), np.float32)
    discounts = np.zeros((max_order, 2))
    # The level-n grams of the text: gram_at[p] ends at p; P(text[t+1] | ...) uses gram_at[t+1]
    # for the n-gram "context + next" and the n-1-gram ending at t for its context.
    level, text_ids = Level.unigrams(x, V), y.copy()
    context_ids = np.zeros(T, np.int64)            # the empty context, seen everywhere
    lower = np.full(max(T - 1, 0), 1.0 / V)        # below the unigrams: uniform
    for n in range(1, max_order + 1):
        gram, context = text_ids[1:], context_ids[:-1]
        raw = np.bincount(level.ids_at[level.ids_at >= 0], minlength=len(level.keys))
        D_raw = discount(raw)
        top = interpolate(raw, level, gram, context, lower, D_raw)
        loss[n - 1] = -np.log(top)
        if n < max_order:
            above = level.extend(x, V)
            cont = continuation_counts(level, above)
            D_cont = discount(cont)
            lower = interpolate(cont, level, gram, context, lower, D_cont)
            discounts[n - 1] = D_raw, D_cont
            context_ids, text_ids = text_ids, above.lookup(text_ids, y, V)
        else:
            discounts[n - 1] = D_raw, np.nan
            break
        level = above
    return NGramLosses(loss, discounts)
