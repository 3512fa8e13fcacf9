"""The rnnscope command line: train, sample, serve."""
from __future__ import annotations

import copy
import errno
import itertools
import secrets
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

import typer

from rnnscope.model.bundled import BUNDLED, bundled_paths
from rnnscope.model.checkpoint import (CheckpointError, load_model, load_train_state, save_model,
                                       save_train_state)
from rnnscope.model.lm import LanguageModel
from rnnscope.model.network import ModelConfig
from rnnscope.model.sample import generate
from rnnscope.model.train import (TrainConfig, TrainEvent, TrainingDiverged, continue_from, corpus_sha256,
                                  train as train_model)
from rnnscope.model.vocab import UnknownCharactersError, Vocab

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Look inside character-level recurrent language models.")


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# Why a run ended, as the progress line's last words (model.train.TrainResult.stopped).
STOP_REASONS = {"max_steps": "reached --max-steps", "max_seconds": "stopped by --max-seconds",
                "cancelled": "cancelled"}


class ProgressPrinter:
    """A one-line bar on a terminal; a plain log line every `every` steps otherwise."""

    def __init__(self, every: int = 100, stream=None):
        self.stream, self.every = stream or sys.stderr, every
        self.tty = self.stream.isatty()
        self.width = 24
        self.line = ""              # the bar as last drawn, to be overwritten whole

    def bar(self, step: int, max_steps: int) -> str:
        done = int(self.width * min(step, max_steps) / max_steps)
        return f"[{'#' * done}{'.' * (self.width - done)}]"

    def redraw(self, line: str) -> None:
        self.stream.write("\r" + line.ljust(len(self.line)))
        self.line = line

    def __call__(self, e: TrainEvent) -> None:
        val = f" val {e.val_loss:.4f}" if e.val_loss is not None else ""
        if self.tty:
            best = f" best val {e.best_val_loss:.4f}" if e.best_val_loss is not None else ""
            self.redraw(f"{self.bar(e.step, e.max_steps)} step {e.step}/{e.max_steps} loss {e.loss:.4f}{best} "
                        f"{e.chars_per_sec:,.0f} chars/s ETA {format_seconds(e.eta_seconds)}")
            if e.val_loss is not None:
                self.stream.write(f"\n  step {e.step}: val loss {e.val_loss:.4f}\n")
                self.line = ""
            self.stream.flush()
        elif e.step % self.every == 0 or e.val_loss is not None:
            print(f"step {e.step}/{e.max_steps} epoch {e.epoch:.2f} loss {e.loss:.4f}{val} "
                  f"grad_norm {e.grad_norm:.3f}{' clipped' if e.clipped else ''} lr {e.learning_rate:.2e} "
                  f"{e.chars_per_sec:,.0f} chars/s eta {format_seconds(e.eta_seconds)}",
                  file=self.stream, flush=True)

    def finish(self, step: int, max_steps: int, stopped: str) -> None:
        """Say why training ended where the bar stands, instead of leaving it at "ETA 0:00"
        short of max_steps."""
        reason = f"{STOP_REASONS.get(stopped, stopped)} at step {step:,} of {max_steps:,}"
        if self.tty:
            self.redraw(f"{self.bar(step, max_steps)} {reason}")
            self.stream.write("\n")
            self.line = ""
        else:
            print(reason, file=self.stream)
        self.stream.flush()


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
    batch_size: int = typer.Option(32, help="sequences trained side by side in each step"),
    seq_length: int = typer.Option(100, help="characters per sequence: how far back each step backpropagates"),
    learning_rate: float = typer.Option(2e-3, help="the optimizer's step size"),
    optimizer: str = typer.Option("adam", help="adam or adagrad"),
    lr_decay: float = typer.Option(0.97, help="multiply the learning rate by this once per epoch..."),
    lr_decay_after: float = typer.Option(10, help="...after this many epochs"),
    grad_clip: float = typer.Option(5.0, help="clip the gradient's global norm to this; 0 = never"),
    dropout: float = typer.Option(0.0, help="fraction of each layer's outputs zeroed in training, in [0, 1)"),
    max_steps: int | None = typer.Option(None, help=r"steps to train \[default: 5000, or the resumed run's]"),
    max_seconds: float | None = typer.Option(None, help=r"total time budget in seconds "
                                                         r"\[default: none, or the resumed run's]"),
    val_fraction: float = typer.Option(0.1, help="the last fraction of the corpus, held out to validate"),
    eval_every: int = typer.Option(500, help="steps between validations (the best weights are kept)"),
    seed: int = typer.Option(0, help="the same seed gives the same initial weights and dropout"),
    threads: int = typer.Option(0, help="BLAS threads, 0 = all"),
    state: Path | None = typer.Option(None, help="also keep a resumable training state in this file, "
                                                    "written at every validation and at the end"),
    resume: Path | None = typer.Option(None, help="continue the run saved in this state file (its model "
                                                     "and training options; --max-steps/--max-seconds extend it)"),
    init: Path | None = typer.Option(None, help="start from this checkpoint's weights, cell, size and vocabulary, "
                                                 "with a fresh optimizer and the options given here (to train a "
                                                 "bundled model further); steps count on from its"),
):
    """Train a model on CORPUS and save the weights with the best validation loss."""
    try:
        text = corpus.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read {corpus} as UTF-8 text: {e}")
    resumed = vocab = initial = None
    if resume is not None and init is not None:
        fail("give --resume (a training state) or --init (a checkpoint), not both")
    try:
        if init is not None:
            initial = load_model(init)
            resumed = continue_from(initial, seed)
            model_cfg, vocab = initial.config, initial.vocab
            vocab.encode(text)                    # the corpus must be written in the checkpoint's characters
        if resume is not None:
            run_model, resumed = load_train_state(resume)
            if run_model.history.get("corpus_sha256") != corpus_sha256(text):
                fail(f"{resume} was trained on another corpus ({run_model.history.get('corpus_name')}); "
                     f"pass that file")
            model_cfg, vocab = run_model.config, run_model.vocab
            options = run_model.train_config | {k: v for k, v in
                                                (("max_steps", max_steps), ("max_seconds", max_seconds)) if v is not None}
            cfg = TrainConfig(**options)
        else:
            if initial is None:
                model_cfg = ModelConfig(cell, 1, hidden, layers)
            cfg = TrainConfig(batch_size, seq_length, learning_rate, optimizer, lr_decay, lr_decay_after,
                              grad_clip, dropout, 5000 if max_steps is None else max_steps, max_seconds or 0.0,
                              val_fraction, eval_every, seed=seed)
    except UnknownCharactersError as e:
        fail(f"{init} cannot read {corpus}: {e}")
    except (ValueError, CheckpointError) as e:
        fail(str(e))
    vocab = vocab or Vocab.from_text(text)
    printer = ProgressPrinter()

    def save_state(snapshot) -> None:
        run_cfg = ModelConfig(model_cfg.cell, len(vocab), model_cfg.hidden_size, model_cfg.num_layers)
        summary = {"corpus_name": corpus.name, "corpus_sha256": corpus_sha256(text)}
        save_train_state(state, LanguageModel(run_cfg, vocab, snapshot.params, asdict(cfg), summary), snapshot)

    def progress(event: TrainEvent) -> None:
        printer(event)
        if state is not None and event.val_loss is not None:
            save_state(event.snapshot())

    from threadpoolctl import threadpool_limits
    start = time.perf_counter()
    try:
        with threadpool_limits(threads or None):
            result = train_model(text, model_cfg, cfg, progress, corpus_name=corpus.name, vocab=vocab,
                                 resume=resumed)
    except (ValueError, TrainingDiverged) as e:
        fail(str(e))
    h = result.model.history
    if initial is not None:                   # the checkpoint's own training counts toward the total
        h["seconds"] = round(h["seconds"] + initial.history.get("seconds", 0.0), 1)
        h["initialised_from"] = f"{init.name} at step {initial.history.get('steps', 0)}"
    printer.finish(h["steps"], cfg.max_steps, result.stopped)
    save_model(result.model, out)
    if state is not None:
        save_state(result.state)
    best = f"{h['best_val_loss']:.4f}" if h.get("best_val_loss") is not None else "n/a"
    typer.echo(f"{h['steps']} steps in {format_seconds(time.perf_counter() - start)}; "
               f"best validation loss {best} nats/char; saved {out}")


