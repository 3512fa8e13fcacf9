"""The app the training tests run, with fast training settings."""
from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from rnnscope.app.main import create_app
from rnnscope.app.settings import Settings
from tests.conftest import TEST_HOSTS
from tests.corpus import shakespeare_head

ROOT = Path(__file__).resolve().parents[1]


# The queue's compute limits off unless a test sets them (tests/test_fair_share.py): the tests'
# ENDLESS runs, which they stop themselves, would cost a loaded machine hours of the default limit.
UNLIMITED_QUEUE = {"max_queued_seconds": 1e12, "max_queued_seconds_per_owner": 1e12}


def build_app(data_dir: Path, **overrides) -> FastAPI:
    """An app on `data_dir` without the bundled models; `overrides` are Settings fields."""
    return create_app(Settings(data_dir=data_dir, load_bundled=False,
                               **({"allowed_hosts": TEST_HOSTS} | UNLIMITED_QUEUE | overrides)))


# A fixed owner key, so a client made after a restart still owns what the first one made.
OWNER = {"X-Rnnscope-Owner": "the-tests"}
# Fast settings for tests: frequent checkpoints, samples and flushes on tiny runs.
FAST = {"checkpoint_every_steps": 20, "sample_every_steps": 20, "flush_seconds": 0.05,
        "events_poll_seconds": 0.05}
# A model that takes a few milliseconds a step.
TINY = {"cell": "lstm", "hidden_size": 16, "num_layers": 1, "batch_size": 4, "seq_length": 16,
        "learning_rate": 0.01}


def excerpt(chars: int = 20_000) -> str:
    """The start of tinyshakespeare (see tests/corpus.py)."""
    return shakespeare_head(chars)


def upload(client, text: str | bytes, filename: str = "excerpt.txt", **kw):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return client.post("/api/corpora", files={"file": (filename, data, "text/plain")}, **kw)


ENDLESS = 1_000_000        # max_steps of a run a test stops itself


def new_corpus(client) -> dict:
    """A 20,000-character corpus uploaded through the API."""
    r = upload(client, excerpt(20_000))
    assert r.status_code == 201, r.text
    return r.json()


def start(client, corpus: dict, **fields) -> int:
    """A TINY run on `corpus` (fields override), started through the API: its id."""
    r = client.post("/api/runs", json={"corpus_id": corpus["id"], **TINY, **fields})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"              # the worker takes it up after the answer
    return r.json()["id"]


def assert_continuous(client, run_id: int, last: int) -> dict:
    """The run's history holds every step from 1 to `last`, once: its metrics."""
    m = client.get(f"/api/runs/{run_id}/metrics").json()
    assert m["step"] == list(range(1, last + 1)) and m["stride"] == 1
    return m


def wait_for(client, run_id: int, statuses=("completed",), timeout: float = 60.0, **kw) -> dict:
    """Poll a run until its status is one of `statuses` (and every kw field matches a predicate)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in statuses and all(test(run[k]) for k, test in kw.items()):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not reach {statuses} in {timeout} s: {run}")
        time.sleep(0.05)


def server_app() -> FastAPI:
    """For `uvicorn --factory tests.training_app:server_app`: settings from the environment."""
    return build_app(Path(os.environ["RNNSCOPE_DATA_DIR"]))


# ---- A real server process, for the crash and browser tests ----------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m uvicorn --factory tests.training_app:server_app` on a data directory;
    `env` adds RNNSCOPE_* settings."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None,
                 max_open_files: int | None = None):
        self.data_dir, self.port = data_dir, port or free_port()
        self.max_open_files = max_open_files          # as `ulimit -n` would set it for the server
        self.env = {**os.environ, "RNNSCOPE_DATA_DIR": str(data_dir), "RNNSCOPE_LOAD_BUNDLED": "false",
                    "PYTHONPATH": str(ROOT), **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 30.0) -> Server:
        import subprocess
        import sys
        import time

        import httpx

        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "tests.training_app:server_app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.limit_open_files)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the server did not start in {timeout} s:\n{self.log.read_text()}")

    def limit_open_files(self) -> None:
        """In the child, before exec: its own limit on open files, if one was asked for."""
        if self.max_open_files is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files))

    def kill(self, signal_number: int | None = None) -> None:
        """SIGKILL by default: no lifespan shutdown, no checkpoint, as a crash."""
        import signal

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal_number or signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown, which checkpoints the run in progress."""
        import signal

        self.kill(signal.SIGTERM)
