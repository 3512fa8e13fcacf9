"""The NumPy work behind the analysis routes, shaped for sending.

A text is read in chunks with the state carried across, which gives exactly the
whole-sequence forward (the model's equivalence tests) while the cache, ~28 kB a
character for a 2x256 LSTM, stays bounded whatever the text's length.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np

from rnnscope.model.cells import get_cell
from rnnscope.model.layers import log_softmax
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import param_shapes

from .schemas import EncodedArray, Encoding

CHUNK = 1024          # characters per forward call: ~28 MB of cache, per-call overhead negligible


@dataclass
class Reading:
    loss: np.ndarray                     # (T-1,) loss[t] = -ln p(ids[t+1] | ids[..t])
    top_ids: np.ndarray                  # (T, k) likeliest next characters, most likely first
    top_probs: np.ndarray                # (T, k)
    internals: dict[tuple[int, str], np.ndarray]   # (layer, quantity) -> (T, H)


def top_k(logp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of log-probabilities (T, V): ids and probabilities."""
    T, V = logp.shape
    k = min(k, V)
    if k == 0:
        return np.zeros((T, 0), np.int64), np.zeros((T, 0), logp.dtype)
    ids = np.argpartition(-logp, k - 1, axis=1)[:, :k] if k < V else np.broadcast_to(np.arange(V), (T, V))
    vals = np.take_along_axis(logp, ids, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1), np.exp(np.take_along_axis(vals, order, axis=1))


class ReadingBuilder:
    """A Reading filled piece by piece as a text is read: the losses, the top-k predictions
    and the (layer, quantity) internals asked for, each piece's values copied into place."""

    def __init__(self, model: LanguageModel, ids: np.ndarray, wanted: list[tuple[int, str]], k: int):
        T, H = len(ids), model.config.hidden_size
        self.ids, self.wanted, self.k = ids, wanted, k
        self.reading = Reading(loss=np.empty(max(T - 1, 0), model.dtype),
                               top_ids=np.empty((T, min(k, model.config.vocab_size)), np.int64),
                               top_probs=np.empty((T, min(k, model.config.vocab_size)), model.dtype),
                               internals={key: np.empty((T, H), model.dtype) for key in wanted})

    def add(self, s: int, logits: np.ndarray, internals) -> None:
        """Positions s..s+C: logits (C, V) and internals(layer, quantity) -> (C, H)."""
        r, ids, T = self.reading, self.ids, len(self.ids)
        e = s + len(logits)
        logp = log_softmax(logits)                                    # (C, V)
        n = min(e, T - 1) - s                                         # positions with a next character
        r.loss[s:s + n] = -logp[np.arange(n), ids[s + 1:s + 1 + n]]
        r.top_ids[s:e], r.top_probs[s:e] = top_k(logp, self.k)
        for layer, quantity in self.wanted:
            r.internals[layer, quantity][s:e] = internals(layer, quantity)


def read(model: LanguageModel, ids: np.ndarray, wanted: list[tuple[int, str]], k: int,
         chunk: int = CHUNK) -> Reading:
    """Read ids (T,) from a zero state; keep the losses, the top-k predictions and the
    (layer, quantity) internals asked for."""
    builder = ReadingBuilder(model, ids, wanted, k)
    for s, logits, cache in model.read(ids, chunk):
        builder.add(s, logits, lambda layer, quantity, cache=cache: model.internals(cache, layer, quantity))
    return builder.reading


def rounded(a: np.ndarray, decimals: int = 6) -> list:
    """Nested lists of short decimals: float32 values through float64 print 17 digits."""
    return np.round(a.astype(np.float64), decimals).tolist()


# Bytes per value as sent, base64 (4/3) of the raw bytes, or JSON's ~10 characters a number.
SENT_BYTES = {"int8": 4 / 3, "float16": 8 / 3, "float32": 16 / 3, "json": 10.0}


def encode_array(a: np.ndarray, encoding: Encoding) -> EncodedArray:
    """A (T, H) array as EncodedArray: int8 is value = q * scale, scale = max|v| / 127."""
    shape = list(a.shape)
    if encoding == "json":
        return EncodedArray(shape=shape, dtype="float32", scale=1.0, values=rounded(a))
    if encoding == "int8":
        peak = float(max(a.max(), -a.min())) if a.size else 0.0
        scale = peak / 127.0 if peak > 0.0 else 1.0
        q = a * np.float32(1.0 / scale)                   # in [-127, 127]: rint cannot leave int8
        np.rint(q, out=q)
        return EncodedArray(shape=shape, dtype="int8", scale=scale, data=b64(q.astype(np.int8)))
    dtype = {"float16": "<f2", "float32": "<f4"}[encoding]
    return EncodedArray(shape=shape, dtype=encoding, scale=1.0, data=b64(a.astype(dtype, copy=False)))


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).data).decode("ascii")


# ---- memory: every job's peak, estimated from its shape before it is admitted ----------------
#
# The compute gate holds RNNSCOPE_MEMORY_BUDGET in bytes (app/inference/compute_gate.py); these say how
# many a job takes at its peak, counted from the arrays model/ allocates (model/layers.py,
# model/network.py, model/train.py). tests/test_budgets.py measures the peaks in subprocesses.

