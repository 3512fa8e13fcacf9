"""Sampling: read a prime, then write one character at a time from the model's softmax."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .layers import Clamp
from .lm import LanguageModel
from .network import State, layer_params


class Stepper:
    """Advances a batch-of-one model one character at a time, with the same cell step
    the whole-sequence forward uses, into preallocated buffers.

    Per character and layer this is one matrix-vector product and the cell's step. Layer
    0's one-hot input term is row `id` of W_ih^T + b_ih + b_hh. Above it, for cells that
    only need xa + ha (all but the GRU), the layer reads [x_t, h_{t-1}] (1, 2H) against
    [W_ih^T; W_hh^T] (2H, G*H) in one product and its biases are added together once:
    one pass over the weights instead of two products and two bias adds."""

    def __init__(self, model: LanguageModel, state: State | None = None,
                 clamp: dict[int, Clamp] | None = None):
        self.model = model
        self.clamp = clamp or {}
        cfg, params, cell = model.config, model.params, model.cell
        self.cell = cell
        dtype = model.dtype
        L, H, GH = cfg.num_layers, cfg.hidden_size, cell.num_gates * cfg.hidden_size
        self.fused = not cell.separate_recurrent_grad
        h0 = np.zeros((L, 1, H), dtype) if state is None else state.h[:, :1]
        # Layer l's state h lives in the last H columns of inputs[l]; above layer 0 the first
        # H columns hold the layer below's new h, so [x_t, h_{t-1}] is one contiguous row.
        self.inputs, self.weights, self.biases = [], [], []
        for l in range(L):
            W_ih, W_hh, b_ih, b_hh = layer_params(params, l)
            D = 0 if l == 0 else H
            row = np.zeros((1, D + H), dtype)
            row[:, D:] = h0[l]
            self.inputs.append(row)
            if l == 0:
                # The one-hot input term: row `id` of this (V, G*H) table.
                self.table = W_ih.T + b_ih + (b_hh if self.fused else 0)
                self.weights.append((np.ascontiguousarray(W_hh.T),))
                self.biases.append(None if self.fused else b_hh[None])
            elif self.fused:
                self.weights.append((np.ascontiguousarray(np.concatenate([W_ih.T, W_hh.T])),))  # (2H, G*H)
                self.biases.append((b_ih + b_hh)[None])
            else:
                self.weights.append((np.ascontiguousarray(W_ih.T), np.ascontiguousarray(W_hh.T)))
                self.biases.append((b_ih[None], b_hh[None]))
        self.W_yT = np.ascontiguousarray(params["decoder.weight"].T)
        self.b_y = params["decoder.bias"]
        has_c = cell.has_cell_state
        self.c = (np.zeros((L, 1, H), dtype) if state is None else state.c[:, :1].copy()) if has_c else None
        self.xa = np.empty((1, GH), dtype)
        self.ha = np.empty((1, GH), dtype)
        self.acts = np.empty((1, (len(cell.gate_names) + cell.num_stashed) * H), dtype)
        self.logits = np.empty(cfg.vocab_size, dtype)
        self.H = H

    @property
    def h(self) -> np.ndarray:
        """The current h (L, 1, H), a copy."""
        return np.stack([row[:, -self.H:] for row in self.inputs])

    @property
    def state(self) -> State:
        return State(self.h, None if self.c is None else self.c.copy())

    def step(self, char_id: int) -> np.ndarray:
        """Feed one character id; returns the logits (V,) for the next one (a reused buffer)."""
        H, cell, ha = self.H, self.cell, self.ha
        inputs = self.inputs
        with np.errstate(over="ignore"):                 # see cells.sigmoid
            for l, (row, weights, bias) in enumerate(zip(inputs, self.weights, self.biases)):
                h = row[:, -H:]
                if l == 0:
                    xa = self.table[char_id:char_id + 1]
                    np.matmul(h, weights[0], out=ha)
                    if bias is not None:
                        ha += bias
                elif self.fused:
                    xa = bias
                    np.matmul(row, weights[0], out=ha)    # [x_t, h_{t-1}] [W_ih^T; W_hh^T]
                else:
                    xa = self.xa
                    np.matmul(row[:, :H], weights[0], out=xa)
                    xa += bias[0]
                    np.matmul(h, weights[1], out=ha)
                    ha += bias[1]
                c = None if self.c is None else self.c[l]
                # h_{t-1} and c_{t-1} are overwritten in place: every cell step reads them
                # element by element before writing the same element.
                cell.forward_step(xa, ha, h, c, self.acts, h, c)
                if l in self.clamp:
                    self.clamp[l].apply(h, c)
                if l + 1 < len(inputs):
                    inputs[l + 1][:, :H] = h
        np.matmul(h[0], self.W_yT, out=self.logits)
        self.logits += self.b_y
        return self.logits


# Below this temperature sampling is greedy. At T = 1e-3 a character other than the
# likeliest has probability above 1e-6 only if its logit is within 1e-3 * ln(1e6) = 0.014
# of the best one; below it, dividing the logits by T only widens gaps already decisive, and
# near 5e-324 overflows them to infinity. Greedy is what such a temperature asks for.
GREEDY_BELOW = 1e-3
F32_MAX = float(np.finfo(np.float32).max)


def next_char_distribution(logits: np.ndarray, temperature: float, top_k: int = 0) -> np.ndarray:
    """Softmax of logits / temperature over the top_k most likely characters (0: all).
    A temperature below GREEDY_BELOW (0 included) puts all mass on the most likely character.
    Every entry is finite: the log-softmax is taken of logits / T, shifted by its maximum."""
    # float32 logits are finite and at most F32_MAX, so z = logits / T with T >= 1e-3 stays
    # far inside float64's range; a NaN (a broken model) counts as the least likely.
    logits = logits.astype(np.float64)
    if not np.isfinite(logits).all():              # the check is 4x cheaper than nan_to_num
        logits = np.nan_to_num(logits, nan=-F32_MAX, posinf=F32_MAX, neginf=-F32_MAX)
    if not temperature >= GREEDY_BELOW:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    z = logits / temperature
    if 0 < top_k < z.size:
        cutoff = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cutoff, z, -np.inf)
    z -= z.max()                                   # the likeliest is exp(0) = 1: the sum is >= 1
    log_probs = z - np.log(np.exp(z).sum())
    return np.exp(log_probs)


def generate(model: LanguageModel, prime: str = "", length: int = 200, temperature: float = 1.0,
             top_k: int = 0, seed: int | None = None,
             clamp: dict[int, Clamp] | None = None) -> Iterator[tuple[str, float]]:
    """Yield (character, probability it had when drawn) `length` times after reading `prime`.

    Without a prime the model starts from a zero state and a newline, the most common
    separator in text. The same seed gives the same characters; with a clamp (see
    layers.Clamp) the same seed draws the same uniform numbers, so a clamped sample sits
    beside the normal one character for character.
    """
    if length < 0:
        raise ValueError("length must be non-negative")
    if not temperature >= 0:
        raise ValueError("temperature must be non-negative")
    rng = np.random.default_rng(seed)
    start = prime or ("\n" if "\n" in model.vocab else model.vocab.chars[0])
    ids = model.encode(start)
    state = None
    for start in range(0, len(ids) - 1, 1024):     # all but the last character, in bounded pieces
        _, state, _ = model.forward(ids[None, start:min(start + 1024, len(ids) - 1)], state, clamp)
    stepper = Stepper(model, state, clamp)
    logits = stepper.step(int(ids[-1]))
    for _ in range(length):
        probs = next_char_distribution(logits, temperature, top_k)
        # Inverse-CDF draw: one uniform number per character, so a seed fixes the text.
        cdf = np.cumsum(probs)
        char_id = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), probs.size - 1)
        while probs[char_id] == 0.0:          # rounding can land on an excluded entry
            char_id -= 1
        yield model.vocab.chars[char_id], float(probs[char_id])
        logits = stepper.step(char_id)


def sample(model: LanguageModel, prime: str = "", length: int = 200, temperature: float = 1.0,
           top_k: int = 0, seed: int | None = None,
           clamp: dict[int, Clamp] | None = None) -> tuple[str, list[float]]:
    """The generated text (without the prime) and each character's probability."""
    pairs = list(generate(model, prime, length, temperature, top_k, seed, clamp))
    return "".join(c for c, _ in pairs), [p for _, p in pairs]
