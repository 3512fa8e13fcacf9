"""Uploaded corpora: read in chunks, refuse what is not UTF-8 text with a message saying
what was found, normalise line endings, count the vocabulary, and the preflight: how big a
model this much text supports and how long training it takes here.

An upload is only ever decoded as text and counted; nothing in it is executed or unpickled.
"""
from __future__ import annotations

import codecs
import hashlib
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnscope.model.cells import get_cell
from rnnscope.model.data import num_batches
from rnnscope.model.network import ModelConfig

from ..inference.compute import checkpoint_bytes, training_peak_bytes
from .attempt import VAL_FRACTION
from .schemas import CharCount, Estimate, Preflight, Recommendation

CHUNK = 1 << 20
UNICODE = 0x110000

# Signatures of formats people upload by mistake, so the refusal can name what it saw.
MAGIC = [
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (a .docx, .odt, .epub or .xlsx is one too)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xd0\xcf\x11\xe0", "a Microsoft Office (.doc/.xls) file"),
    (b"{\\rtf", "an RTF document"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x80\x04\x95", "a Python pickle"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"ID3", "an MP3 file"),
    (b"OggS", "an Ogg file"),
    (b"RIFF", "a RIFF (WAV/AVI/WebP) file"),
]
BOMS = [
    (codecs.BOM_UTF32_LE, "UTF-32 (little-endian byte-order mark)"),
    (codecs.BOM_UTF32_BE, "UTF-32 (big-endian byte-order mark)"),
    (codecs.BOM_UTF16_LE, "UTF-16 (little-endian byte-order mark FF FE)"),
    (codecs.BOM_UTF16_BE, "UTF-16 (big-endian byte-order mark FE FF)"),
]
SAVE_AS = "save it as UTF-8 text (a .txt file) and upload that"


class CorpusRefused(ValueError):
    """An upload that cannot be a corpus; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Ingested:
    path: Path                     # the normalised text, in a temporary file for the caller to move
    bytes: int
    chars: int
    lines: int
    sha256: str                    # of the normalised UTF-8 text, as model.train.corpus_sha256
    counts: dict[str, int]


def sniff(head: bytes) -> str | None:
    """What the first bytes of a file say it is, when that is not UTF-8 text."""
    for bom, what in BOMS:
        if head.startswith(bom):
            return f"{what} text"
    for magic, what in MAGIC:
        if head.startswith(magic):
            return what
    return None


def nul_message(chunk: bytes, offset: int) -> str:
    at = chunk.index(b"\x00")
    head = chunk[:1024]
    # UTF-16 text of Latin letters has a NUL in every other byte.
    if len(head) >= 16 and any(half.count(0) > 0.8 * len(half) for half in (head[0::2], head[1::2])):
        guess = "this looks like UTF-16 text without a byte-order mark"
    else:
        guess = "this looks like binary data, not text"
    return f"found a NUL byte at offset {offset + at:,}: {guess}; {SAVE_AS}"


def decode_message(e: UnicodeDecodeError, offset: int) -> str:
    bad = e.object[e.start:e.start + 1]
    before = e.object[max(0, e.start - 24):e.start].decode("utf-8", "replace").replace("\n", " ")
    return (f"the file is not UTF-8: byte 0x{bad.hex().upper()} at offset {offset + e.start:,} "
            f"(after {before!r}) cannot start or continue a UTF-8 character. It is probably in another "
            f"encoding such as Windows-1252, Latin-1 or Shift_JIS; {SAVE_AS}")


def ingest(src: BinaryIO, directory: Path, max_bytes: int, max_vocab: int, min_chars: int) -> Ingested:
    """Decode `src` as UTF-8 (a BOM is fine) in chunks, normalise \\r\\n and \\r to \\n,
    and write the text to a temporary file in `directory`, synced. Raises CorpusRefused: 413 over max_bytes,
    422 for anything that is not UTF-8 text, more than max_vocab distinct characters, or
    fewer than min_chars characters."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    counts = np.zeros(UNICODE, np.int64)
    sha = hashlib.sha256()
    size = chars = 0
    carry_cr = False            # a \r at the end of a chunk may be the first half of \r\n
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = src.read(CHUNK)
                final = not chunk
                if size == 0 and chunk:
                    what = sniff(chunk[:64])
                    if what is not None:
                        raise CorpusRefused(422, f"the file is {what}, not UTF-8 text; {SAVE_AS}")
                    if chunk.startswith(codecs.BOM_UTF8):
                        chunk = chunk[len(codecs.BOM_UTF8):]
                        size += len(codecs.BOM_UTF8)
                size += len(chunk)
                if size > max_bytes:
                    raise CorpusRefused(413, f"the file is over the limit of {max_bytes:,} bytes "
                                             "(setting RNNSCOPE_MAX_UPLOAD_BYTES)")
                if b"\x00" in chunk:
                    raise CorpusRefused(422, nul_message(chunk, size - len(chunk)))
                try:
                    text = decoder.decode(chunk, final)
                except UnicodeDecodeError as e:
                    # e.object is the decoder's held-back bytes followed by this chunk.
                    raise CorpusRefused(422, decode_message(e, size - len(e.object))) from None
                if carry_cr:
                    text = "\r" + text
                carry_cr = text.endswith("\r") and not final
                if carry_cr:
                    text = text[:-1]
                text = text.replace("\r\n", "\n").replace("\r", "\n")
                if text:
                    codes = np.frombuffer(text.encode("utf-32-le"), "<u4")
                    counts += np.bincount(codes, minlength=UNICODE)
                    distinct = int(np.count_nonzero(counts))
                    if distinct > max_vocab:
                        raise CorpusRefused(422, f"the text has more than {max_vocab:,} distinct characters "
                                                 f"({distinct:,} in its first {size:,} bytes), the limit "
                                                 "(setting RNNSCOPE_MAX_VOCAB); a character model's output "
                                                 "layer grows with each one")
                    data = text.encode("utf-8")
                    sha.update(data)
                    out.write(data)
                    chars += len(text)
                if final:
                    break
            out.flush()
            os.fsync(out.fileno())
        if chars == 0:
            raise CorpusRefused(422, "the file is empty" if size == 0 else "the file holds no characters")
        if chars < min_chars:
            raise CorpusRefused(422, f"the text has {chars:,} characters, too few to split into training "
                                     f"and validation text: at least {min_chars:,} are needed "
                                     "(setting RNNSCOPE_MIN_CORPUS_CHARS)")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    nonzero = np.flatnonzero(counts)
    by_char = {chr(c): int(counts[c]) for c in nonzero}
    return Ingested(Path(tmp), size, chars, by_char.get("\n", 0) + 1, sha.hexdigest(), by_char)


# ---- the preflight ---------------------------------------------------------------------------

HIDDEN_SIZES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def parameters(cell: str, vocab_size: int, hidden_size: int, num_layers: int) -> int:
    """Weights and biases of the stack and decoder (network.param_shapes summed)."""
    G, H, V = get_cell(cell).num_gates, hidden_size, vocab_size
    recurrent = sum(G * H * ((V if l == 0 else H) + H) + 2 * G * H for l in range(num_layers))
    return recurrent + V * H + V


# Batch shapes from char-rnn's kind of default down: fewer streams first, then shorter ones.
BATCH_SHAPES = ((32, 100), (16, 100), (8, 100), (4, 100), (4, 50), (4, 25), (2, 25), (1, 25), (1, 10), (1, 4),
                (1, 2))


def batch_shape(train_chars: int) -> tuple[int, int]:
    """The largest (B, T) that still gives an epoch of 20 batches, so even a small corpus
    draws a curve worth watching; failing that, the largest that gives one."""
    for wanted in (20, 1):
        for B, T in BATCH_SHAPES:
            if num_batches(train_chars, B, T) >= wanted:
                return B, T
    return BATCH_SHAPES[-1]


def recommend(train_chars: int, vocab_size: int, max_hidden: int) -> Recommendation:
    """An LSTM with about as many parameters as training characters: two layers from a
    million characters up (char-rnn's default), one below. Dropout only with two layers:
    0.25 is what kept the bundled 2x256 LSTM on tinyshakespeare from overfitting, and a
    short run on a small text gains nothing from it."""
    layers = 2 if train_chars >= 1_000_000 else 1
    sizes = [h for h in HIDDEN_SIZES if h <= max_hidden] or [max_hidden]
    hidden = min(sizes, key=lambda h: abs(math.log(parameters("lstm", vocab_size, h, layers) / train_chars)))
    B, T = batch_shape(train_chars)
    n = parameters("lstm", vocab_size, hidden, layers)
    return Recommendation(cell="lstm", hidden_size=hidden, num_layers=layers, batch_size=B, seq_length=T,
                          learning_rate=2e-3, dropout=0.25 if layers == 2 else 0.0, max_steps=100,
                          parameters=n, params_per_char=round(n / train_chars, 3))


def nice_steps(steps: float) -> int:
    """Two significant figures: 1234 -> 1200."""
    if steps < 100:
        return max(1, int(steps))
    magnitude = 10 ** (int(math.log10(steps)) - 1)
    return int(round(steps / magnitude) * magnitude)


# Seconds a training step of a model config takes at batch_size x seq_length.
StepTimer = Callable[[ModelConfig, int, int], float]


def estimate(cell: str, vocab_size: int, hidden_size: int, num_layers: int, batch_size: int, seq_length: int,
             train_chars: int, max_steps: int, time_step: StepTimer) -> Estimate:
    cfg = ModelConfig(cell, vocab_size, hidden_size, num_layers)
    # Every figure from the per-step time as reported, so the preflight, which multiplies the
    # reported one by its own max_steps, and this agree to the last digit.
    per_step = round(time_step(cfg, batch_size, seq_length), 5)
    per_epoch = max(1, num_batches(train_chars, batch_size, seq_length))
    return Estimate(parameters=parameters(cell, vocab_size, hidden_size, num_layers),
                    seconds_per_step=per_step, steps_per_epoch=per_epoch,
                    seconds_per_epoch=round(per_step * per_epoch, 2), max_steps=max_steps,
                    seconds_total=round(per_step * max_steps, 1),
                    memory_bytes=training_peak_bytes(cfg, batch_size, seq_length, train_chars, max_steps=max_steps),
                    checkpoint_bytes=checkpoint_bytes(cfg, max_steps))


def preflight(ingested: Ingested, max_hidden: int, target_seconds: float, time_step: StepTimer) -> Preflight:
    """Size, vocabulary, a recommended model and its measured time per epoch."""
    train_chars, val_chars = split_sizes(ingested.chars)
    vocab_size = len(ingested.counts)
    rec = recommend(train_chars, vocab_size, max_hidden)
    est = estimate(rec.cell, vocab_size, rec.hidden_size, rec.num_layers, rec.batch_size, rec.seq_length,
                   train_chars, 1, time_step)
    epochs_cap = 50 * est.steps_per_epoch
    rec.max_steps = nice_steps(min(max(100, target_seconds / est.seconds_per_step), max(100, epochs_cap)))
    est.max_steps = rec.max_steps
    est.seconds_total = round(est.seconds_per_step * rec.max_steps, 1)
    vocab = sorted(ingested.counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return Preflight(bytes=ingested.bytes, chars=ingested.chars, lines=ingested.lines,
                     train_chars=train_chars, val_chars=val_chars, vocab_size=vocab_size,
                     vocab=[CharCount(char=c, count=n) for c, n in vocab], recommended=rec, estimate=est)


def split_sizes(chars: int) -> tuple[int, int]:
    """Training and validation characters of a corpus, as model.data.split cuts it."""
    cut = chars - round(chars * VAL_FRACTION)
    return cut, chars - cut
