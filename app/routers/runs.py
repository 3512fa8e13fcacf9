"""Training runs: start, watch (JSON and server-sent events), cancel, resume, delete."""
from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ..auth import FORBIDDEN, OPTIONAL_BEARER, UNAUTHORIZED, MayCreate, RequesterDep, TokenChecked, check_owner
from ..training.corpora import split_sizes
from ..schemas import ErrorMessage
from ..training.store import ACTIVE
from ..training.schemas import (Attempt, GradientHistory, GradientLayerHistory, Metrics, Run, RunConfig,
                                RunCreated, RunDetail, Sample, StepEvent, TrainingCapacity)
from ..security import Requester
from ..training.service import INSUFFICIENT_STORAGE, Training, TrainingDep

router = APIRouter(prefix="/api/runs", tags=["runs"])
capacity_router = APIRouter(prefix="/api/training", tags=["runs"])

RunId = Annotated[int, Path(ge=1, le=2**53 - 1, description="From POST /api/runs.")]
NOT_FOUND = {404: {"model": ErrorMessage, "description": "No run with that id."}}
CONFLICT = {409: {"model": ErrorMessage, "description": "The run's status does not allow this; the message "
                                                        "says why."}}
BAD_BODY = {400: {"model": ErrorMessage, "description": "The body is not UTF-8 JSON."}}
QUEUE_FULL = {429: {"model": ErrorMessage, "description": "RNNSCOPE_MAX_QUEUED_RUNS runs wait already, or "
                                                          "RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER of yours."}}
RESUMABLE = ("interrupted", "cancelled")
# The event stream's media type is text/event-stream; its refusals are still JSON.
STREAM_NOT_FOUND = {404: {"description": "No run with that id.", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}}


def get_run(run_id: RunId, training: TrainingDep) -> dict:
    run = training.store.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id}; GET /api/runs lists them")
    return run


RunDep = Annotated[dict, Depends(get_run)]


def check(config: RunConfig, training: Training) -> None:
    """Refuse (404, 422) a run that cannot start: no such corpus, over a limit, or a batch
    larger than the training text."""
    corpus = training.store.get_corpus(config.corpus_id)
    if corpus is None:
        raise HTTPException(404, f"no corpus {config.corpus_id}; upload one with POST /api/corpora")
    train_chars, _ = split_sizes(corpus["chars"])
    training.check_shape(config.cell, corpus["preflight"]["vocab_size"], config.hidden_size, config.num_layers,
                         config.batch_size, config.seq_length, train_chars, corpus["preflight"]["recommended"])


def run_model(run: dict, requester: Requester) -> Run:
    return Run.model_validate(run | {"yours": requester.may_change(run["owner"])})


@router.post("", status_code=201, response_model=RunCreated, dependencies=[TokenChecked, MayCreate],
             openapi_extra=OPTIONAL_BEARER, responses=BAD_BODY | UNAUTHORIZED | QUEUE_FULL | FORBIDDEN
             | {404: {"model": ErrorMessage, "description": "No such corpus."}})
def start_run(config: RunConfig, training: TrainingDep, requester: RequesterDep) -> RunCreated:
    """Queue a training run; the worker trains one run at a time, oldest first."""
    check(config, training)
    s = training.settings
    name = config.name or (f"{config.cell.upper()} {config.num_layers}x{config.hidden_size} on "
                           f"{training.store.get_corpus(config.corpus_id)['name']}")
    run_id = training.store.add_run(name[:100], config.corpus_id, config.model_dump(), config.max_steps,
                                    s.max_queued_runs, requester.owner, s.max_queued_runs_per_owner)
    if run_id == "all":
        raise HTTPException(429, f"{s.max_queued_runs} runs are queued already, the limit "
                                 "(setting RNNSCOPE_MAX_QUEUED_RUNS); wait for one to start", 
                            headers={"Retry-After": "60"})
    if run_id == "owner":
        raise HTTPException(429, f"{s.max_queued_runs_per_owner} of your runs are queued already, the limit "
                                 "(setting RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER); wait for one to start or "
                                 "cancel one", headers={"Retry-After": "60"})
    training.trainer.poke()
    return RunCreated(id=run_id, status="queued")


