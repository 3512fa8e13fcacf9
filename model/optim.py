"""Optimizers and gradient clipping; each loops over the parameter dict."""
from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]


def global_norm(grads: Params) -> float:
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads.values())))


def clip_by_global_norm(grads: Params, max_norm: float) -> tuple[float, bool]:
    """Scale all gradients in place so their joint L2 norm is at most max_norm.
    Returns the norm before clipping and whether it was clipped."""
    norm = global_norm(grads)
    clipped = max_norm > 0 and norm > max_norm
    if clipped:
        scale = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= scale
    return norm, clipped


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction, updating parameters in place."""

    def __init__(self, params: Params, betas=(0.9, 0.999), eps=1e-8):
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.t = 0
        self.m = {k: np.zeros_like(p) for k, p in params.items()}
        self.v = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params: Params, grads: Params, lr: float) -> None:
        self.t += 1
        step_size = lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        for k, p in params.items():
            g, m, v = grads[k], self.m[k], self.v[k]
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * (g * g)
            p -= step_size * m / (np.sqrt(v) + self.eps)

    def state(self) -> Params:
        return {**{f"m.{k}": v for k, v in self.m.items()}, **{f"v.{k}": v for k, v in self.v.items()},
                "t": np.array([self.t])}

    def load_state(self, state: Params) -> None:
        self.t = int(state["t"][0])
        for k in self.m:
            self.m[k][...] = state[f"m.{k}"]
            self.v[k][...] = state[f"v.{k}"]


class Adagrad:
    """Adagrad as in min-char-rnn: mem += g^2; p -= lr * g / sqrt(mem + 1e-8)."""

    def __init__(self, params: Params, eps=1e-8):
        self.eps = eps
        self.mem = {k: np.zeros_like(p) for k, p in params.items()}

    def step(self, params: Params, grads: Params, lr: float) -> None:
        for k, p in params.items():
            g, mem = grads[k], self.mem[k]
            mem += g * g
            p -= lr * g / np.sqrt(mem + self.eps)

    def state(self) -> Params:
        return {f"mem.{k}": v for k, v in self.mem.items()}

    def load_state(self, state: Params) -> None:
        for k in self.mem:
            self.mem[k][...] = state[f"mem.{k}"]


OPTIMIZERS = {"adam": Adam, "adagrad": Adagrad}
