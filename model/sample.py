"""Sampling: read a prime, then write one character at a time from the model's softmax."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .cells import dot_layout
from .layers import Clamp
from .lm import LanguageModel
from .network import State, layer_params

# Bound once, as in cells.py: at batch 1 a character is ~30 NumPy calls of about a microsecond
# (np.dot for one-row products: see cells._dot).
_dot, _add, _subtract, _divide, _exp, _maximum = np.dot, np.add, np.subtract, np.divide, np.exp, np.maximum


class Stepper:
    """Advances a batch-of-one model one character at a time, with the same cell step
    the whole-sequence forward uses, into preallocated buffers.

    Layer 0's one-hot input term is row `id` of W_ih^T (+ b_ih, + b_hh for cells that only
    need xa + ha: all but the GRU); above it each layer takes two (1, H) x (H, G*H) products
    against the weights in cells.dot_layout. One (1, 2H) x (2H, G*H) product against
    [W_ih^T; W_hh^T] was measured slower here (27 us against 2 x 11 us at one thread, and
    OpenBLAS threads a product that size: 78 us at two), so the layers stay unfused."""

    def __init__(self, model: LanguageModel, state: State | None = None,
                 clamp: dict[int, Clamp] | None = None):
        self.model = model
        self.clamp = clamp or {}
        cfg, params, cell = model.config, model.params, model.cell
        self.cell = cell
        dtype = model.dtype
        L, H, GH = cfg.num_layers, cfg.hidden_size, cell.num_gates * cfg.hidden_size
        fold = not cell.separate_recurrent_grad
        # A cell's few-rows form (LSTMCell.row_step) reads weights with its gate blocks
        # scaled (Cell.gate_rows); the other cells read them as they are.
        self.rows_form = cell.has_rows_form and fold
        prepare = cell.gate_rows if self.rows_form else (lambda M, order="C": M)
        self.layers = []
        for l in range(L):
            W_ih, W_hh, b_ih, b_hh = layer_params(params, l)
            b_in = (b_ih + b_hh) if fold else b_ih
            # Layer 0's one-hot input: row `id` of (W_ih^T + b_in) is its whole input term.
            w_in = prepare(W_ih.T + b_in) if l == 0 else dot_layout(prepare(W_ih.T, "F"))
            self.layers.append((w_in, prepare(b_in), dot_layout(prepare(W_hh.T, "F")), None if fold else b_hh))
        self.W_yT = np.ascontiguousarray(params["decoder.weight"].T)
        self.b_y = params["decoder.bias"]
        self.h = np.zeros((L, 1, H), dtype) if state is None else state.h[:, :1].copy()
        has_c = cell.has_cell_state
        self.c = (np.zeros((L, 1, H), dtype) if state is None else state.c[:, :1].copy()) if has_c else None
        self.xa = np.empty((1, GH), dtype)
        self.ha = np.empty((1, GH), dtype)
        self.acts = np.empty((1, len(cell.gate_names) * H), dtype)
        self.stash = np.empty((1, cell.num_stashed * H), dtype) if cell.num_stashed else None
        self.logits = np.empty(cfg.vocab_size, dtype)
        if self.rows_form:
            # Each layer's [g | c] row; self.c becomes a view of its c halves. Every view
            # row_step takes is cut here once: slicing them per step cost more than the maths.
            self.gc = np.zeros((L, 1, 2 * H), dtype)
            self.gc[:, :, H:] = self.c
            self.c = self.gc[:, :, H:]
            a, ig_fc = self.acts, np.empty((1, 2 * H), dtype)
            constants = cell.row_constants(H, dtype)
            self.row_args = [(*constants, a, a[:, : 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:], self.gc[l],
                              self.gc[l, :, :H], ig_fc, ig_fc[:, :H], ig_fc[:, H:], self.c[l], self.stash, self.h[l])
                             for l in range(L)]
            # Layer 0's input term per character id: (1, G*H) views of w_in's rows, cut once.
            self.input_rows = list(self.layers[0][0][:, None])

    @property
    def state(self) -> State:
        return State(self.h.copy(), None if self.c is None else np.ascontiguousarray(self.c))

    def step(self, char_id: int) -> np.ndarray:
        """Feed one character id; returns the logits (V,) for the next one (a reused buffer)."""
        with np.errstate(over="ignore"):                 # see cells.sigmoid
            return self.advance(char_id)

    def advance(self, char_id: int) -> np.ndarray:
        """step, for a caller already inside np.errstate(over="ignore"): entering it costs
        ~2 us, as much as three of the step's own NumPy calls, so generate enters it once
        per block of characters rather than once per character."""
        if self.rows_form:
            return self._row_step(char_id)
        cell, xa, ha, acts, stash, h_all, c_all = self.cell, self.xa, self.ha, self.acts, self.stash, self.h, self.c
        for l, (w_in, b_in, W_hhT, b_hh) in enumerate(self.layers):
            h = h_all[l]
            if l == 0:
                x_term = w_in[char_id:char_id + 1]   # (1, G*H), a view: no copy
            else:
                np.matmul(h_all[l - 1], w_in, out=xa)
                xa += b_in
                x_term = xa
            np.matmul(h, W_hhT, out=ha)
            if b_hh is not None:
                ha += b_hh
            c = None if c_all is None else c_all[l]
            # h_{t-1} and c_{t-1} are overwritten in place: every cell step reads an
            # element of them before it writes the same element, and nothing after.
            cell.forward_step(x_term, ha, h, c, acts, stash, h, c)
            if l in self.clamp:
                self.clamp[l].apply(h, c)
        np.matmul(h[0], self.W_yT, out=self.logits)
        self.logits += self.b_y
        return self.logits

    def _row_step(self, char_id: int) -> np.ndarray:
        """advance with the cell's few-rows form: the same values, bit for bit, in fewer calls."""
        row_step, ha, a, clamp, h_below = self.cell.row_step, self.ha, self.acts, self.clamp, None
        for l, ((w_in, b_in, W_hhT, _), args) in enumerate(zip(self.layers, self.row_args)):
            h = args[-1]
            _dot(h, W_hhT, out=ha)
            if h_below is None:
                _add(self.input_rows[char_id], ha, out=a)      # the input term is a row of w_in
            else:
                _dot(h_below, w_in, out=a)
                _add(a, b_in, out=a)
                _add(a, ha, out=a)
            row_step(*args)              # h and c in place, read before written, as in step
            if clamp and l in clamp:
                clamp[l].apply(h, args[-3])
            h_below = h
        _dot(h_below[0], self.W_yT, out=self.logits)
        _add(self.logits, self.b_y, out=self.logits)
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
    Every entry is finite: exp(z - max z) is in [0, 1] and its sum is at least 1."""
    # float32 logits are finite and at most F32_MAX, so z = logits / T with T >= 1e-3 stays
    # far inside float64's range; a NaN (a broken model) counts as the least likely. The
    # maximum is finite unless an entry is NaN or +inf or all are -inf (a lone -inf needs no
    # repair, exp gives it 0): one reduction instead of nan_to_num's five passes per character.
    z = logits.astype(np.float64)
    top = z.max()
    if not math.isfinite(top):
        z = np.nan_to_num(z, nan=-F32_MAX, posinf=F32_MAX, neginf=-F32_MAX)
        top = z.max()
    if not temperature >= GREEDY_BELOW:
        probs = np.zeros_like(z)
        probs[int(np.argmax(z))] = 1.0
        return probs
    z /= temperature
    if 0 < top_k < z.size:
        cutoff = np.partition(z, -top_k)[-top_k]
        z[z < cutoff] = -np.inf
    # The likeliest is exp(0) = 1, so the sum is >= 1. max(z / T) is max(z) / T exactly (a
    # division by T > 0 and its rounding keep the order; top-k keeps the maximum): one reduction fewer.
    z -= top / temperature
    np.exp(z, out=z)
    z /= z.sum()
    return z


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """An inverse-CDF draw from probs (V,): one uniform number per character, so a seed fixes the text."""
    cdf = probs.cumsum()                  # methods, not np.cumsum/np.searchsorted: no dispatch wrapper per character
    char_id = min(int(cdf.searchsorted(rng.random() * cdf[-1], side="right")), probs.size - 1)
    while probs[char_id] == 0.0:          # rounding can land on an excluded entry
        char_id -= 1
    return char_id


class Picker:
    """next_char_distribution then draw, fused into buffers of its own: the same character and
    probability, bit for bit, with fewer NumPy calls and no allocation per character.

    The same float64 operations in the same order (the logits cast exactly, divided by T,
    shifted by max / T, exp, normalised by the sum; the cumulative sum and the one uniform
    number), but the cast rides on the first operation, at T = 1 the division, exact there
    (z / 1 = z), is skipped, and the reductions are called as ufunc methods directly.
    Non-finite logits and greedy temperatures take the reference functions themselves."""

    def __init__(self, vocab_size: int):
        self.z = np.empty(vocab_size, np.float64)
        self.cdf = np.empty(vocab_size, np.float64)

    def __call__(self, logits: np.ndarray, temperature: float, top_k: int,
                 rng: np.random.Generator) -> tuple[int, float]:
        """(character id, its probability) from logits (V,); temperature a Python float."""
        top = float(_maximum.reduce(logits))            # logits.max() without its Python wrapper
        if not (math.isfinite(top) and temperature >= GREEDY_BELOW):
            probs = next_char_distribution(logits, temperature, top_k)
            char_id = draw(probs, rng)
            return char_id, float(probs[char_id])
        # A NumPy float64 operand makes the ufunc cast float32 logits to float64 itself (a
        # Python float would pick the float32 loop; dtype=np.float64 costs ~1.5 us to parse).
        z = self.z
        if 0 < top_k < z.size:
            _divide(logits, np.float64(temperature), out=z)
            cutoff = np.partition(z, -top_k)[-top_k]
            z[z < cutoff] = -np.inf
            _subtract(z, top / temperature, out=z)
        elif temperature == 1.0:
            _subtract(logits, np.float64(top), out=z)
        else:
            _divide(logits, np.float64(temperature), out=z)
            _subtract(z, top / temperature, out=z)
        _exp(z, out=z)
        _divide(z, _add.reduce(z), out=z)               # z.sum() and z.cumsum() are these ufunc methods
        cdf = _add.accumulate(z, out=self.cdf)
        char_id = min(int(cdf.searchsorted(rng.random() * cdf[-1], "right")), z.size - 1)
        while z[char_id] == 0.0:          # as draw
            char_id -= 1
        return char_id, float(z[char_id])


def read_prime(model: LanguageModel, prime: str, clamp: dict[int, Clamp] | None = None
               ) -> tuple[State | None, int]:
    """The state after all but the prime's last character (None: zeros) and that last
    character's id, which the first step reads. Without a prime the model starts from a
    newline, the most common separator in text."""
    start = prime or ("\n" if "\n" in model.vocab else model.vocab.chars[0])
    ids = model.encode(start)
    state = None
    for s in range(0, len(ids) - 1, 1024):         # all but the last character, in bounded pieces
        _, state, _ = model.forward(ids[None, s:min(s + 1024, len(ids) - 1)], state, clamp)
    return state, int(ids[-1])


# Characters generate computes between yields: what a stream's chunk asks for at once
# (RNNSCOPE_STREAM_CHUNK_CHARS' default), so each chunk's work stays inside its own compute slot.
GENERATE_BLOCK = 16


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
    state, last = read_prime(model, prime, clamp)
    stepper = Stepper(model, state, clamp)
    pick, chars = Picker(model.config.vocab_size), model.vocab.chars
    temperature, top_k = float(temperature), int(top_k)
    logits = stepper.step(last)
    for start in range(0, length, GENERATE_BLOCK):
        block = []
        with np.errstate(over="ignore"):                 # once a block: see Stepper.advance
            for i in range(start, min(start + GENERATE_BLOCK, length)):
                char_id, prob = pick(logits, temperature, top_k, rng)
                block.append((chars[char_id], prob))
                if i + 1 < length:
                    logits = stepper.advance(char_id)
        yield from block


def sample(model: LanguageModel, prime: str = "", length: int = 200, temperature: float = 1.0,
           top_k: int = 0, seed: int | None = None,
           clamp: dict[int, Clamp] | None = None) -> tuple[str, list[float]]:
    """The generated text (without the prime) and each character's probability."""
    pairs = list(generate(model, prime, length, temperature, top_k, seed, clamp))
    return "".join(c for c, _ in pairs), [p for _, p in pairs]


