"""Long readings kept in memory-mapped files instead of the server's memory.

A match searches every unit's value over a model's validation text: 3,072 units x 100,000
characters of a 2x256 LSTM, 614 MB as float16 (model/match.py read_all); a probe ranks every
unit over a text of up to 20,000 characters, 245 MB as float32. Kept in the API process, a
match's reading was most of a warmed server's memory. Kept in a file under the data
directory and memory-mapped, it lives in the kernel's page cache, which any process reads
without a copy and the kernel may drop and read again, and a match touches only the rows of
the units it asks about (200 kB each): the server's resident memory grows by those rows.

The reading is written a piece at a time as it is computed (in a worker process, on a Ray
replica, or in this thread: app/inference/readings.py), each piece at its place in the file,
so no process ever holds all of it. A file is written under a temporary name and renamed when
complete; it is deleted once nothing holds the reading made of it any more (the cache let it
go and no request still works on it: a worker reopens it by name while one does). The directory belongs
to this process, which holds a lock on a file in it for its life; it is removed when the app
stops, and one whose lock is free (its process died, in this container or another sharing
the data directory) is removed by the next server to start.
"""
from __future__ import annotations

import fcntl
import itertools
import logging
import os
import secrets
import shutil
import weakref
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DTYPE = np.dtype("<f2")            # a match's reading; a probe's is float32
PREFIX = "readings-"


class DiskFull(OSError):
    """The disk filled while a reading was written (ENOSPC or the like): nothing was kept."""


class ReadingFiles:
    """The readings this process keeps on disk, in a directory of its own under `root`."""

    def __init__(self, root: Path, min_free_bytes: int, dtype=DTYPE):
        self.root, self.min_free_bytes, self.dtype = Path(root), min_free_bytes, np.dtype(dtype)
        self.directory = self.root / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self._numbers = itertools.count()
        self._owner: int | None = None           # the locked file descriptor that says "in use"

    def room_for(self, nbytes: int) -> bool:
        """Whether a file of `nbytes` leaves the disk its `min_free_bytes` (the setting the
        uploads and checkpoints keep free)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return shutil.disk_usage(self.root).free - nbytes >= self.min_free_bytes
        except OSError:
            return False

    def room_for_values(self, count: int) -> bool:
        """room_for a reading of `count` values of this directory's dtype."""
        return self.room_for(count * self.dtype.itemsize)

    def write(self, shape: tuple[int, int], pieces: Iterable[tuple[int, np.ndarray]], axis: int = 1) -> np.memmap:
        """A `shape` array of `dtype` put together from `pieces`, (start, values), each a slice of
        it along `axis` from `start` (a reading of every unit is (units, T), pieces along time,
        axis 1; one layer's is (T, values), axis 0), written into a new file and mapped
        read-only. DiskFull when the disk fills meanwhile."""
        self._claim()
        rows, cols = shape
        size = self.dtype.itemsize
        path = self.directory / f"{next(self._numbers)}.npy"
        part = path.with_suffix(".part")
        try:
            # A sparse file of the reading's size with .npy's header: blocks are taken as written.
            header = np.lib.format.open_memmap(part, mode="w+", dtype=self.dtype, shape=shape)
            offset = header.offset
            del header
            fd = os.open(part, os.O_WRONLY)
            try:
                for start, values in pieces:
                    values = np.ascontiguousarray(values, self.dtype)
                    if axis == 0:       # whole rows: they sit together in the file
                        _write_all(fd, values.data, offset + start * cols * size)
                    else:               # row r's columns start..start+C sit together
                        for r in range(rows):
                            _write_all(fd, values[r].data, offset + (r * cols + start) * size)
            finally:
                os.close(fd)
            os.replace(part, path)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise DiskFull(e.errno, f"the reading could not be kept on disk: {e.strerror or e}") from e
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return np.load(path, mmap_mode="r")

    @staticmethod
    def owned_by(holder: object, values: np.ndarray) -> None:
        """Delete the file `values` maps once `holder` (the reading made of it) is gone: not
        when the cache drops it, as a request may still be sending it to a worker by name."""
        name = getattr(values, "filename", None)
        if name:
            weakref.finalize(holder, _unlink, name)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._owner is not None:
            os.close(self._owner)
            self._owner = None

    def _claim(self) -> None:
        """Make the directory and lock it, once, after removing those left by dead processes."""
        if self._owner is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for found in self.root.glob(f"{PREFIX}*"):
            if found != self.directory and _abandoned(found):
                log.info("removing %s, left by a server that stopped without removing it", found)
                shutil.rmtree(found, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / OWNER, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._owner = fd


OWNER = ".owner"


def _unlink(name: str) -> None:
    Path(name).unlink(missing_ok=True)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    """pwrite all of `data`: a write the disk cut short is followed by one that says why."""
    data = memoryview(data).cast("B")
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _abandoned(directory: Path) -> bool:
    """Whether no process holds the directory's owner lock (one being made has no file yet)."""
    try:
        fd = os.open(directory / OWNER, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
