"""A model's training corpus, found by the sha256 its checkpoint records, a suffix-array
index of it built once and kept (model/memorisation.py), and passages of it to read.

Corpora are looked for first among those the bundled models ship with (model/weights/*.txt.gz,
so a clone or a wheel has its models' texts), then in settings.corpus_paths and the uploads in
<data_dir>/corpora. Each file is hashed once per (size, mtime); the texts last read are kept.
"""
from __future__ import annotations

import hashlib
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from rnnscope.model.bundled import bundled_corpora, read_text
from rnnscope.model.data import split
from rnnscope.model.lm import LanguageModel
from rnnscope.model.memorisation import SuffixIndex

from ..settings import Settings
from .lru import LRU
from .registry import Entry


@dataclass(frozen=True)
class Corpus:
    name: str            # the file name the checkpoint records: tinyshakespeare.txt, not .txt.gz
    path: Path
    sha256: str


class CorpusLibrary:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._hashes: dict[Path, tuple[tuple[int, float], str]] = {}
        self._texts: LRU[str, str] = LRU(settings.corpus_cache_texts)
        self._indexes: LRU[str, SuffixIndex] = LRU(settings.max_corpus_indexes)
        self._lock = threading.Lock()              # one build at a time; the rest wait for it

    def candidates(self) -> list[Path]:
        paths = list(bundled_corpora().values()) + [Path(p) for p in self.settings.corpus_paths]
        uploads = self.settings.data_dir / "corpora"
        if uploads.is_dir():
            paths += sorted(uploads.glob("*.txt"))
        return [p for p in paths if p.is_file()]

    def _sha(self, path: Path) -> tuple[str, str | None]:
        """The file's digest, and its text when hashing had to read it (None when known)."""
        st = path.stat()
        stamp = (st.st_size, st.st_mtime)
        known = self._hashes.get(path)
        if known and known[0] == stamp:
            return known[1], None
        # The same digest as model.train.corpus_sha256: of the text as UTF-8.
        text = read_text(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self._hashes[path] = (stamp, digest)
        return digest, text

    def find(self, sha256: str | None) -> Corpus | None:
        if not sha256:
            return None
        with self._lock:
            for path in self.candidates():
                try:
                    digest, text = self._sha(path)
                    if digest == sha256:
                        if text is not None:       # just read: the view that asked reads it next
                            self._texts.put(sha256, text)
                        return Corpus(path.name.removesuffix(".gz"), path, sha256)
                except (OSError, UnicodeDecodeError, EOFError, zlib.error):   # the last two: a broken .gz
                    continue
        return None

    def text(self, corpus: Corpus) -> str:
        """The corpus's text, read once and kept (the `corpus_cache_texts` last used)."""
        return self._texts.get_or_make(corpus.sha256, lambda: read_text(corpus.path))

    def indexed(self, corpus: Corpus) -> bool:
        """Whether the corpus's suffix index is built and kept: for a request's expected cost."""
        return self._indexes.get(corpus.sha256) is not None

    def index(self, corpus: Corpus) -> SuffixIndex:
        """The corpus's suffix index, built on first use (~1 s per MB) and kept, the
        `max_corpus_indexes` most recently used at most."""
        with self._lock:
            return self._indexes.get_or_make(corpus.sha256, lambda: SuffixIndex(self.text(corpus)))


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    part: str            # "validation", "training" or "sample"


def _line_start(text: str, at: int) -> int:
    """The start of the first paragraph (after a blank line) within PARAGRAPH_SEARCH
    characters of `at`, else of the next line: a passage opens on whole lines."""
    para = text.find("\n\n", at, at + PARAGRAPH_SEARCH)
    line = text.find("\n", at)
    start = para + 2 if para >= 0 else at if line < 0 else line + 1
    while start < len(text) - 1 and text[start] == "\n":
        start += 1
    return start


def _passage(text: str, start: int, size: int) -> str:
    """Whole lines of `text` from `start`, at least `size` characters unless the text ends."""
    end = text.find("\n", start + size)
    return text[start:] if end < 0 else text[start:end + 1]


def _title(part: str, passage: str) -> str:
    """The passage's first words, cut at a word unless that leaves too few, and its part."""
    flat = " ".join(passage.split())
    if len(flat) > TITLE_CHARS:
        cut = flat[:TITLE_CHARS].rsplit(" ", 1)[0]
        flat = (cut if len(cut) > TITLE_CHARS // 2 else flat[:TITLE_CHARS]) + "…"
    return f"{flat} ({part})"


# A passage is a screenful: the explorer colours it and the heatmap stays readable.
PASSAGE_CHARS = 400
PARAGRAPH_SEARCH = 1_500
TITLE_CHARS = 40


def val_fraction(model: LanguageModel) -> float:
    """The last fraction of its corpus a model held out to validate, as its checkpoint records
    it (0.1, model.train's default, when it does not say)."""
    config = model.train_config if isinstance(model.train_config, dict) else {}
    return float(config.get("val_fraction", 0.1))


def corpus_passages(text: str, val_fraction: float, known: set[str], count: int = 3,
                    size: int = PASSAGE_CHARS) -> list[Passage]:
    """`count` passages spread over the validation part of a corpus (text the model never
    trained on), then the opening of its training part; only whole lines, and only
    passages the model's vocabulary (`known`) can read."""
    train, val = split(text, val_fraction)
    out = []
    if len(val) > size:
        step = (len(val) - size) // count
        for k in range(count):
            start = _line_start(val, k * step)
            out.append(Passage(_title("validation", p := _passage(val, start, size)), p, "validation"))
    if train:
        out.append(Passage(_title("training text", p := _passage(train, 0, size)), p, "training"))
    seen, unique = set(), []
    for p in out:
        if p.text.strip() and p.text not in seen and set(p.text) <= known:
            seen.add(p.text)
            unique.append(p)
    return unique


def training_corpus(entry: Entry, library: CorpusLibrary):
    history = entry.model.history if isinstance(entry.model.history, dict) else {}
    return library.find(history.get("corpus_sha256"))
