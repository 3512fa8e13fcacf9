"""Models imported from PyTorch, the service under the routes in router.py: read a
safetensors state dict and its vocabulary from an upload, convert it into an rnnscope model
served in every view (model/importer.py does the recognising), store it, list and delete it,
and restore the imports at start-up.

<data_dir>/models/import-<id>.safetensors   the converted checkpoint, which the registry serves
imports table (training/store.py)           its name, owner and what was recognised

An upload is parsed as safetensors only: nothing in it is executed or unpickled. Its header is
checked and its shapes held to the limits before a tensor is read (model/importer.py), all of
it in the compute gate, the conversion holding its estimated peak of the memory budget.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from safetensors.numpy import save
from starlette.datastructures import UploadFile

from rnnscope.model.checkpoint import FORMAT, model_metadata
from rnnscope.model.importer import (ImportLimits, ImportRefused, Roles, SafetensorsReader, VocabSpec,
                                     next_chars, probe_text, reading_peak_bytes, stage_safetensors,
                                     vocab_from_file, vocab_from_string)

from ..inference.compute_gate import ComputeGate
from ..inference.registry import Entry, ModelRegistry, UnknownModelError, make_entry
from ..training.service import Training
from ..web.auth import check_owner
from ..web.errors import invalid
from ..web.schemas import ErrorMessage
from ..web.security import Requester
from ..web.uploads import read_form
from .schemas import Guess, ImportedModel, RecognisedModel

log = logging.getLogger(__name__)


# Multipart framing and the small fields around the two files.
FRAMING_BYTES = 65_536


IMPORT_ID = re.compile(r"import-([1-9][0-9]*)")


PROBE_CHARS = 40


def import_model_id(import_id: int) -> str:
    """The registry id of an imported model; cannot collide with bundled or run ids."""
    return f"import-{int(import_id)}"


IMPORT_ERRORS = {
    413: {"model": ErrorMessage, "description": "The model is over RNNSCOPE_MAX_IMPORT_BYTES, the vocabulary "
                                                "file over RNNSCOPE_MAX_UPLOAD_BYTES, your imports over "
                                                "RNNSCOPE_MAX_IMPORT_BYTES_PER_OWNER, or converting it would "
                                                "take more than RNNSCOPE_MEMORY_BUDGET."},
    422: {"description": "Not safetensors, or a malformed one (the message names the fault: the header's size "
                         "or nesting, a tensor's dtype, rank or offsets), not a model rnnscope can open (the "
                         "message says what was found and what to name or change), a vocabulary that does "
                         "not fit it or is not text, a model over RNNSCOPE_MAX_PARAMETERS, "
                         "RNNSCOPE_MAX_VOCAB or RNNSCOPE_MAX_HIDDEN_SIZE or of more than 8 layers (checked "
                         "from the shapes, before converting), or weights whose losses on a probe text are "
                         "not finite."},
}


ROLE_FIELD = {"type": "string", "maxLength": 200}


IMPORT_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["model"],
    "properties": {
        "model": {"type": "string", "format": "binary",
                  "description": "The state dict as safetensors: "
                                 "`safetensors.torch.save_file(model.state_dict(), path)`. An optional "
                                 "nn.Embedding, one nn.RNN (tanh), nn.GRU or nn.LSTM "
                                 "(unidirectional, with biases, any layers), and a final nn.Linear, whatever "
                                 "their attribute names."},
        "vocab": {"type": "string", "format": "binary",
                  "description": "The training text (its sorted set of characters), or a .json file: a "
                                 "list of the characters in id order or a mapping {character: id}."},
        "chars": {"type": "string", "maxLength": 20_000,
                  "description": "Instead of `vocab`: the characters in id order, typed out or as a JSON "
                                 "list. Neither is needed for an rnnscope checkpoint, which carries its "
                                 "own."},
        "name": {"type": "string", "maxLength": 100, "description": "Default: the file name."},
        "nonlinearity": {"type": "string", "enum": ["tanh", "relu"],
                         "description": "What an nn.RNN used; its weights cannot show it. relu is refused."},
        "cell": {"type": "string", "enum": ["rnn", "gru", "lstm"],
                 "description": "Checked against the tensors' shapes."},
        "embedding": ROLE_FIELD | {"description": "The embedding's module name when the shapes leave it "
                                                  "ambiguous; `none` for one-hot input."},
        "rnn": ROLE_FIELD | {"description": "The recurrent module's name, when the file has several."},
        "decoder": ROLE_FIELD | {"description": "The final Linear's name, when several fit."},
    },
}}}}}


FIELDS = ("chars", "name", "nonlinearity", "cell", "embedding", "rnn", "decoder")


MODEL_REFUSALS = {
    404: {"model": ErrorMessage, "description": "No model with that id."},
    409: {"model": ErrorMessage, "description": "Not an imported model: a bundled model, a training run's "
                                                "model (delete the run) or a file the server's operator "
                                                "placed."},
}


@dataclass
class Upload:
    model: UploadFile
    vocab: UploadFile | None
    fields: dict[str, str]

    async def close(self) -> None:
        for f in (self.model, self.vocab):
            if f is not None:
                await f.close()


def too_large(what: str, size: int, limit: int, setting: str) -> HTTPException:
    return HTTPException(413, f"{what} is {size:,} bytes; the limit is {limit:,} bytes (setting {setting})")


async def read_upload(request: Request, settings) -> Upload:
    """The multipart `model` and `vocab` files (spooled to disk past 1 MB) and the text fields."""
    form = await read_form(
        request, settings.max_import_bytes + settings.max_upload_bytes + FRAMING_BYTES,
        "send multipart/form-data with the safetensors file in the field `model`",
        lambda size: too_large("the upload", size, settings.max_import_bytes, "RNNSCOPE_MAX_IMPORT_BYTES"),
        lambda: HTTPException(413, f"the upload is over the limit of {settings.max_import_bytes:,} bytes "
                                   "for the model (setting RNNSCOPE_MAX_IMPORT_BYTES) and "
                                   f"{settings.max_upload_bytes:,} for the vocabulary file "
                                   "(setting RNNSCOPE_MAX_UPLOAD_BYTES)"),
        max_files=2, max_fields=len(FIELDS), max_part_size=FRAMING_BYTES)
    model, vocab = form.get("model"), form.get("vocab")
    upload = Upload(model if isinstance(model, UploadFile) else None,
                    vocab if isinstance(vocab, UploadFile) else None, {})
    try:
        if upload.model is None:
            raise invalid(("body", "model"), "the field `model` must hold the safetensors file, sent as a "
                          "file")
        if vocab is not None and upload.vocab is None:
            raise invalid(("body", "vocab"), "the field `vocab` must be a file; send typed characters as "
                          "`chars`")
        if upload.model.size is not None and upload.model.size > settings.max_import_bytes:
            raise too_large("the model file", upload.model.size, settings.max_import_bytes,
                            "RNNSCOPE_MAX_IMPORT_BYTES")
        if upload.vocab is not None and upload.vocab.size is not None \
                and upload.vocab.size > settings.max_upload_bytes:
            raise too_large("the vocabulary file", upload.vocab.size, settings.max_upload_bytes,
                            "RNNSCOPE_MAX_UPLOAD_BYTES")
        for key in FIELDS:
            value = form.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise invalid(("body", key), f"`{key}` must be text, not a file")
            upload.fields[key] = value
        for key, allowed in (("nonlinearity", ("tanh", "relu")), ("cell", ("rnn", "gru", "lstm"))):
            if key in upload.fields and upload.fields[key] not in allowed:
                raise invalid(("body", key), f"`{key}` must be one of {', '.join(allowed)}")
        if len(upload.fields.get("name", "")) > 100:
            raise invalid(("body", "name"), "the name must be at most 100 characters")
        if len(upload.fields.get("chars", "")) > 20_000:
            raise invalid(("body", "chars"), "`chars` must be at most 20,000 characters")
        if upload.vocab is not None and "chars" in upload.fields:
            raise invalid(("body", "chars"), "send either a `vocab` file or `chars`, not both")
    except BaseException:
        await form.close()
        raise
    return upload


def refused(field: str, e: ImportRefused):
    return invalid(("body", field), str(e), "import_refused")


def import_limits(settings) -> ImportLimits:
    return ImportLimits(max_vocab=settings.max_vocab, max_parameters=settings.max_parameters,
                        max_hidden_size=settings.max_hidden_size)


def read_vocab(upload: Upload, settings, limits: ImportLimits) -> tuple[VocabSpec | None, str | None]:
    """The vocabulary the upload names (a file, or typed `chars`), and a corpus's opening."""
    spec, corpus_head = None, None
    try:
        if upload.vocab is not None:
            vocab_name = PurePath(upload.vocab.filename or "vocabulary").name[:200]
            raw = upload.vocab.file.read(settings.max_upload_bytes + 1)
            if len(raw) > settings.max_upload_bytes:
                raise too_large("the vocabulary file", len(raw), settings.max_upload_bytes,
                                "RNNSCOPE_MAX_UPLOAD_BYTES")
            spec = vocab_from_file(raw, vocab_name, limits)
            if spec.corpus_sha256:
                corpus_head = raw[:4 * PROBE_CHARS].decode("utf-8", "ignore").replace("\r\n", "\n")
        elif "chars" in upload.fields:
            spec = vocab_from_string(upload.fields["chars"], limits)
    except ImportRefused as e:
        raise refused("vocab" if upload.vocab is not None else "chars", e) from None
    return spec, corpus_head


