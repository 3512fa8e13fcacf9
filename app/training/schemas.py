"""Request and response bodies of the training API (corpora and runs): the contract /docs shows."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..web.schemas import StrictBody

Cell = Literal["rnn", "gru", "lstm"]
Status = Literal["queued", "running", "completed", "cancelled", "failed", "interrupted"]


# --- corpora -----------------------------------------------------------------------------

class CharCount(BaseModel):
    char: str
    count: int


class Recommendation(BaseModel):
    """A starting point for this corpus. char-rnn's rule of thumb: about as many parameters
    as training characters; far fewer underfits, far more overfits."""

    cell: Cell
    hidden_size: int
    num_layers: int
    batch_size: int
    seq_length: int
    learning_rate: float
    dropout: float
    max_steps: int = Field(description="Enough steps for about `target_run_seconds` of training here, "
                                       "between 100 steps and 50 epochs.")
    parameters: int
    params_per_char: float = Field(description="parameters / training characters; near 1 is the aim.")


class Estimate(BaseModel):
    """Time measured by running real training steps of this size on this machine, with
    one BLAS thread as the training worker uses."""

    parameters: int
    seconds_per_step: float
    steps_per_epoch: int = Field(description="Batches of batch_size x seq_length in the training 90%.")
    seconds_per_epoch: float
    max_steps: int
    seconds_total: float = Field(description="For max_steps steps, validation passes not counted.")
    memory_bytes: int | None = Field(None, description="Peak memory while training, estimated from the shape: a run "
                                                       "over RNNSCOPE_MEMORY_BUDGET is refused.")
    checkpoint_bytes: int | None = Field(None, description="Disk its checkpoints take (the model and the training "
                                                           "state), counted against the model quotas.")


class Preflight(BaseModel):
    bytes: int = Field(description="Size of the file as uploaded.")
    chars: int = Field(description="Characters after decoding and normalising line endings.")
    lines: int
    train_chars: int = Field(description="The first 90% trains...")
    val_chars: int = Field(description="...the last 10% validates.")
    vocab_size: int
    vocab: list[CharCount] = Field(description="Every distinct character with its count, commonest first.")
    recommended: Recommendation
    estimate: Estimate = Field(description="Time for the recommended model.")


class Corpus(BaseModel):
    id: int
    name: str
    filename: str | None
    bytes: int
    chars: int
    sha256: str = Field(description="Of the normalised UTF-8 text, as a model's checkpoint records it.")
    created: float = Field(description="Unix time.")
    preflight: Preflight
    yours: bool = Field(False, description="You (or the admin) may delete it.")
    duplicate: bool = Field(False, description="You had uploaded this text before; this is that corpus.")


class CorpusSummary(BaseModel):
    id: int
    name: str
    filename: str | None
    bytes: int
    chars: int
    vocab_size: int
    created: float
    yours: bool = Field(False, description="You (or the admin) may delete it.")


# --- runs --------------------------------------------------------------------------------

class RunConfig(StrictBody):
    """What a run trains. Every field but corpus_id has a default that trains a small
    model in minutes on two cores; the corpus preflight recommends sizes for its text."""

    corpus_id: int = Field(ge=1, le=2**53 - 1, description="From POST /api/corpora.")
    cell: Cell = "lstm"
    hidden_size: int = Field(128, ge=1, le=2048, description="Units per layer; at most max_hidden_size "
                                                             "(RNNSCOPE_MAX_HIDDEN_SIZE).")
    num_layers: int = Field(2, ge=1, le=8)
    seq_length: int = Field(100, ge=1, le=2000, description="T: characters of truncated BPTT per step.")
    batch_size: int = Field(32, ge=1, le=1024, description="B: parallel streams per step.")
    learning_rate: float = Field(2e-3, gt=0, le=1, description="Adam's step size; decays by 0.97 per epoch "
                                                                 "after 10 epochs.")
    dropout: float = Field(0.0, ge=0, le=0.9, description="After every layer, as char-rnn; worth it once "
                                                           "validation loss rises while training loss falls.")
    max_steps: int = Field(2000, ge=1, le=10_000_000)
    grad_clip: float = Field(5.0, ge=0, le=1e6, description="Global-norm clipping threshold; 0 disables.")
    eval_every: int | None = Field(None, ge=1, le=10_000_000, description="Steps between validation passes; default "
                                                           "max_steps / 20, between 10 and 500.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Initial weights and dropout: the same seed and "
                                                         "settings give the same run.")
    name: str | None = Field(None, max_length=100, description="Default: the model and the corpus name.")


class RunCreated(BaseModel):
    id: int
    status: Status


class Attempt(BaseModel):
    attempt: int
    from_step: int = Field(description="The checkpoint this attempt resumed from; 0 for a fresh start.")
    to_step: int | None
    started: float
    placed: float | None = Field(None, description="When it got its machine and began training: on a cluster, "
                                                   "when a node with a free CPU took it.")
    ended: float | None
    outcome: str | None = Field(description="completed, cancelled, failed, interrupted, or lost (its worker "
                                            "process or machine died; the next attempt resumed)")
    worker: str | None = Field(None, description='Where it trained: "this server" or a Ray node.')


class Run(BaseModel):
    id: int
    name: str
    corpus_id: int | None
    corpus_name: str | None = Field(description="null once the corpus has been deleted.")
    status: Status
    config: RunConfig
    step: int = Field(description="Steps trained and logged.")
    max_steps: int
    epoch: float | None
    train_loss: float | None = Field(description="Mean training loss over the last 100 steps, nats/char.")
    val_loss: float | None = Field(description="At the last validation pass.")
    best_val_loss: float | None
    chars_per_sec: float | None
    eta_seconds: float | None = Field(description="Time left while running; null otherwise.")
    seconds: float = Field(description="Training time so far.")
    checkpoint_step: int | None = Field(description="Step of the last checkpoint, where a resume begins.")
    model_id: str | None = Field(description="Once a checkpoint exists: the model in GET /api/models (the "
                                             "weights with the best validation loss so far).")
    error: str | None = Field(description="Why it failed or stopped, when it did not complete.")
    cancel_requested: bool
    created: float
    started: float | None
    finished: float | None
    yours: bool = Field(False, description="You (or the admin) may cancel, resume and delete it.")
    worker: str | None = Field(None, description='Where its latest attempt trains or trained: "this server", '
                                                 'or a Ray node.')
    ahead: int | None = Field(None, description="While queued: the queued runs (anyone's) that start before it. "
                                                "Owners take turns, so this is not all the older ones.")
    queued_seconds: float | None = Field(None, description="While queued or running: its training time still "
                                                           "to do, as the queue's limits count it.")


class RunDetail(Run):
    attempts: list[Attempt] = Field(description="Each time the worker took the run up; a resume starts "
                                                "a new attempt at the last checkpoint.")


class Metrics(BaseModel):
    """Per logged step, as parallel lists; validation points separately."""

    step: list[int]
    loss: list[float | None]
    grad_norm: list[float | None] = Field(description="Global gradient norm before clipping.")
    clipped: list[bool]
    chars_per_sec: list[float | None]
    learning_rate: list[float | None]
    val_step: list[int]
    val_loss: list[float | None]
    stride: int = Field(description="Every stride-th step is listed (plus every validation step).")


class Sample(BaseModel):
    step: int
    temperature: float
    text: str


class StepEvent(BaseModel):
    """Data of a `step` event of GET /api/runs/{run_id}/events; the event id is the step."""

    step: int
    loss: float | None
    grad_norm: float | None
    clipped: bool
    chars_per_sec: float | None
    learning_rate: float | None
    epoch: float | None
    eta_seconds: float | None
    val_loss: float | None = Field(description="Set on the steps that ran validation.")
    samples: list[Sample] | None = Field(description="Set on the steps that wrote samples.")


class GradientLayerHistory(BaseModel):
    layer: int
    h_grad_norm: list[list[float | None]] = Field(
        description="Per checkpoint (rows, as `steps`), ||dL/dh_k|| for k = 0..position.")
    c_grad_norm: list[list[float | None]] | None = Field(description="Likewise ||dL/dc_k||; LSTM only.")


class GradientHistory(BaseModel):
    """How far back the loss at the passage's last position reaches, at every checkpoint:
    a time step x training step heatmap per layer."""

    passage: str = Field(description="A fixed validation passage: the start of the last 10% of the corpus.")
    position: int
    target: str
    steps: list[int] = Field(description="The training steps of the checkpoints.")
    loss: list[float | None] = Field(description="L at each checkpoint.")
    layers: list[GradientLayerHistory]


class ConceptUnit(BaseModel):
    """The unit that tracks a concept best at one checkpoint, as POST /api/models/{id}/probe
    ranks it first on the same text."""

    layer: int
    quantity: str
    unit: int
    score: float = Field(description="AUC for a binary concept, Pearson r for a graded one.")
    strength: float = Field(description="|2 AUC - 1| or |r|, in [0, 1].")


class ConceptCurve(BaseModel):
    concept: str
    description: str
    graded: bool
    best: list[ConceptUnit | None] = Field(description="Per recorded step (ConceptHistory.steps); null where "
                                                       "the concept was left out.")
    formed_step: int | None = Field(description="The first recorded step whose strength reached the threshold "
                                                "after being below it; null if it never did, or was there from "
                                                "the first recording.")
    at_start: bool = Field(description="Already at the threshold at the first recording: a concept the current "
                                       "character tells (a space, a letter), which needs no memory to track.")


class ConceptHistory(BaseModel):
    """How well the best unit tracks each concept, at the checkpoints where it was recorded:
    on a fixed stretch of the run's validation text."""

    text: str = Field(description="The stretch probed: the start of the run's validation text.")
    steps: list[int]
    threshold: float = Field(description="The strength at which a concept counts as having a cell.")
    concepts: list[ConceptCurve]
    skipped: dict[str, str] = Field(description="Concepts left out, and why: constant on the text.")


class Snapshot(BaseModel):
    step: int
    model_id: str = Field(description="Serves the run's weights at this step in every view.")


class TrainingNode(BaseModel):
    where: str = Field(description='"this server", or a Ray node\'s address and id.')
    cpus: float = Field(description="CPUs it offers to training runs.")
    alive: bool


class TrainingCapacity(BaseModel):
    executor: Literal["thread", "ray"] = Field(description="Where runs train (setting RNNSCOPE_EXECUTOR).")
    parallel_runs: int = Field(description="Runs that train at once (setting RNNSCOPE_MAX_PARALLEL_RUNS).")
    run_cpus: int = Field(description="CPUs each run asks for on a cluster (setting RNNSCOPE_RUN_CPUS).")
    running: int
    queued: int
    nodes: list[TrainingNode] = Field(description="The machines runs may train on.")
    queued_seconds: float = Field(0.0, description="Training time still to do in every queued and running run "
                                                   "(at most RNNSCOPE_MAX_QUEUED_SECONDS).")
    your_queued_seconds: float = Field(0.0, description="The same over your runs (at most "
                                                        "RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER).")
