"""Training on Ray (issue 14): what the Ray executor costs and gives against the thread
executor, on a three-node Ray cluster made on this machine (a head without CPUs, two worker
nodes of one CPU each), through the server's own API in this process:

    one run, thread vs ray     wall time from POST to completed, training chars/s, and the
                               overhead: (wall on Ray - wall in a thread) / steps
    two runs at once           wall time of two runs on the two nodes against one run alone
    a node removed mid-run     seconds from the removal to the resumed attempt's start on the
                               other node, and the steps redone since the last checkpoint

Ray binds its nodes to the machine's non-loopback address outside a network namespace, so
the measuring runs in a child process inside one (`unshare --net`, as root, or a user
namespace otherwise), as the cluster tests do.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .common import machine_info

ROOT = Path(__file__).resolve().parents[1]
NODE_MEMORY = 80 * 2**20
RUN = {"cell": "lstm", "hidden_size": 128, "num_layers": 2, "batch_size": 32, "seq_length": 64,
       "learning_rate": 0.002}
SETTINGS = {"checkpoint_every_steps": 50, "flush_seconds": 0.25, "sample_every_steps": 100}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cluster suite")
    g.add_argument("--cluster-steps", type=int, default=300, help="steps of each timed run (default: 300)")


def run(args) -> dict:
    steps = 60 if args.quick else args.cluster_steps
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cluster.json"
        in_private_network(["bench.cluster", "--child", str(out), "--steps", str(steps)], "the cluster benchmark")
        result = json.loads(out.read_text())
    return {"suite": "cluster", "quick": args.quick, "machine": machine_info()} | result


# ---- the private network and the cluster, shared with `bench class --cluster` ----------------

def in_private_network(module_args: list[str], what: str, capture: bool = True) -> None:
    """`python -m <module_args>` in a child inside a network namespace of its own with only
    loopback (Ray's nodes bind 127.0.0.1 there), Ray's token authentication off (the cluster
    lives on loopback for one run). `capture`: its output is shown only if it fails; else
    it prints as it goes. SystemExit if it fails."""
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing or importlib.util.find_spec("ray") is None:
        raise SystemExit(f"{what} needs Ray (pip install -e '.[cluster]'), unshare (util-linux) and ip (iproute2); "
                         f"missing: {', '.join(missing) or 'ray'}")
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--net"]
    # A PYTHONPATH given (another copy of rnnscope to measure) stays ahead of this tree's bench.
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path}
    child = [sys.executable, "-m", *module_args]
    done = subprocess.run([*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *child], cwd=ROOT,
                          env=env, capture_output=capture, text=True, check=False)
    if done.returncode != 0:
        output = f"\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}" if capture else " (its output is above)"
        raise SystemExit(f"{what} failed with exit code {done.returncode}{output}")


@contextmanager
def local_cluster() -> Iterator[tuple[object, float]]:
    """(cluster, seconds it took to start): a head without CPUs (where drivers connect, as on
    a real cluster's login node) and two worker nodes of one CPU each, this process connected
    to it; shut down on exit. Only inside in_private_network's child."""
    import ray
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": NODE_MEMORY,
                                                            "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, object_store_memory=NODE_MEMORY)
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        yield cluster, time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.shutdown()


def in_namespace(namespace: str) -> dict[int, str]:
    """pid -> command line of the processes other than this one in a network namespace
    (as /proc/<pid>/ns/net names it, e.g. "net:[4026532301]")."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == namespace:
                    command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
                    found[int(entry)] = command.decode(errors="replace").strip()[:120]
            except OSError:
                continue                          # ended meanwhile
    return found


def left_in_this_namespace(wait_seconds: float = 10.0) -> list[str]:
    """The processes other than this one still in this process's network namespace (a Ray
    daemon that outlived its cluster), after waiting up to `wait_seconds` for them to end.
    Each is killed by its pid, as this child started it, and named in the answer."""
    import signal
    here = os.readlink("/proc/self/ns/net")
    # in_private_network's child has the bench as its parent, outside the namespace.
    if here == os.readlink(f"/proc/{os.getppid()}/ns/net"):
        raise RuntimeError("not inside a private network namespace of its own: its parent shares it")
    deadline = time.monotonic() + wait_seconds
    while (left := in_namespace(here)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return [f"{pid} {cmd}" for pid, cmd in left.items()]


# ---- the child, inside the namespace ---------------------------------------------------------------

def corpus_text() -> str:
    shared = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
    if shared.exists():
        return shared.read_text(encoding="utf-8")[:300_000]
    from tests.corpus import shakespeare_head
    return shakespeare_head(50_000)


def measure(steps: int) -> dict:
    from fastapi.testclient import TestClient

    from rnnscope.app.main import create_app
    from rnnscope.app.settings import Settings

    owner = {"X-Rnnscope-Owner": "bench"}
    text = corpus_text()

    def app(data_dir: Path, **settings):
        return create_app(Settings(data_dir=data_dir, load_bundled=False, allowed_hosts=("testserver",),
                                   **SETTINGS, **settings))

    def wait(client, run_id: int, until, timeout: float = 1800.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = client.get(f"/api/runs/{run_id}").json()
            if until(run):
                return run
            if run["status"] in ("failed", "interrupted", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id}: {run['status']} {run.get('error')}")
            time.sleep(0.02)

    def timed_runs(client, corpus_id: int, count: int) -> dict:
        start = time.perf_counter()
        ids = [client.post("/api/runs", json={"corpus_id": corpus_id, **RUN, "max_steps": steps}).json()["id"]
               for _ in range(count)]
        first_step = wait(client, ids[0], lambda r: r["step"] >= 1)
        first = time.perf_counter() - start
        runs = [wait(client, i, lambda r: r["status"] == "completed") for i in ids]
        wall = time.perf_counter() - start
        del first_step
        return {"wall_seconds": wall, "first_step_seconds": first,
                "training_seconds": [r["seconds"] for r in runs],
                "chars_per_sec": [steps * RUN["batch_size"] * RUN["seq_length"] / r["seconds"] for r in runs],
                "workers": [r["attempts"][-1]["worker"] for r in runs]}

    result: dict = {"run": RUN | {"max_steps": steps}, "settings": SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with TestClient(app(root / "thread"), headers=owner) as client:
            corpus = client.post("/api/corpora", files={"file": ("corpus.txt", text.encode())}).json()
            timed_runs(client, corpus["id"], 1)                        # warm: imports, allocations
            result["thread"] = timed_runs(client, corpus["id"], 1)

        with local_cluster() as (cluster, start_seconds):
            result["cluster_start_seconds"] = start_seconds
            with TestClient(app(root / "ray", executor="ray"), headers=owner) as client:
                corpus = client.post("/api/corpora", files={"file": ("corpus.txt", text.encode())}).json()
                timed_runs(client, corpus["id"], 1)                    # warm: the nodes' worker pools
                result["ray"] = timed_runs(client, corpus["id"], 1)
                result["ray_two"] = timed_runs(client, corpus["id"], 2)

                run_id = client.post("/api/runs", json={"corpus_id": corpus["id"], **RUN,
                                                        "max_steps": steps * 4}).json()["id"]
                run = wait(client, run_id, lambda r: (r["checkpoint_step"] or 0) >= 100 and r["step"] % 50 >= 25)
                node_id = run["attempts"][-1]["worker"].rsplit("(", 1)[1].rstrip(")")
                (node,) = [n for n in cluster.list_all_nodes() if n.node_id.startswith(node_id)]
                removed = time.time()
                lost_at = client.get(f"/api/runs/{run_id}").json()["step"]
                cluster.remove_node(node)
                run = wait(client, run_id, lambda r: len(r["attempts"]) == 2 and r["attempts"][1]["worker"]
                           and r["step"] > r["attempts"][1]["from_step"])
                resumed = run["attempts"][1]
                result["recovery"] = {"seconds_to_new_attempt": resumed["placed"] - removed,
                                      "seconds_to_first_new_step": time.time() - removed,
                                      "lost_at_step": lost_at, "resumed_from": resumed["from_step"],
                                      "from": run["attempts"][0]["worker"], "to": resumed["worker"]}
                client.post(f"/api/runs/{run_id}/cancel")
                wait(client, run_id, lambda r: r["status"] == "cancelled")
    t, r, two = result["thread"], result["ray"], result["ray_two"]
    # Ray's cost splits in two: starting an attempt (an actor process on a node) and each step
    # (its messages pickled, streamed and applied by the server).
    result["start_overhead_seconds"] = r["first_step_seconds"] - t["first_step_seconds"]
    result["overhead_ms_per_step"] = ((r["wall_seconds"] - r["first_step_seconds"])
                                      - (t["wall_seconds"] - t["first_step_seconds"])) / steps * 1000
    result["parallel_speedup"] = 2 * r["wall_seconds"] / two["wall_seconds"]
    return result


def table(result: dict) -> str:
    m, run = result["machine"], result["run"]
    t, r, two, rec = result["thread"], result["ray"], result["ray_two"], result["recovery"]
    lines = [f"rnnscope cluster benchmark{' (--quick: indicative only)' if result['quick'] else ''}: "
             f"{run['cell'].upper()} {run['num_layers']}x{run['hidden_size']}, batch {run['batch_size']} x "
             f"{run['seq_length']}, {run['max_steps']} steps; Ray cluster of a head (0 CPUs) and 2 one-CPU nodes "
             f"on this machine (started in {result['cluster_start_seconds']:.1f} s)",
             f"{m['cpu']}, {m['logical_cpus']} CPUs, load {m['load_average'][0]:.2f} at the start", "",
             f"{'':30} {'wall s':>8} {'first step s':>13} {'train chars/s':>14}"]
    for name, x in (("one run, thread executor", t), ("one run, ray executor", r)):
        lines.append(f"{name:30} {x['wall_seconds']:8.2f} {x['first_step_seconds']:13.2f} {x['chars_per_sec'][0]:14,.0f}")
    lines.append(f"{'two runs at once, ray':30} {two['wall_seconds']:8.2f} {two['first_step_seconds']:13.2f} "
                 f"{', '.join(f'{c:,.0f}' for c in two['chars_per_sec']):>14}")
    lines += ["",
              f"Ray's overhead: {result['start_overhead_seconds']:+.2f} s to start an attempt (an actor on a "
              f"node), {result['overhead_ms_per_step']:+.2f} ms a step after it "
              f"({100 * result['overhead_ms_per_step'] / (1000 * t['training_seconds'][0] / run['max_steps']):+.1f} % "
              f"of a {1000 * t['training_seconds'][0] / run['max_steps']:.0f} ms step)",
              f"two runs at once: {result['parallel_speedup']:.2f}x the throughput of one "
              f"(on {', '.join(sorted(set(two['workers'])))})",
              f"node removed at step {rec['lost_at_step']}: resumed from checkpoint {rec['resumed_from']} on "
              f"{rec['to']} {rec['seconds_to_new_attempt']:.2f} s later, training again after "
              f"{rec['seconds_to_first_new_step']:.2f} s"]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    a = parser.parse_args()
    a.child.write_text(json.dumps(measure(a.steps)))