def convert_upload(upload: Upload, settings, gate: ComputeGate):
    """Parse, recognise, convert and serialise: (model, recognised, probe text, next guesses,
    file name, checkpoint bytes). All of it in a compute slot: first holding the bytes reading
    a header and a vocabulary may take, then, once the shapes have passed the limits, the
    conversion's estimated peak."""
    filename = PurePath(upload.model.filename or "model.safetensors").name[:200]
    file = upload.model.file
    size = file.seek(0, os.SEEK_END)
    if size > settings.max_import_bytes:
        raise too_large("the model file", size, settings.max_import_bytes, "RNNSCOPE_MAX_IMPORT_BYTES")
    limits = import_limits(settings)
    vocab_bytes = 0 if upload.vocab is None else upload.vocab.file.seek(0, os.SEEK_END)
    if upload.vocab is not None:
        upload.vocab.file.seek(0)
    fields = upload.fields
    roles = Roles(fields.get("embedding"), fields.get("rnn"), fields.get("decoder"), fields.get("cell"),
                  fields.get("nonlinearity"))
    # Two jobs, not one nested in the other: the conversion's bytes must not wait on the
    # reading's, which this thread would hold.
    with gate.job(reading_peak_bytes(limits, vocab_bytes), "reading the model's header and vocabulary"):
        try:
            reader = SafetensorsReader(file, filename, limits)
        except ImportRefused as e:
            raise refused("model", ImportRefused(
                f"{e}. The browser takes safetensors only: `safetensors.torch.save_file(model.state_dict(), "
                "\"model.safetensors\")`, or `rnnscope import model.pt --vocab ...` on the command "
                "line")) from None
        spec, corpus_head = read_vocab(upload, settings, limits)
        try:
            staged = stage_safetensors(reader, spec, roles, limits)
        except ImportRefused as e:
            raise refused("model", e) from None
    with gate.job(staged.peak_bytes, "converting the model"):
        try:
            lm, rec = staged.finish()
        except ImportRefused as e:
            raise refused("model", e) from None
        text = probe_text(lm, corpus_head)[:PROBE_CHARS]
        guesses = next_chars(lm, text)
        lm.history["name"] = fields.get("name", "").strip() or PurePath(filename).stem or "imported model"
        blob = save({k: np.ascontiguousarray(v) for k, v in lm.params.items()},
                    metadata={"format": FORMAT} | model_metadata(lm))
    return lm, rec, text, guesses, filename, blob


