"""Views into a model that the pages draw: gradients through time, W_hh spectra and
gate saturation. Each reads what the forward/backward pass already computes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import network
from .layers import softmax_cross_entropy
from .lm import LanguageModel

SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9   # Karpathy, Johnson & Fei-Fei 2015, fig. 3


@dataclass
class GradientProfile:
    position: int                      # L = -ln p(text[position+1] | text[..position])
    loss: float
    h_grad_norm: list[np.ndarray]      # per layer (position+1,): ||dL/dh_k||, k = 0..position
    c_grad_norm: list[np.ndarray] | None


def backward_one_prediction(model: LanguageModel, text: str, position: int | None = None,
                            input_grad: bool = False) -> tuple[int, float, network.Gradients]:
    """One BPTT pass for a single loss, L = -ln p(text[position+1] | text[..position])
    (default: the last prediction), reading only text[..position]. Returns the position,
    L and the gradients (with dL/dx of the one-hot inputs when input_grad)."""
    ids = model.encode(text)
    if len(ids) < 2:
        raise ValueError("the text needs at least two characters: one to read and one to predict")
    last = len(ids) - 2
    position = last if position is None else position
    if not 0 <= position <= last:
        raise ValueError(f"position must be in 0..{last} for a text of {len(ids)} characters")
    x = ids[None, : position + 1]                                  # (1, position+1)
    logits, _, cache = model.forward(x)
    # Only the last position's loss: a zero gradient everywhere else.
    loss, dlast, _ = softmax_cross_entropy(logits[:, -1:], ids[None, position + 1: position + 2])
    dlogits = np.zeros_like(logits)
    dlogits[:, -1:] = dlast
    return position, loss, network.backward(model.config, model.params, dlogits, cache, input_grad=input_grad)


def gradient_through_time(model: LanguageModel, text: str, position: int | None = None) -> GradientProfile:
    """How the loss at one position reaches back: the total derivative of that single
    loss with respect to every earlier h_k (and c_k), from one BPTT pass."""
    position, loss, grads = backward_one_prediction(model, text, position)
    h_norm = [np.linalg.norm(dh[0, 1:], axis=-1) for dh in grads.dh]      # (position+1,)
    c_norm = None
    if model.cell.has_cell_state:
        c_norm = [np.linalg.norm(dc[0, 1:], axis=-1) for dc in grads.dc]
    return GradientProfile(position, loss, h_norm, c_norm)


def recurrent_singular_values(model: LanguageModel) -> list[np.ndarray]:
    """Singular values of each layer's W_hh, per gate block (G, H), largest first. For the
    vanilla RNN the largest decides whether gradients through time explode (> 1) or can
    only vanish (< 1), since tanh' <= 1."""
    H, G = model.config.hidden_size, model.cell.num_gates
    out = []
    for l in range(model.config.num_layers):
        W_hh = model.params[f"rnn.weight_hh_l{l}"].astype(np.float64).reshape(G, H, H)
        out.append(np.linalg.svd(W_hh, compute_uv=False))
    return out


def gate_saturation(model: LanguageModel, text: str, chunk: int = 1024
                    ) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]:
    """For every layer and gate, per unit: the fraction of steps with the gate below 0.1
    (left-saturated) and above 0.9 (right-saturated). tanh gates (g, n) are mapped to
    [0, 1] first, so the thresholds mean the same everywhere. Reads in chunks."""
    cfg, cell = model.config, model.cell
    counts = {(l, g): (np.zeros(cfg.hidden_size, np.int64), np.zeros(cfg.hidden_size, np.int64))
              for l in range(cfg.num_layers) for g in cell.gate_names}
    ids = model.encode(text)
    for _, _, cache in model.read(ids, chunk):
        for (l, g), (left, right) in counts.items():
            a = model.internals(cache, l, g)                                # (C, H)
            if g in cell.tanh_gates:
                a = (a + 1.0) / 2.0
            left += (a < SATURATION_LOW).sum(axis=0)
            right += (a > SATURATION_HIGH).sum(axis=0)
    return {key: (left / len(ids), right / len(ids)) for key, (left, right) in counts.items()}
