"""The paper's analyses on planted data: a closer that depends on an opener k characters back,
which a trained small LSTM gets and an n-gram shorter than k cannot; bracket matching; and
each oracle of the error breakdown on characters built to fall in it."""
from __future__ import annotations

import math

import numpy as np

from rnnscope.model.errors import advantage_beyond, breakdown, closing_distances, compare, long_range, word_counts
from rnnscope.model.network import ModelConfig
from rnnscope.model.ngram import kneser_ney_losses
from rnnscope.model.train import TrainConfig, train
from tests.test_ngram import planted


def test_closers_are_matched_with_their_openers():
    text = 'f(a[1], {"k": (2)})\nx = "no close\ny = "ab"'
    positions, distances = closing_distances(text)
    pairs = {text[p] + str(d) for p, d in zip(positions, distances)}
    assert pairs == {"]2", '"2', ")2", "}9", ")17", '"3'}
    assert len(closing_distances("))]}")[0]) == 0


def test_a_small_lstm_closes_what_an_ngram_shorter_than_the_span_cannot():
    text = planted(1200, 0)                        # 12,000 characters; the opener 8 back from its closer
    result = train(text, ModelConfig("lstm", 1, 32, 1),         # vocab_size: taken from the text
                   TrainConfig(batch_size=16, seq_length=40, learning_rate=1e-2, max_steps=400, eval_every=400,
                               seed=0))
    lm = result.model
    test_text = planted(150, 1)
    ids = lm.vocab.encode(test_text).astype(np.int64)
    train_ids = lm.vocab.encode(text[: int(0.9 * len(text))]).astype(np.int64)
    _, model_loss, _ = lm.run(test_text)
    ngram = kneser_ney_losses(train_ids, ids, len(lm.vocab), 8)           # orders 1..8: all short of the opener
    comparison = compare(model_loss.astype(np.float64), ngram.loss)
    bins = long_range(test_text, comparison.difference, edges=(1, 8, 9, 100))
    at_eight = bins[1]
    assert at_eight.count == 150 and at_eight.low == 8
    assert at_eight.model_wins > 0.9, bins          # the LSTM remembers the opener
    assert at_eight.mean_advantage > 0.5 * math.log(2), bins   # the n-gram pays ~ln 2 nats there
    share, far = advantage_beyond(test_text, comparison.difference, distance=7)
    assert far == 1.0 and share == 1.0


def test_each_oracle_takes_the_errors_it_names():
    text = "ab ab ab xq, zz"
    T = len(text) - 1
    model_loss = np.full(T, 2.0)                   # every character an error (p = e^-2 < 0.5)
    ngram = np.full((3, T), 2.0)
    ngram[1, 0] = 0.1                              # an n-gram gets "b" after "a" right: n-gram
    train_text = "ab " * 10 + "zz " * 10
    result = breakdown(text, model_loss, ngram, word_counts(train_text))
    counts = {name: n for name, n, _ in result.categories}
    assert result.errors == T and sum(counts.values()) == T
    assert counts["n-gram"] == 1
    # "ab ab ab": the 9-character windows never repeat in so short a text; the memory oracle needs
    # MEMORY_CHARS + 1 characters seen before, so it takes nothing here.
    assert counts["dynamic memory"] == 0
    # "xq" is a rare word (never in training); its two characters are predicted at t = 8, 9.
    assert counts["rare words"] == 2
    # The remaining word starts: the second and third "a" and the "z" of "zz" (first "ab" starts text).
    assert counts["word starts"] == 3
    assert counts["punctuation"] == 1              # the comma
    assert counts["the rest"] == T - 1 - 2 - 3 - 1


def test_the_memory_oracle_takes_a_repeated_span():
    text = "Then Mortimer said; and Mortimer went."
    T = len(text) - 1
    result = breakdown(text, np.full(T, 2.0), np.full((1, T), 5.0), word_counts("Then said and went " * 10))
    counts = {name: n for name, n, _ in result.categories}
    # " Mortimer " repeats: in its second copy the 9-character windows " Mortimer" and "Mortimer "
    # were read before, so its last "r" and the space after it are copies.
    assert counts["dynamic memory"] == 2
