"""Character vocabulary over Unicode code points."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


# Characters per piece when encoding: 4 MB of UTF-32 at a time.
ENCODE_CHUNK = 1 << 20


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type holding 0..vocab_size (V itself marks an unknown
    character while encoding): uint8 for up to 255 characters, uint16 up to 65,535."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"a vocabulary of {vocab_size} characters is too large")


class UnknownCharactersError(ValueError):
    """Text holds characters the vocabulary does not know; `chars` names them."""

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        shown = ", ".join(repr(c) for c in self.chars[:20])
        more = f" and {len(self.chars) - 20} more" if len(self.chars) > 20 else ""
        super().__init__(f"characters not in the model's vocabulary: {shown}{more}")


class Vocab:
    """Maps characters to integer ids 0..V-1 in sorted code-point order."""

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("vocabulary entries must be single characters")
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.id_dtype = id_dtype(len(self.chars))
        # Code point -> id lookup table, so encoding is one vectorised gather. Its last entry
        # (and every code point it has no row for) is V, the mark of an unknown character.
        self._table = np.full(max(map(ord, self.chars)) + 2, len(self.chars), dtype=self.id_dtype)
        self._table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(set(text))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self.index

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        """Text -> ids (T,); raises UnknownCharactersError naming the strangers.

        int64 by default, the index type torch's one_hot and embeddings take; a corpus asks
        for `self.id_dtype` and is encoded in pieces, so 50 MB of text costs 50 MB of uint8 ids
        and not 200 MB of UTF-32 code points plus 400 MB of int64 beside them."""
        ids = np.empty(len(text), dtype)
        last = len(self._table) - 1
        for start in range(0, len(text), ENCODE_CHUNK):
            piece = text[start:start + ENCODE_CHUNK]
            codes = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            out = ids[start:start + len(codes)]
            out[...] = self._table[np.minimum(codes, last)]
            if (out == len(self.chars)).any():
                raise UnknownCharactersError(self.unknown(text))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_string(self) -> str:
        return "".join(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} chars)"
