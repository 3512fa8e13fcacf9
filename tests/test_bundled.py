"""The models shipped in model/weights: they load, and their recorded validation loss is
what they really score on the last 10% of the corpus each trained on."""
import hashlib

import pytest

from rnnscope.model.bundled import BUNDLED, BUNDLED_CORPUS, bundled_paths
from rnnscope.model.checkpoint import load_model
from rnnscope.model.data import split
from rnnscope.model.train import TrainConfig, evaluate
from tests.corpus import shared_corpus

# id -> (cell, hidden size, layers, the validation loss it must reach)
EXPECTED = {"lstm": ("lstm", 256, 2, 1.55), "gru": ("gru", 256, 2, 1.55), "rnn": ("rnn", 256, 2, 1.70),
            "python": ("lstm", 256, 2, 1.30)}


def test_every_bundled_model_is_shipped():
    assert set(bundled_paths()) == set(BUNDLED) == set(BUNDLED_CORPUS) == set(EXPECTED)


@pytest.mark.parametrize("model_id", sorted(BUNDLED))
def test_bundled_model_scores_its_recorded_validation_loss(model_id):
    model = load_model(bundled_paths()[model_id])
    cell, hidden, layers, good_enough = EXPECTED[model_id]
    assert (model.config.cell, model.config.hidden_size, model.config.num_layers) == (cell, hidden, layers)
    text = shared_corpus(BUNDLED_CORPUS[model_id])
    assert model.history["corpus_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    _, val_text = split(text, 0.1)
    # The trainer validates on the first val_max_chars of the validation text (all of
    # tinyshakespeare's 111,540; 200,000 of python-stdlib's 300,731); docs/training.md gives both.
    seen = val_text[: TrainConfig().val_max_chars]
    val_loss = evaluate(model.config, model.params, model.vocab.encode(seen))
    assert abs(val_loss - model.history["best_val_loss"]) < 1e-3
    assert val_loss <= good_enough
