"""Where a recurrent model beats counting, and what its remaining errors are: the analyses of
Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks", sec. 4.3
(the comparison with n-gram models and the long-range figure) and sec. 4.4 (the error breakdown).

Inputs are per-character losses aligned with the text: loss[t] = -ln p(text[t+1] | text[..t]),
for the model and for each n-gram order (model.ngram), so every analysis here is plain NumPy on
arrays of length len(text) - 1.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# The error breakdown's threshold: a character is an error when the model gave it less than
# this probability (the paper's definition).
ERROR_PROBABILITY = 0.5
# The n-gram oracle: orders 1..NGRAM_ORACLE_ORDERS, as the paper's.
NGRAM_ORACLE_ORDERS = 9
# The dynamic memory oracle: the character and the MEMORY_CHARS before it occurred earlier in
# the same text, so copying from what was read would have got it right.
MEMORY_CHARS = 8
# Rare words: seen fewer than this many times in the training text.
RARE_WORD_COUNT = 5
# The distance bins (characters between an opener and its closer) of the long-range figure.
DISTANCE_EDGES = (1, 6, 11, 21, 41, 81, 161, 10**9)

OPENERS = {")": "(", "]": "[", "}": "{"}
WORD = re.compile(r"[A-Za-z0-9_']+")


@dataclass
class Comparison:
    """The model against the best n-gram, character by character."""

    best_order: int
    model_mean: float
    ngram_means: list[float]              # per order 1..N
    difference: np.ndarray                # (T-1,) n-gram loss - model loss: > 0 where the model wins


def compare(model_loss: np.ndarray, ngram_loss: np.ndarray) -> Comparison:
    means = ngram_loss.mean(axis=1) if ngram_loss.shape[1] else np.zeros(len(ngram_loss))
    best = int(np.argmin(means))
    return Comparison(best + 1, float(model_loss.mean()) if len(model_loss) else 0.0, [float(m) for m in means],
                      (ngram_loss[best].astype(np.float64) - model_loss))


@dataclass
class DistanceBin:
    low: int                              # distances low..high characters
    high: int
    count: int                            # closers at those distances
    model_wins: float                     # the fraction where the model's loss is the lower
    mean_advantage: float                 # mean n-gram loss - model loss, nats


def closing_distances(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Closing brackets and their distance to the opener they close: (positions, distances).
    Brackets are matched with a stack; a closer with no opener is left out. Double quotes are
    paired within a line, each closing one measured from the one that opened it."""
    positions, distances, stack, quote = [], [], [], None
    for i, c in enumerate(text):
        if c in "([{":
            stack.append((c, i))
        elif c in OPENERS:
            while stack and stack[-1][0] != OPENERS[c]:
                stack.pop()                       # an unclosed opener inside: skip it
            if stack:
                positions.append(i)
                distances.append(i - stack.pop()[1])
        elif c == '"':
            if quote is None:
                quote = i
            else:
                positions.append(i)
                distances.append(i - quote)
                quote = None
        elif c == "\n":
            quote = None
    return np.array(positions, int), np.array(distances, int)


def long_range(text: str, difference: np.ndarray, edges=DISTANCE_EDGES) -> list[DistanceBin]:
    """The paper's long-range figure: for closers, how often the model beats the n-gram as a
    function of the distance to their opener. difference[t] is for predicting text[t+1]."""
    positions, distances = closing_distances(text)
    keep = positions >= 1
    advantage, distances = difference[positions[keep] - 1], distances[keep]
    bins = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (distances >= low) & (distances < high)
        n = int(inside.sum())
        bins.append(DistanceBin(low, high - 1, n, float((advantage[inside] > 0).mean()) if n else math.nan,
                                float(advantage[inside].mean()) if n else math.nan))
    return bins


def advantage_beyond(text: str, difference: np.ndarray, distance: int = 20) -> tuple[float, float]:
    """Of the model's advantage on closers (nats summed over them), the share on closers more than
    `distance` characters from their opener, and that share of the closers themselves."""
    positions, distances = closing_distances(text)
    keep = positions >= 1
    advantage, distances = difference[positions[keep] - 1], distances[keep]
    total = float(np.clip(advantage, 0, None).sum())
    far = distances > distance
    share = float(np.clip(advantage[far], 0, None).sum()) / total if total > 0 else math.nan
    return share, float(far.mean()) if len(far) else math.nan


def word_counts(text: str) -> Counter:
    """How often each word occurs: the rare-word oracle's counts, of the training text."""
    return Counter(WORD.findall(text))


def words_at(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]


@dataclass
class Breakdown:
    """The model's errors peeled by oracles in order: each category counts the errors that oracle
    removes among those the earlier ones left."""

    errors: int                           # characters given < ERROR_PROBABILITY
    characters: int
    categories: list[tuple[str, int, str]]   # (name, errors removed, what it means)


def breakdown(text: str, model_loss: np.ndarray, ngram_loss: np.ndarray, train_words: Mapping[str, int]
              ) -> Breakdown:
    """Sec. 4.4's oracles, in its order, on the characters text[1:]; train_words is
    word_counts(the training text)."""
    T = len(text) - 1
    error = model_loss > -math.log(ERROR_PROBABILITY)
    left = error.copy()
    categories = []

    def peel(name: str, fixes: np.ndarray, meaning: str) -> None:
        removed = left & fixes
        categories.append((name, int(removed.sum()), meaning))
        left[removed] = False

    orders = min(NGRAM_ORACLE_ORDERS, len(ngram_loss))
    peel("n-gram", (ngram_loss[:orders] < -math.log(ERROR_PROBABILITY)).any(axis=0),
         f"an n-gram model of some order 1..{orders} gives the character p >= {ERROR_PROBABILITY}")
    seen_before = np.zeros(T, bool)
    if T > MEMORY_CHARS:
        # text[t+1-MEMORY_CHARS .. t+1] occurred starting anywhere before t+1-MEMORY_CHARS: hashed
        # windows, exact compare of the first earlier one with the same hash.
        first_at: dict[str, int] = {}
        n = MEMORY_CHARS + 1
        for start in range(0, len(text) - n + 1):
            window = text[start:start + n]
            earlier = first_at.setdefault(window, start)
            if earlier < start:
                seen_before[start + n - 2] = True          # predicting text[start+n-1] from t = start+n-2
    peel("dynamic memory", seen_before,
         f"the character and the {MEMORY_CHARS} before it occurred earlier in this text: copying would do")
    rare, start_of_word = np.zeros(T, bool), np.zeros(T, bool)
    for a, b, word in words_at(text):
        if train_words.get(word, 0) < RARE_WORD_COUNT:
            rare[max(a - 1, 0):b - 1] = True
        if a >= 1:
            start_of_word[a - 1] = True
    peel("rare words", rare, f"inside a word seen fewer than {RARE_WORD_COUNT} times in the training text")
    peel("word starts", start_of_word, "the first character of a word: which word comes next")
    punctuation = np.array([not (c.isalnum() or c.isspace() or c == "_") for c in text[1:]], bool)
    peel("punctuation", punctuation, "a punctuation character")
    categories.append(("the rest", int(left.sum()), "none of the above"))
    return Breakdown(int(error.sum()), T, categories)
