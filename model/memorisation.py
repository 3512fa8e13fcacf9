"""Verbatim memorisation: which spans of a text appear word for word in a corpus.

A suffix array of the corpus, built once with numpy by prefix doubling, turns each lookup
into a binary search: the longest prefix of query[i:] found anywhere in the corpus is
shared with one of the two suffixes next to where query[i:] would sort.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def suffix_array(c: np.ndarray, depth: int) -> np.ndarray:
    """Start positions of the suffixes of c (n,) sorted by their first `depth` symbols
    (suffixes equal that far keep an arbitrary order). Prefix doubling: after the pass
    with span k every suffix is ranked by its first 2k symbols, so log2(depth) argsorts."""
    n = len(c)
    if n == 0:
        return np.zeros(0, np.int64)
    _, rank = np.unique(c, return_inverse=True)
    rank = rank.astype(np.int64)
    sa = np.argsort(rank, kind="stable")
    k = 1
    while k < depth:
        second = np.full(n, -1, np.int64)                   # past the end sorts first
        second[:n - k] = rank[k:]
        key = rank * (n + 1) + (second + 1)                 # < (n+1)^2: fits int64 below 3e9 symbols
        sa = np.argsort(key, kind="stable")
        sorted_key = key[sa]
        new = np.empty(n, np.int64)
        new[sa] = np.concatenate([[0], np.cumsum(sorted_key[1:] != sorted_key[:-1])])
        rank = new
        if rank[sa[-1]] == n - 1:                          # every suffix distinct: done early
            break
        k *= 2
    return sa


@dataclass
class Span:
    start: int            # in the query
    end: int              # exclusive
    corpus_position: int  # where the same characters start in the corpus


class SuffixIndex:
    """Longest verbatim matches of a query's substrings in `text`. Suffixes are sorted by
    their first `max_match` characters; a match that long is followed on character by character."""

    def __init__(self, text: str, max_match: int = 256):
        self.text = text
        self.max_match = max_match
        self.codes = codes(text)
        self.sa = suffix_array(self.codes, max_match)

    def _lcp(self, pos: int, q: np.ndarray) -> int:
        a = self.codes[pos:pos + len(q)]
        m = min(len(a), len(q))
        diff = np.flatnonzero(a[:m] != q[:m])
        return int(diff[0]) if diff.size else m

    def _bound(self, qs: str, upper: bool) -> int:
        """The first suffix whose first len(qs) characters sort after qs (upper) or not
        before it (lower)."""
        lo, hi = 0, len(self.sa)
        text, m = self.text, len(qs)
        while lo < hi:
            mid = (lo + hi) // 2
            s = int(self.sa[mid])
            head = text[s:s + m]
            if head < qs or (upper and head == qs):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def longest_match(self, q: np.ndarray) -> tuple[int, int]:
        """(length, corpus position) of the longest prefix of q that occurs in the corpus."""
        full, q = q, q[: self.max_match]
        qs = "".join(map(chr, q))
        lo = self._bound(qs, upper=False)
        best = (0, -1)
        for j in (lo - 1, lo):
            if 0 <= j < len(self.sa):
                pos = int(self.sa[j])
                n = self._lcp(pos, q)
                if n > best[0]:
                    best = (n, pos)
        if best[0] == self.max_match and len(full) > self.max_match:
            # Suffixes equal for max_match characters are in no particular order: follow
            # each of them on (a bounded number; such long repeats are rare in text).
            hi = self._bound(qs, upper=True)
            for j in range(lo, min(hi, lo + 1000)):
                pos = int(self.sa[j])
                n = self._lcp(pos, full)
                if n > best[0]:
                    best = (n, pos)
        return best

    def spans(self, query: str, min_length: int) -> list[Span]:
        """Maximal spans of at least min_length characters of `query` found verbatim in the
        corpus; a span inside an earlier one is left out, overlapping ones are kept."""
        q = codes(query)
        out: list[Span] = []
        reach = 0
        i = 0
        while i <= len(q) - min_length:
            n, pos = self.longest_match(q[i:])
            if n >= min_length and i + n > reach:
                out.append(Span(i, i + n, pos))
                reach = i + n
            i += 1
        return out


def merge_spans(spans: list[Span]) -> list[Span]:
    """Spans that overlap or touch joined into one, in order: what a reader counts as one
    copied passage. A joined span keeps the corpus position of its first piece; its later
    pieces may come from elsewhere in the corpus."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        if out and s.start <= out[-1].end:
            out[-1] = Span(out[-1].start, max(out[-1].end, s.end), out[-1].corpus_position)
        else:
            out.append(Span(s.start, s.end, s.corpus_position))
    return out
