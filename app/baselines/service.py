"""The texts an error analysis reads, what it costs, and its cache.

The n-gram counts come from the model's training text (its corpus's first 90 %, as the model
trained), found by the sha256 its checkpoint records; the analysed text is the caller's or the
start of the model's validation text. Counting is one pass over the training text per order
(model/ngram.py), seconds per megabyte, so each result is kept in memory for the last few
(max_ngram_results). The default analysis of a corpus (its validation text) is also kept on
disk under <data_dir>/cache/ngram, so a restart does not count it again: at most one file
per corpus and order count, where people's own texts would have no bound.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnscope.model.data import split
from rnnscope.model.errors import word_counts
from rnnscope.model.lm import LanguageModel
from rnnscope.model.ngram import NGramLosses, kneser_ney_losses, peak_bytes

from ..inference.corpus_index import CorpusLibrary, training_corpus, val_fraction
from ..inference.lru import LRU
from ..inference.registry import Entry
from ..settings import Settings


@dataclass(frozen=True)
class Texts:
    train: str                         # what the n-grams count
    corpus_name: str
    corpus_sha256: str
    validation: str                    # the rest of the corpus, unseen in training


def model_texts(entry: Entry, library: CorpusLibrary) -> Texts | None:
    """The model's training and validation texts, or None when its corpus is not on the server."""
    corpus = training_corpus(entry, library)
    if corpus is None:
        return None
    train, validation = split(library.text(corpus), val_fraction(entry.model))
    return Texts(train, corpus.name, corpus.sha256, validation)


def cost_bytes(model: LanguageModel, train_chars: int, text_chars: int, max_order: int) -> int:
    """The analysis's peak: the n-gram pass, and the model reading the text (logits and one
    layer's activations a chunk at a time, per-character losses)."""
    V, H = model.config.vocab_size, model.config.hidden_size
    reading = 8 * 1024 * (V + 12 * H) + 16 * text_chars
    return peak_bytes(train_chars, text_chars, max_order) + reading


class NGramCache:
    """n-gram losses per (training text, analysed text, orders): the last few in memory, all on disk."""

    def __init__(self, settings: Settings):
        self.dir = settings.data_dir / "cache" / "ngram"
        self._memory: LRU[str, NGramLosses] = LRU(settings.max_ngram_results)
        self._words: LRU[str, dict] = LRU(settings.corpus_cache_texts)
        self._counting: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(texts: Texts, text: str, max_order: int) -> str:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        return f"{texts.corpus_sha256[:32]}-{digest}-{max_order}"

    def losses(self, texts: Texts, model: LanguageModel, text: str, max_order: int,
               persist: bool = False) -> NGramLosses:
        """The n-gram losses of `text`; kept on disk too when `persist` (the validation text)."""
        key = self.key(texts, text, max_order)
        found = self._memory.get(key)
        if found is not None:
            return found
        with self._lock:
            counting = self._counting.setdefault(key, threading.Lock())
        with counting:                   # two asking for the same count: the second finds the first's
            found = self._memory.get(key) or (self._read(key) if persist else None)
            if found is None:
                vocab = model.vocab
                found = kneser_ney_losses(vocab.encode(texts.train).astype(np.int64),
                                          vocab.encode(text).astype(np.int64), len(vocab), max_order)
                if persist:
                    self._write(key, found)
            self._memory.put(key, found)
        with self._lock:
            self._counting.pop(key, None)
        return found

    def counted(self, texts: Texts, text: str, max_order: int, persist: bool = False) -> bool:
        """Whether `text`'s n-gram losses are kept (in memory, or on disk when `persist`), so
        asking costs no count of the training text: for the request's expected cost."""
        key = self.key(texts, text, max_order)
        return self._memory.get(key) is not None or (persist and self._path(key).exists())

    def train_words(self, texts: Texts) -> dict:
        """Word counts of the training text, for the rare-word oracle; counted once per corpus."""
        return self._words.get_or_make(texts.corpus_sha256, lambda: word_counts(texts.train))

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.npz"

    def _read(self, key: str) -> NGramLosses | None:
        try:
            with np.load(self._path(key)) as f:
                return NGramLosses(f["loss"], f["discounts"])
        except (OSError, KeyError, ValueError):
            return None

    def _write(self, key: str, result: NGramLosses) -> None:
        """Best effort: a full disk costs a recount later, never the answer."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self._path(key).with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, loss=result.loss, discounts=result.discounts)
            os.replace(tmp, self._path(key))
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except (OSError, UnboundLocalError):
                pass
