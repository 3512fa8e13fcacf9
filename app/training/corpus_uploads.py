"""Storing an uploaded corpus: decoded and counted in the compute gate, held to the owner's and
the server's quotas in the transaction that adds it, its text stored once by its sha256
however many people upload it."""
from __future__ import annotations

from pathlib import PurePath

from starlette.datastructures import UploadFile

from ..inference.compute_gate import ComputeGate
from ..web.security import Requester
from .corpora import CorpusRefused, ingest, preflight
from .service import Training


def save_corpus(training: Training, file: UploadFile, name: str | None, requester: Requester,
                gate: ComputeGate) -> tuple[dict, bool]:
    """Decode and count the upload, time the recommended model, record it all. The same
    text uploaded again by the same owner answers with the corpus they have (and False)."""
    s, paths, store = training.settings, training.paths, training.store
    with gate:        # counting holds the interpreter and a 9 MB table per upload: a compute job too
        ingested = ingest(file.file, paths.root / "corpora", s.max_upload_bytes, s.max_vocab, s.min_corpus_chars)
        sha, placed = ingested.sha256, []

        def admit(db) -> None:
            """The quotas, in the transaction that adds the entry: two uploads cannot pass one together."""
            used = store.owner_corpus_bytes(requester.owner, db)
            if used + ingested.bytes > s.max_corpus_bytes_per_owner:
                raise CorpusRefused(413, f"your corpora would take {used + ingested.bytes:,} bytes; each person "
                                         f"may keep {s.max_corpus_bytes_per_owner:,} (setting "
                                         "RNNSCOPE_MAX_CORPUS_BYTES_PER_OWNER); delete one of yours first")
            stored = training.stored_text_bytes(db)
            if not paths.blob(sha).is_file() and stored + ingested.bytes > s.max_corpus_bytes_total:
                raise CorpusRefused(507, f"the server keeps at most {s.max_corpus_bytes_total:,} bytes of corpora "
                                         f"in all (setting RNNSCOPE_MAX_CORPUS_BYTES_TOTAL), {stored:,} are stored "
                                         f"and this text adds {ingested.bytes:,}; ask whoever runs the server to "
                                         "delete some")

        def place(corpus_id: int) -> None:
            placed.append(training.place_text(ingested.path, sha))

        def unplace(corpus_id: int) -> None:
            if placed and placed[0]:                # this upload stored the text: nothing else holds it
                paths.blob(sha).unlink(missing_ok=True)

        try:
            existing = store.find_corpus(sha, requester.owner)
            if existing is not None:
                return existing, False
            report = preflight(ingested, s.max_hidden_size, s.target_run_seconds,
                               lambda *shape: training.seconds_per_step(*shape, gate=gate))
            filename = PurePath(file.filename).name[:200] if file.filename else None
            name = (name or "").strip() or (PurePath(filename).stem if filename else "") or "corpus"
            training.remove_unused_texts()        # those finished runs kept: no longer counted
            with training.texts_lock:
                # Placed inside the row's transaction: no row without its text, no text left
                # placed for a row whose COMMIT failed.
                corpus_id = store.add_corpus(name, filename, ingested.bytes, ingested.chars, sha,
                                             report.model_dump(), requester.owner, place=place, unplace=unplace,
                                             admit=admit)
        finally:
            ingested.path.unlink(missing_ok=True)
    return store.get_corpus(corpus_id), True
