"""Where attempts run: the one seam between the server's worker and the training maths.

An executor launches an attempt (app/training/attempt.run_attempt) and returns an Execution:
`run(emit)` blocks while the attempt trains, handing every message to `emit` in the
server's thread, and `stop()` asks it to end after the current step (it then checkpoints and
ends as train() does when asked to stop). An attempt whose process or machine dies raises
WorkerLost from run(): the server retries from its last checkpoint.

    thread   (default) in this process, on the worker's thread: one machine
    ray      in a Ray actor on whichever node has a free CPU (app/training/ray_executor.py)
"""
from __future__ import annotations

import os
import socket
import threading

from rnnscope.model.train import TrainState

from .attempt import Emit, Job, OneThread, Started, run_attempt
from .execution import Executor, ExecutorUnavailable

CLUSTER_EXTRA = "pip install 'rnnscope[cluster]'"


class ThreadExecution:
    where = "this server"

    def __init__(self, job: Job, resume: TrainState | None, one_thread: OneThread):
        self.job, self.resume, self.one_thread = job, resume, one_thread
        self.stopping = threading.Event()

    def run(self, emit: Emit) -> None:
        emit(Started(self.where))
        with self.one_thread():
            run_attempt(self.job, self.resume, emit, self.stopping.is_set)

    def stop(self) -> None:
        self.stopping.set()

    kill = stop                                   # emit's exception already ends the attempt


class ThreadExecutor:
    """Attempts train in the server's process, on the worker thread that drives them."""

    name = "thread"

    def __init__(self, parallel_runs: int | None, one_thread: OneThread):
        self.parallel_runs = parallel_runs or 1
        self.one_thread = one_thread

    def launch(self, job: Job, resume: TrainState | None) -> ThreadExecution:
        return ThreadExecution(job, resume, self.one_thread)

    def nodes(self) -> list[dict]:
        return [{"where": ThreadExecution.where, "cpus": self.parallel_runs, "alive": True}]

    def close(self) -> None:
        pass


def check_available(settings) -> None:
    """ExecutorUnavailable, saying what to install, if the chosen executor cannot be imported."""
    if settings.executor == "ray":
        # Ray's C++ core would otherwise catch the SIGTERM that stops the server and print it
        # as a crash with a stack trace; the lifespan stops the runs and Ray cleanly instead.
        os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorUnavailable(f"RNNSCOPE_EXECUTOR=ray needs Ray, which is not installed: "
                                      f"{CLUSTER_EXTRA}") from None
        check_reachable(settings.ray_address)


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """ExecutorUnavailable if a HOST:PORT Ray address takes no connection: ray.init would
    retry it for minutes before saying anything."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return                                   # "auto", "local", ray://...: ray.init answers at once
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ExecutorUnavailable(f"cannot reach the Ray cluster at RNNSCOPE_RAY_ADDRESS={address}: "
                                  f"{e.strerror or e}; is `ray start --head` running there, and is its port "
                                  "open to this machine?") from None


def make_executor(settings, one_thread: OneThread) -> Executor:
    """The executor RNNSCOPE_EXECUTOR names, started (a Ray executor connects to or starts Ray)."""
    if settings.executor == "thread":
        return ThreadExecutor(settings.max_parallel_runs, one_thread)
    check_available(settings)
    from .ray_executor import RayExecutor
    return RayExecutor(settings.ray_address, settings.max_parallel_runs, settings.run_cpus)
