"""Corpora: upload a text (answered with its preflight), list, read, delete, and time a
model size on one."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import PurePath
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..auth import OPTIONAL_BEARER, UNAUTHORIZED, TokenRequired
from ..corpora import CorpusRefused, estimate, ingest, parameters, preflight, split_sizes
from ..errors import invalid
from ..schemas import ErrorMessage
from ..train_schemas import Cell, Corpus, CorpusSummary, Estimate
from ..training import Training, TrainingDep

router = APIRouter(prefix="/api/corpora", tags=["corpora"])

CorpusId = Annotated[int, Path(ge=1, le=2**63 - 1, description="From POST /api/corpora.")]
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
IN_USE = {409: {"model": ErrorMessage, "description": "A queued or running run trains on it."}}
# Multipart framing and the name field around the file: the body may exceed the file by this much.
FRAMING_BYTES = 16_384


def get_corpus(corpus_id: CorpusId, training: TrainingDep) -> dict:
    corpus = training.store.get_corpus(corpus_id)
    if corpus is None:
        raise HTTPException(404, f"no corpus {corpus_id}; GET /api/corpora lists them")
    return corpus


CorpusDep = Annotated[dict, Depends(get_corpus)]


async def limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """The request body, refused (413) as soon as it passes `limit`: never received whole first."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise CorpusRefused(413, f"the upload is over the limit of {limit - FRAMING_BYTES:,} bytes "
                                     "(setting RNNSCOPE_MAX_UPLOAD_BYTES)")
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> tuple[UploadFile, str | None]:
    """The multipart `file` (spooled to disk past 1 MB) and optional `name`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid(("body",), "send the text as multipart/form-data with the file in the field `file`")
    limit = max_bytes + FRAMING_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise CorpusRefused(413, f"the upload is {int(declared):,} bytes; the limit is {max_bytes:,} bytes "
                                 "(setting RNNSCOPE_MAX_UPLOAD_BYTES)")
    parser = MultiPartParser(request.headers, limited(request.stream(), limit), max_files=1, max_fields=1,
                             max_part_size=4096)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise invalid(("body",), f"the multipart body cannot be read: {e}") from None
    file, name = form.get("file"), form.get("name")
    if not isinstance(file, UploadFile):
        await form.close()
        raise invalid(("body", "file"), "the field `file` must hold the text, sent as a file")
    if name is not None and (not isinstance(name, str) or len(name) > 100):
        await form.close()
        raise invalid(("body", "name"), "the name must be text of at most 100 characters")
    return file, name


def save_corpus(training: Training, file: UploadFile, name: str | None) -> dict:
    """Decode and count the upload, time the recommended model, record it all."""
    s, paths = training.settings, training.paths
    ingested = ingest(file.file, paths.root / "corpora", s.max_upload_bytes, s.max_vocab, s.min_corpus_chars)
    try:
        report = preflight(ingested, s.max_hidden_size, s.target_run_seconds, training.one_thread)
        filename = PurePath(file.filename).name[:200] if file.filename else None
        name = (name or "").strip() or (PurePath(filename).stem if filename else "") or "corpus"
        corpus_id = training.store.add_corpus(name, filename, ingested.bytes, ingested.chars, ingested.sha256,
                                              report.model_dump())
        os.replace(ingested.path, paths.corpus(corpus_id))
    finally:
        ingested.path.unlink(missing_ok=True)
    return training.store.get_corpus(corpus_id)


@router.post("", status_code=201, response_model=Corpus, dependencies=[TokenRequired],
             responses=UNAUTHORIZED | UPLOAD_ERRORS, openapi_extra=UPLOAD_BODY | OPTIONAL_BEARER)
async def upload_corpus(request: Request, training: TrainingDep) -> Corpus:
    """Store an uploaded text and answer with its preflight: size, vocabulary, a recommended
    model and its measured time per epoch."""
    try:
        file, name = await read_upload(request, training.settings.max_upload_bytes)
        try:
            corpus = await run_in_threadpool(save_corpus, training, file, name)
        finally:
            await file.close()
    except CorpusRefused as e:
        detail = str(e)
        if e.status == 422:
            raise invalid(("body", "file"), detail, "corpus_refused") from None
        raise HTTPException(e.status, detail) from None
    return Corpus.model_validate(corpus)


@router.get("", response_model=list[CorpusSummary])
def list_corpora(training: TrainingDep) -> list[CorpusSummary]:
    """Every uploaded corpus, newest first."""
    return [CorpusSummary(**{k: c[k] for k in ("id", "name", "filename", "bytes", "chars", "created")},
                          vocab_size=c["preflight"]["vocab_size"]) for c in training.store.list_corpora()]


@router.get("/{corpus_id}", response_model=Corpus, responses=NOT_FOUND)
def read_corpus(corpus: CorpusDep) -> Corpus:
    """One corpus and its preflight."""
    return Corpus.model_validate(corpus)


@router.get("/{corpus_id}/estimate", response_model=Estimate, responses=NOT_FOUND)
def estimate_time(corpus: CorpusDep, training: TrainingDep, cell: Cell = "lstm",
                  hidden_size: Annotated[int, Query(ge=1, le=2048)] = 128,
                  num_layers: Annotated[int, Query(ge=1, le=8)] = 2,
                  batch_size: Annotated[int, Query(ge=1, le=1024)] = 32,
                  seq_length: Annotated[int, Query(ge=1, le=2000)] = 100,
                  max_steps: Annotated[int, Query(ge=1, le=10_000_000)] = 2000) -> Estimate:
    """Time a training step of this size on this machine, and what that makes an epoch and a run."""
    vocab_size = corpus["preflight"]["vocab_size"]
    n = parameters(cell, vocab_size, hidden_size, num_layers)
    if n > training.settings.max_parameters:
        raise invalid(("query", "hidden_size"), f"{n:,} parameters; the limit is "
                      f"{training.settings.max_parameters:,} (setting RNNSCOPE_MAX_PARAMETERS)")
    train_chars, _ = split_sizes(corpus["chars"])
    return estimate(cell, vocab_size, hidden_size, num_layers, batch_size, seq_length,
                    train_chars, max_steps, training.one_thread)


@router.delete("/{corpus_id}", status_code=204, dependencies=[TokenRequired], openapi_extra=OPTIONAL_BEARER,
               responses=NOT_FOUND | UNAUTHORIZED | IN_USE)
def delete_corpus(corpus: CorpusDep, training: TrainingDep) -> Response:
    """Delete a corpus; its finished runs and their models stay, but cannot be resumed."""
    busy = training.store.runs_using(corpus["id"], ("queued", "running"))
    if busy:
        raise HTTPException(409, f"runs {', '.join(map(str, busy))} are training on this corpus; "
                                 "cancel them first")
    training.store.delete_corpus(corpus["id"])
    training.paths.corpus(corpus["id"]).unlink(missing_ok=True)
    return Response(status_code=204)
