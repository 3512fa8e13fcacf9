"""Letting a model write: a whole sample at once, or streamed as server-sent events."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from rnnscope.model.lm import LanguageModel
from rnnscope.model.sample import generate

from ..inference.batching import BatchersDep, SampleWork
from ..inference.compute_gate import ComputeBusy
from ..inference.costs import expected_seconds
from ..inference.deps import ComputeSlots, ModelDep, RenderedInThread, SettingsDep
from ..web.errors import BAD_BODY, NOT_FOUND, STREAM_ERRORS, TOO_LARGE, vet_text
from ..web.pages import render
from ..web.schemas import ErrorMessage
from .schemas import SampleChunk, SampleDone, SampleRequest, SampleResponse

router = APIRouter(prefix="/api/models/{model_id}", tags=["sample"], route_class=RenderedInThread)
page_router = APIRouter(tags=["pages"])


@dataclass
class SampleJob:
    model: LanguageModel
    prime: str
    length: int
    temperature: float
    top_k: int
    seed: int
    dropped: list[str]

    def chars(self) -> Iterator[tuple[str, float]]:
        return generate(self.model, self.prime, self.length, self.temperature, self.top_k, self.seed)


def sample_job(req: SampleRequest, entry: ModelDep, settings: SettingsDep) -> SampleJob:
    """A checked request (its limits are the body's: schemas.Limit). A dependency, so a stream
    is refused before its first event."""
    prime, dropped = vet_text(entry.model.vocab, req.prime, req.drop_unknown, settings.max_prime_chars,
                              "max_prime_chars", field="prime")
    # 32 bits: a seed the page reads back must survive JavaScript's 53-bit numbers.
    seed = secrets.randbits(32) if req.seed is None else req.seed
    return SampleJob(entry.model, prime, req.length, req.temperature, req.top_k, seed, dropped)


SampleJobDep = Annotated[SampleJob, Depends(sample_job)]


@router.post("/sample", response_model=SampleResponse, responses=BAD_BODY | NOT_FOUND | TOO_LARGE)
def sample(job: SampleJobDep, entry: ModelDep, batchers: BatchersDep) -> SampleResponse:
    """Write `length` characters after reading `prime`, each with the probability it had."""
    # Alone, or stepped together with concurrent samples of this model.
    seconds = expected_seconds(job.model.config, sample=len(job.prime) + job.length)
    pairs = batchers.run(entry.id, "sample", job.model,
                         SampleWork(job.prime, job.length, job.temperature, job.top_k, job.seed), 1,
                         lambda: list(job.chars()), seconds)
    return SampleResponse(text="".join(c for c, _ in pairs), probs=[p for _, p in pairs], seed=job.seed,
                          dropped=job.dropped)


def room_to_start(slots: ComputeSlots) -> None:
    """Refuse (503) a stream the compute queue has no room for, before its first event."""
    slots.check()


@router.post("/sample/stream", response_class=EventSourceResponse, responses=STREAM_ERRORS,
             dependencies=[Depends(room_to_start)])
def sample_stream(job: SampleJobDep, slots: ComputeSlots, settings: SettingsDep) -> Iterator[ServerSentEvent]:
    """The same sample as server-sent events: `chunk` events carrying SampleChunk
    {text, probs} as the characters are drawn, then one `done` event carrying SampleDone
    {length, seed, dropped}; or, if the server became too busy to go on, a `busy` event
    carrying ErrorMessage and the end. The same request body and seed give the same text as /sample."""
    chars, written = job.chars(), 0
    while True:
        # A slot per chunk, not per stream: a slow reader must not hold up other requests.
        # Once the stream has begun, a refusal can only be an event: `busy`, then the end.
        try:
            # The first chunk reads the prime too.
            with slots.expect(expected_seconds(job.model.config, sample=settings.stream_chunk_chars
                                               + (0 if written else len(job.prime)))):
                chunk = list(islice(chars, settings.stream_chunk_chars))
        except ComputeBusy as e:
            yield ServerSentEvent(event="busy", data=ErrorMessage(detail=e.detail))
            return
        if not chunk:
            break
        written += len(chunk)
        yield ServerSentEvent(event="chunk", data=SampleChunk(text="".join(c for c, _ in chunk),
                                                              probs=[p for _, p in chunk]))
    yield ServerSentEvent(event="done", data=SampleDone(length=written, seed=job.seed, dropped=job.dropped))


@page_router.get("/sample", response_class=HTMLResponse, include_in_schema=False)
def sample_page(request: Request):
    """Sampling with every character coloured by its probability."""
    return render(request, "sample")
