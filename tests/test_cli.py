"""The rnnscope command line: train, resume, sample."""
import numpy as np
from typer.testing import CliRunner

from app.cli import cli
from model.checkpoint import load_model

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
