"""Training on a Ray cluster (RNNSCOPE_EXECUTOR=ray): runs in parallel on different nodes,
surviving the loss of a worker process or a whole node, cancelled within seconds, and a
server SIGKILLed mid-run leaving its runs interrupted and resumable.

The cluster is tests/conftest.py's ray_cluster: a head without CPUs and two worker nodes of
one CPU each, inside the network namespace tests/test_private_network.py makes.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import RAY_NODE_MEMORY
from tests.training_app import (ENDLESS, FAST, OWNER, TINY, Server, assert_continuous, build_app, excerpt, new_corpus,
                                 start, upload, wait_for)

pytestmark = pytest.mark.cluster

@pytest.fixture
def client(tmp_path, ray_cluster):
    with TestClient(build_app(tmp_path, executor="ray", **FAST), headers=OWNER) as c:
        yield c


@pytest.fixture
def corpus(client) -> dict:
    return new_corpus(client)


def processes(title: bytes) -> list[int]:
    """The pids of the processes in this network namespace (this test run's, not another
    run's on the same machine) whose command line starts with or names `title`."""
    ours, pids = os.readlink("/proc/self/ns/net"), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0]
            if (argv0.startswith(title) or argv0.endswith(b"/" + title)) and os.readlink(proc / "ns" / "net") == ours:
                pids.append(int(proc.name))
        except OSError:                      # gone meanwhile
            continue
    return pids


def environ_of(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def run_actors() -> list[int]:
    """The pids of the processes training attempts: Ray titles an actor's process after its
    class ("ray::RunActor", "ray::RunActor.run"). Ray's state API would need its dashboard."""
    return processes(b"ray::RunActor")


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} did not hold in {timeout} s"
        time.sleep(0.1)
    return value


def node_of(ray_cluster, worker: str):
    """The cluster node whose id an attempt's `worker` ("ray node 127.0.0.1 (1a2b3c4d)") names."""
    nodes = [n for n in ray_cluster.list_all_nodes() if f"({n.node_id[:8]})" in worker]
    assert len(nodes) == 1, (worker, [n.node_id for n in ray_cluster.list_all_nodes()])
    return nodes[0]


def test_two_runs_train_at_once_on_different_nodes(client, corpus):
    assert client.app.state.training.executor.parallel_runs == 2      # the cluster's two CPUs
    ids = [start(client, corpus, max_steps=400) for _ in range(2)]
    runs = [wait_for(client, run_id, timeout=120) for run_id in ids]
    attempts = [run["attempts"] for run in runs]
    assert all(len(a) == 1 and a[0]["outcome"] == "completed" for a in attempts), attempts
    first, second = (a[0] for a in attempts)
    assert first["worker"].startswith("ray node") and second["worker"].startswith("ray node")
    assert first["worker"] != second["worker"]                             # SPREAD: one per node
    assert first["started"] < second["ended"] and second["started"] < first["ended"]   # at the same time
    for run_id in ids:
        assert_continuous(client, run_id, 400)
        assert client.get(f"/api/runs/{run_id}/samples").json()               # sampled on the node
        assert client.get(f"/api/runs/{run_id}/gradients").json()["steps"]    # profiled on the node
    assert client.get(f"/api/models/run-{ids[0]}").status_code == 200         # the server wrote the model


def test_a_run_whose_node_is_removed_finishes_on_another(client, corpus, ray_cluster):
    run_id = start(client, corpus, max_steps=3000)
    run = wait_for(client, run_id, ("running",), timeout=60,
                   checkpoint_step=lambda c: c is not None and c >= 40, step=lambda s: s % 20 >= 5)
    lost_node = node_of(ray_cluster, run["attempts"][0]["worker"])
    removed = time.time()
    ray_cluster.remove_node(lost_node)
    try:
        run = wait_for(client, run_id, timeout=180)
    finally:
        ray_cluster.add_node(num_cpus=1, object_store_memory=RAY_NODE_MEMORY)    # for the tests after
        ray_cluster.wait_for_nodes()
    first, second = run["attempts"]
    assert first["outcome"] == "lost" and second["outcome"] == "completed", run["attempts"]
    assert second["from_step"] >= 40 and second["from_step"] % 20 == 0       # from its last checkpoint
    assert second["worker"] != first["worker"]
    assert second["placed"] - removed < 60, "the run took too long to continue"
    assert_continuous(client, run_id, 3000)
    print(f"training again on {second['worker']} {second['placed'] - removed:.2f} s after the node was removed")


def test_a_killed_worker_process_is_retried_then_given_up(tmp_path, ray_cluster):
    with TestClient(build_app(tmp_path, executor="ray", max_run_retries=1, **FAST), headers=OWNER) as client:
        corpus = upload(client, excerpt(20_000)).json()
        run_id = start(client, corpus, max_steps=ENDLESS)
        for attempt in (1, 2):
            wait_for(client, run_id, ("running",), timeout=60,
                     attempts=lambda a, n=attempt: len(a) == n and a[-1]["worker"] is not None,
                     checkpoint_step=lambda c, n=attempt: c is not None and c >= 20 * n)
            (pid,) = wait_until(run_actors, what="a live RunActor")
            os.kill(pid, signal.SIGKILL)
        run = wait_for(client, run_id, ("interrupted",), timeout=60)
        assert "RNNSCOPE_MAX_RUN_RETRIES" in run["error"] and "lost" in run["error"], run["error"]
        assert [a["outcome"] for a in run["attempts"]] == ["lost", "lost"]
        # Resumable as any interrupted run, from the last checkpoint.
        assert client.post(f"/api/runs/{run_id}/resume").status_code == 200
        wait_for(client, run_id, ("running",), timeout=60, step=lambda s: s > run["checkpoint_step"] + 5)
        assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
        run = wait_for(client, run_id, ("cancelled",), timeout=30)
        assert_continuous(client, run_id, run["step"])


