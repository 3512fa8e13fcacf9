"""The rnnscope command line: train, resume, sample, and what its help and progress say."""
import io

import numpy as np
from typer.testing import CliRunner

from rnnscope.app.cli import ProgressPrinter, cli
from rnnscope.model.checkpoint import load_model
from rnnscope.model.train import TrainEvent

runner = CliRunner()
CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n") * 30
TINY = ["--hidden", "16", "--layers", "1", "--batch-size", "4", "--seq-length", "16", "--eval-every", "10"]


def invoke(*args):
    return runner.invoke(cli, [str(a) for a in args])


def test_train_then_resume_equals_one_run_and_sample_is_reproducible(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    first = invoke("train", corpus, "--out", tmp_path / "a.safetensors", *TINY, "--max-steps", 20,
                   "--state", tmp_path / "run.state")
    assert first.exit_code == 0, first.output
    assert "step 20/20" in first.output and "best validation loss" in first.output
    resumed = invoke("train", corpus, "--out", tmp_path / "b.safetensors", "--resume", tmp_path / "run.state",
                     "--max-steps", 40)
    assert resumed.exit_code == 0, resumed.output
    whole = invoke("train", corpus, "--out", tmp_path / "c.safetensors", *TINY, "--max-steps", 40)
    assert whole.exit_code == 0, whole.output
    b, c = load_model(tmp_path / "b.safetensors"), load_model(tmp_path / "c.safetensors")
    assert b.history["steps"] == 40
    for k in b.params:
        np.testing.assert_array_equal(b.params[k], c.params[k])

    args = ("sample", tmp_path / "b.safetensors", "--prime", "All:", "--length", 50, "--seed", 7)
    one, two = invoke(*args), invoke(*args)
    assert one.exit_code == 0 and one.output == two.output
    assert one.output.startswith("All:") and len(one.output.rstrip("\n")) == 54


def test_init_continues_a_checkpoint_with_its_shape_vocabulary_and_step_count(tmp_path):
    """--init trains a saved model further (the bundled ones ship without a training state): it
    starts from exactly its weights, keeps its cell, size and characters whatever the options
    say, counts steps on from its own, and refuses a corpus its vocabulary cannot read."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    assert invoke("train", corpus, "--out", tmp_path / "a.safetensors", *TINY, "--max-steps", 20).exit_code == 0
    a = load_model(tmp_path / "a.safetensors")
    # Zero steps' worth of learning (the rate so small no float32 weight moves) shows the start.
    more = invoke("train", corpus, "--out", tmp_path / "b.safetensors", "--init", tmp_path / "a.safetensors",
                  "--hidden", 64, "--cell", "gru", "--max-steps", 30, "--eval-every", 5, "--learning-rate", 1e-30)
    assert more.exit_code == 0, more.output
    b = load_model(tmp_path / "b.safetensors")
    assert (b.config, b.vocab.chars) == (a.config, a.vocab.chars)
    assert b.history["steps"] == 30 and b.history["initialised_from"] == "a.safetensors at step 20"
    assert b.history["seconds"] > a.history["seconds"]
    for k in a.params:
        np.testing.assert_array_equal(b.params[k], a.params[k])
    other = tmp_path / "other.txt"
    other.write_text(CORPUS + "Zebra 🦓\n")
    wrong = invoke("train", other, "--out", tmp_path / "c.safetensors", "--init", tmp_path / "a.safetensors")
    assert wrong.exit_code == 2 and "cannot read" in wrong.output and "🦓" in wrong.output
    both = invoke("train", corpus, "--out", tmp_path / "c.safetensors", "--init", tmp_path / "a.safetensors",
                  "--resume", tmp_path / "a.safetensors")
    assert both.exit_code == 2 and "not both" in both.output


def test_clear_errors(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    missing = invoke("sample", tmp_path / "nope.safetensors")
    assert missing.exit_code == 2 and "cannot read" in missing.output
    bad_cell = invoke("train", corpus, "--out", tmp_path / "x.safetensors", "--cell", "transformer")
    assert bad_cell.exit_code == 2 and "unknown cell" in bad_cell.output
    invoke("train", corpus, "--out", tmp_path / "a.safetensors", *TINY, "--max-steps", 10,
           "--state", tmp_path / "run.state")
    other = tmp_path / "other.txt"
    other.write_text(CORPUS.upper())
    wrong = invoke("train", other, "--out", tmp_path / "y.safetensors", "--resume", tmp_path / "run.state")
    assert wrong.exit_code == 2 and "another corpus" in wrong.output
    unknown = invoke("sample", tmp_path / "a.safetensors", "--prime", "Zebra 🦓")
    assert unknown.exit_code == 2 and "🦓" in unknown.output


def test_train_help_shows_every_option_with_its_default_note():
    import typer

    command = typer.main.get_command(cli).commands["train"]
    undocumented = [p.name for p in command.params if p.param_type_name == "option" and not p.help]
    assert undocumented == []
    result = runner.invoke(cli, ["train", "--help"], env={"COLUMNS": "240", "TERMINAL_WIDTH": "240"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())          # the box and its wrapping undone
    # Bracketed notes are help text, not Rich markup to be swallowed.
    assert "[default: 5000, or the resumed run's]" in text
    assert "[default: none, or the resumed run's]" in text


def test_a_time_budget_ends_the_progress_line_honestly(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    out = invoke("train", corpus, "--out", tmp_path / "a.safetensors", *TINY, "--max-steps", 10**6,
                 "--max-seconds", 0.5)
    assert out.exit_code == 0, out.output
    steps = load_model(tmp_path / "a.safetensors").history["steps"]
    assert 0 < steps < 10**6
    assert f"stopped by --max-seconds at step {steps:,} of 1,000,000" in out.output

    # On a terminal the bar is redrawn with the reason instead of left at "ETA 0:00".
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    printer = ProgressPrinter(stream=stream)
    printer(TrainEvent(341, 5000, 0.5, 2.0, 1.0, False, 1e-3, 9000.0, 0.0, None, None, None, None))
    printer.finish(341, 5000, "max_seconds")
    last = stream.getvalue().split("\r")[-1]
    assert "stopped by --max-seconds at step 341 of 5,000" in last and "ETA" not in last
    assert last.endswith("\n")


def test_serve_with_the_ray_executor_but_no_ray_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)          # as if not installed: `import ray` fails
    result = invoke("serve", "--executor", "ray", "--data-dir", tmp_path, "--port", 1)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'rnnscope[cluster]'" in lines[0], result.output


def test_the_app_refuses_to_start_the_ray_executor_without_ray(tmp_path, monkeypatch):
    import sys

    import pytest
    from fastapi.testclient import TestClient

    from rnnscope.app.training.executors import ExecutorUnavailable
    from tests.training_app import build_app

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "rnnscope.app.training.ray_executor", None)
    with pytest.raises(ExecutorUnavailable, match=r"rnnscope\[cluster\]"):
        with TestClient(build_app(tmp_path, executor="ray")):
            pass


def test_serve_rejects_an_unknown_executor(tmp_path):
    result = invoke("serve", "--executor", "slurm", "--data-dir", tmp_path)
    assert result.exit_code == 2 and "executor" in result.output and "thread" in result.output, result.output


def test_serve_with_an_unreachable_ray_address_says_so_at_once(tmp_path):
    import socket
    import time

    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = invoke("serve", "--executor", "ray", "--ray-address", f"127.0.0.1:{port}", "--data-dir", tmp_path)
    assert result.exit_code == 2 and time.monotonic() - started < 10
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"RNNSCOPE_RAY_ADDRESS=127.0.0.1:{port}" in lines[0] and "ray start" in lines[0], lines
