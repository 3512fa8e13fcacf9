"""Training runs: start, watch (JSON and server-sent events), cancel, resume, delete."""
from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, HTTPException, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ..inference.deps import ComputeSlots, rendered_in_thread
from ..web.auth import (FORBIDDEN, OPTIONAL_BEARER, TOTAL_COUNT, UNAUTHORIZED, ListingDep, MayCreate,
                        RequesterDep, TokenChecked, check_owner)
from ..web.errors import invalid
from ..web.pages import templates
from ..web.schemas import ErrorMessage
from ..web.security import Requester
from .corpora import split_sizes
from rnnscope.model.probes import CONCEPTS

from .schemas import (Attempt, ConceptCurve, ConceptHistory, ConceptUnit, GradientHistory, GradientLayerHistory,
                      Metrics, Run, RunConfig, RunCreated, RunDetail, Sample, Snapshot, StepEvent, TrainingCapacity)
from .service import INSUFFICIENT_STORAGE, Training, TrainingDep
from .store import ACTIVE, QueueFull, remaining_seconds, snapshot_id

router = APIRouter(prefix="/api/runs", tags=["runs"])
capacity_router = APIRouter(prefix="/api/training", tags=["runs"])
page_router = APIRouter(tags=["pages"])

RunId = Annotated[int, Path(ge=1, le=2**53 - 1, description="From POST /api/runs.")]
NOT_FOUND = {404: {"model": ErrorMessage, "description": "No run with that id."}}
CONFLICT = {409: {"model": ErrorMessage, "description": "The run's status does not allow this; the message "
                                                        "says why."}}
BAD_BODY = {400: {"model": ErrorMessage, "description": "The body is not UTF-8 JSON."}}
QUEUE_FULL = {429: {"model": ErrorMessage, "description": "RNNSCOPE_MAX_QUEUED_RUNS runs wait already, or "
                                                          "RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER of yours; or the "
                                                          "training time still to do in the queue would pass "
                                                          "RNNSCOPE_MAX_QUEUED_SECONDS, or in yours "
                                                          "RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER. The message "
                                                          "says which and how much is queued."}}
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


def run_model(run: dict, requester: Requester, ahead: int | None = None) -> Run:
    return Run.model_validate(run | {"yours": requester.may_change(run["owner"]), "ahead": ahead,
                                     "queued_seconds": remaining_seconds(run)})


def hours(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)"


def queue_refusal(e: QueueFull, step_seconds: float | None = None, resuming: bool = False) -> HTTPException:
    """The 4xx for a run the queue cannot take, naming the setting and what is queued."""
    retry = {"Retry-After": "60"}
    if e.kind == "run_seconds" and resuming:
        return HTTPException(409, f"this run has {hours(e.current)} of training left; each person may have at most "
                                  f"{hours(e.limit)} queued or running (setting "
                                  "RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER), so it cannot be resumed here")
    if e.kind == "runs":
        return HTTPException(429, f"{e.current} runs are queued already, the limit (setting "
                                  "RNNSCOPE_MAX_QUEUED_RUNS); wait for one to start", headers=retry)
    if e.kind == "runs_per_owner":
        return HTTPException(429, f"{e.current} of your runs are queued already, the limit (setting "
                                  "RNNSCOPE_MAX_QUEUED_RUNS_PER_OWNER); wait for one to start or cancel one",
                             headers=retry)
    if e.kind == "run_seconds":
        # Alone over the limit: waiting would not help, so not a 429.
        fits = "" if not step_seconds else f"; at {step_seconds:.4f} s a step here, at most " \
                                           f"{int(e.limit / step_seconds):,} steps fit"
        return invalid(("body", "max_steps"), f"this run would train for {hours(e.current)} on this server; "
                       f"each person may have at most {hours(e.limit)} of training queued or running (setting "
                       f"RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER){fits}: lower max_steps")
    if e.kind == "seconds_per_owner":
        return HTTPException(429, f"your queued and running runs have {hours(e.current)} of training still to do "
                                  f"and this one adds {hours(e.adding)}; each person may have at most "
                                  f"{hours(e.limit)} (setting RNNSCOPE_MAX_QUEUED_SECONDS_PER_OWNER): wait for "
                                  "one to finish, cancel one, or lower max_steps", headers=retry)
    return HTTPException(429, f"the server's queued and running runs have {hours(e.current)} of training still "
                              f"to do and this one adds {hours(e.adding)}; the limit for everyone's together is "
                              f"{hours(e.limit)} (setting RNNSCOPE_MAX_QUEUED_SECONDS): try again later or "
                              "lower max_steps", headers=retry)


