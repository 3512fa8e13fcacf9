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


def test_the_cluster_table_counts_each_replica_from_the_class_start_by_its_node():
    """`bench class --cluster` reads the replicas' counters as the class starts and ends: what
    a replica did is the difference, a replica started meanwhile counts from zero, and its node
    is named by its role in the cluster (the head is where no compute should run)."""
    from bench.classroom import replica_summary

    roles = {"h" * 56: "head (0 CPUs)", "a" * 56: "worker node 1 (1 CPU)", "b" * 56: "worker node 2 (1 CPU)"}
    start = {"replica-0-x": {"node_id": "a" * 56, "pid": 10, "calls": {"alone": 3, "model": 2}, "cpu_seconds": 1.5},
             "replica-1-y": {"node_id": "b" * 56, "pid": 11, "calls": {"alone": 1}, "cpu_seconds": 1.0}}
    end = {"replica-0-x": {"node_id": "a" * 56, "pid": 10, "calls": {"alone": 7, "admit": 5, "step": 40, "model": 2,
                                                                      "run gate_saturation": 6}, "cpu_seconds": 9.5},
           "replica-2-z": {"node_id": "h" * 56, "pid": 12, "calls": {"admit": 2, "step": 9}, "cpu_seconds": 0.5}}
    first, replacement = replica_summary(start, end, roles)
    assert first["node"] == "worker node 1 (1 CPU)"
    assert first["calls"] == {"admit": 5, "alone": 4, "model": 0, "run gate_saturation": 6, "step": 40}
    assert (first["work_taken"], first["cpu_seconds"]) == (15, 8.0)       # not the steps, not the models sent
    assert (replacement["node"], replacement["work_taken"], replacement["cpu_seconds"]) == ("head (0 CPUs)", 2, 0.5)