def save_import(training: Training, registry: ModelRegistry, upload: Upload, requester: Requester,
                gate: ComputeGate) -> ImportedModel:
    """Convert the upload, write its checkpoint beside the runs' models and serve it. The file
    is moved into place inside the row's transaction: no row without its file."""
    s = training.settings
    lm, rec, text, guesses, filename, blob = convert_upload(upload, s, gate)
    name = lm.history["name"]
    models_dir = training.paths.root / "models"
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".import-", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        report = json.dumps(rec.to_dict() | {"vocab_source": lm.history["vocab_source"], "probe": text,
                                             "next": [{"char": c, "p": p} for c, p in guesses]})
        placed: list[Path] = []
        # A COMMIT that fails after the file is in place takes the file back out with it.
        with training.store.write(undo=lambda: [p.unlink(missing_ok=True) for p in placed]) as db:
            used = db.execute("SELECT coalesce(sum(bytes), 0) FROM imports WHERE owner = ?",
                              (requester.owner,)).fetchone()[0]
            if used + len(blob) > s.max_import_bytes_per_owner:
                raise HTTPException(413, f"your imported models would take {used + len(blob):,} bytes; each "
                                         f"person may keep {s.max_import_bytes_per_owner:,} (setting "
                                         "RNNSCOPE_MAX_IMPORT_BYTES_PER_OWNER); delete one of yours first")
            cur = db.execute("INSERT INTO imports (name, filename, bytes, report, owner, created) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (name, filename, len(blob), report, requester.owner, time.time()))
            import_id = cur.lastrowid
            path = models_dir / f"{import_model_id(import_id)}.safetensors"
            os.replace(tmp, path)
            placed.append(path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    entry = make_entry(import_model_id(import_id), path, bundled=False, name=name, cache=registry.cache,
                       owner=requester.owner)
    registry.put(entry)
    registry.on_ready(entry.id)
    training.on_models_changed()
    return imported(get_row(training, import_id), requester)


def get_row(training: Training, import_id: int) -> dict | None:
    with training.store.read() as db:
        row = db.execute("SELECT * FROM imports WHERE id = ?", (import_id,)).fetchone()
    return None if row is None else dict(row)


def imported(row: dict, requester: Requester) -> ImportedModel:
    report = json.loads(row["report"])
    return ImportedModel(model_id=import_model_id(row["id"]), name=row["name"], filename=row["filename"],
                         created=row["created"], yours=requester.may_change(row["owner"]),
                         recognised=RecognisedModel.model_validate(report),
                         vocab_source=report["vocab_source"],
                         probe=report["probe"], next=[Guess.model_validate(g) for g in report["next"]])


def restore(training: Training, registry: ModelRegistry | None) -> None:
    """At start-up: the registry loaded models/*.safetensors by file name; give imported models
    their names again (the upload's, or the one `rnnscope import --name` kept in the file), and
    forget rows whose file is gone."""
    with training.store.read() as db:
        rows = [dict(r) for r in db.execute("SELECT id, name, owner FROM imports")]
    for entry in list(registry or ()):
        name = entry.history.get("name") if "imported_from" in entry.history else None
        if not entry.bundled and isinstance(name, str) and name.strip():
            registry.put(replace(entry, name=name.strip()[:100]))
    for row in rows:
        model_id = import_model_id(row["id"])
        if not (training.paths.root / "models" / f"{model_id}.safetensors").exists():
            log.warning("forgetting imported model %s: its file is gone", model_id)
            with training.store.write() as db:
                db.execute("DELETE FROM imports WHERE id = ?", (row["id"],))
            continue
        if registry is None:
            continue
        try:
            registry.put(replace(registry.get(model_id), name=row["name"], owner=row["owner"]))
        except UnknownModelError:
            log.warning("imported model %s is not served: its file could not be loaded", model_id)
    training.on_models_changed()


def list_all(training: Training, requester: Requester) -> list[ImportedModel]:
    """Every imported model, newest first, with what was recognised and whether it is the requester's."""
    with training.store.read() as db:
        rows = [dict(r) for r in db.execute("SELECT * FROM imports ORDER BY id DESC")]
    return [imported(r, requester) for r in rows]


def delete_import(entry: Entry, training: Training, registry: ModelRegistry, requester: Requester) -> None:
    """Delete an imported model (409 for a bundled model or a run's, 403 for another owner's)."""
    if entry.bundled:
        raise HTTPException(409, f"{entry.id} is a bundled model: it ships with rnnscope and is not deleted")
    m = IMPORT_ID.fullmatch(entry.id)
    row = get_row(training, int(m.group(1))) if m else None
    if row is None:
        run = re.fullmatch(r"run-([0-9]+)", entry.id)
        if run:
            raise HTTPException(409, f"{entry.id} is the model of training run {run.group(1)}: delete the "
                                     f"run instead (DELETE /api/runs/{run.group(1)})")
        raise HTTPException(409, f"{entry.id} was placed in the server's models directory by whoever runs "
                                 "it; only models imported with POST /api/models/import are deleted here")
    check_owner(requester, row["owner"], f"model {entry.id}", "delete")
    # The file is moved aside inside the transaction and put back if it does not commit;
    # start-up clears a .tmp a crash leaves.
    aside = entry.path.with_name(f".{entry.path.name}.deleted.tmp")
    with training.store.write(undo=lambda: aside.exists() and os.replace(aside, entry.path)) as db:
        db.execute("DELETE FROM imports WHERE id = ?", (row["id"],))
        if entry.path.exists():
            os.replace(entry.path, aside)
    aside.unlink(missing_ok=True)
    registry.remove(entry.id)
    training.on_models_changed()


@asynccontextmanager
async def restored(app: FastAPI) -> AsyncIterator[None]:
    """The models feature's lifespan: the imports stored before a restart are served again
    (by an app that has the training feature's store)."""
    training = getattr(app.state, "training", None)
    if training is not None:
        await run_in_threadpool(restore, training, app.state.registry)
    yield
