"""What training keeps on disk: an SQLite database (WAL) for corpora, runs and every
logged step, and beside it the corpus texts and the safetensors files of each run.

<data_dir>/rnnscope.sqlite3                 corpora, runs, metrics, samples, gradient profiles, concepts
<data_dir>/rnnscope.sqlite3.reserve         room kept for the database's writes on a full disk
<data_dir>/corpora/<sha256>.txt             a text, decoded and normalised to UTF-8 with \\n, stored once
                                            however many corpus entries (of however many owners) hold it
<data_dir>/runs/<id>.state.safetensors      a run's resumable training state
<data_dir>/models/run-<id>.safetensors      a run's model, which the model registry serves
<data_dir>/snapshots/run-<id>@<step>.safetensors   a few of a run's earlier weights, for the explorer

Each thread gets its own connection, reused for as long as the thread lives and closed
when it ends: WAL lets readers (request threads) go on while the training worker writes.
A run's driver thread and the request pool's threads come and go, so a connection kept
past its thread would hold two files (the database and its WAL) and its page cache for
the life of the process. Writes are serialised by one lock, so a transaction never waits
on SQLite's busy timeout.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Schema versions in order; PRAGMA user_version counts how many have been applied.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE corpora (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- AUTOINCREMENT: a deleted id is never reused
        name TEXT NOT NULL,
        filename TEXT,
        bytes INTEGER NOT NULL,
        chars INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        preflight TEXT NOT NULL,                -- JSON
        created REAL NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- file names derive from it, so never reused either
        name TEXT NOT NULL,
        corpus_id INTEGER,
        config TEXT NOT NULL,                   -- JSON: the request that started it
        status TEXT NOT NULL,
        step INTEGER NOT NULL DEFAULT 0,
        max_steps INTEGER NOT NULL,
        epoch REAL,
        train_loss REAL,
        val_loss REAL,
        best_val_loss REAL,
        chars_per_sec REAL,
        eta_seconds REAL,
        seconds REAL NOT NULL DEFAULT 0,
        checkpoint_step INTEGER,
        model_id TEXT,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        started REAL,
        finished REAL
    );
    CREATE INDEX runs_by_status ON runs (status, id);
    CREATE TABLE metrics (
        run_id INTEGER NOT NULL,
        step INTEGER NOT NULL,
        loss REAL,
        grad_norm REAL,
        clipped INTEGER NOT NULL,
        chars_per_sec REAL,
        learning_rate REAL,
        epoch REAL,
        eta_seconds REAL,
        val_loss REAL,
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE samples (
        run_id INTEGER NOT NULL,
        step INTEGER NOT NULL,
        temperature REAL NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (run_id, step, temperature)
    ) WITHOUT ROWID;
    CREATE TABLE gradients (
        run_id INTEGER NOT NULL,
        step INTEGER NOT NULL,
        profile TEXT NOT NULL,                  -- JSON: per layer ||dL/dh_k|| (and ||dL/dc_k||)
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (                     -- one row each time the worker picks a run up
        run_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        from_step INTEGER NOT NULL,
        to_step INTEGER,
        started REAL NOT NULL,
        ended REAL,
        outcome TEXT,
        PRIMARY KEY (run_id, attempt)
    ) WITHOUT ROWID;
    """,
    # Owners: a hash of the owner key that made a corpus or a run (app/web/security.py); NULL for
    # what existed before, which only the admin may change.
    """
    ALTER TABLE corpora ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN owner TEXT;
    CREATE INDEX corpora_by_sha ON corpora (sha256);
    """,
    # Models imported from PyTorch (app/models/imports.py), served from
    # <data_dir>/models/import-<id>.safetensors; the owner may delete them, as they may their runs.
    """
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- the file name derives from it, so never reused
        name TEXT NOT NULL,
        filename TEXT,                          -- of the uploaded model, for the person's reference
        bytes INTEGER NOT NULL,                 -- of the converted checkpoint: the owner's quota counts them
        report TEXT NOT NULL,                   -- JSON: what the importer recognised
        owner TEXT,
        created REAL NOT NULL
    );
    """,
    # Where each attempt trained ("this server", or a Ray node), for runs on a cluster.
    """
    ALTER TABLE attempts ADD COLUMN worker TEXT;
    """,
    # When the attempt got its machine: on a cluster, later than `started` by the wait for a node.
    """
    ALTER TABLE attempts ADD COLUMN placed REAL;
    """,
    # Fair share (issue 18). The text a run trains on, by content: texts are stored once per
    # sha256 (corpora/<sha256>.txt), and a run keeps its text when the corpus entry it was
    # started from is deleted. The seconds a step of the run takes here, measured when it was
    # queued: the queue's compute is remaining steps x this, bounded per owner and in all.
    """
    ALTER TABLE runs ADD COLUMN corpus_sha256 TEXT;
    ALTER TABLE runs ADD COLUMN step_seconds REAL;
    UPDATE runs SET corpus_sha256 = (SELECT c.sha256 FROM corpora c WHERE c.id = runs.corpus_id);
    CREATE INDEX runs_by_owner ON runs (owner, id);
    CREATE INDEX corpora_by_owner ON corpora (owner, id);
    """,
    # Cells forming (issue 23): at a checkpoint, the best unit for each concept over a fixed
    # stretch of the run's validation text (app/training/attempt.py Reporter.concepts).
    """
    CREATE TABLE concepts (
        run_id INTEGER NOT NULL,
        step INTEGER NOT NULL,
        strengths TEXT NOT NULL,                -- JSON: per concept its best unit and strength
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID;
    """,
]

