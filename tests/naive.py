"""The lecture equations, one gate at a time, written independently of model/.

Used by the tests as a reference: no fused matrices, no shared time loop, no caches.
`h_delta` / `c_delta` add a perturbation to h_t / c_t of a layer right after it is
computed, so finite differences through this function give the *total* derivative of
the loss with respect to every hidden and cell state.
"""
from __future__ import annotations

import numpy as np

GATES = {"rnn": ("h",), "gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def blocks(W, cell):
    """Split a fused (G*H, ...) matrix or vector into named gate blocks."""
    names = GATES[cell]
    H = W.shape[0] // len(names)
    return {name: W[k * H:(k + 1) * H] for k, name in enumerate(names)}


def naive_forward(cell, params, ids, h0, c0=None, h_delta=None, c_delta=None):
    """ids (N, T); h0, c0 (L, N, H). Returns logits (N, T, V) and per-layer records
    {"h": (N, T, H), "c": ..., gate: ...}."""
    N, T = ids.shape
    L = h0.shape[0]
    V = params["decoder.weight"].shape[0]
    inputs = np.eye(V)[ids]                                       # (N, T, V) one-hot
    records = []
    for l in range(L):
        Wi = blocks(params[f"rnn.weight_ih_l{l}"], cell)
        Wh = blocks(params[f"rnn.weight_hh_l{l}"], cell)
        bi = blocks(params[f"rnn.bias_ih_l{l}"], cell)
        bh = blocks(params[f"rnn.bias_hh_l{l}"], cell)
        h = h0[l]
        c = None if c0 is None else c0[l]
        rec = {name: [] for name in ("h", "c") + GATES[cell]}
        for t in range(T):
            x = inputs[:, t]
            if cell == "rnn":
                h = np.tanh(x @ Wi["h"].T + bi["h"] + h @ Wh["h"].T + bh["h"])
            elif cell == "lstm":
                i = sig(x @ Wi["i"].T + bi["i"] + h @ Wh["i"].T + bh["i"])
                f = sig(x @ Wi["f"].T + bi["f"] + h @ Wh["f"].T + bh["f"])
                g = np.tanh(x @ Wi["g"].T + bi["g"] + h @ Wh["g"].T + bh["g"])
                o = sig(x @ Wi["o"].T + bi["o"] + h @ Wh["o"].T + bh["o"])
                c = f * c + i * g
                if c_delta is not None:
                    c = c + c_delta[l, :, t]
                h = o * np.tanh(c)
                for name, v in zip("ifgo", (i, f, g, o)):
                    rec[name].append(v)
                rec["c"].append(c)
            else:
                r = sig(x @ Wi["r"].T + bi["r"] + h @ Wh["r"].T + bh["r"])
                z = sig(x @ Wi["z"].T + bi["z"] + h @ Wh["z"].T + bh["z"])
                n = np.tanh(x @ Wi["n"].T + bi["n"] + r * (h @ Wh["n"].T + bh["n"]))
                h = (1 - z) * n + z * h
                for name, v in zip("rzn", (r, z, n)):
                    rec[name].append(v)
            if h_delta is not None:
                h = h + h_delta[l, :, t]
            rec["h"].append(h)
        records.append({k: np.stack(v, axis=1) for k, v in rec.items() if v})
        inputs = records[-1]["h"]
    logits = inputs @ params["decoder.weight"].T + params["decoder.bias"]
    return logits, records


def cross_entropy(logits, targets):
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()
