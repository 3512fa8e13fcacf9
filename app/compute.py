"""The NumPy work behind the analysis routes, shaped for sending.

A text is read in chunks with the state carried across, which gives exactly the
whole-sequence forward (the model's equivalence tests) while the cache, ~28 kB a
character for a 2x256 LSTM, stays bounded whatever the text's length.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from rnnscope.model.layers import log_softmax
from rnnscope.model.lm import LanguageModel

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
