"""Corpora: upload a text (answered with its preflight), list, read, delete, and time a
model size on one.

Each text is stored once however many people upload it (by its sha256); each upload is
still its uploader's own corpus entry, counted whole against their quota and counted once
against the server's. Deleting an entry never waits on runs: queued and running runs,
anyone's, keep the text until they end."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..inference.deps import ComputeSlots
from ..web.auth import (FORBIDDEN, OPTIONAL_BEARER, TOTAL_COUNT, UNAUTHORIZED, ListingDep, MayCreate,
                        RequesterDep, TokenChecked, check_owner)
from ..web.errors import invalid
from ..web.schemas import ErrorMessage
from ..web.uploads import read_form
from .corpora import CorpusRefused, estimate, split_sizes
from .corpus_uploads import save_corpus
from .schemas import Cell, Corpus, CorpusSummary, Estimate
from .service import INSUFFICIENT_STORAGE, TrainingDep

router = APIRouter(prefix="/api/corpora", tags=["corpora"])

CorpusId = Annotated[int, Path(ge=1, le=2**53 - 1, description="From POST /api/corpora.")]
NOT_FOUND = {404: {"model": ErrorMessage, "description": "No corpus with that id."}}
UPLOAD_ERRORS = {
    413: {"model": ErrorMessage, "description": "The file is over RNNSCOPE_MAX_UPLOAD_BYTES."},
    422: {"description": "Not UTF-8 text (the message says what was found), too many distinct characters, "
                         "too short, or not a multipart upload with a `file` field."},
}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "UTF-8 text (a BOM is fine); line endings are normalised to \\n."},
        "name": {"type": "string", "maxLength": 100, "description": "Default: the file name."},
    },
}}}}}
# Multipart framing and the name field around the file: the body may exceed the file by this much.
FRAMING_BYTES = 16_384


def get_corpus(corpus_id: CorpusId, training: TrainingDep) -> dict:
    corpus = training.store.get_corpus(corpus_id)
    if corpus is None:
        raise HTTPException(404, f"no corpus {corpus_id}; GET /api/corpora lists them")
    return corpus


CorpusDep = Annotated[dict, Depends(get_corpus)]


async def read_upload(request: Request, max_bytes: int) -> tuple[UploadFile, str | None]:
    """The multipart `file` (spooled to disk past 1 MB) and optional `name`."""
    setting = f"{max_bytes:,} bytes (setting RNNSCOPE_MAX_UPLOAD_BYTES)"
    form = await read_form(
        request, max_bytes + FRAMING_BYTES, "send the text as multipart/form-data with the file in the field `file`",
        lambda size: CorpusRefused(413, f"the upload is {size:,} bytes; the limit is {setting}"),
        lambda: CorpusRefused(413, f"the upload is over the limit of {setting}"),
        max_files=1, max_fields=1, max_part_size=4096)
    file, name = form.get("file"), form.get("name")
    if not isinstance(file, UploadFile):
        await form.close()
        raise invalid(("body", "file"), "the field `file` must hold the text, sent as a file")
    if name is not None and (not isinstance(name, str) or len(name) > 100):
        await form.close()
        raise invalid(("body", "name"), "the name must be text of at most 100 characters")
    return file, name


@router.post("", status_code=201, response_model=Corpus, dependencies=[TokenChecked, MayCreate],
             responses=UNAUTHORIZED | UPLOAD_ERRORS | FORBIDDEN | INSUFFICIENT_STORAGE
             | {200: {"model": Corpus, "description": "You uploaded this text before: your corpus."}},
             openapi_extra=UPLOAD_BODY | OPTIONAL_BEARER)
async def upload_corpus(request: Request, response: Response, training: TrainingDep, requester: RequesterDep,
                        gate: ComputeSlots) -> Corpus:
    """Store an uploaded text and answer with its preflight: size, vocabulary, a recommended
    model and its measured time per epoch. The same text again answers 200 with the corpus
    you uploaded before (`duplicate` true) instead of storing a copy."""
    training.check_free_space("the upload")
    gate.check()                                  # before receiving a file that could not be counted
    try:
        file, name = await read_upload(request, training.settings.max_upload_bytes)
        try:
            corpus, created = await run_in_threadpool(save_corpus, training, file, name, requester, gate)
        finally:
            await file.close()
    except CorpusRefused as e:
        detail = str(e)
        if e.status == 422:
            raise invalid(("body", "file"), detail, "corpus_refused") from None
        raise HTTPException(e.status, detail) from None
    except OSError as e:
        raise training.storage_error("the upload", e) from None
    if not created:
        response.status_code = 200
    return Corpus.model_validate(corpus | {"duplicate": not created,
                                           "yours": requester.may_change(corpus["owner"])})


@router.get("", response_model=list[CorpusSummary], responses={200: {"headers": TOTAL_COUNT}})
def list_corpora(training: TrainingDep, requester: RequesterDep, listing: ListingDep,
                 response: Response) -> list[CorpusSummary]:
    """Your corpora (owner=me, the default) or everyone's (owner=all), newest first, a page at
    a time; `yours` marks the ones you may delete."""
    corpora, total = training.store.list_corpora(listing.owner, listing.limit, listing.offset)
    listing.answer(response, total)
    return [CorpusSummary(**{k: c[k] for k in ("id", "name", "filename", "bytes", "chars", "created")},
                          vocab_size=c["preflight"]["vocab_size"], yours=requester.may_change(c["owner"]))
            for c in corpora]


@router.get("/{corpus_id}", response_model=Corpus, responses=NOT_FOUND)
def read_corpus(corpus: CorpusDep, requester: RequesterDep) -> Corpus:
    """One corpus and its preflight."""
    return Corpus.model_validate(corpus | {"yours": requester.may_change(corpus["owner"])})


@router.get("/{corpus_id}/estimate", response_model=Estimate, responses=NOT_FOUND)
def estimate_time(corpus: CorpusDep, training: TrainingDep, gate: ComputeSlots, cell: Cell = "lstm",
                  hidden_size: Annotated[int, Query(ge=1, le=2048)] = 128,
                  num_layers: Annotated[int, Query(ge=1, le=8)] = 2,
                  batch_size: Annotated[int, Query(ge=1, le=1024)] = 32,
                  seq_length: Annotated[int, Query(ge=1, le=2000)] = 100,
                  max_steps: Annotated[int, Query(ge=1, le=10_000_000)] = 2000) -> Estimate:
    """Time a training step of this size on this machine (once per shape; later answers come
    from the cache), and what that makes an epoch and a run. Refuses exactly what
    POST /api/runs refuses."""
    vocab_size = corpus["preflight"]["vocab_size"]
    train_chars, _ = split_sizes(corpus["chars"])
    training.check_shape(cell, vocab_size, hidden_size, num_layers, batch_size, seq_length, train_chars,
                         corpus["preflight"]["recommended"], loc="query")
    return estimate(cell, vocab_size, hidden_size, num_layers, batch_size, seq_length, train_chars, max_steps,
                    lambda *shape: training.seconds_per_step(*shape, gate=gate))


@router.delete("/{corpus_id}", status_code=204, dependencies=[TokenChecked], openapi_extra=OPTIONAL_BEARER,
               responses=NOT_FOUND | UNAUTHORIZED | FORBIDDEN)
def delete_corpus(corpus: CorpusDep, training: TrainingDep, requester: RequesterDep) -> Response:
    """Delete a corpus you uploaded, at once. Runs queued or training on it (yours or anyone's)
    keep its text and go on; its finished runs and their models stay, but cannot be resumed."""
    check_owner(requester, corpus["owner"], f"corpus {corpus['id']}", "delete")
    training.delete_corpus(corpus["id"])
    return Response(status_code=204)