@router.post("", status_code=201, response_model=RunCreated, dependencies=[TokenChecked, MayCreate],
             openapi_extra=OPTIONAL_BEARER, responses=BAD_BODY | UNAUTHORIZED | QUEUE_FULL | FORBIDDEN
             | {404: {"model": ErrorMessage, "description": "No such corpus."}} | INSUFFICIENT_STORAGE
             | {413: {"model": ErrorMessage, "description": "Your models and checkpoints would pass "
                                                            "RNNSCOPE_MAX_MODEL_BYTES_PER_OWNER."}})
def start_run(config: RunConfig, training: TrainingDep, requester: RequesterDep, gate: ComputeSlots) -> RunCreated:
    """Queue a training run. Owners take turns: the worker takes the oldest queued run of
    the person who has the fewest ahead of it. A run costs its max_steps x the time a step
    of its shape takes here (timed once per shape), against the queue's limits."""
    check(config, training)
    corpus = training.store.get_corpus(config.corpus_id)
    training.check_budgets(config, corpus, requester.owner)      # memory, disk and model quotas
    step_seconds = training.step_seconds(config, corpus, gate)
    name = config.name or f"{config.cell.upper()} {config.num_layers}x{config.hidden_size} on {corpus['name']}"
    limits = training.queue_limits()
    try:
        with training.admission_lock:           # checked again with the row's insert, as one step
            training.check_budgets(config, corpus, requester.owner)
            run_id = training.store.add_run(name[:100], config.corpus_id, config.model_dump(), config.max_steps,
                                            limits.runs, requester.owner, corpus_sha256=corpus["sha256"],
                                            step_seconds=step_seconds, limits=limits)
    except QueueFull as e:
        raise queue_refusal(e, step_seconds) from None
    except LookupError:
        raise HTTPException(404, f"corpus {config.corpus_id} was deleted just now; upload it again") from None
    training.trainer.poke()
    return RunCreated(id=run_id, status="queued")


@capacity_router.get("", response_model=TrainingCapacity)
def training_capacity(training: TrainingDep, requester: RequesterDep) -> TrainingCapacity:
    """Where runs train and how many at once: the executor, its machines, and the runs
    running and waiting now."""
    executor, store = training.executor, training.store
    counts = store.status_counts()
    return TrainingCapacity(executor=executor.name, parallel_runs=executor.parallel_runs,
                            run_cpus=training.settings.run_cpus, running=counts.get("running", 0),
                            queued=counts.get("queued", 0), nodes=executor.nodes(),
                            queued_seconds=store.queued_seconds(),
                            your_queued_seconds=store.queued_seconds(owner=requester.owner))


@router.get("", response_model=list[Run], responses={200: {"headers": TOTAL_COUNT}})
def list_runs(training: TrainingDep, requester: RequesterDep, listing: ListingDep, response: Response) -> list[Run]:
    """Your runs (owner=me, the default) or everyone's (owner=all), newest first, a page at a
    time, with their latest losses; `yours` marks the ones you may change, `ahead` a queued
    run's place in the queue."""
    store = training.store
    listing.answer(response, store.run_count(listing.owner))
    order = {run_id: k for k, run_id in enumerate(store.queue_order())}
    return [run_model(r, requester, order.get(r["id"]))
            for r in store.list_runs(listing.owner, listing.limit, listing.offset)]


@router.get("/{run_id}", response_model=RunDetail, responses=NOT_FOUND)
def read_run(run: RunDep, training: TrainingDep, requester: RequesterDep) -> RunDetail:
    """Status, step, losses, speed, time left, and the model id once a checkpoint exists."""
    order = training.store.queue_order() if run["status"] == "queued" else []
    ahead = order.index(run["id"]) if run["id"] in order else None      # it may have started meanwhile
    return RunDetail(**run_model(run, requester, ahead).model_dump(),
                     attempts=[Attempt(**a) for a in training.store.attempts(run["id"])])