@dataclass
class Row:
    """One sample inside a BatchSampler: its own settings, generator and characters left."""

    key: object
    temperature: float
    top_k: int
    rng: np.random.Generator
    left: int
    next_id: int          # the character the next step reads


class BatchSampler:
    """Many samples from one model stepped together: one time step serves every row, rows
    joining (after reading their prime alone) and leaving between steps.

    Each row draws from its own generator and gets exactly the characters `generate` writes
    alone with the same seed, bit for bit: the cell maths, the biases and the bookkeeping
    run once for all rows, but each row's products with the weights stay (1, H) x (H, G*H)
    products of its own. A product over all N rows at once would read each matrix once, but
    OpenBLAS sums a row's terms in an order that depends on N (its kernels are picked by
    size), which moves a probability in its last bits and, once in about 10^6 draws, a
    character; a seed must fix the text, so the rows keep Stepper's products."""

    def __init__(self, model: LanguageModel):
        self.model, self.cell = model, model.cell
        cfg = model.config
        self._L, self._H = cfg.num_layers, cfg.hidden_size
        template = Stepper(model)                       # the same folded weights as a lone sample
        self.layers, self.W_yT, self.b_y = template.layers, template.W_yT, template.b_y
        self.rows_form = template.rows_form
        if self.rows_form:
            self.constants = self.cell.row_constants(self._H, model.dtype)
        self.pick = Picker(cfg.vocab_size)
        self.rows: list[Row] = []
        self.h = np.zeros((self._L, 0, self._H), model.dtype)
        self.c = self.h.copy() if self.cell.has_cell_state else None
        self._size = -1

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, key: object, prime: str, length: int, temperature: float = 1.0, top_k: int = 0,
            seed: int | None = None) -> None:
        """Read the prime (alone: primes differ in length) and join the next step."""
        if length < 0:
            raise ValueError("length must be non-negative")
        if not temperature >= 0:
            raise ValueError("temperature must be non-negative")
        rng = np.random.default_rng(seed)
        state, last = read_prime(self.model, prime)
        if length == 0:
            return
        zero = np.zeros((self._L, 1, self._H), self.model.dtype)
        self.h = np.concatenate([self.h, zero if state is None else state.h[:, :1]], axis=1)
        if self.c is not None:
            self.c = np.concatenate([self.c, zero if state is None else state.c[:, :1]], axis=1)
        self.rows.append(Row(key, float(temperature), int(top_k), rng, length, last))

    def _buffers(self, N: int) -> None:
        if N != self._size:
            dtype, GH = self.model.dtype, self.cell.num_gates * self._H
            self.xa, self.ha = np.empty((N, GH), dtype), np.empty((N, GH), dtype)
            self.acts = np.empty((N, len(self.cell.gate_names) * self._H), dtype)
            self.stash = np.empty((N, self.cell.num_stashed * self._H), dtype) if self.cell.num_stashed else None
            self.logits = np.empty((N, self.model.config.vocab_size), dtype)
            if self.rows_form:
                self.gc, self.ig_fc = np.empty((N, 2 * self._H), dtype), np.empty((N, 2 * self._H), dtype)
            self._size = N

    def step(self) -> list[tuple[object, str, float, bool]]:
        """One character for every row: (key, character, its probability, the row's last)."""
        N = len(self.rows)
        if not N:
            return []
        self._buffers(N)
        cell, xa, ha, acts, stash, h_all, c_all = self.cell, self.xa, self.ha, self.acts, self.stash, self.h, self.c
        ids = np.fromiter((row.next_id for row in self.rows), np.intp, N)
        rows_form = self.rows_form
        if rows_form:
            gc, ig_fc, constants = self.gc, self.ig_fc, self.constants
        with np.errstate(over="ignore"):                 # see cells.sigmoid
            for l, (w_in, b_in, W_hhT, b_hh) in enumerate(self.layers):
                h = h_all[l]                                             # (N, H)
                if l == 0:
                    x_term = np.take(w_in, ids, axis=0)                  # (N, G*H) rows of W_ih^T + b
                else:
                    for r in range(N):
                        np.matmul(h_all[l - 1, r:r + 1], w_in, out=xa[r:r + 1])
                    xa += b_in
                    x_term = xa
                for r in range(N):
                    np.matmul(h[r:r + 1], W_hhT, out=ha[r:r + 1])
                if b_hh is not None:
                    ha += b_hh
                c = None if c_all is None else c_all[l]
                if rows_form:                                            # Stepper's arithmetic, on N rows
                    H = self._H
                    np.add(x_term, ha, out=acts)
                    gc[:, H:] = c
                    cell.row_step(*constants, acts, acts[:, : 2 * H], acts[:, 2 * H: 3 * H], acts[:, 3 * H:],
                                  gc, gc[:, :H], ig_fc, ig_fc[:, :H], ig_fc[:, H:], c, stash, h)
                else:
                    cell.forward_step(x_term, ha, h, c, acts, stash, h, c)   # in place, as Stepper
        for r in range(N):
            np.matmul(h[r], self.W_yT, out=self.logits[r])
        self.logits += self.b_y
        out, keep = [], []
        for r, row in enumerate(self.rows):
            char_id, prob = self.pick(self.logits[r], row.temperature, row.top_k, row.rng)   # as generate's
            row.left -= 1
            row.next_id = char_id
            out.append((row.key, self.model.vocab.chars[char_id], prob, row.left == 0))
            if row.left:
                keep.append(r)
        if len(keep) < N:
            self.rows = [self.rows[r] for r in keep]
            self.h = np.ascontiguousarray(self.h[:, keep])
            if self.c is not None:
                self.c = np.ascontiguousarray(self.c[:, keep])
        return out