def test_cancelling_a_remote_run_stops_it_within_seconds(client, corpus):
    run_id = start(client, corpus, max_steps=ENDLESS)
    wait_for(client, run_id, ("running",), timeout=60, step=lambda s: s >= 10)
    asked = time.monotonic()
    assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
    run = wait_for(client, run_id, ("cancelled",), timeout=30)
    assert time.monotonic() - asked < 5
    assert run["checkpoint_step"] == run["step"]                  # the final checkpoint came back
    wait_until(lambda: not run_actors(), timeout=10, what="the actor gone")
    assert_continuous(client, run_id, run["step"])


def test_server_sigkilled_mid_run_leaves_its_runs_interrupted_and_resumable(tmp_path, ray_cluster):
    env = {"RNNSCOPE_EXECUTOR": "ray", "RNNSCOPE_RAY_ADDRESS": ray_cluster.address,
           "RNNSCOPE_CHECKPOINT_EVERY_STEPS": "20", "RNNSCOPE_FLUSH_SECONDS": "0.05"}
    first = Server(tmp_path, env).start(timeout=60)
    try:
        with httpx.Client(base_url=first.url, timeout=30, headers=OWNER) as api:
            corpus = api.post("/api/corpora", files={"file": ("tiny.txt", excerpt(20_000).encode())}).json()
            ids = [api.post("/api/runs", json={"corpus_id": corpus["id"], **TINY, "max_steps": ENDLESS}).json()["id"]
                   for _ in range(2)]
            for run_id in ids:
                wait_for(api, run_id, ("running",), timeout=60, checkpoint_step=lambda c: c is not None and c >= 20)
            assert len(run_actors()) == 2
    finally:
        first.kill()                                   # SIGKILL: no shutdown, no final checkpoint
    # The actors are the dead server's: Ray ends them with it.
    wait_until(lambda: not run_actors(), timeout=30, what="the dead server's actors gone")

    second = Server(tmp_path, env).start(timeout=60)
    try:
        with httpx.Client(base_url=second.url, timeout=30, headers=OWNER) as api:
            for run_id in ids:
                run = api.get(f"/api/runs/{run_id}").json()
                assert run["status"] == "interrupted" and "resume" in run["error"], run
                assert api.post(f"/api/runs/{run_id}/resume").status_code == 200
            for run_id in ids:
                run = wait_for(api, run_id, ("running",), timeout=60,
                               attempts=lambda a: len(a) == 2 and a[1]["worker"] is not None,
                               step=lambda s: s > 25)
                resumed_from = run["attempts"][1]["from_step"]
                assert resumed_from >= 20 and resumed_from % 20 == 0, run["attempts"]   # the last checkpoint
                assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
            for run_id in ids:
                run = wait_for(api, run_id, ("cancelled",), timeout=30)
                m = api.get(f"/api/runs/{run_id}/metrics").json()
                assert m["step"] == list(range(1, run["step"] + 1))
    finally:
        second.stop()


def test_without_an_address_the_server_starts_its_own_ray_and_stops_it(tmp_path):
    """RNNSCOPE_EXECUTOR=ray alone: a local Ray instance, started with the server, gone with it."""
    def own_rays() -> list[int]:
        return [pid for pid in processes(b"raylet") if str(tmp_path) in environ_of(pid)]

    server = Server(tmp_path, {"RNNSCOPE_EXECUTOR": "ray", "RNNSCOPE_CHECKPOINT_EVERY_STEPS": "20"}).start(timeout=90)
    try:
        with httpx.Client(base_url=server.url, timeout=30, headers=OWNER) as api:
            capacity = api.get("/api/training").json()
            assert capacity["executor"] == "ray" and len(capacity["nodes"]) == 1, capacity
            assert capacity["parallel_runs"] == int(capacity["nodes"][0]["cpus"]) >= 1
            corpus = api.post("/api/corpora", files={"file": ("tiny.txt", excerpt(20_000).encode())}).json()
            run_id = api.post("/api/runs", json={"corpus_id": corpus["id"], **TINY, "max_steps": 60}).json()["id"]
            run = wait_for(api, run_id, timeout=120)
            assert run["attempts"][0]["worker"].startswith("ray node")
            assert own_rays(), "the server's own raylet"
    finally:
        server.stop()                                  # SIGTERM: the lifespan shuts its Ray down
    wait_until(lambda: not own_rays(), timeout=30, what="the server's own Ray gone")
    log = server.log.read_text(errors="replace")
    assert "SIGTERM received" not in log, log[-3000:]       # Ray's core would print it as a crash


def test_a_node_that_joins_adds_runs_at_once_without_a_restart(client, ray_cluster, monkeypatch):
    import rnnscope.app.training.ray_executor as ray_executor

    monkeypatch.setattr(ray_executor, "CLUSTER_LOOK_SECONDS", 0.0)
    executor = client.app.state.training.executor
    assert executor.parallel_runs == 2
    node = ray_cluster.add_node(num_cpus=1, object_store_memory=RAY_NODE_MEMORY)
    try:
        ray_cluster.wait_for_nodes()
        wait_until(lambda: executor.parallel_runs == 3, timeout=30, what="three runs at once")
        assert client.get("/api/training").json()["parallel_runs"] == 3
    finally:
        ray_cluster.remove_node(node)
    wait_until(lambda: executor.parallel_runs == 2, timeout=60, what="two runs at once again")
