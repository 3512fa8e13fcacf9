"""The models feature's routes: the models on offer (a list, one model's vocabulary and
training summary, passages of the text it was trained on), the home page, and imports from
PyTorch (imports.py does the work)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from rnnscope.model.sample import sample

from ..inference.corpus_index import PASSAGE_CHARS, CorpusLibrary, corpus_passages, training_corpus, val_fraction
from ..inference.costs import expected_seconds
from ..inference.deps import ComputeSlots, LibraryDep, ModelDep, RegistryDep
from ..inference.registry import Entry
from ..training.service import INSUFFICIENT_STORAGE, TrainingDep
from ..web.auth import (FORBIDDEN, OPTIONAL_BEARER, TOTAL_COUNT, UNAUTHORIZED, ListingDep, MayCreate,
                        RequesterDep, TokenChecked)
from ..web.errors import NOT_FOUND, ErrorResponse
from ..web.pages import render
from .imports import (IMPORT_BODY, IMPORT_ERRORS, MODEL_REFUSALS, delete_import, list_all, read_upload,
                      save_import)
from .schemas import ImportedModel, ModelDetail, ModelSummary, TrainingSummary

router = APIRouter(prefix="/api/models", tags=["models"])
page_router = APIRouter(tags=["pages"])


def training_summary(entry: Entry) -> TrainingSummary:
    return TrainingSummary.model_validate(entry.history)


def summary(entry: Entry, owner: str | None = None) -> ModelSummary:
    """From what the registry keeps of every model: listing them loads none."""
    cfg, h = entry.config, training_summary(entry)
    return ModelSummary(id=entry.id, name=entry.name, cell=cfg.cell, hidden_size=cfg.hidden_size,
                        num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, parameters=entry.num_parameters,
                        val_loss=h.val_loss if h.best_val_loss is None else h.best_val_loss,
                        shared=entry.owner is None, yours=entry.owner is not None and entry.owner == owner)


@router.get("", response_model=list[ModelSummary], responses={200: {"headers": TOTAL_COUNT}})
async def list_models(registry: RegistryDep, requester: RequesterDep, listing: ListingDep,
                      response: Response) -> list[ModelSummary]:
    """The models nobody owns (the bundled ones first, and any the server's operator placed),
    always; then a page of trained and imported ones, newest first: yours (owner=me, the
    default) or everyone's (owner=all). X-Total-Count counts the trained and imported ones.
    On the event loop: it reads only what the registry keeps (no file, no lock), so it
    answers without waiting for a worker thread."""
    entries, total = registry.listing(listing.owner, listing.limit, listing.offset)
    listing.answer(response, total)
    return [summary(e, requester.owner) for e in entries]


@router.get("/{model_id}", response_model=ModelDetail, responses=NOT_FOUND)
def get_model(entry: ModelDep, requester: RequesterDep) -> ModelDetail:
    """One model: its architecture, vocabulary, training summary and what a trace can show."""
    cell = entry.model.cell
    return ModelDetail(**summary(entry, requester.owner).model_dump(), vocab=entry.model.vocab.to_string(),
                       history=training_summary(entry), quantities=list(cell.quantities),
                       gates=list(cell.gate_names))


class Passage(BaseModel):
    title: str = Field(description="The passage's first words and where it comes from.")
    text: str
    part: Literal["validation", "training", "sample"] = Field(
        description="validation: text the model never trained on; training: text it did; sample: "
                    "text it wrote itself, because its corpus is not on this server.")


class Passages(BaseModel):
    corpus: str | None = Field(description="The file name of the model's training corpus, found by the "
                                           "sha256 its checkpoint records; null when it is not on this server.")
    passages: list[Passage]


# What the model writes when its corpus is missing: a little below 1 reads like its corpus
# without the misspellings of the full distribution; a fixed seed gives the same passage each visit.
SAMPLE_TEMPERATURE, SAMPLE_SEED = 0.8, 0


def own_passages(entry: Entry, library: CorpusLibrary) -> Passages | None:
    """Passages of the model's own training corpus (no computing), or None when the corpus is
    not on this server or has none the model's vocabulary can read."""
    m = entry.model
    corpus = training_corpus(entry, library)
    found = corpus_passages(library.text(corpus), val_fraction(m), set(m.vocab.chars)) if corpus else []
    return Passages(corpus=corpus.name, passages=[Passage(title=p.title, text=p.text, part=p.part)
                                                  for p in found]) if found else None


@router.get("/{model_id}/passages", response_model=Passages, responses=NOT_FOUND)
def get_passages(entry: ModelDep, library: LibraryDep, slots: ComputeSlots) -> Passages:
    """Passages to read with this model: from the validation part of its own training corpus,
    then from the training part; a passage it writes itself when the corpus is not here."""
    found = own_passages(entry, library)
    if found is not None:
        return found
    m = entry.model
    corpus = training_corpus(entry, library)
    with slots.expect(expected_seconds(m.config, sample=PASSAGE_CHARS)):
        text, _ = sample(m, "", PASSAGE_CHARS, SAMPLE_TEMPERATURE, seed=SAMPLE_SEED)
    text = text[:text.rfind("\n") + 1] or text                   # whole lines when it wrote any
    return Passages(corpus=corpus.name if corpus else None, passages=[Passage(
        title="Written by the model itself (its training text is not on this server)", text=text,
        part="sample")])


@page_router.get("/", response_class=HTMLResponse, include_in_schema=False)
def home_page(request: Request):
    """The models and where to start."""
    return render(request, "home")


import_router = APIRouter(prefix="/api", tags=["models"])


@import_router.post("/models/import", status_code=201, response_model=ImportedModel,
                    dependencies=[TokenChecked, MayCreate],
                    responses=UNAUTHORIZED | FORBIDDEN | IMPORT_ERRORS | INSUFFICIENT_STORAGE,
                    openapi_extra=IMPORT_BODY | OPTIONAL_BEARER)
async def import_model(request: Request, training: TrainingDep, registry: RegistryDep,
                       requester: RequesterDep, gate: ComputeSlots) -> ImportedModel:
    """Open a character model trained in PyTorch: upload its state dict as safetensors and its
    vocabulary; answers with what was recognised and its first predictions, and serves it in
    every view under `model_id`."""
    training.check_free_space("the import")
    gate.check()                      # a full queue refuses before the upload is received
    upload = await read_upload(request, training.settings)
    try:
        return await run_in_threadpool(save_import, training, registry, upload, requester, gate)
    finally:
        await upload.close()


@import_router.api_route("/models/import", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"],
                         include_in_schema=False)
def import_other_methods() -> Response:
    """POST only: without this, GET /api/models/import would reach GET /api/models/{model_id}
    (a 404 for a model named "import") instead of answering 405. Routed before the models router."""
    return ErrorResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "POST"})


@import_router.get("/imports", response_model=list[ImportedModel])
def list_imports(training: TrainingDep, requester: RequesterDep) -> list[ImportedModel]:
    """Every imported model, newest first, with what was recognised and whether it is yours."""
    return list_all(training, requester)


@import_router.delete("/models/{model_id}", status_code=204, dependencies=[TokenChecked],
                      openapi_extra=OPTIONAL_BEARER, responses=MODEL_REFUSALS | UNAUTHORIZED | FORBIDDEN)
def delete_model(entry: ModelDep, training: TrainingDep, registry: RegistryDep,
                 requester: RequesterDep) -> Response:
    """Delete a model you imported (the admin may delete anyone's). Bundled models and runs'
    models are not deleted here."""
    delete_import(entry, training, registry, requester)
    return Response(status_code=204)