FLOAT = 4                  # float32 bytes: every array of the model and its activations
# The interpreter's own allocations beside the arrays (frames, small objects, the allocator's
# slack): about 5 MB at small shapes.
JOB_OVERHEAD = 8_000_000
# A run's history is four Python lists with an entry a step: 114 bytes a step measured (a
# float object and a slot each), and 197 more while a checkpoint copies it and writes it as
# JSON (55 bytes a step on disk, HISTORY_JSON_BYTES_PER_STEP) inside the file's header.
HISTORY_JSON_BYTES_PER_STEP = 60
HISTORY_BYTES_PER_STEP = 310


def forward_floats_per_char(cfg) -> tuple[int, list[int]]:
    """Floats per character a forward pass keeps for backward: (logits V, per layer).
    A layer keeps xa (G*H), ha (G*H, cells that read it), the gate activations (A*H),
    the stash (S*H), h (H) and c (H, cells with a cell state): layers.LayerCache."""
    cell = get_cell(cfg.cell)
    H = cfg.hidden_size
    per_layer = H * (cell.num_gates * (1 + cell.separate_recurrent_grad) + len(cell.gate_names)
                     + cell.num_stashed + 1 + cell.has_cell_state)
    return cfg.vocab_size, [per_layer] * cfg.num_layers


def training_step_floats_per_char(cfg, dropout: float = 0.0) -> int:
    """Floats per character of a training step at its peak, the larger of two moments.
    Forward: model/train.py keeps the last step's cache (and its logits and dlogits) until
    the next forward has returned, so two caches live at once. Backward: the cache, every
    layer's dL/dh (and dL/dc), two layers' dL/dxa (the one above is still referenced while
    the next is made), dL/dx twice and the one-hot of layer 0 (V)."""
    cell = get_cell(cfg.cell)
    H, V, L = cfg.hidden_size, cfg.vocab_size, cfg.num_layers
    _, layers = forward_floats_per_char(cfg)
    cache = sum(layers) + (2 * H * L if dropout > 0 else 0)      # dropout: the mask and x * mask
    forward = 2 * cache + 3 * V
    dxa = H * cell.num_gates * (1 + cell.separate_recurrent_grad)
    backward = cache + 3 * V + L * H * (1 + cell.has_cell_state) + min(L, 2) * dxa + 2 * H
    return max(forward, backward)


def training_peak_bytes(cfg, batch_size: int, seq_length: int, corpus_chars: int, ascii_text: bool = True,
                        dropout: float = 0.0, max_steps: int = 0) -> int:
    """A training run's peak bytes in the process that trains it:
    - the step: batch_size x seq_length characters of training_step_floats_per_char;
    - the parameters P, ten times: weights, Adam's two moments, this step's and the last
      step's gradients, the best weights, and a checkpoint's copies (weights and moments
      snapshotted, then written as one buffer of weights, moments and best weights);
    - the corpus: its text (1 byte a character if ASCII, else up to 4), the training and
      validation halves split off it, and its ids (1 byte each up to 255 characters);
    - the history, HISTORY_BYTES_PER_STEP for each of max_steps."""
    P = sum(math.prod(s) for s in param_shapes(cfg).values())
    chars = batch_size * seq_length
    width = 1 if ascii_text else 4
    return (JOB_OVERHEAD + FLOAT * (chars * training_step_floats_per_char(cfg, dropout) + 10 * P)
            + corpus_chars * (2 * width + 2) + HISTORY_BYTES_PER_STEP * max_steps)


def checkpoint_bytes(cfg, max_steps: int = 0) -> int:
    """Bytes on disk of a run's checkpoints: the model file (weights P) and the training
    state (weights, Adam's two moments, best weights: 4P, and the history as JSON)."""
    P = sum(math.prod(s) for s in param_shapes(cfg).values())
    return FLOAT * 5 * P + HISTORY_JSON_BYTES_PER_STEP * max_steps + 100_000


def reading_bytes(cfg, chars: int, kept_per_char: int, itemsize: int = FLOAT, chunk: int = CHUNK) -> int:
    """A request that reads `chars` characters in chunks (read() above, model.probes.activations)
    and keeps `kept_per_char` values a character of `itemsize` bytes: one chunk's forward
    cache and logits (with log-softmax's two temporaries), plus what it keeps."""
    logits, layers = forward_floats_per_char(cfg)
    per_chunk_char = FLOAT * (sum(layers) + 3 * logits)
    return JOB_OVERHEAD + min(chars, chunk) * per_chunk_char + chars * kept_per_char * itemsize


def every_unit(cfg) -> int:
    """Values a character when every quantity of every layer is kept (probes, select, match)."""
    return cfg.num_layers * len(get_cell(cfg.cell).quantities) * cfg.hidden_size


def norms(a: np.ndarray) -> list[float | None]:
    """Gradient norms for JSON, which has no inf: an overflowed one becomes null."""
    values = a.astype(np.float64).tolist()
    return values if np.isfinite(a).all() else [v if math.isfinite(v) else None for v in values]
