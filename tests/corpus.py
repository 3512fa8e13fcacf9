"""The corpora the tests read. CI checks the repository out with ../shared beside it; on a
fresh machine without it, the first 50,000 characters committed in tests/data stand in for
tinyshakespeare's head, and the whole corpora (the validation text) are the copies the bundled
models ship; only a test that compares those copies with ../shared skips, except where
RNNSCOPE_REQUIRE_CORPUS=1 (CI) makes the absence of ../shared a failure."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from rnnscope.model.bundled import bundled_corpora, read_text

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
SHARED = CORPORA / "tinyshakespeare.txt"
HEAD = Path(__file__).resolve().parent / "data" / "tinyshakespeare-head.txt"


def shakespeare_head(chars: int) -> str:
    """The first `chars` characters (at most 50,000), from ../shared or the committed head."""
    path = SHARED if SHARED.exists() else HEAD
    with open(path, encoding="utf-8") as f:
        text = f.read(chars)
    assert len(text) == chars or path == SHARED, f"the committed head holds fewer than {chars} characters"
    return text


def shakespeare_full() -> str:
    """The whole corpus; skips the calling test where ../shared is absent (fails in CI)."""
    return shared_corpus(SHARED.name)


def shared_corpus(name: str) -> str:
    """A whole corpus of ../shared/corpora, else the copy the bundled models ship (the same
    text: tests/test_bundled_texts.py checks); skips the calling test where neither has it."""
    if not (CORPORA / name).exists() and name in bundled_corpora():
        return read_text(bundled_corpora()[name])
    return shared_only(name)


def shared_only(name: str) -> str:
    """A whole corpus of ../shared/corpora; skips the calling test where it is absent (fails in CI)."""
    path = CORPORA / name
    if not path.exists():
        if os.environ.get("RNNSCOPE_REQUIRE_CORPUS") == "1":
            pytest.fail(f"RNNSCOPE_REQUIRE_CORPUS=1 but {path} is missing")
        pytest.skip(f"{path} is not beside the repository")
    return path.read_text(encoding="utf-8")
