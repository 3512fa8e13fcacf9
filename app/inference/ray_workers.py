"""Compute replicas on the Ray cluster (issue 21, "every node"): with RNNSCOPE_EXECUTOR=ray the
batched passes (traces, samples, gradients) also run in Ray actors spread over the cluster's
nodes, beside the worker processes on this machine, so a machine that joins adds capacity
for the interactive views and not only for training.

Actors rather than Ray Serve: the server already owns scheduling (the compute gate, the
batchers' queues and passes pinned to one worker), and what it needs from a replica is the
worker-process contract of app/inference/workers.py: calls that reach the same Dispatcher,
one at a time, answered in order. A Serve deployment would add a second router, HTTP
proxies on every node and its own queueing in front of the gate's; an actor per replica is a
handle the pool picks like any worker. Each replica reserves no CPU (num_cpus=0): it shares
its node with training runs, as a lone trace shares a laptop with its editor; the gate's
slots grow by the replicas so they are used.

A replica that dies with its node is replaced by a new actor wherever Ray places it, and its
passes are admitted again there, as for a worker process: a request costs one retry.

Only imported when RNNSCOPE_EXECUTOR=ray: importing it imports ray.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections import Counter

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .workers import Dispatcher, Worker

log = logging.getLogger(__name__)

# How long a new replica may take to answer before its node is taken for gone.
PLACE_SECONDS = 20.0
# Replicas are named actors in this Ray namespace, so a tool on the cluster (`bench class
# --cluster`, `ray list actors`) finds them and can ask where they ran and what they served.
REPLICA_NAMESPACE = "rnnscope-compute"


@ray.remote(max_restarts=0, num_cpus=0)
class ComputeReplica:
    def __init__(self):
        from rnnscope.model.layers import set_blas_threads
        set_blas_threads(1)
        self.dispatcher = Dispatcher()
        self.calls: Counter[str] = Counter()     # by op: what this replica has answered

    def where(self) -> str:
        return f"ray node {ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"

    def call(self, op: str, *args):
        status, value = self.dispatcher.handle(op, *args)
        # A call that found its model not yet here is made again once it is sent: count it once.
        if not (isinstance(value, str) and value == "missing"):
            # A "run" is counted by the function it ran: which views computed here.
            self.calls[f"run {getattr(args[0], '__name__', '?')}" if op == "run" else op] += 1
        return status, value

    def served(self) -> dict:
        """Where this replica runs and the calls it has answered, by op ("run <function>": a
        lone request or a piece of work; "admit": a request taken into a pass; "step", "open",
        "model"): the bench's evidence of where the work ran, counted where it ran."""
        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "calls": dict(self.calls)}

    def held(self) -> int:
        """Models sent to this replica (for tests and the bench: which replicas served)."""
        return len(self.dispatcher.models)


class RayWorker(Worker):
    """A compute replica: calls travel as actor calls, and any Ray error means it is gone."""

    lost = (RayError,)
    noun = "compute replica"

    def __init__(self, number: int, node_id: str | None):
        super().__init__(number)
        self.node_id = node_id
        # On that node and no other: it reserves no CPU, so anywhere else could be the head.
        strategy = "SPREAD" if node_id is None else NodeAffinitySchedulingStrategy(node_id, soft=False)
        self.name = f"replica-{number}-{uuid.uuid4().hex[:12]}"          # unique in REPLICA_NAMESPACE
        self.actor = ComputeReplica.options(scheduling_strategy=strategy, namespace=REPLICA_NAMESPACE,
                                            name=self.name).remote()

    def _exchange(self, message: tuple) -> tuple[str, object]:
        return ray.get(self.actor.call.remote(*message))

    def where(self) -> str:
        return ray.get(self.actor.where.remote())

    def respawn(self) -> RayWorker:
        """A new replica: on this one's node if it still lives, else on another with a CPU."""
        nodes = cpu_nodes()
        return placed(self.number, sorted(nodes, key=lambda n: n != self.node_id)) or RayWorker(self.number, None)

    def describe(self) -> str:
        return f"Ray compute replica {self.number}"

    def stop(self) -> None:
        self.dead = True
        try:
            ray.kill(self.actor, no_restart=True)
        except (RayError, ValueError):
            pass


def cpu_nodes() -> list[str]:
    """The ids of the cluster's live nodes with a CPU (a head started with none only schedules)."""
    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and n.get("Resources", {}).get("CPU", 0) > 0]


def placed(number: int, nodes: list[str]) -> RayWorker | None:
    """A replica on the first of `nodes` that takes it and answers: the list of live nodes can
    be seconds behind a node's death, and an actor bound to a dead node never starts."""
    for node in nodes:
        worker = RayWorker(number, node)
        try:
            ray.get(worker.actor.where.remote(), timeout=PLACE_SECONDS)
            return worker
        except (RayError, TimeoutError):
            worker.stop()
    return None


def replicas(count: int | None) -> list[RayWorker]:
    """`count` replicas, or (None) one per node of the cluster with a CPU, placed round the
    nodes with a CPU."""
    nodes = cpu_nodes()
    count = len(nodes) if count is None else count
    found = [placed(n, nodes[n % len(nodes):] + nodes[:n % len(nodes)]) if nodes else RayWorker(n, None)
             for n in range(count)]
    found = [w for w in found if w is not None]
    log.info("%d compute replicas on the Ray cluster's %d nodes with a CPU", len(found), len(nodes))
    return found