@router.get("/{run_id}/metrics", response_model=Metrics, responses=NOT_FOUND)
@rendered_in_thread          # 200,000 points took 0.5 s to render on the event loop; 0.08 s here
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
    store, run_id = training.store, run["id"]
    if run["status"] not in RESUMABLE:
        raise HTTPException(409, f"run {run_id} is {run['status']}; only interrupted or cancelled runs "
                                 "resume")
    if run["corpus_id"] is None or store.get_corpus(run["corpus_id"]) is None:
        raise HTTPException(409, f"the corpus of run {run_id} has been deleted, so it cannot train further")
    # The run's owner's limits, not the admin's when the admin resumes it.
    try:
        requeued = store.requeue_run(run_id, RESUMABLE, training.queue_limits(), error=None, finished=None,
                                     cancel_requested=0)
    except QueueFull as e:
        raise queue_refusal(e, run.get("step_seconds"), resuming=True) from None
    if not requeued:
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
    training.delete_run_files(run_id)
    return Response(status_code=204)


@router.get("/{run_id}/gradients", response_model=GradientHistory, responses=NOT_FOUND)
@rendered_in_thread
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


# A concept counts as having a cell once its best unit's strength reaches this: AUC 0.925 or
# |r| 0.85. Between the bundled python model's soft comment unit (0.78) and its clear inline-
# string unit (0.93), issue 23: a unit at 0.85 colours a passage so a reader sees the concept.
CELL_THRESHOLD = 0.85


def concept_curves(recorded: list[tuple[int, dict]]) -> ConceptHistory:
    """Per concept, its best unit at each recorded step, and where it first reached CELL_THRESHOLD."""
    steps = [step for step, _ in recorded]
    by_step = [{c["concept"]: c for c in r["concepts"]} for _, r in recorded]
    skipped = {name: why for _, r in recorded for name, why in r["skipped"].items()}
    names = [name for name in CONCEPTS if any(name in b for b in by_step)]
    curves = []
    for name in names:
        best = [None if name not in b else ConceptUnit(**{k: b[name][k] for k in ConceptUnit.model_fields})
                for b in by_step]
        at_start = best[0] is not None and best[0].strength >= CELL_THRESHOLD
        formed = None
        if not at_start:
            formed = next((s for s, u in zip(steps, best) if u is not None and u.strength >= CELL_THRESHOLD), None)
        concept = CONCEPTS[name]
        curves.append(ConceptCurve(concept=name, description=concept.description, graded=concept.graded, best=best,
                                   formed_step=formed, at_start=at_start))
    return ConceptHistory(text="", steps=steps, threshold=CELL_THRESHOLD, concepts=curves,
                          skipped={k: v for k, v in skipped.items() if k not in names})


@router.get("/{run_id}/concepts", response_model=ConceptHistory, responses=NOT_FOUND)
@rendered_in_thread
def read_concepts(run: RunDep, training: TrainingDep) -> ConceptHistory:
    """The best unit for each concept and its strength (as the probe ranks it) on a fixed
    stretch of the run's validation text, at the checkpoints where it was recorded (skipped
    when recording would take more than RNNSCOPE_CONCEPT_SHARE of the training time).
    Empty until the first checkpoint."""
    recorded = training.store.concept_strengths(run["id"])
    history = concept_curves(recorded)
    if recorded:
        history.text = training.concept_text(run, recorded[0][1]["chars"])
    return history


@router.get("/{run_id}/snapshots", response_model=list[Snapshot], responses=NOT_FOUND)
def read_snapshots(run: RunDep, training: TrainingDep) -> list[Snapshot]:
    """The run's weights kept at a few steps (RNNSCOPE_RUN_SNAPSHOTS, spread over the run),
    each served as a model: open one in any view by its model_id."""
    return [Snapshot(step=s, model_id=snapshot_id(run["id"], s)) for s in training.paths.snapshot_steps(run["id"])]


@page_router.get("/train", response_class=HTMLResponse, include_in_schema=False)
def train_page(request: Request):
    """Upload a text, train a model on it in the background, and watch it learn."""
    state = {"run": request.query_params.get("run", "")}
    settings = request.app.state.settings
    return templates.TemplateResponse(request, "train.html", {
        "page": "train", "state": state, "token_required": settings.token is not None and settings.create_needs_token,
        "max_upload_bytes": settings.max_upload_bytes,
        "concepts": list(CONCEPTS),        # their order gives each its look in the Cells forming chart
    })