@capacity_router.get("", response_model=TrainingCapacity)
def training_capacity(training: TrainingDep) -> TrainingCapacity:
    """Where runs train and how many at once: the executor, its machines, and the runs
    running and waiting now."""
    executor = training.executor
    statuses = [r["status"] for r in training.store.list_runs()]
    return TrainingCapacity(executor=executor.name, parallel_runs=executor.parallel_runs,
                            run_cpus=training.settings.run_cpus, running=statuses.count("running"),
                            queued=statuses.count("queued"), nodes=executor.nodes())


@router.get("", response_model=list[Run])
def list_runs(training: TrainingDep, requester: RequesterDep) -> list[Run]:
    """Every run, newest first, with its latest losses; `yours` marks the ones you may change."""
    return [run_model(r, requester) for r in training.store.list_runs()]


@router.get("/{run_id}", response_model=RunDetail, responses=NOT_FOUND)
def read_run(run: RunDep, training: TrainingDep, requester: RequesterDep) -> RunDetail:
    """Status, step, losses, speed, time left, and the model id once a checkpoint exists."""
    return RunDetail(**run_model(run, requester).model_dump(),
                     attempts=[Attempt(**a) for a in training.store.attempts(run["id"])])


@router.get("/{run_id}/metrics", response_model=Metrics, responses=NOT_FOUND)
def read_metrics(run: RunDep, training: TrainingDep,
                 since: Annotated[int, Query(ge=0, le=2**62, description="Only steps after this one.")] = 0,
                 max_points: Annotated[int, Query(ge=10, le=1_000_000)] = 20_000) -> Metrics:
    """The logged history as parallel lists, thinned to about max_points steps."""
    count = max(0, run["step"] - since)
    stride = max(1, math.ceil(count / max_points))
    rows = training.store.metrics(run["id"], since, limit=max_points + 1000, stride=stride)
    val = [r for r in rows if r["val_loss"] is not None]
    return Metrics(step=[r["step"] for r in rows], loss=[r["loss"] for r in rows],
                   grad_norm=[r["grad_norm"] for r in rows], clipped=[r["clipped"] for r in rows],
                   chars_per_sec=[r["chars_per_sec"] for r in rows],
                   learning_rate=[r["learning_rate"] for r in rows],
                   val_step=[r["step"] for r in val], val_loss=[r["val_loss"] for r in val], stride=stride)


@router.get("/{run_id}/samples", response_model=list[Sample], responses=NOT_FOUND)
def read_samples(run: RunDep, training: TrainingDep,
                 since: Annotated[int, Query(ge=0, le=2**62)] = 0) -> list[Sample]:
    """What the model wrote every sample_every_steps steps, at each temperature."""
    return [Sample(**s) for s in training.store.samples(run["id"], since)]


def step_events(rows: list[dict], samples: list[dict]) -> list[ServerSentEvent]:
    by_step: dict[int, list[Sample]] = {}
    for s in samples:
        by_step.setdefault(s["step"], []).append(Sample(**s))
    return [ServerSentEvent(event="step", id=str(r["step"]),
                            data=StepEvent(**r, samples=by_step.get(r["step"])).model_dump())
            for r in rows]


SINCE = "Send the steps after this one; default all of them."
LAST_EVENT_ID = "Sent by a reconnecting EventSource: the last step it received."


async def room_for_a_stream(training: TrainingDep) -> AsyncIterator[None]:
    """One of max_event_streams, held until the stream ends, or 503: each polls the store,
    and watchers beyond the limit slowed every page. The browser's EventSource retries by
    itself. Taken here, before the route runs, and given back after the response ends
    (FastAPI closes a yield dependency then), so a burst cannot pass the limit."""
    with training.event_streams:
        try:
            yield
        except* anyio.BrokenResourceError:
            # FastAPI's SSE teardown raises this when the watcher has gone (a tab closed):
            # an everyday end of a stream, not an error to log with two tracebacks.
            pass


