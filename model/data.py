"""Corpus splitting and char-rnn batching."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def split(text: str, val_fraction: float) -> tuple[str, str]:
    """First (1 - val_fraction) of the text trains, the rest validates."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = len(text) - int(round(len(text) * val_fraction))
    return text[:cut], text[cut:]


def num_batches(num_chars: int, batch_size: int, seq_length: int) -> int:
    """Batches per epoch: each of the B streams needs T inputs plus one target ahead."""
    return (num_chars - 1) // (batch_size * seq_length)


class StreamBatches:
    """One epoch of char-rnn batches: the data is cut into B contiguous streams and
    batch k holds characters [kT, (k+1)T) of every stream, so the state after batch k
    is the right initial state for batch k+1. Item k is (x, y), both (B, T), y = x shifted by one."""

    def __init__(self, ids: np.ndarray, batch_size: int, seq_length: int):
        B, T = batch_size, seq_length
        self.n = num_batches(len(ids), B, T)
        if self.n < 1:
            raise ValueError(f"{len(ids)} characters are too few for one batch of {B} x {T}; "
                             "lower batch_size or seq_length")
        span = self.n * T
        self.T = T
        self.x = ids[: B * span].reshape(B, span)
        self.y = ids[1: B * span + 1].reshape(B, span)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= k < self.n:
            raise IndexError(k)
        T = self.T
        return self.x[:, k * T:(k + 1) * T], self.y[:, k * T:(k + 1) * T]


def stream_batches(ids: np.ndarray, batch_size: int, seq_length: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over one epoch of StreamBatches."""
    batches = StreamBatches(ids, batch_size, seq_length)
    return (batches[k] for k in range(len(batches)))


def eval_chunks(ids: np.ndarray, batch_size: int, seq_length: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Like stream_batches but keeps the tail: the last chunk may be shorter than T, and
    the number of streams shrinks for texts too short for batch_size of them."""
    B = max(1, min(batch_size, (len(ids) - 1) // max(1, seq_length)))
    span = (len(ids) - 1) // B
    x = ids[: B * span].reshape(B, span)
    y = ids[1: B * span + 1].reshape(B, span)
    for start in range(0, span, seq_length):
        yield x[:, start:start + seq_length], y[:, start:start + seq_length]
