"""Neurons in groups: a layer's activations over a text factorised by non-negative matrix
factorisation (as Ecco does for transformers), X (T, H) ~ W (T, K) @ G (K, H), each of the
K components a track over the text (a column of W) and a weighting of units (a row of G).

NMF needs X >= 0, and h, c, g and n are signed: each unit's values are shifted by its
minimum over the text, v - min(v), so X is how far each unit is above its own floor. The
other choice, a unit's positive and negative parts as two columns, was tried and is worse
for a unit that saturates: its two columns sum to a constant, and the extreme rays of such
data are conjunctions, so NMF returned "inside quotes and inside brackets" as one group
instead of each feature alone. A unit whose range exceeds a tanh's (the LSTM's c can run
to hundreds) is divided by half its range, so one runaway cell does not take every group.

scikit-learn's NMF does the fitting: coordinate descent from NNDSVDa, a deterministic
start, so the same activations give the same components. It is imported on first use,
since it costs most of a second. It multiplies through BLAS: the caller bounds BLAS's
threads (the server does, process-wide), or two cores' worth of threads fight over one
small matrix (5 s instead of 0.2 s for 5,000 x 16).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lm import LanguageModel


def layer_values(model: LanguageModel, ids: np.ndarray, layer: int, quantity: str, chunk: int = 1024) -> np.ndarray:
    """One layer's quantity over ids (T,), read from a zero state: (T, H) float32."""
    out = np.empty((len(ids), model.config.hidden_size), np.float32)
    for s, logits, cache in model.read(ids, chunk):
        out[s:s + len(logits)] = model.internals(cache, layer, quantity)
    return out


def shift_and_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (H,): its minimum over the text, and 1 for a unit whose range is within a
    tanh's (2), else half its range."""
    low = values.min(axis=0)
    return low.astype(np.float32), np.maximum((values.max(axis=0) - low) / 2, 1.0).astype(np.float32)


def shifted(values: np.ndarray, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """values (T, H) made non-negative: (v - low) / scale, clipped at 0 for another text."""
    return np.maximum((values - low) / scale, 0).astype(np.float32)                # (T, H)


@dataclass
class Groups:
    """K components of one layer's quantity, heaviest first."""

    weights: np.ndarray      # (K, H): each component's weight per unit, its heaviest 1
    tracks: np.ndarray       # (T, K): each component's weight per character of the text fitted
    low: np.ndarray          # (H,): each unit's minimum over the text fitted, subtracted
    scale: np.ndarray        # (H,): and what it was then divided by
    error: float             # ||X - W G||_F / ||X||_F over the text fitted
    share: np.ndarray        # (K,): ||w_k||^2 ||g_k||^2 of each rank-one piece over their sum

    def heaviest(self, k: int, top: int) -> list[tuple[int, float]]:
        """Component k's `top` heaviest units as (unit, weight), weights in (0, 1]."""
        w = self.weights[k]
        order = np.argsort(-w, kind="stable")[:top]
        return [(int(j), float(w[j])) for j in order if w[j] > 0]

    def track(self, values: np.ndarray) -> np.ndarray:
        """The tracks (T, K) over another text's values (T, H): the non-negative W that
        minimises ||X - W G||_F with the components G held fixed."""
        from sklearn.decomposition import non_negative_factorization

        X = shifted(values, self.low, self.scale)
        W, _, _ = non_negative_factorization(X, H=self.weights, n_components=len(self.weights), init="custom",
                                             update_H=False, solver="cd", max_iter=MAX_ITER, random_state=0)
        return W.astype(np.float32)


MAX_ITER = 400          # coordinate descent stops earlier at tol 1e-4; this bounds the worst case


def factorise(values: np.ndarray, k: int, seed: int = 0) -> Groups:
    """NMF of one layer's values (T, H) into k components (see the module's docstring)."""
    from sklearn.decomposition import NMF

    T, H = values.shape
    if not 1 <= k <= H:
        raise ValueError(f"the number of components must be from 1 to {H}, the layer's units")
    low, scale = shift_and_scale(values)
    X = shifted(values, low, scale)                                            # (T, H)
    if not X.any():
        raise ValueError("every unit is constant over the text: there is nothing to factorise")
    nmf = NMF(k, init="nndsvda", solver="cd", max_iter=MAX_ITER, random_state=seed)
    W = nmf.fit_transform(X)                                                   # (T, K)
    G = nmf.components_                                                        # (K, H)
    # NMF leaves each component's scale free: fix it so its heaviest unit weighs 1, and a
    # track is then in the units of that unit's shifted value.
    top = G.max(axis=1)
    top = np.where(top > 0, top, 1.0)
    G, W = G / top[:, None], W * top[None, :]
    # Heaviest first: by the norm of each rank-one piece, ||w_k|| ||g_k||.
    size = np.linalg.norm(W, axis=0) * np.linalg.norm(G, axis=1)
    order = np.argsort(-size, kind="stable")
    G, W, size = G[order], W[:, order], size[order]
    error = float(np.linalg.norm(X - W @ G) / np.linalg.norm(X))
    share = size ** 2 / max(float((size ** 2).sum()), 1e-30)
    return Groups(G.astype(np.float32), W.astype(np.float32), low, scale, error, share)


def groups_of(model: LanguageModel, ids: np.ndarray, layer: int, quantity: str, k: int) -> Groups:
    """factorise one layer's quantity over ids (T,): the model and the text in, the groups out,
    so it can run in another process."""
    return factorise(layer_values(model, ids, layer, quantity), k)


def tracks_of(model: LanguageModel, groups: Groups, ids: np.ndarray, layer: int, quantity: str) -> np.ndarray:
    """The groups' tracks (T, K) over another text, ids (T,)."""
    return groups.track(layer_values(model, ids, layer, quantity))
