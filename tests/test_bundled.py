"""The models shipped in model/weights: they load, and their recorded validation loss is
what they really score on the last 10% of tinyshakespeare."""
import hashlib

import pytest

from model.bundled import BUNDLED, bundled_paths
from model.checkpoint import load_model
from model.data import split
from model.train import evaluate
from tests.corpus import shakespeare_full



def test_every_bundled_model_is_shipped():
    assert set(bundled_paths()) == set(BUNDLED)


@pytest.mark.parametrize("model_id", sorted(BUNDLED))
def test_bundled_model_scores_its_recorded_validation_loss(model_id):
    model = load_model(bundled_paths()[model_id])
    assert (model.config.cell, model.config.hidden_size, model.config.num_layers) == (model_id, 256, 2)
    text = shakespeare_full()
    assert model.history["corpus_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    _, val_text = split(text, 0.1)
    val_loss = evaluate(model.config, model.params, model.vocab.encode(val_text))
    assert abs(val_loss - model.history["best_val_loss"]) < 1e-3
    if model_id == "lstm":
        assert val_loss <= 1.55