@cli.command("sample")
def sample_text(
    model: str = typer.Argument(..., help="a .safetensors checkpoint, or a bundled model id: "
                                          + ", ".join(BUNDLED)),
    prime: str = typer.Option("", help="text to read first; printed, then continued"),
    temperature: float = typer.Option(1.0, min=0.0, max=5.0, help="below 1 safer, above 1 wilder, 0 greedy"),
    length: int = typer.Option(500, min=0, help="characters to write"),
    top_k: int = typer.Option(0, min=0, help="draw among the k likeliest characters only; 0 = all"),
    seed: int | None = typer.Option(None, min=0, help="the same seed writes the same text"),
):
    """Write text with a model, streamed to stdout as it is drawn."""
    path = Path(model)
    if not path.exists() and model in BUNDLED:
        if model not in bundled_paths():
            fail(f"the bundled model {model!r} is not installed ({BUNDLED[model]}); pass a checkpoint file")
        path = bundled_paths()[model]
    try:
        lm = load_model(path)
    except CheckpointError as e:
        fail(str(e))
    out = sys.stdout
    try:
        chars = generate(lm, prime, length, temperature, top_k, seed)
        first = next(chars, None)           # reads the prime: unknown characters fail here
        out.write(prime)
        for char, _ in itertools.chain([first] if first else [], chars):
            out.write(char)
            out.flush()
    except UnknownCharactersError as e:
        fail(f"the prime has {e}")
    out.write("\n")