STREAM_BUSY = {503: {"description": "RNNSCOPE_MAX_EVENT_STREAMS streams are open; retry after Retry-After.",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}}}


@router.get("/{run_id}/events", response_class=EventSourceResponse, responses=STREAM_NOT_FOUND | STREAM_BUSY,
            dependencies=[Depends(room_for_a_stream)])
async def run_events(run: RunDep, training: TrainingDep, requester: RequesterDep,
                     since: Annotated[int | None, Query(ge=0, le=2**62, description=SINCE)] = None,
                     last_event_id: Annotated[str | None, Header(description=LAST_EVENT_ID)] = None,
                     ) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events while the run trains. `step` (id: the step) per logged step,
    StepEvent data: loss, pre-clip gradient norm, clipped, chars/s, validation loss when
    evaluated, samples when written. `status` (Run data) when the status changes. A final
    `end` (Run data) once the run is no longer queued or running, and the stream closes.
    A stream also closes after events_max_seconds; EventSource then reconnects with
    Last-Event-ID and misses nothing."""
    cursor = since or 0
    if last_event_id is not None and last_event_id.strip().isdigit():
        cursor = max(cursor, min(int(last_event_id), 2**62))
    deadline = time.monotonic() + training.settings.events_max_seconds
    yield ServerSentEvent(retry=1000, comment="rnnscope run events")
    async for event in run_event_stream(run, training, requester, cursor, deadline):
        yield event


async def run_event_stream(run: dict, training: Training, requester: Requester, cursor: int,
                           deadline: float) -> AsyncIterator[ServerSentEvent]:
    store, settings = training.store, training.settings
    status = None

    def poll(after: int) -> tuple[dict | None, list[dict], list[dict]]:
        # The run first: once it shows a final status, every metric it logged is committed.
        current = store.get_run(run["id"])
        rows = store.metrics(run["id"], after, limit=500)
        samples = store.samples(run["id"], after, rows[-1]["step"]) if rows else []
        return current, rows, samples

    while True:
        current, rows, samples = await run_in_threadpool(poll, cursor)
        if current is None:                       # deleted while watched
            return
        if current["status"] != status:
            status = current["status"]
            yield ServerSentEvent(event="status", data=run_model(current, requester).model_dump())
        for event in step_events(rows, samples):
            yield event
        if rows:
            cursor = rows[-1]["step"]
            if len(rows) == 500:
                continue
        if current["status"] not in ACTIVE:
            yield ServerSentEvent(event="end", data=run_model(current, requester).model_dump())
            return
        if time.monotonic() > deadline:
            return
        await anyio.sleep(settings.events_poll_seconds)


@router.post("/{run_id}/cancel", response_model=Run, dependencies=[TokenChecked],
             openapi_extra=OPTIONAL_BEARER, responses=NOT_FOUND | UNAUTHORIZED | FORBIDDEN | CONFLICT
             | INSUFFICIENT_STORAGE)
def cancel_run(run: RunDep, training: TrainingDep, requester: RequesterDep) -> Run:
    """Stop a run of yours: a queued one at once, a running one after its current step, with
    a final checkpoint. It can be resumed later."""
    check_owner(requester, run["owner"], f"run {run['id']}", "cancel")
    store, run_id = training.store, run["id"]
    if store.set_status_if(run_id, ("queued",), status="cancelled", finished=time.time(),
                           error="cancelled before it started"):
        return run_model(store.get_run(run_id), requester)
    if training.trainer.cancel(run_id):
        return run_model(store.get_run(run_id), requester)
    # Marked running but no worker trains it (a worker that died mid-run): cancel it here,
    # resumable from its last checkpoint like any cancelled run.
    if not training.trainer.is_training(run_id) and store.set_status_if(
            run_id, ("running",), status="cancelled", finished=time.time(), eta_seconds=None,
            chars_per_sec=None, error="cancelled; no worker was training it"):
        return run_model(store.get_run(run_id), requester)
    raise HTTPException(409, f"run {run_id} is {store.get_run(run_id)['status']}, not queued or running")


@router.post("/{run_id}/resume", response_model=Run, dependencies=[TokenChecked],
             openapi_extra=OPTIONAL_BEARER, responses=NOT_FOUND | UNAUTHORIZED | FORBIDDEN | CONFLICT | QUEUE_FULL
             | INSUFFICIENT_STORAGE)
def resume_run(run: RunDep, training: TrainingDep, requester: RequesterDep) -> Run:
    """Queue an interrupted or cancelled run of yours again; it continues from its last
    checkpoint (or from the start if it had none), redoing only the steps after it."""
    check_owner(requester, run["owner"], f"run {run['id']}", "resume")
    store, run_id, s = training.store, run["id"], training.settings
    if run["status"] not in RESUMABLE:
        raise HTTPException(409, f"run {run_id} is {run['status']}; only interrupted or cancelled runs "
                                 "resume")
    if run["corpus_id"] is None or store.get_corpus(run["corpus_id"]) is None:
        raise HTTPException(409, f"the corpus of run {run_id} has been deleted, so it cannot train further")
    if store.queued_count() >= s.max_queued_runs:
        raise HTTPException(429, f"{s.max_queued_runs} runs are queued already "
                                 "(setting RNNSCOPE_MAX_QUEUED_RUNS)", headers={"Retry-After": "60"})
    if run["owner"] is not None and store.queued_count(owner=run["owner"]) >= s.max_queued_runs_per_owner:
        raise HTTPException(429, f"{s.max_queued_runs_per_owner} runs of this owner are queued already "
                                 "(setting RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER)", headers={"Retry-After": "60"})
    if not store.set_status_if(run_id, RESUMABLE, status="queued", error=None, finished=None,
                               cancel_requested=0):
        raise HTTPException(409, f"run {run_id} changed status meanwhile; try again")
    training.trainer.poke()
    return run_model(store.get_run(run_id), requester)


@router.delete("/{run_id}", status_code=204, dependencies=[TokenChecked],
               openapi_extra=OPTIONAL_BEARER, responses=NOT_FOUND | UNAUTHORIZED | FORBIDDEN | CONFLICT
               | INSUFFICIENT_STORAGE)
def delete_run(run: RunDep, training: TrainingDep, requester: RequesterDep) -> Response:
    """Delete a run of yours that is not training: its history, checkpoint and model."""
    check_owner(requester, run["owner"], f"run {run['id']}", "delete")
    run_id = run["id"]
    # Only a run that was already running, with no worker on it, is stranded: a queued one the
    # worker picks up meanwhile is then training, and refused below.
    stranded = run["status"] == "running" and not training.trainer.is_training(run_id)
    if not training.store.delete_run(run_id, running_ok=stranded):
        raise HTTPException(409, f"run {run_id} is training; cancel it first")
    training.unpublish(run_id)
    training.paths.model(run_id).unlink(missing_ok=True)
    training.paths.train_state(run_id).unlink(missing_ok=True)
    return Response(status_code=204)


@router.get("/{run_id}/gradients", response_model=GradientHistory, responses=NOT_FOUND)
def read_gradients(run: RunDep, training: TrainingDep) -> GradientHistory:
    """The gradient-through-time profile of a fixed validation passage at every checkpoint:
    per layer, training step x time step. Empty until the first checkpoint."""
    profiles = training.store.gradient_profiles(run["id"])
    if not profiles:
        return GradientHistory(passage="", position=0, target="", steps=[], loss=[], layers=[])
    first = profiles[0][1]
    has_c = first["c"] is not None
    layers = [GradientLayerHistory(layer=l, h_grad_norm=[p["h"][l] for _, p in profiles],
                                   c_grad_norm=[p["c"][l] for _, p in profiles] if has_c else None)
              for l in range(len(first["h"]))]
    return GradientHistory(passage=first["passage"], position=first["position"], target=first["target"],
                           steps=[s for s, _ in profiles], loss=[p["loss"] for _, p in profiles],
                           layers=layers)
