"""The rnnscope command line: train, sample, serve."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from model.checkpoint import CheckpointError, load_model, save_model
from model.network import ModelConfig
from model.train import TrainConfig, TrainEvent, TrainingDiverged, train as train_model
from model.vocab import UnknownCharactersError

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Look inside character-level recurrent language models.")


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressPrinter:
    """A one-line bar on a terminal; a plain log line every `every` steps otherwise."""

    def __init__(self, every: int = 100, stream=sys.stderr):
        self.stream, self.every = stream, every
        self.tty = stream.isatty()

    def __call__(self, e: TrainEvent) -> None:
        val = f" val {e.val_loss:.4f}" if e.val_loss is not None else ""
        if self.tty:
            width = 24
            done = int(width * e.step / e.max_steps)
            best = f" best val {e.best_val_loss:.4f}" if e.best_val_loss is not None else ""
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] step {e.step}/{e.max_steps} "
                              f"loss {e.loss:.4f}{best} {e.chars_per_sec:,.0f} chars/s "
                              f"ETA {format_seconds(e.eta_seconds)}  ")
            if e.val_loss is not None:
                self.stream.write(f"\n  step {e.step}: val loss {e.val_loss:.4f}\n")
            self.stream.flush()
        elif e.step % self.every == 0 or e.val_loss is not None:
            print(f"step {e.step}/{e.max_steps} epoch {e.epoch:.2f} loss {e.loss:.4f}{val} "
                  f"grad_norm {e.grad_norm:.3f}{' clipped' if e.clipped else ''} lr {e.learning_rate:.2e} "
                  f"{e.chars_per_sec:,.0f} chars/s eta {format_seconds(e.eta_seconds)}",
                  file=self.stream, flush=True)


@cli.callback()
def root() -> None:
    """Look inside character-level recurrent language models."""


def fail(message: str) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@cli.command()
def train(
    corpus: Path = typer.Argument(..., help="UTF-8 text file to learn from"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the .safetensors checkpoint"),
    cell: str = typer.Option("lstm", help="rnn, gru or lstm"),
    hidden: int = typer.Option(256, help="hidden units per layer"),
    layers: int = typer.Option(2, help="stacked recurrent layers"),
    batch_size: int = typer.Option(32), seq_length: int = typer.Option(100),
    learning_rate: float = typer.Option(2e-3), optimizer: str = typer.Option("adam", help="adam or adagrad"),
    lr_decay: float = typer.Option(0.97), lr_decay_after: float = typer.Option(10, help="epochs"),
    grad_clip: float = typer.Option(5.0), dropout: float = typer.Option(0.0),
    max_steps: int = typer.Option(5000), max_seconds: float = typer.Option(0.0, help="time budget, 0 = none"),
    val_fraction: float = typer.Option(0.1), eval_every: int = typer.Option(500),
    seed: int = typer.Option(0), threads: int = typer.Option(0, help="BLAS threads, 0 = all"),
):
    """Train a model on CORPUS and save the weights with the best validation loss."""
    try:
        text = corpus.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {corpus} as UTF-8 text: {e}")
    try:
        model_cfg = ModelConfig(cell, 1, hidden, layers)
        cfg = TrainConfig(batch_size, seq_length, learning_rate, optimizer, lr_decay, lr_decay_after, grad_clip,
                          dropout, max_steps, max_seconds, val_fraction, eval_every, seed=seed)
    except ValueError as e:
        fail(str(e))
    from threadpoolctl import threadpool_limits
    start = time.perf_counter()
    try:
        with threadpool_limits(threads or None):
            result = train_model(text, model_cfg, cfg, ProgressPrinter(), corpus_name=corpus.name)
    except (ValueError, TrainingDiverged) as e:
        fail(str(e))
    save_model(result.model, out)
    h = result.model.history
    best = f"{h['best_val_loss']:.4f}" if h.get("best_val_loss") is not None else "n/a"
    typer.echo(f"\n{h['steps']} steps in {format_seconds(time.perf_counter() - start)} ({result.stopped}); "
               f"best validation loss {best} nats/char; saved {out}")


def main() -> None:
    cli()
