"""Compute replicas on a Ray cluster (issue 21, "every node"): with RNNSCOPE_EXECUTOR=ray,
traces, samples and gradients are answered by Ray actors on the cluster's worker nodes, the
same answers as in one process, and a replica killed mid-request is replaced and the request
answered. The cluster is tests/conftest.py's ray_cluster (a head without CPUs, two worker
nodes of one CPU each), inside tests/test_private_network.py's namespace."""
from __future__ import annotations

import threading
import time

import pytest
import ray
from fastapi.testclient import TestClient

from rnnscope.app.inference.ray_workers import REPLICA_NAMESPACE
from rnnscope.app.main import create_app

pytestmark = pytest.mark.cluster

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n") * 80


@pytest.fixture
def replicas_client(settings, ray_cluster):
    """Compute only on the cluster: no worker process on this machine."""
    with TestClient(create_app(settings.model_copy(update={"executor": "ray", "compute_workers": 0}))) as c:
        yield c


@pytest.fixture
def threads_client(settings):
    with TestClient(create_app(settings.model_copy(update={"compute_workers": 0}))) as c:
        yield c


def test_replicas_on_the_worker_nodes_answer_as_one_process_does(replicas_client, threads_client, ray_cluster):
    pool = replicas_client.app.state.compute_pool
    assert len(pool.workers) == 2                         # one per node with a CPU
    assert replicas_client.app.state.compute_slots.slots == replicas_client.app.state.settings.max_concurrent_jobs + 2
    head = ray_cluster.head_node.node_id[:8]
    assert all(head not in w.where() for w in pool.workers)      # the head has no CPU: replicas on workers
    for path, body in [("/api/models/lstm/trace", {"text": TEXT[:300], "encoding": "float32", "top_k": 3}),
                       ("/api/models/gru/sample", {"prime": "All:", "length": 40, "seed": 5}),
                       ("/api/models/rnn/gradients", {"text": TEXT[:90], "position": 80})]:
        there, here = replicas_client.post(path, json=body), threads_client.post(path, json=body)
        assert there.status_code == here.status_code == 200, there.text
        assert there.json() == here.json(), path
    assert sum(ray.get(w.actor.held.remote()) for w in pool.workers) >= 3       # the models went there


def test_each_replica_counts_the_requests_it_answered_and_names_its_node(replicas_client, ray_cluster):
    """What `bench class --cluster` reads: a replica, found by its name, tells its node and the
    requests it answered (a call that found its model not yet sent is counted once)."""
    workers = replicas_client.app.state.compute_pool.workers

    def served() -> list[dict]:
        return ray.get([ray.get_actor(w.name, namespace=REPLICA_NAMESPACE).served.remote() for w in workers])

    before = served()
    for n in range(5):
        answer = replicas_client.post("/api/models/lstm/trace", json={"text": TEXT[:100 + n], "top_k": 1})
        assert answer.status_code == 200, answer.text
    after = served()
    assert {s["node_id"] for s in after} == {node.node_id for node in ray_cluster.worker_nodes}
    assert [s["pid"] for s in after] == [s["pid"] for s in before]
    # One after another, each request is answered alone: one call on one replica or the other,
    # besides the model sent to each replica once.
    answered = sum(n - b["calls"].get(op, 0) for a, b in zip(after, before) for op, n in a["calls"].items()
                   if op != "model")
    assert answered == 5


def test_a_replica_killed_mid_request_is_replaced_and_the_request_answered(replicas_client, threads_client):
    pool = replicas_client.app.state.compute_pool
    body = {"text": TEXT[:6000], "layers": [0], "quantities": ["h"], "top_k": 1}
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(replicas_client.post("/api/models/lstm/trace",
                                                                                  json=body)))
    thread.start()
    deadline, killed = time.monotonic() + 60, None
    while killed is None and time.monotonic() < deadline:
        for w in list(pool.workers):
            if w.passes or w.in_flight:           # a pass pinned there, or the lone request itself
                ray.kill(w.actor, no_restart=True)
                killed = w
                break
        time.sleep(0.001)
    thread.join(120)
    assert killed is not None and pool.replaced == 1 and killed not in pool.workers
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json() == threads_client.post("/api/models/lstm/trace", json=body).json()
    assert replicas_client.post("/api/models/lstm/trace", json={"text": TEXT[:20]}).status_code == 200
