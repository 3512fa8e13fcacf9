"""An independent reference: PyTorch's own RNN, GRU and LSTM in float64."""
import os

import numpy as np
import pytest

from rnnscope.model import network
from rnnscope.model.checkpoint import save_model
from rnnscope.model.layers import softmax_cross_entropy
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig, State
from rnnscope.model.vocab import Vocab

if os.environ.get("RNNSCOPE_REQUIRE_TORCH") == "1":
    import torch          # CI installs torch==2.13.0: a missing torch there is a failure
else:
    torch = pytest.importorskip("torch", reason="torch is not installed (`make test` installs torch==2.13.0 "
                                                   "where RNNSCOPE_REQUIRE_TORCH=1, as CI does)")

TORCH_CELLS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}
N, T, V, H, L = 3, 7, 6, 8, 2


class TorchCharModel(torch.nn.Module):
    """The module rnnscope's checkpoints are laid out for: one-hot in, linear decoder out."""

    def __init__(self, cell, V, H, L):
        super().__init__()
        self.rnn = getattr(torch.nn, TORCH_CELLS[cell])(input_size=V, hidden_size=H, num_layers=L)
        self.decoder = torch.nn.Linear(H, V)

    def forward(self, ids, state=None):
        x = torch.nn.functional.one_hot(ids.T, self.decoder.out_features).to(self.decoder.weight.dtype)
        out, final = self.rnn(x, state)                                         # (T, N, H)
        return self.decoder(out).transpose(0, 1), final                         # (N, T, V)


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(1e-12, np.linalg.norm(a) + np.linalg.norm(b))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_logits_and_every_gradient_equal_torch(cell):
    cfg = ModelConfig(cell, V, H, L)
    params = network.init_params(cfg, seed=1, dtype=np.float64)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, V, (N, T))
    targets = rng.integers(0, V, (N, T))
    h0 = rng.normal(0, 0.5, (L, N, H))
    c0 = rng.normal(0, 0.5, (L, N, H)) if cell == "lstm" else None

    logits, _, cache = network.forward(cfg, params, ids, State(h0, c0))
    loss, dlogits, _ = softmax_cross_entropy(logits, targets)
    grads = network.backward(cfg, params, dlogits, cache).params

    ref = TorchCharModel(cell, V, H, L).double()
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()}, strict=True)
    state = torch.from_numpy(h0) if c0 is None else (torch.from_numpy(h0), torch.from_numpy(c0))
    ref_logits, _ = ref(torch.from_numpy(ids), state)
    ref_loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1))
    ref_loss.backward()

    assert rel_error(logits, ref_logits.detach().numpy()) < 1e-6
    assert abs(loss - ref_loss.item()) < 1e-10
    for name, p in ref.named_parameters():
        assert rel_error(grads[name], p.grad.numpy()) < 1e-6, name


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_checkpoint_loads_into_torch_strictly_with_the_same_logits(cell, tmp_path):
    from safetensors.torch import load_file

    vocab = Vocab("abcdef")
    cfg = ModelConfig(cell, len(vocab), H, L)
    model = LanguageModel(cfg, vocab, network.init_params(cfg, seed=4))
    path = tmp_path / "m.safetensors"
    save_model(model, path)

    ref = TorchCharModel(cell, len(vocab), H, L)
    ref.load_state_dict(load_file(path), strict=True)
    ids = vocab.encode("abcfedcaab")[None]
    ours = model.forward(ids)[0]
    theirs = ref(torch.from_numpy(ids))[0].detach().numpy()
    assert ours.dtype == np.float32
    assert rel_error(ours, theirs) < 1e-5
