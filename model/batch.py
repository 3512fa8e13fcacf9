"""Many texts through one model in one pass: each weight matrix read once per step for all.

An RNN is causal, so a text padded at its end reads exactly as it does alone up to its own
last character; each text's rows are sliced back out. Two shapes of sharing:

- `Reader` reads texts in chunks with every row's state carried, rows joining and leaving
  between chunks, so a short text joining a long one's pass waits one chunk, not the pass.
- `gradients_through_time` runs one BPTT pass over texts padded to the longest; a padded
  step after a row's loss position gets dL/dh = 0 exactly, so earlier steps see what they
  would alone.

Values equal the one-text paths to float32 rounding: BLAS sums a product's rows in an order
that depends on how many rows it has (OpenBLAS picks kernels by size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import network
from .analysis import GradientProfile
from .layers import softmax_cross_entropy
from .lm import LanguageModel
from .network import Cache, State

# Below this many rows a time step's h W_hh^T is one (1, H) x (H, G*H) product per row; from
# it on, one W_hh h^T product for all. Measured at H = 256, LSTM, one thread (us per step):
#   rows            1     2     4     8    16
#   h @ W_hh^T     14    62    53    70   101   (OpenBLAS packs the 1 MB of weights per call)
#   W_hh @ h^T     10    40    50    50    83
#   per row        13    24    46    93   182
FEW_ROWS = 4


def rows_product(x: np.ndarray, M: np.ndarray, out: np.ndarray) -> None:
    """out = x M^T for a time step of a few rows (h W_hh^T forward, dha W_hh backward): see FEW_ROWS."""
    if len(x) < FEW_ROWS:
        for r in range(len(x)):
            np.matmul(x[r:r + 1], M.T, out=out[r:r + 1])
    else:
        out[...] = np.matmul(M, x.T).T                                # (J, N) -> (N, J)


def row_internals(model: LanguageModel, cache: Cache, layer: int, quantity: str, row: int) -> np.ndarray:
    """One recorded quantity of one layer for sequence `row` of a cache: (T, H)."""
    cell, H = model.cell, model.config.hidden_size
    lc = cache.layers[layer]
    if quantity == "h":
        return lc.hs[1:, row]
    if quantity == "c" and cell.has_cell_state:
        return lc.cs[1:, row]
    if quantity in cell.gate_names:
        k = cell.gate_names.index(quantity)
        return lc.acts[:, row, k * H:(k + 1) * H]
    raise ValueError(f"a {cell.name} has no quantity {quantity!r}; choose from {', '.join(cell.quantities)}")


@dataclass
class Piece:
    """What one chunk gave one text: positions start..start+n of it."""

    key: object
    start: int
    logits: np.ndarray        # (n, V)
    cache: Cache              # the whole batch's; this text is row `row`, its first n steps
    row: int
    done: bool                # the text's last piece

    def internals(self, model: LanguageModel, layer: int, quantity: str) -> np.ndarray:
        return row_internals(model, self.cache, layer, quantity, self.row)[:len(self.logits)]


class Reader:
    """Reads many texts (ids (T,) each, from a zero state) in chunks of `chunk` characters,
    one forward pass of N rows per chunk. `add` a text at any time; `step` reads the next
    chunk of every text added and returns its pieces. A row shorter than the chunk is
    padded at its end with id 0 and leaves the batch with that piece."""

    def __init__(self, model: LanguageModel, chunk: int = 256):
        self.model, self.chunk = model, chunk
        self._rows: list[tuple[object, np.ndarray, int]] = []        # (key, ids, next position)
        self._state: State | None = None                             # (L, N, H) of the rows

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, key: object, ids: np.ndarray) -> None:
        if len(ids) < 1:
            raise ValueError("a text needs at least one character")
        cfg = self.model.config
        zero = network.zero_state(cfg, 1, self.model.dtype)
        self._rows.append((key, ids, 0))
        self._state = zero if self._state is None else State(
            np.concatenate([self._state.h, zero.h], axis=1),
            None if zero.c is None else np.concatenate([self._state.c, zero.c], axis=1))

    def step(self) -> list[Piece]:
        """Read the next chunk of every row: one forward pass over (N, C)."""
        if not self._rows:
            return []
        left = [len(ids) - pos for _, ids, pos in self._rows]
        C = min(self.chunk, max(left))
        x = np.zeros((len(self._rows), C), np.int64)                  # (N, C), padded with id 0
        for r, (_, ids, pos) in enumerate(self._rows):
            piece = ids[pos:pos + C]
            x[r, :len(piece)] = piece
        logits, final, cache = network.forward(self.model.config, self.model.params, x, self._state,
                                               product=rows_product)       # (N, C, V)
        pieces, keep = [], []
        for r, (key, ids, pos) in enumerate(self._rows):
            n = min(C, left[r])
            pieces.append(Piece(key, pos, logits[r, :n], cache, r, n == left[r]))
            if n < left[r]:
                keep.append(r)
        # A row that stays read all C characters, so its final state is its own.
        self._rows = [(self._rows[r][0], self._rows[r][1], self._rows[r][2] + C) for r in keep]
        self._state = None if not keep else State(final.h[:, keep],
                                                  None if final.c is None else final.c[:, keep])
        return pieces


def gradients_through_time(model: LanguageModel, texts: list[tuple[np.ndarray, int]]) -> list[GradientProfile]:
    """analysis.gradient_through_time for many (ids, position) at once: one BPTT pass over
    the texts padded to the longest span read, each row's loss
    L = -ln p(ids[position+1] | ids[..position]) alone at its own position."""
    spans = [position + 1 for _, position in texts]
    T = max(spans)
    x = np.zeros((len(texts), T), np.int64)                           # (N, T), padded with id 0
    for r, (ids, position) in enumerate(texts):
        x[r, :position + 1] = ids[:position + 1]
    logits, _, cache = network.forward(model.config, model.params, x, product=rows_product)   # (N, T, V)
    dlogits = np.zeros_like(logits)
    losses = []
    for r, (ids, position) in enumerate(texts):
        # The one-text path's arithmetic: the loss of a (1, 1) slice, its mean over one position.
        loss, d, _ = softmax_cross_entropy(logits[r:r + 1, position:position + 1],
                                           ids[None, position + 1:position + 2])
        dlogits[r, position] = d[0, 0]
        losses.append(loss)
    grads = network.backward(model.config, model.params, dlogits, cache, product=rows_product)
    out = []
    for r, (span, loss) in enumerate(zip(spans, losses)):
        h_norm = [np.linalg.norm(dh[r, 1:span + 1], axis=-1) for dh in grads.dh]      # (span,)
        c_norm = None
        if model.cell.has_cell_state:
            c_norm = [np.linalg.norm(dc[r, 1:span + 1], axis=-1) for dc in grads.dc]
        out.append(GradientProfile(span - 1, loss, h_norm, c_norm))
    return out
