"""`python -m bench class --quick` (issue 21's class benchmark) against a real `rnnscope serve`:
three students click every page of the class's mix and every click is answered without an
error. How fast is the benchmark's to report; nothing here is timed."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Issue 21's mix: explore a passage, gradients on three models, a probe, a sample, gates, a state-space view.
PAGES = {"explore", "gradients", "probe", "sample", "gates", "states"}
REQUESTS = {"trace lstm", "gradients rnn", "gradients gru", "gradients lstm", "probe lstm", "sample lstm",
            "gates lstm", "states lstm"}


def test_class_benchmark_clicks_every_page_without_an_error(tmp_path):
    # The timeout only ends a hung run; the quick run takes ~20 s.
    done = subprocess.run([sys.executable, "-m", "bench", "class", "--quick", "--students", "3",
                           "--results", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "class.json").read_text())

    assert result["students"] == 3 and result["quick"]
    assert result["error_count"] == 0, result["errors"]
    assert set(result["pages"]) == PAGES
    for page, figures in result["pages"].items():
        assert figures["clicks"] >= 1, f"no click on {page}"
        assert figures["errors"] == 0, page
        assert figures["served"] + figures["refused"] == figures["clicks"], page
    assert set(result["requests"]) == REQUESTS
    overall = result["overall"]
    assert overall["clicks"] == sum(f["clicks"] for f in result["pages"].values())
    assert overall["served"] >= 1
    # A refusal is a 503 that says when to come back.
    assert overall["answers_503_with_retry_after"] == overall["answers_503"]
    assert result["server_log"]["tracebacks"] == 0
    assert "all clicks" in done.stdout and "p99 ms" in done.stdout
