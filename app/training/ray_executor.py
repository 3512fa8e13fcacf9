"""The Ray executor: each attempt trains in a Ray actor on whichever node has a free CPU.

The actor runs app/training/attempt.run_attempt, the same function the thread executor
calls, and streams its messages back as a Ray streaming generator; the server applies
them, so the store and the checkpoints are written only on the server. The actor answers
two calls at once (max_concurrency=2): `run`, the generator, and `stop`, which sets the
flag train() polls between steps. Actors are owned by the server's process, so they die
with it (and their runs are marked interrupted when it starts again).

Only imported when RNNSCOPE_EXECUTOR=ray: importing it imports ray.
"""
from __future__ import annotations

import copy
import logging
import queue
import threading
import time

import ray
from ray.exceptions import RayError, RayTaskError
from threadpoolctl import threadpool_limits

from rnnscope.model.train import TrainState

from .attempt import Emit, Job, Started, run_attempt
from .execution import ExecutorUnavailable, WorkerLost

log = logging.getLogger(__name__)

_END = object()
# How often the runs-at-once count looks at the cluster's CPUs (the scheduler asks often).
CLUSTER_LOOK_SECONDS = 5.0


@ray.remote(max_restarts=0, max_concurrency=2)
class RunActor:
    """Trains one attempt; a new actor (a new process, on any node) for every attempt."""

    def __init__(self, cpus: int):
        self.cpus = cpus
        self.stopping = threading.Event()

    def where(self) -> str:
        node = ray.get_runtime_context().get_node_id()
        return f"ray node {ray.util.get_node_ip_address()} ({node[:8]})"

    def run(self, job: Job, resume: TrainState | None):
        # Ray hands NumPy arguments over zero-copy from its object store, read-only; training
        # updates the resumed weights and moments in place.
        resume = copy.deepcopy(resume)
        # run_attempt reports through a callback; a thread turns the calls into yields.
        messages: queue.Queue = queue.Queue(maxsize=16)

        def attempt() -> None:
            try:
                with threadpool_limits(self.cpus):
                    run_attempt(job, resume, messages.put, self.stopping.is_set)
            except BaseException as e:        # re-raised below, in the generator, where Ray sees it
                messages.put(e)
            messages.put(_END)

        threading.Thread(target=attempt, name=f"run-{job.run_id}", daemon=True).start()
        while (message := messages.get()) is not _END:
            if isinstance(message, BaseException):
                raise message
            yield message

    def stop(self) -> None:
        self.stopping.set()


class RayExecution:
    def __init__(self, job: Job, resume: TrainState | None, cpus: int):
        self.where = "a Ray node"
        self.started = threading.Event()          # the actor has a node and a process
        try:
            # SPREAD: runs go to different nodes while there are free ones, as a class wants.
            self.actor = RunActor.options(num_cpus=cpus, scheduling_strategy="SPREAD").remote(cpus)
            self.messages = self.actor.run.options(num_returns="streaming").remote(job, resume)
        except RayError as e:                     # the cluster itself is unreachable
            raise WorkerLost(f"the Ray cluster did not take the run ({type(e).__name__}: {first_line(e)})") from None

    def run(self, emit: Emit) -> None:
        try:
            # Blocks until the cluster has a free CPU for the actor.
            self.where = ray.get(self.actor.where.remote())
            self.started.set()
            emit(Started(self.where))
            for ref in self.messages:
                emit(ray.get(ref))
        except RayTaskError as e:              # the attempt itself raised: the same error as in a thread
            cause = getattr(e, "cause", None)
            raise cause if isinstance(cause, Exception) else RuntimeError(first_line(e)) from None
        except RayError as e:                  # the actor's process or node died
            raise WorkerLost(f"{self.where} was lost ({type(e).__name__}: {first_line(e)})") from None
        finally:
            self.kill()

    def stop(self) -> None:
        """After the current step, with a final checkpoint; an actor still waiting for a
        node has nothing to keep and is ended at once."""
        if not self.started.is_set():
            self.kill()
            return
        try:
            self.actor.stop.remote()
        except RayError:                      # already gone: run() reports it
            pass

    def kill(self) -> None:
        try:
            ray.kill(self.actor, no_restart=True)
        except (RayError, ValueError):
            pass


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None, parallel_runs: int | None, cpus: int):
        self.cpus = cpus
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            try:
                if address:
                    ray.init(address=address, logging_level=logging.WARNING)
                else:   # "local": a new instance, started (and stopped) by this server, never another's
                    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorUnavailable(f"cannot reach the Ray cluster at RNNSCOPE_RAY_ADDRESS={address}: "
                                          f"{first_line(e)}") from None
        self.fixed_parallel_runs = parallel_runs
        self._counted = (0.0, 1)                  # (when, runs at once) of the last look at the cluster
        log.info("training on Ray: %d CPUs in the cluster, up to %d runs at once, %d CPU each",
                 int(ray.cluster_resources().get("CPU", 0)), self.parallel_runs, cpus)

    @property
    def parallel_runs(self) -> int:
        """RNNSCOPE_MAX_PARALLEL_RUNS, or as many runs as the cluster's CPUs hold now: a
        machine that joins (`ray start --address ...`) adds runs without a restart."""
        if self.fixed_parallel_runs:
            return self.fixed_parallel_runs
        when, runs = self._counted
        if time.monotonic() - when > CLUSTER_LOOK_SECONDS:
            runs = max(1, int(ray.cluster_resources().get("CPU", 0)) // self.cpus)
            self._counted = (time.monotonic(), runs)
        return runs

    def launch(self, job: Job, resume: TrainState | None) -> RayExecution:
        return RayExecution(job, resume, self.cpus)

    def nodes(self) -> list[dict]:
        return [{"where": f"ray node {n['NodeManagerAddress']} ({n['NodeID'][:8]})",
                 "cpus": n.get("Resources", {}).get("CPU", 0.0), "alive": bool(n["Alive"])} for n in ray.nodes()]

    def close(self) -> None:
        if self.owns_ray:
            ray.shutdown()
