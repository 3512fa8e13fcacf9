"""The n-gram baseline: interpolated Kneser-Ney proven against hand counts (a dictionary
implementation of the formula, written for reading, not speed), a distribution at every
context, and planted long-range structure it cannot see."""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from rnnscope.model.ngram import kneser_ney_losses


def ney(counts) -> float:
    values = list(counts)
    n1, n2 = values.count(1), values.count(2)
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


class HandCounted:
    """Chen & Goodman's interpolated Kneser-Ney, from dictionaries of counted strings."""

    def __init__(self, train: str, vocab: str, order: int):
        self.vocab, self.order = vocab, order
        self.raw = {n: Counter(train[i:i + n] for i in range(len(train) - n + 1)) for n in range(1, order + 1)}
        # N1+(. g): distinct characters seen before g.
        self.cont = {}
        for n in range(1, order):
            before = defaultdict(set)
            for g in self.raw[n + 1]:
                before[g[1:]].add(g[0])
            self.cont[n] = Counter({g: len(s) for g, s in before.items()})
        self.D_raw = {n: ney(self.raw[n].values()) for n in range(1, order + 1)}
        self.D_cont = {n: ney(self.cont[n].values()) for n in range(1, order)}

    def p(self, w: str, context: str, n: int, top: bool = True) -> float:
        if n == 0:
            return 1.0 / len(self.vocab)
        u = context[len(context) - (n - 1):] if n > 1 else ""
        lower = self.p(w, context, n - 1, top=False)
        if len(u) < n - 1:
            return lower
        counts, D = (self.raw[n], self.D_raw[n]) if top else (self.cont[n], self.D_cont[n])
        following = {g: c for g, c in counts.items() if g[:-1] == u and c > 0}
        total = sum(following.values())
        if total == 0:
            return lower
        return max(counts.get(u + w, 0) - D, 0) / total + D * len(following) / total * lower


def ids(text: str, vocab: str) -> np.ndarray:
    return np.array([vocab.index(c) for c in text])


@pytest.mark.parametrize("train,text,order", [
    ("abracadabra", "abracadabrab", 4),
    ("abracadabra abracadabra cadabra", "cabrac dab", 5),
    ("the cat sat on the mat; the rat sat on the cat.", "the mat sat on a rat.", 6),
])
def test_losses_equal_hand_counts(train, text, order):
    vocab = "".join(sorted(set(train) | set(text)))
    hand = HandCounted(train, vocab, order)
    got = kneser_ney_losses(ids(train, vocab), ids(text, vocab), len(vocab), order)
    for n in range(1, order + 1):
        expected = [-math.log(hand.p(text[t + 1], text[:t + 1], n)) for t in range(len(text) - 1)]
        np.testing.assert_allclose(got.loss[n - 1], expected, rtol=1e-5, err_msg=f"order {n}")


def test_every_context_is_a_distribution_over_the_vocabulary():
    rng = np.random.default_rng(0)
    vocab = "abcdx"
    train = "".join(rng.choice(list("abcd"), 300, p=[0.5, 0.3, 0.15, 0.05]))      # x never seen
    for context in ["", "a", "ab", "dd", "xa", "abca", "cxdb", train[-6:]]:
        totals = np.zeros(6)
        for w in vocab:
            text = context + w
            if len(text) < 2:
                text = "a" + w                # the empty context: a first character is read, then w
            totals += np.exp(-kneser_ney_losses(ids(train, vocab), ids(text, vocab), len(vocab), 6).loss[:, -1])
        np.testing.assert_allclose(totals, 1.0, rtol=1e-6, err_msg=repr(context))   # losses are float32


FILLERS = ("abcdefg", "hgfedcb", "dcbahgf", "bdfhace")


def planted(pairs: int, seed: int) -> str:
    """An opener, ( or [, then one of four fixed 7-letter fillers, then the matching closer: that a
    closer comes is plain from the filler's last letters; which one, only from 8 characters back."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        opener = "([" [rng.integers(2)]
        out.append(opener + FILLERS[rng.integers(len(FILLERS))] + {"(": ")", "[": "]"}[opener] + "\n")
    return "".join(out)


def test_an_ngram_shorter_than_the_span_cannot_tell_the_closer():
    k = 1 + len(FILLERS[0])                     # the opener sits k characters before its closer
    train, text = planted(3000, 0), planted(300, 1)
    vocab = "".join(sorted(set(train) | set(text)))
    result = kneser_ney_losses(ids(train, vocab), ids(text, vocab), len(vocab), 12)
    closers = np.array([t for t in range(len(text) - 1) if text[t + 1] in ")]"])
    per_order = result.loss[:, closers].mean(axis=1)
    # Order n reads n-1 characters back. From order 5 it reads enough of the filler to know it has
    # ended (the fillers share shorter endings); up to order k it sees nothing else: a closer is
    # due, one of two, ln 2 nats. From order k+1 on it reads the opener and knows.
    for n in range(5, k + 1):
        assert per_order[n - 1] == pytest.approx(math.log(2), abs=0.05), (n, per_order)
    assert per_order[k] < 0.05 and per_order[-1] < 0.05, per_order


def test_the_best_order_on_a_real_text_and_the_speed_of_a_pass():
    from tests.corpus import shakespeare_head
    text = shakespeare_head(50_000)
    vocab = "".join(sorted(set(text)))
    split = int(0.9 * len(text))
    result = kneser_ney_losses(ids(text[:split], vocab), ids(text[split:], vocab), len(vocab), 10)
    means = result.mean()
    assert means[0] > means[2] > means[result.best_order() - 1]
    assert 3 <= result.best_order() <= 8
    assert np.all(np.isfinite(result.loss))


def test_the_peak_estimate_holds_the_measured_peak():
    """The error route asks the memory budget for peak_bytes before counting."""
    import tracemalloc

    import rnnscope
    from rnnscope.model.ngram import peak_bytes
    text = rnnscope.corpus("tinyshakespeare.txt")
    vocab = "".join(sorted(set(text)))
    train, evaluated = ids(text[:300_000], vocab), ids(text[-20_000:], vocab)
    tracemalloc.start()
    try:
        kneser_ney_losses(train, evaluated, len(vocab), 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.75 <= peak / peak_bytes(len(train), len(evaluated), 20) <= 1.1, peak
