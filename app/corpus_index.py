"""A model's training corpus, found by the sha256 its checkpoint records, and a suffix-array
index of it built once and kept (model/memorisation.py).

Corpora are looked for among settings.corpus_paths (the bundled models' tinyshakespeare)
and the uploads in <data_dir>/corpora. Each file is hashed once per (size, mtime).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from model.memorisation import SuffixIndex

from .settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Corpus:
    name: str
    path: Path
    sha256: str


class CorpusLibrary:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._hashes: dict[Path, tuple[tuple[int, float], str]] = {}
        self._indexes: OrderedDict[str, SuffixIndex] = OrderedDict()
        self._lock = threading.Lock()              # one build at a time; the rest wait for it

    def candidates(self) -> list[Path]:
        paths = [p if p.is_absolute() else REPO_ROOT / p for p in self.settings.corpus_paths]
        uploads = self.settings.data_dir / "corpora"
        if uploads.is_dir():
            paths += sorted(uploads.glob("*.txt"))
        return [p for p in paths if p.is_file()]

    def _sha(self, path: Path) -> str:
        st = path.stat()
        stamp = (st.st_size, st.st_mtime)
        known = self._hashes.get(path)
        if known and known[0] == stamp:
            return known[1]
        # The same digest as model.train.corpus_sha256: of the text as UTF-8.
        digest = hashlib.sha256(path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
        self._hashes[path] = (stamp, digest)
        return digest

    def find(self, sha256: str | None) -> Corpus | None:
        if not sha256:
            return None
        with self._lock:
            for path in self.candidates():
                try:
                    if self._sha(path) == sha256:
                        return Corpus(path.name, path, sha256)
                except (OSError, UnicodeDecodeError):
                    continue
        return None

    def text(self, corpus: Corpus) -> str:
        return corpus.path.read_text(encoding="utf-8")

    def index(self, corpus: Corpus) -> SuffixIndex:
        """The corpus's suffix index, built on first use (~1 s per MB) and kept, the
        `max_corpus_indexes` most recently used at most."""
        with self._lock:
            idx = self._indexes.get(corpus.sha256)
            if idx is None:
                idx = SuffixIndex(self.text(corpus))
                self._indexes[corpus.sha256] = idx
                while len(self._indexes) > self.settings.max_corpus_indexes:
                    self._indexes.popitem(last=False)
            self._indexes.move_to_end(corpus.sha256)
            return idx
