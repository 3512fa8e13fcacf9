"""The training loop: char-rnn batching, truncated BPTT with carried state, clipping,
learning-rate decay, periodic validation, the best weights kept, a clear stop on divergence."""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from . import network
from .data import StreamBatches, eval_chunks, num_batches, split
from .layers import softmax_cross_entropy
from .lm import LanguageModel
from .network import ModelConfig, State
from .optim import OPTIMIZERS, clip_by_global_norm
from .vocab import Vocab


@dataclass
class TrainConfig:
    batch_size: int = 32          # B streams: enough rows for the per-step GEMMs to run near peak
    seq_length: int = 100         # T: truncated BPTT span; state still flows across batches
    learning_rate: float = 2e-3   # char-rnn's Adam default
    optimizer: str = "adam"       # or "adagrad", as in min-char-rnn
    lr_decay: float = 0.97        # multiply the rate by this once per epoch...
    lr_decay_after: float = 10    # ...after this many epochs (char-rnn's schedule)
    grad_clip: float = 5.0        # global-norm threshold; 0 disables clipping
    dropout: float = 0.0          # after every layer; 0.25 keeps a 2x256 model on 1 MB from overfitting
    max_steps: int = 5000
    max_seconds: float = 0.0      # wall-clock budget, 0 for none; how the bundled models share a budget
    val_fraction: float = 0.1     # the last 10% of the corpus validates
    eval_every: int = 500         # steps between validation passes
    val_max_chars: int = 200_000  # bound each validation pass's cost
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        for name in ("batch_size", "seq_length", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")


@dataclass
class TrainEvent:
    """What the progress callback sees after every step."""

    step: int
    max_steps: int
    epoch: float
    loss: float
    grad_norm: float              # global norm before clipping
    clipped: bool
    learning_rate: float
    chars_per_sec: float
    eta_seconds: float
    val_loss: float | None        # set on the steps that ran validation
    best_val_loss: float | None
    params: dict[str, np.ndarray] = field(repr=False)   # current weights, read-only
    snapshot: Callable[[], "TrainState"] = field(repr=False)  # a resumable copy of the run now


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def copy(self) -> History:
        return History(*(list(getattr(self, f.name)) for f in fields(self)))

    def summary(self) -> dict:
        recent = self.loss[-100:]
        return {
            "steps": self.step[-1] if self.step else 0,
            "train_loss": float(np.mean(recent)) if recent else None,
            "val_loss": self.val_loss[-1] if self.val_loss else None,
            "best_val_loss": min(self.val_loss) if self.val_loss else None,
        }


@dataclass
class TrainResult:
    model: LanguageModel          # the weights with the best validation loss
    history: History
    seconds: float
    stopped: str                  # "max_steps", "max_seconds" or "cancelled"
    state: "TrainState"           # resume from here to train further


def evaluate(model_cfg: ModelConfig, params: dict, ids: np.ndarray, batch_size: int = 32,
             seq_length: int = 100) -> float:
    """Mean loss in nats/char over `ids`, read as streams with carried state."""
    state, total, count = None, 0.0, 0
    for x, y in eval_chunks(ids, batch_size, seq_length):
        logits, state, _ = network.forward(model_cfg, params, x, state)
        loss, _, _ = softmax_cross_entropy(logits, y, need_grad=False)
        total += loss * y.size
        count += y.size
    return total / count


@dataclass
class TrainState:
    """Everything needed to continue a run exactly where it stopped: resuming from a
    state gives the same weights as never having stopped."""

    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    step: int
    carried: State | None                 # recurrent state carried into the next batch
    rng: dict                             # the dropout generator's bit-generator state
    best_params: dict[str, np.ndarray] | None
    best_val: float
    history: History
    seconds: float                        # training time spent so far


def continue_from(model: LanguageModel, seed: int = 0) -> TrainState:
    """A run that starts from a trained model's weights with a fresh optimizer, for a checkpoint
    saved without its training state (the bundled models). Its step count carries on from the
    model's, so the learning-rate schedule continues where that run left it."""
    params = {k: np.array(v, dtype=np.float32) for k, v in model.params.items()}
    return TrainState(params, {}, int(model.history.get("steps", 0)), None,
                      np.random.default_rng(seed).bit_generator.state, None, math.inf, History(), 0.0)


def train(text: str, model_cfg: ModelConfig, cfg: TrainConfig,
          progress: Callable[[TrainEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          corpus_name: str = "corpus", vocab: Vocab | None = None,
          dtype=np.float32, resume: TrainState | None = None) -> TrainResult:
    """Train a model on `text` (model_cfg.vocab_size is taken from the vocabulary), or
    continue the run captured in `resume`. The result's `state` resumes it again."""
    vocab = vocab or Vocab.from_text(text)
    model_cfg = ModelConfig(model_cfg.cell, len(vocab), model_cfg.hidden_size, model_cfg.num_layers)
    train_text, val_text = split(text, cfg.val_fraction)
    # The smallest integer type that holds the vocabulary: uint8 ids for a 50 MB corpus are
    # 50 MB where int64 would be 400 MB.
    train_ids = vocab.encode(train_text, vocab.id_dtype)
    val_ids = vocab.encode(val_text[: cfg.val_max_chars], vocab.id_dtype) if len(val_text) > 1 else None
    if num_batches(len(train_ids), cfg.batch_size, cfg.seq_length) < 1:
        raise ValueError(f"the training text has {len(train_ids)} characters, too few for one "
                         f"batch of {cfg.batch_size} x {cfg.seq_length}; lower batch_size or seq_length")
    batches = StreamBatches(train_ids, cfg.batch_size, cfg.seq_length)
    per_epoch = len(batches)

    if resume is None:
        params = network.init_params(model_cfg, cfg.seed, dtype)
        resume = TrainState(params, {}, 0, None, np.random.default_rng(cfg.seed).bit_generator.state,
                            None, math.inf, History(), 0.0)
    params, step, carried, history = resume.params, resume.step, resume.carried, resume.history
    best_params, best_val = resume.best_params, resume.best_val
    optimizer = OPTIMIZERS[cfg.optimizer](params)
    if resume.optimizer:
        optimizer.load_state(resume.optimizer)
    rng = np.random.default_rng()
    rng.bit_generator.state = resume.rng
    # Cross-entropy starts near ln V; three times that means the run has blown up (char-rnn).
    explode_at = 3.0 * math.log(len(vocab))
    chars_per_step = cfg.batch_size * cfg.seq_length
    first_step = step

    def snapshot() -> TrainState:
        """The run now, in arrays and lists later steps leave alone: it may be written after
        they ran (the Ray executor queues and ships a checkpoint while training goes on)."""
        return TrainState({k: v.copy() for k, v in params.items()},
                          {k: v.copy() for k, v in optimizer.state().items()}, step,
                          None if carried is None else State(*(None if a is None else a.copy() for a in carried)),
                          rng.bit_generator.state, best_params, best_val, History.copy(history),
                          resume.seconds + time.perf_counter() - start)

    start = time.perf_counter()
    stopped = None
    while stopped is None:
        k = step % per_epoch
        if k == 0:
            carried = None                                 # each epoch starts from a zero state
        x, y = batches[k]
        decays = max(0, math.floor(step / per_epoch - cfg.lr_decay_after) + 1)
        lr = cfg.learning_rate * cfg.lr_decay ** decays
        logits, carried, cache = network.forward(model_cfg, params, x, carried, cfg.dropout, rng)
        loss, dlogits, _ = softmax_cross_entropy(logits, y)
        if not math.isfinite(loss) or loss > explode_at:
            raise TrainingDiverged(f"loss is exploding ({loss:.3g} at step {step + 1}), aborting; "
                                   "lower the learning rate or the gradient clip")
        grads = network.backward(model_cfg, params, dlogits, cache).params
        grad_norm, clipped = clip_by_global_norm(grads, cfg.grad_clip)
        optimizer.step(params, grads, lr)
        step += 1
        history.step.append(step)
        history.loss.append(loss)
        history.grad_norm.append(grad_norm)
        history.clipped.append(clipped)

        elapsed = time.perf_counter() - start
        out_of_time = cfg.max_seconds > 0 and resume.seconds + elapsed >= cfg.max_seconds
        if step >= cfg.max_steps:
            stopped = "max_steps"
        elif out_of_time:
            stopped = "max_seconds"
        elif should_stop is not None and should_stop():
            stopped = "cancelled"
        val_loss = None
        if val_ids is not None and (step % cfg.eval_every == 0 or stopped):
            val_loss = evaluate(model_cfg, params, val_ids, cfg.batch_size, cfg.seq_length)
            history.val_step.append(step)
            history.val_loss.append(val_loss)
            if val_loss < best_val:
                best_val = val_loss
                best_params = {k: v.copy() for k, v in params.items()}
        if progress is not None:
            elapsed = time.perf_counter() - start
            per_step = elapsed / (step - first_step)
            eta = per_step * (cfg.max_steps - step)
            if cfg.max_seconds > 0:
                eta = min(eta, max(0.0, cfg.max_seconds - resume.seconds - elapsed))
            progress(TrainEvent(step, cfg.max_steps, step / per_epoch, loss, grad_norm, clipped, lr,
                                chars_per_step / per_step, eta, val_loss,
                                None if best_params is None else best_val, params, snapshot))

    state = snapshot()
    summary = history.summary() | {
        "corpus_name": corpus_name,
        "corpus_sha256": corpus_sha256(text),
        "corpus_chars": len(text),
        "seconds": round(state.seconds, 1),
        "stopped": stopped,
    }
    model = LanguageModel(model_cfg, vocab, best_params if best_params is not None else params,
                          asdict(cfg), summary)
    return TrainResult(model, history, state.seconds, stopped, state)


def corpus_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
