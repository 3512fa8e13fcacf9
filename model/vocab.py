"""Character vocabulary over Unicode code points."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


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
        # Code point -> id lookup table, so encoding is one vectorised gather.
        self._table = np.full(max(map(ord, self.chars)) + 1, -1, dtype=np.int64)
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

    def encode(self, text: str) -> np.ndarray:
        """Text -> ids (T,) int64; raises UnknownCharactersError naming the strangers."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        in_range = codes < len(self._table)
        ids = np.full(codes.shape, -1, dtype=np.int64)
        ids[in_range] = self._table[codes[in_range]]
        if (ids < 0).any():
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
