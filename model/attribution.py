"""Which earlier characters a prediction depends on, and how far back a model looks:
input saliency, the memory horizon, and losses with units clamped."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import network
from .analysis import backward_one_prediction
from .layers import Clamp, log_softmax
from .lm import LanguageModel
from .sample import sample


@dataclass
class Saliency:
    position: int            # L = -ln p(text[position+1] | text[..position])
    loss: float
    norms: np.ndarray        # (position+1,): ||dL/dx_k|| for the one-hot input x_k, k = 0..position


def saliency(model: LanguageModel, text: str, position: int | None = None) -> Saliency:
    """Input saliency (Distill, "Visualizing memorization in RNNs"): the norm of the gradient
    of one prediction's loss with respect to each earlier one-hot input, from one BPTT pass."""
    position, loss, grads = backward_one_prediction(model, text, position, input_grad=True)
    return Saliency(position, loss, np.linalg.norm(grads.dx[0], axis=-1))


@dataclass
class Horizon:
    window: int                    # lags looked at: 0..window
    positions: list[int]           # the predictions averaged over
    lags: np.ndarray               # (L, P): per layer and position, the first lag below `fraction`
    censored: np.ndarray           # (L, P) bool: never fell below within the window (lag = window)
    profile: np.ndarray            # (L, window+1): mean over positions of ||dL/dh_{p-d}|| / ||dL/dh_p||
    fraction: float

    @property
    def mean(self) -> np.ndarray:
        """(L,) the memory horizon per layer: mean lag over positions."""
        return self.lags.mean(axis=1)


def memory_horizon(model: LanguageModel, text: str, positions: int = 16, window: int = 200,
                   fraction: float = 0.01) -> Horizon:
    """The lag d at which ||dL/dh_{p-d}|| first falls below `fraction` of ||dL/dh_p||, L the
    loss of the prediction after position p, per layer, for `positions` predictions spread
    over the text. Each reads the `window` characters before it from a zero state; all of
    them go through one batched BPTT pass, the loss at every other step left out."""
    ids = model.encode(text)
    if len(ids) < 3:
        raise ValueError("the text needs at least three characters")
    window = min(window, len(ids) - 2)
    ends = np.unique(np.linspace(window, len(ids) - 2, max(1, positions)).round().astype(int))
    x = np.stack([ids[p - window:p + 1] for p in ends])                 # (P, window+1)
    logits, _, cache = model.forward(x)
    probs = np.exp(log_softmax(logits[:, -1]))                         # (P, V)
    probs[np.arange(len(ends)), ids[ends + 1]] -= 1.0                   # d(-ln p)/dlogits
    dlogits = np.zeros_like(logits)
    dlogits[:, -1] = probs
    grads = network.backward(model.config, model.params, dlogits, cache)
    lags, censored, profile = [], [], []
    for dh in grads.dh:                                                 # (P, window+2, H), index 0: h_0
        norm = np.linalg.norm(dh[:, 1:].astype(np.float64), axis=-1)[:, ::-1]   # (P, window+1) by lag
        ratio = norm / np.maximum(norm[:, :1], np.finfo(np.float64).tiny)
        below = ratio < fraction
        hit = below.any(axis=1)
        lags.append(np.where(hit, below.argmax(axis=1), window))
        censored.append(~hit)
        profile.append(ratio.mean(axis=0))
    return Horizon(window, ends.tolist(), np.array(lags), np.array(censored), np.array(profile), fraction)


def intervention(model: LanguageModel, ids: np.ndarray, clamp: dict[int, Clamp], prime: str, length: int,
                 temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Units held (clamp) against the model left alone: the losses over ids (T,) without and
    with, and a sample of `length` from `prime` without and with, from the same seed."""
    normal_text, _ = sample(model, prime, length, temperature, 0, seed)
    clamped_text, _ = sample(model, prime, length, temperature, 0, seed, clamp)
    return losses(model, ids), losses(model, ids, clamp), normal_text, clamped_text


def losses(model: LanguageModel, ids: np.ndarray, clamp: dict[int, Clamp] | None = None,
           chunk: int = 1024) -> np.ndarray:
    """(T-1,) loss[t] = -ln p(ids[t+1] | ids[..t]), read from a zero state, optionally with
    units clamped (see layers.Clamp)."""
    out = np.empty(max(len(ids) - 1, 0), np.float64)
    for s, logits, _ in model.read(ids, chunk, clamp):
        n = min(s + len(logits), len(ids) - 1) - s
        logp = log_softmax(logits[:n])
        out[s:s + n] = -logp[np.arange(n), ids[s + 1:s + 1 + n]]
    return out


def ablate(units: dict[int, list[int]], value: float = 0.0) -> dict[int, Clamp]:
    """A clamp holding each listed unit of each layer at `value` (0: ablation)."""
    return {l: Clamp(np.asarray(u, np.int64), np.float32(value)) for l, u in units.items() if len(u)}
