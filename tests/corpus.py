"""The tinyshakespeare text the tests read. CI checks the repository out with ../shared
beside it; on a fresh machine without it, the first 50,000 characters committed in
tests/data stand in, and only the tests that need the whole corpus (the validation
text) skip, except where RNNSCOPE_REQUIRE_CORPUS=1 (CI) makes its absence a failure."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
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
    if not SHARED.exists():
        if os.environ.get("RNNSCOPE_REQUIRE_CORPUS") == "1":
            pytest.fail(f"RNNSCOPE_REQUIRE_CORPUS=1 but {SHARED} is missing")
        pytest.skip(f"{SHARED} is not beside the repository")
    return SHARED.read_text(encoding="utf-8")
