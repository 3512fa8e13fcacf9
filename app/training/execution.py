"""What an executor promises the worker, and how it fails: executors.py (this process's threads)
and ray_executor.py (Ray actors) both keep this contract, and the worker knows only it.

An executor launches an attempt and returns an Execution: `run(emit)` blocks while the attempt
trains, handing every message to `emit` in the server's thread, and `stop()` asks it to end
after the current step. An attempt whose process or machine dies raises WorkerLost from run():
the server retries from its last checkpoint."""
from __future__ import annotations

from typing import Protocol

from rnnscope.model.train import TrainState

from .attempt import Emit, Job


class WorkerLost(RuntimeError):
    """The process or the machine training an attempt died; its message says which."""


class Execution(Protocol):
    where: str                                   # e.g. "this server" or "ray node 10.0.0.7"

    def run(self, emit: Emit) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class Executor(Protocol):
    name: str
    parallel_runs: int                           # how many attempts may train at once

    def launch(self, job: Job, resume: TrainState | None) -> Execution: ...

    def nodes(self) -> list[dict]: ...           # {"where", "cpus", "alive"} of each machine

    def close(self) -> None: ...


class ExecutorUnavailable(RuntimeError):
    """The chosen executor cannot start; the message says what to install or set."""