STATUSES = ("queued", "running", "completed", "cancelled", "failed", "interrupted")
ACTIVE = ("queued", "running")

# Columns of a run the worker may set; update_run refuses others, so no name reaches SQL unchecked.
RUN_FIELDS = frozenset({
    "name", "status", "step", "epoch", "train_loss", "val_loss", "best_val_loss", "chars_per_sec",
    "eta_seconds", "seconds", "checkpoint_step", "model_id", "error", "cancel_requested", "started",
    "finished",
})


@dataclass(frozen=True)
class DataPaths:
    """Where each file lives. Every name derives from an integer id, never from user input."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "rnnscope.sqlite3"

    def corpus(self, corpus_id: int) -> Path:
        """Where a corpus's text was kept before texts were stored by content: only start-up
        looks here, to move such files to their blob."""
        return self.root / "corpora" / f"{int(corpus_id)}.txt"

    def blob(self, sha256: str) -> Path:
        """A text by its sha256: the one copy every corpus entry and run with that text reads."""
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / "corpora" / f"{sha256}.txt"

    def train_state(self, run_id: int) -> Path:
        return self.root / "runs" / f"{int(run_id)}.state.safetensors"

    def model(self, run_id: int) -> Path:
        return self.root / "models" / f"{model_id(run_id)}.safetensors"

    def snapshot(self, run_id: int, step: int) -> Path:
        return self.root / "snapshots" / f"{snapshot_id(run_id, step)}.safetensors"

    def snapshot_steps(self, run_id: int) -> list[int]:
        """The steps of the run's snapshots on disk, in order."""
        prefix = f"{model_id(run_id)}@"
        steps = []
        for path in (self.root / "snapshots").glob(f"{prefix}*.safetensors"):
            tail = path.name[len(prefix):-len(".safetensors")]
            if tail.isdigit():
                steps.append(int(tail))
        return sorted(steps)

    def make_dirs(self) -> None:
        for sub in ("corpora", "runs", "models", "snapshots"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


def is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def model_id(run_id: int) -> str:
    """The registry id of a run's model; cannot collide with the bundled ids."""
    return f"run-{int(run_id)}"


def snapshot_id(run_id: int, step: int) -> str:
    """The registry id of the run's weights at `step`: run-7@1800."""
    return f"{model_id(run_id)}@{int(step)}"


def finite(x: float | None) -> float | None:
    """SQLite turns NaN into NULL silently and JSON cannot carry infinity: say so explicitly."""
    return None if x is None or not math.isfinite(x) else float(x)


class HeldConnection:
    """One thread's connection, kept in that thread's threading.local. When the thread ends,
    Python drops its thread-local values, and the finalizer closes the connection."""

    def __init__(self, conn: sqlite3.Connection, owners: OpenConnections):
        self.conn = conn
        # Refers to the connection and the set, never to this holder; callable once.
        self.close = weakref.finalize(self, owners.close, conn)


class OpenConnections:
    """The connections held by live threads, so that close() can reach them all; none is
    kept alive by this set, so a finished thread's connection is closed and forgotten."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conns: set[sqlite3.Connection] = set()

    def hold(self, conn: sqlite3.Connection) -> HeldConnection:
        with self._lock:
            self._conns.add(conn)
        return HeldConnection(conn, self)

    def close(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            self._conns.discard(conn)
        try:
            conn.close()
        except sqlite3.Error:                     # closed already, or its disk gone: nothing to keep
            pass

    def close_all(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)


# Room the store keeps on its disk for its own bookkeeping. When something else fills the
# disk, it is given up, so that a run can still be marked interrupted, cancelled or deleted
# (a status is a page or two; deleting a run of 50,000 logged steps rewrites ~4 MB of pages).
RESERVE_BYTES = 4_000_000


@dataclass(frozen=True)
class QueueLimits:
    """What the queue may hold: runs waiting (in all, per owner) and seconds of training
    still to do in queued and running runs (in all, per owner)."""

    runs: int
    runs_per_owner: int | None = None
    seconds: float = math.inf
    seconds_per_owner: float = math.inf


class QueueFull(Exception):
    """A run the queue cannot take. `limit` is what `kind` names: runs, runs_per_owner,
    seconds, seconds_per_owner, or run_seconds (the run alone is over seconds_per_owner);
    `current` is what is queued (for run_seconds, the run's own), `adding` the run's seconds."""

    def __init__(self, kind: str, current: float, limit: float, adding: float = 0.0):
        super().__init__(kind)
        self.kind, self.current, self.limit, self.adding = kind, current, limit, adding


class Store:
    def __init__(self, path: Path, reserve_bytes: int = RESERVE_BYTES):
        self.path = path
        self.reserve = path.with_name(path.name + ".reserve")
        self.reserve_bytes = reserve_bytes
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._open = OpenConnections()
        self._migrate()
        self._keep_reserve()

    # ---- connections and transactions ------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on its first use and closed when the thread ends."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = self._open.hold(self._connect())
        return held.conn

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit, so a read never holds a lock open.
        # check_same_thread off only so that close() may close another thread's connection.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (not a power cut) without an fsync per commit.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def release_thread(self) -> None:
        """Close this thread's connection now rather than when Python clears the thread's
        locals: a run's driver thread calls it as it ends, so its files close with the run."""
        held = getattr(self._local, "held", None)
        if held is not None:
            del self._local.held
            held.close()

    @property
    def open_connections(self) -> int:
        """Connections open now: one per live thread that has used the store."""
        return len(self._open)

    @contextmanager
    def write(self, undo: Callable[[], None] = lambda: None) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on an exception, after
        which `undo` reverts what the transaction did outside the database, still under the
        write lock (so no other transaction can have reused what it reverts)."""
        with self._write_lock:
            self._keep_reserve()
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself fails (a full disk): a transaction left open would
                # hold the write lock and fail every later BEGIN on this connection.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                try:
                    undo()
                except Exception:
                    log.exception("cannot undo a transaction's change outside the database")
                raise

    def low_space(self, keep: int) -> str | None:
        """Why a file written now could fill the disk (keeping `keep` bytes free), or None.
        While the reserve is given up, nothing but the database's own writes may use its room."""
        with self._write_lock:
            self._keep_reserve()
            free = shutil.disk_usage(self.path.parent).free
            if self.reserve_bytes and not self.reserve.exists():
                return "the disk is full: less than the room kept for the database's own writes is left"
        if free < keep:
            return (f"the disk has {free / 1e6:,.0f} MB free, under the {keep / 1e6:,.0f} MB kept free "
                    "(setting RNNSCOPE_MIN_FREE_BYTES)")
        return None

    def _keep_reserve(self) -> None:
        """Give the reserve up when the disk is (nearly) full, take it again once there is
        room: a statvfs per transaction, which commit at most a few times a second."""
        if not self.reserve_bytes:
            return
        try:
            free = shutil.disk_usage(self.path.parent).free
            if self.reserve.exists():
                if free < self.reserve_bytes // 4:
                    self.reserve.unlink(missing_ok=True)
                    log.warning("the disk of %s is full: using the space kept for the database's own "
                                "writes", self.path.parent)
            elif free > 2 * self.reserve_bytes:
                with open(self.reserve, "wb") as f:
                    if hasattr(os, "posix_fallocate"):
                        os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
                    else:                                 # a sparse file would reserve nothing
                        f.write(bytes(self.reserve_bytes))
        except OSError as e:
            log.warning("cannot keep the reserve %s, so a full disk will stop the database: %s",
                        self.reserve, e)
            self.reserve_bytes = 0                        # tried once; not again at every write
            try:
                self.reserve.unlink(missing_ok=True)      # never half a reserve counted as one
            except OSError:
                pass

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several queries."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._write_lock:
            conn = self._conn()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise RuntimeError(f"{self.path} has schema version {version}; this rnnscope knows "
                                   f"{len(MIGRATIONS)}: upgrade rnnscope or use another data directory")
            for v in range(version, len(MIGRATIONS)):
                # executescript commits first, so the script and its version bump are one transaction here.
                conn.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[v]}; "
                                   f"PRAGMA user_version = {v + 1}; COMMIT;")

    def close(self) -> None:
        """Close every thread's connection; a thread that uses the store again opens a new one."""
        self._local = threading.local()
        self._open.close_all()

    def integrity_ok(self) -> bool:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # ---- corpora ----------------------------------------------------------------------

    def add_corpus(self, name: str, filename: str | None, size: int, chars: int, sha256: str,
                   preflight: dict, owner: str | None = None,
                   place: Callable[[int], None] = lambda corpus_id: None,
                   unplace: Callable[[int], None] = lambda corpus_id: None,
                   admit: Callable[[sqlite3.Connection], None] = lambda db: None) -> int:
        """Insert a corpus and call `place(id)` (which moves its file into place) inside the
        same transaction: if placing fails, no row is left without its file; if the COMMIT
        fails, `unplace(id)` removes the file, and no file is left without its row (the id,
        rolled back, would be the next upload's). `admit(db)` runs first, in the same
        transaction, so that quotas it checks cannot be passed by two uploads at once."""
        placed: list[int] = []
        with self.write(undo=lambda: [unplace(i) for i in placed]) as db:
            admit(db)
            cur = db.execute("INSERT INTO corpora (name, filename, bytes, chars, sha256, preflight, created, "
                             "owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (name, filename, size, chars, sha256, json.dumps(preflight), time.time(), owner))
            place(cur.lastrowid)
            placed.append(cur.lastrowid)
            return cur.lastrowid

    def find_corpus(self, sha256: str, owner: str | None) -> dict | None:
        """The owner's corpus with this text, if they uploaded it before."""
        row = self._conn().execute("SELECT * FROM corpora WHERE sha256 = ? AND owner IS ? ORDER BY id LIMIT 1",
                                   (sha256, owner)).fetchone()
        return None if row is None else corpus_row(row)

    def owner_corpus_bytes(self, owner: str, db: sqlite3.Connection | None = None) -> int:
        """An owner's corpus entries, each counted whole: what they would keep on a server of their own."""
        return (db or self._conn()).execute("SELECT coalesce(sum(bytes), 0) FROM corpora WHERE owner = ?",
                                            (owner,)).fetchone()[0]

    def total_corpus_bytes(self, db: sqlite3.Connection | None = None) -> int:
        """The texts of all corpus entries, each distinct text once (as they are stored)."""
        return (db or self._conn()).execute("SELECT coalesce(sum(bytes), 0) FROM (SELECT max(bytes) AS bytes "
                                            "FROM corpora GROUP BY sha256)").fetchone()[0]

    def has_text(self, sha256: str, db: sqlite3.Connection | None = None) -> bool:
        """Whether a corpus entry or a queued or running run holds this text."""
        return (db or self._conn()).execute(
            "SELECT EXISTS (SELECT 1 FROM corpora WHERE sha256 = ?) OR EXISTS (SELECT 1 FROM runs WHERE "
            "corpus_sha256 = ? AND status IN ('queued', 'running'))", (sha256, sha256)).fetchone()[0] == 1

    def texts_in_use(self, db: sqlite3.Connection | None = None) -> tuple[set[str], set[str]]:
        """The sha256 of every text a corpus entry holds, and of those only queued or running runs hold."""
        db = db or self._conn()
        entries = {r[0] for r in db.execute("SELECT DISTINCT sha256 FROM corpora")}
        runs = {r[0] for r in db.execute("SELECT DISTINCT corpus_sha256 FROM runs WHERE corpus_sha256 IS NOT "
                                         "NULL AND status IN ('queued', 'running')")}
        return entries, runs - entries

    def corpus_ids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT id FROM corpora")]

    def run_ids(self) -> list[int]:
        return [r[0] for r in self._conn().execute("SELECT id FROM runs")]

    def set_corpus_preflight(self, corpus_id: int, preflight: dict) -> None:
        with self.write() as db:
            db.execute("UPDATE corpora SET preflight = ? WHERE id = ?", (json.dumps(preflight), corpus_id))

    def get_corpus(self, corpus_id: int) -> dict | None:
        row = self._conn().execute("SELECT * FROM corpora WHERE id = ?", (corpus_id,)).fetchone()
        return None if row is None else corpus_row(row)

    def list_corpora(self, owner: str | None = None, limit: int = -1, offset: int = 0) -> tuple[list[dict], int]:
        """Corpus entries newest first: all, or an `owner`'s and those nobody owns (made before
        owners were); a page of `limit` (-1: all) from `offset`, and how many there are."""
        where, args = ("", ()) if owner is None else (" WHERE owner = ? OR owner IS NULL", (owner,))
        with self.read() as db:
            total = db.execute(f"SELECT count(*) FROM corpora{where}", args).fetchone()[0]
            rows = db.execute(f"SELECT * FROM corpora{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                              (*args, limit, offset)).fetchall()
        return [corpus_row(r) for r in rows], total

    def delete_corpus(self, corpus_id: int) -> str | None:
        """Delete a corpus entry; the sha256 of its text when nothing else holds that text now
        (no other entry, no queued or running run), so its file may go; else None."""
        with self.write() as db:
            row = db.execute("SELECT sha256 FROM corpora WHERE id = ?", (corpus_id,)).fetchone()
            db.execute("DELETE FROM corpora WHERE id = ?", (corpus_id,))
            if row is None or self.has_text(row[0], db):
                return None
            return row[0]

    def runs_using(self, corpus_id: int, statuses: Sequence[str]) -> list[int]:
        marks = ",".join("?" * len(statuses))
        rows = self._conn().execute(f"SELECT id FROM runs WHERE corpus_id = ? AND status IN ({marks})",
                                    (corpus_id, *statuses))
        return [r[0] for r in rows]

    # ---- runs -------------------------------------------------------------------------

    def add_run(self, name: str, corpus_id: int, config: dict, max_steps: int, max_queued: int,
                owner: str | None = None, max_queued_per_owner: int | None = None, *,
                corpus_sha256: str | None = None, step_seconds: float | None = None,
                limits: QueueLimits | None = None) -> int:
        """A new queued run's id. Raises QueueFull when `max_queued` runs already wait, this
        owner has `max_queued_per_owner` waiting, or its compute would pass `limits`: the
        check and the insert are one transaction, so a burst cannot pass a limit together."""
        with self.write() as db:
            limits = limits or QueueLimits(max_queued, max_queued_per_owner)
            if corpus_sha256 is not None and db.execute("SELECT 1 FROM corpora WHERE id = ?",
                                                        (corpus_id,)).fetchone() is None:
                raise LookupError(f"no corpus {corpus_id}")   # deleted since the caller looked
            self._admit(db, owner, max_steps * (step_seconds or 0.0), limits)
            cur = db.execute("INSERT INTO runs (name, corpus_id, config, status, max_steps, created, owner, "
                             "corpus_sha256, step_seconds) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                             (name, corpus_id, json.dumps(config), max_steps, time.time(), owner,
                              corpus_sha256, step_seconds))
            return cur.lastrowid

    def requeue_run(self, run_id: int, expected: Sequence[str], limits: QueueLimits, **fields: Any) -> bool:
        """Queue a run again (resume) if its status is one of `expected`, within `limits` for
        its remaining steps: one transaction. False if its status changed; QueueFull if over."""
        with self.write() as db:
            row = db.execute("SELECT status, owner, max(0, max_steps - step) * coalesce(step_seconds, 0) "
                             "FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row[0] not in expected:
                return False
            self._admit(db, row[1], row[2], limits)
            self.update_run(run_id, db, status="queued", **fields)
            return True

    def _admit(self, db: sqlite3.Connection, owner: str | None, seconds: float, limits: QueueLimits) -> None:
        """Raise QueueFull unless one more run of `owner`, `seconds` of compute, fits `limits`."""
        if (n := self.queued_count(db)) >= limits.runs:
            raise QueueFull("runs", n, limits.runs)
        if limits.runs_per_owner is not None and (n := self.queued_count(db, owner)) >= limits.runs_per_owner:
            raise QueueFull("runs_per_owner", n, limits.runs_per_owner)
        if seconds > limits.seconds_per_owner:                # alone: waiting would not help
            raise QueueFull("run_seconds", seconds, limits.seconds_per_owner)
        if (t := self.queued_seconds(db, owner)) + seconds > limits.seconds_per_owner:
            raise QueueFull("seconds_per_owner", t, limits.seconds_per_owner, seconds)
        if (t := self.queued_seconds(db)) + seconds > limits.seconds:
            raise QueueFull("seconds", t, limits.seconds, seconds)

    def queued_seconds(self, db: sqlite3.Connection | None = None, owner: str | None = None) -> float:
        """Training time still to do in queued and running runs (all, or one owner's): their
        remaining steps x the seconds a step measured when queued; for a running run, its own
        estimate of the time left once it has one."""
        db = db or self._conn()
        where, args = ("", ()) if owner is None else (" AND owner = ?", (owner,))
        return db.execute("SELECT coalesce(sum(CASE WHEN status = 'running' AND eta_seconds IS NOT NULL "
                          "THEN eta_seconds ELSE max(0, max_steps - step) * coalesce(step_seconds, 0) END), 0) "
                          f"FROM runs WHERE status IN ('queued', 'running'){where}", args).fetchone()[0]

    def queued_count(self, db: sqlite3.Connection | None = None, owner: str | None = None) -> int:
        """Runs waiting to train: all of them, or one owner's."""
        db = db or self._conn()
        if owner is None:
            return db.execute("SELECT count(*) FROM runs WHERE status = 'queued'").fetchone()[0]
        return db.execute("SELECT count(*) FROM runs WHERE status = 'queued' AND owner = ?",
                          (owner,)).fetchone()[0]

    def get_run(self, run_id: int) -> dict | None:
        row = self._conn().execute(RUN_SELECT + " WHERE r.id = ?", (run_id,)).fetchone()
        return None if row is None else run_row(row)

    def list_runs(self, owner: str | None = None, limit: int = -1, offset: int = 0) -> list[dict]:
        """Runs newest first: all, or an `owner`'s and those nobody owns (made before owners
        were); a page of `limit` (-1: all) from `offset`."""
        where, args = ("", ()) if owner is None else (" WHERE r.owner = ? OR r.owner IS NULL", (owner,))
        return [run_row(r) for r in self._conn().execute(RUN_SELECT + where + " ORDER BY r.id DESC LIMIT ? OFFSET ?",
                                                         (*args, limit, offset))]

    def run_count(self, owner: str | None = None) -> int:
        where, args = ("", ()) if owner is None else (" WHERE owner = ? OR owner IS NULL", (owner,))
        return self._conn().execute(f"SELECT count(*) FROM runs{where}", args).fetchone()[0]

    def status_counts(self) -> dict[str, int]:
        return dict(self._conn().execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())

    def update_run(self, run_id: int, db: sqlite3.Connection | None = None, **fields: Any) -> None:
        unknown = set(fields) - RUN_FIELDS
        if unknown:
            raise ValueError(f"not run fields: {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        values = [finite(v) if isinstance(v, float) else v for v in fields.values()]
        if db is not None:
            db.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*values, run_id))
            return
        with self.write() as conn:
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", (*values, run_id))

    def set_status_if(self, run_id: int, expected: Sequence[str], **fields: Any) -> bool:
        """Update a run only if its status is one of `expected`: the check and the change
        are one transaction, so the API and the worker cannot both win a race."""
        with self.write() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row[0] not in expected:
                return False
            self.update_run(run_id, db, **fields)
            return True

    def next_queued(self) -> int | None:
        order = self.queue_order(limit=1)
        return order[0] if order else None

    def queue_order(self, limit: int = -1) -> list[int]:
        """Queued runs in the order the worker takes them: owners in turn, so one person's ten
        runs do not keep everyone else's first waiting. A run's place is the runs of its owner
        queued before it plus those of its owner training now; ties oldest first."""
        rows = self._conn().execute(
            "SELECT id FROM runs q WHERE status = 'queued' ORDER BY "
            "(SELECT count(*) FROM runs p WHERE p.owner IS q.owner AND (p.status = 'running' OR "
            "(p.status = 'queued' AND p.id < q.id))), id LIMIT ?", (limit,))
        return [r[0] for r in rows]

    def interrupt_running(self, reason: str = "the server stopped while this run was training",
                          run_id: int | None = None) -> list[int]:
        """A run still marked running that no worker trains (it died with the previous
        process, or with its driver thread) is interrupted, resumable from its last
        checkpoint: every such run, or only `run_id`."""
        only, args = ("", ()) if run_id is None else (" AND id = ?", (run_id,))
        with self.write() as db:
            ids = [r[0] for r in db.execute(f"SELECT id FROM runs WHERE status = 'running'{only}", args)]
            db.execute("UPDATE runs SET status = 'interrupted', eta_seconds = NULL, chars_per_sec = NULL, "
                       f"error = ? WHERE status = 'running'{only}",
                       (f"{reason}; resume it to continue from its last checkpoint", *args))
            db.executemany("UPDATE attempts SET outcome = 'interrupted' WHERE outcome IS NULL AND run_id = ?",
                           [(i,) for i in ids])
            return ids

    def delete_run(self, run_id: int, running_ok: bool = False) -> bool:
        """Delete a run and its history unless it is running (and `running_ok` is off, as it
        is when no worker is training it); False if it is."""
        with self.write() as db:
            row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or (row[0] == "running" and not running_ok):
                return False
            for table in ("metrics", "samples", "gradients", "concepts", "attempts"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return True

    # ---- history ------------------------------------------------------------------------

    def truncate_history(self, run_id: int, after_step: int) -> None:
        """Forget what was logged after `after_step`: a resumed run redoes those steps. The
        run's step goes back with its history, so the two agree until the next step lands."""
        with self.write() as db:
            for table in ("metrics", "samples", "gradients", "concepts"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ? AND step > ?", (run_id, after_step))
            db.execute("UPDATE runs SET step = min(step, ?) WHERE id = ?", (after_step, run_id))

    def log(self, run_id: int, metrics: Iterable[tuple], run_fields: dict[str, Any],
            samples: Iterable[tuple[int, float, str]] = (), profile: tuple[int, dict] | None = None,
            concepts: tuple[int, dict] | None = None) -> None:
        """One transaction: metric rows (step, loss, grad_norm, clipped, chars/s, lr, epoch,
        eta, val_loss), the run's summary, samples (step, temperature, text), a gradient
        profile, concept strengths."""
        with self.write() as db:
            rows = [(run_id, *(finite(v) if isinstance(v, float) else v for v in m)) for m in metrics]
            db.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?)",
                           [(run_id, *s) for s in samples])
            if profile is not None:
                db.execute("INSERT OR REPLACE INTO gradients VALUES (?, ?, ?)",
                           (run_id, profile[0], json.dumps(profile[1])))
            if concepts is not None:
                db.execute("INSERT OR REPLACE INTO concepts VALUES (?, ?, ?)",
                           (run_id, concepts[0], json.dumps(concepts[1])))
            if run_fields:
                self.update_run(run_id, db, **run_fields)

    def metrics(self, run_id: int, since: int = 0, limit: int = 100_000, stride: int = 1) -> list[dict]:
        """Logged steps after `since`: every stride-th, and every one with a validation loss."""
        rows = self._conn().execute(
            "SELECT step, loss, grad_norm, clipped, chars_per_sec, learning_rate, epoch, eta_seconds, "
            "val_loss FROM metrics WHERE run_id = ? AND step > ? AND (step % ? = 0 OR val_loss IS NOT NULL) "
            "ORDER BY step LIMIT ?", (run_id, since, stride, limit))
        return [dict(r) | {"clipped": bool(r["clipped"])} for r in rows]

    def metric_count(self, run_id: int) -> int:
        return self._conn().execute("SELECT count(*) FROM metrics WHERE run_id = ?", (run_id,)).fetchone()[0]

    def recent_loss(self, run_id: int, n: int = 100) -> float | None:
        """Mean training loss over the last n logged steps: one step's loss is noisy."""
        row = self._conn().execute("SELECT avg(loss) FROM (SELECT loss FROM metrics WHERE run_id = ? "
                                   "ORDER BY step DESC LIMIT ?)", (run_id, n)).fetchone()
        return row[0]

    def samples(self, run_id: int, since: int = 0, until: int | None = None) -> list[dict]:
        rows = self._conn().execute("SELECT step, temperature, text FROM samples WHERE run_id = ? "
                                    "AND step > ? AND step <= ? ORDER BY step, temperature",
                                    (run_id, since, 2**62 if until is None else until))
        return [dict(r) for r in rows]

    def gradient_profiles(self, run_id: int) -> list[tuple[int, dict]]:
        rows = self._conn().execute("SELECT step, profile FROM gradients WHERE run_id = ? ORDER BY step",
                                    (run_id,))
        return [(r[0], json.loads(r[1])) for r in rows]

    def concept_strengths(self, run_id: int) -> list[tuple[int, dict]]:
        rows = self._conn().execute("SELECT step, strengths FROM concepts WHERE run_id = ? ORDER BY step",
                                    (run_id,))
        return [(r[0], json.loads(r[1])) for r in rows]

    # ---- attempts -------------------------------------------------------------------------

    def start_attempt(self, run_id: int, from_step: int) -> int:
        with self.write() as db:
            n = db.execute("SELECT coalesce(max(attempt), 0) FROM attempts WHERE run_id = ?",
                           (run_id,)).fetchone()[0]
            db.execute("INSERT INTO attempts (run_id, attempt, from_step, started) VALUES (?, ?, ?, ?)",
                       (run_id, n + 1, from_step, time.time()))
            return n + 1

    def end_attempt(self, run_id: int, attempt: int, to_step: int, outcome: str) -> None:
        with self.write() as db:
            db.execute("UPDATE attempts SET to_step = ?, ended = ?, outcome = ? "
                       "WHERE run_id = ? AND attempt = ?", (to_step, time.time(), outcome, run_id, attempt))

    def set_attempt_where(self, run_id: int, attempt: int, worker: str) -> None:
        with self.write() as db:
            db.execute("UPDATE attempts SET worker = ?, placed = ? WHERE run_id = ? AND attempt = ?",
                       (worker, time.time(), run_id, attempt))

    def attempts(self, run_id: int) -> list[dict]:
        rows = self._conn().execute("SELECT attempt, from_step, to_step, started, placed, ended, outcome, worker "
                                    "FROM attempts WHERE run_id = ? ORDER BY attempt", (run_id,))
        return [dict(r) for r in rows]


# worker: where the run's latest attempt trains, or trained.
RUN_SELECT = ("SELECT r.*, c.name AS corpus_name, (SELECT a.worker FROM attempts a WHERE a.run_id = r.id "
              "ORDER BY a.attempt DESC LIMIT 1) AS worker FROM runs r LEFT JOIN corpora c ON c.id = r.corpus_id")


def remaining_seconds(run: dict) -> float | None:
    """A queued or running run's training time still to do, as Store.queued_seconds counts it."""
    if run["status"] not in ACTIVE:
        return None
    if run["status"] == "running" and run["eta_seconds"] is not None:
        return run["eta_seconds"]
    return max(0, run["max_steps"] - run["step"]) * (run.get("step_seconds") or 0.0)


def corpus_row(row: sqlite3.Row) -> dict:
    return dict(row) | {"preflight": json.loads(row["preflight"])}


def run_row(row: sqlite3.Row) -> dict:
    return dict(row) | {"config": json.loads(row["config"]),
                        "cancel_requested": bool(row["cancel_requested"])}