def check_can_listen(host: str, port: int) -> None:
    """Fail with the setting to change where uvicorn would log a bare "[Errno 98] ... address
    already in use"; binds as uvicorn does, then lets go of the port for it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                fail(f"port {port} on {host} is already in use: pick a free one with --port or RNNSCOPE_PORT "
                     f"(e.g. `make serve RNNSCOPE_PORT={port + 1}`)")
            fail(f"cannot listen on {host}:{port} ({e.strerror or e}): check --host/RNNSCOPE_HOST and "
                 f"--port/RNNSCOPE_PORT")


@cli.command()
def serve(
    host: str | None = typer.Option(None, help="interface to listen on (default 127.0.0.1, or RNNSCOPE_HOST)"),
    port: int | None = typer.Option(None, help="(default 8000, or RNNSCOPE_PORT)"),
    data_dir: Path | None = typer.Option(None, help="holds models/*.safetensors (default ./data, or "
                                                    "RNNSCOPE_DATA_DIR)"),
    no_token: bool = typer.Option(False, "--no-token", help="serve a network address without an admin "
                                                            "token (by default one is made and printed)"),
    executor: str | None = typer.Option(None, help="where runs train: thread (default, this process) or ray "
                                                   "(a Ray cluster; or RNNSCOPE_EXECUTOR)"),
    ray_address: str | None = typer.Option(None, help="the Ray cluster to join, e.g. auto or HOST:6379 "
                                                      "(default: start a local one; or RNNSCOPE_RAY_ADDRESS)"),
    max_parallel_runs: int | None = typer.Option(None, help="runs training at once (default 1 for thread, the "
                                                            "cluster's CPUs for ray; or RNNSCOPE_MAX_PARALLEL_RUNS)"),
    run_cpus: int | None = typer.Option(None, help="CPUs each run asks Ray for (default 1; or RNNSCOPE_RUN_CPUS)"),
):
    """Start the web app: one worker, the models loaded once at start-up."""
    import uvicorn
    from pydantic import SecretStr, ValidationError

    from .main import create_app
    from .web.security import is_loopback
    from .web.slow_clients import header_deadline
    from .settings import Settings
    from .training.executors import ExecutorUnavailable, check_available
    from .training.service import DataDirError, open_store

    given = {"host": host, "port": port, "data_dir": data_dir, "executor": executor, "ray_address": ray_address,
             "max_parallel_runs": max_parallel_runs, "run_cpus": run_cpus}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        fail("; ".join(f"setting {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
    try:
        open_store(settings.data_dir)[1].close()
        check_available(settings)
    except (DataDirError, ExecutorUnavailable) as e:
        fail(str(e))
    check_can_listen(settings.host, settings.port)
    if not is_loopback(settings.host) and settings.token is None and not no_token:
        # As Jupyter does: a server others can reach gets an admin, and only its starter knows the key.
        token = secrets.token_urlsafe(18)
        settings = settings.model_copy(update={"token": SecretStr(token)})
        shown = socket.gethostname() if settings.host in ("0.0.0.0", "::") else settings.host
        typer.echo(f"rnnscope is reachable from the network. Your admin URL (it may cancel or delete anyone's "
                   f"runs; keep it to yourself):\n    http://{shown}:{settings.port}/?token={token}\n"
                   "Students open the same address without the token. Set RNNSCOPE_TOKEN to choose the token, "
                   "or pass --no-token to have none.", err=True)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["rnnscope"] = {"handlers": ["default"], "level": "INFO"}   # which models loaded
    # One worker: the models and the compute slots live in this process. The h11 protocol with a
    # deadline on request headers (app/slow_clients.py); keep-alive as uvicorn's default, said here.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, workers=1, log_config=log_config,
                http=header_deadline(settings.header_timeout_seconds), timeout_keep_alive=5)


def file_id(text: str) -> str:
    """A file stem the server accepts as a model id ([a-z0-9_-], app/inference/registry.py)."""
    import re
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:64] or "imported"


@cli.command("import")
def import_model(
    model: Path = typer.Argument(..., help="the PyTorch model's state dict: .safetensors, or .pt/.pth "
                                           "(read with torch.load(weights_only=True), which needs torch)"),
    vocab: Path | None = typer.Option(None, help="the training text (its sorted characters, as most "
                                                 "tutorials build the vocabulary), or a .json list of the "
                                                 "characters in id order, or a .json mapping "
                                                 "{character: id}"),
    chars: str | None = typer.Option(None, help="instead of --vocab: the characters in id order, typed out "
                                                "or as a JSON list"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help=r"where to write the rnnscope checkpoint "
                                         r"\[default: NAME.safetensors, or MODEL-rnnscope.safetensors]"),
    name: str | None = typer.Option(None, help="a name for the model, kept in the checkpoint"),
    nonlinearity: str | None = typer.Option(None, help="tanh or relu: what an nn.RNN used (its weights "
                                                       "cannot show it; tanh is assumed, relu is refused)"),
    cell: str | None = typer.Option(None, help="rnn, gru or lstm: checked against the tensors' shapes"),
    embedding: str | None = typer.Option(None, help="the embedding's module name when the shapes leave it "
                                                    "ambiguous; `none` for one-hot input"),
    rnn: str | None = typer.Option(None, help="the recurrent module's name, when the file has several"),
    decoder: str | None = typer.Option(None, help="the final Linear's module name, when several fit"),
    probe: str | None = typer.Option(None, help=r"a text to show the next-character guesses for "
                                                r"\[default: the start of the --vocab text]"),
):
    """Open a character model trained in PyTorch: recognise its embedding, RNN/GRU/LSTM and decoder,
    and write it as an rnnscope checkpoint that computes exactly the same."""
    from .settings import Settings
    from rnnscope.model.importer import ImportLimits, ImportRefused, Roles, import_file, next_chars, probe_text, \
        vocab_from_file, vocab_from_string

    # The server's limits (RNNSCOPE_MAX_VOCAB, _PARAMETERS, _HIDDEN_SIZE): what is written here is
    # meant to be served, and the same checks keep a malformed file from costing gigabytes.
    settings = Settings()
    limits = ImportLimits(max_vocab=settings.max_vocab, max_parameters=settings.max_parameters,
                          max_hidden_size=settings.max_hidden_size)

    if vocab is not None and chars is not None:
        fail("pass either --vocab or --chars, not both")
    out = out or Path(f"{file_id(name or model.stem + '-rnnscope')}.safetensors")
    if out.resolve() == model.resolve():
        fail(f"--out {out} is the model file itself; choose another name")
    corpus_head = None
    try:
        spec = None
        if vocab is not None:
            try:
                data = vocab.read_bytes()
            except OSError as e:
                fail(f"cannot read {vocab}: {e.strerror}")
            spec = vocab_from_file(data, vocab.name, limits)
            if spec.corpus_sha256:
                corpus_head = data[:200].decode("utf-8", "ignore").replace("\r\n", "\n")
        elif chars is not None:
            spec = vocab_from_string(chars, limits)
        lm, rec = import_file(model, spec, Roles(embedding, rnn, decoder, cell, nonlinearity), limits=limits)
    except ImportRefused as e:
        fail(str(e))
    if name:
        lm.history["name"] = name
    typer.echo(f"read {model}")
    for line in rec.describe():
        typer.echo(f"  {line}")
    typer.echo(f"  vocabulary  {len(lm.vocab)} characters, from {lm.history['vocab_source']}")
    if rec.cell == "rnn" and rec.nonlinearity != "tanh":
        typer.echo("  note        an nn.RNN's weights do not show its nonlinearity; if yours used relu, "
                   "these predictions are not its own (pass --nonlinearity to say which)")
    text = probe if probe is not None else probe_text(lm, corpus_head)
    unknown = lm.vocab.unknown(text)
    if unknown:
        fail(f"the probe text has characters outside the vocabulary: {', '.join(map(repr, unknown))}")
    guesses = "  ".join(f"{c!r} {p:.3f}" for c, p in next_chars(lm, text))
    typer.echo(f"after {text!r} it expects: {guesses}")
    save_model(lm, out)
    serve_hint = (f"`rnnscope serve --data-dir {out.parent.parent}`" if out.parent.name == "models"
                  else "in <data_dir>/models/, `rnnscope serve --data-dir <data_dir>`")
    typer.echo(f"saved {out}: `rnnscope sample {out}` writes with it; {serve_hint} opens it in every view")


def main() -> None:
    cli()
