"""Issue 14's demonstration, in Chromium: a server training on a three-node Ray cluster (a
head without CPUs and two worker nodes of one CPU), four runs submitted from the Train
page, two training at once while two wait; the node under one running run is removed and
that run finishes on the other node from its last checkpoint; the page shows all four live,
without a reload. Screenshots go to test-artifacts/cluster-train-page-*.png.

Runs inside tests/test_private_network.py's namespace, like tests/test_cluster.py.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import RAY_NODE_MEMORY
from tests.test_cluster import node_of
from tests.training_app import OWNER, Server, excerpt

pytestmark = pytest.mark.cluster

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
RUNS = 4
# Tiny models (about 2 ms a step on a node, checkpoints included): 10-20 s a run, long enough
# to watch and to lose a node under.
MAX_STEPS = 8000
FORM = {"hidden_size": "16", "num_layers": "1", "seq_length": "16", "batch_size": "4", "learning_rate": "0.01",
        "dropout": "0", "max_steps": str(MAX_STEPS)}


@pytest.fixture
def server(tmp_path, ray_cluster):
    env = {"RNNSCOPE_EXECUTOR": "ray", "RNNSCOPE_RAY_ADDRESS": ray_cluster.address,
           "RNNSCOPE_MAX_PARALLEL_RUNS": "2", "RNNSCOPE_CHECKPOINT_EVERY_STEPS": "20",
           "RNNSCOPE_FLUSH_SECONDS": "0.05"}
    s = Server(tmp_path, env).start(timeout=90)
    yield s
    s.stop()


def shoot(pg, name: str) -> None:
    """The whole page, and the Runs card alone (legible at full size)."""
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"cluster-train-page-{name}.png"), full_page=True)
    pg.locator("#runs-card").screenshot(path=str(ARTIFACTS / f"cluster-train-page-{name}-runs.png"))


class Timeline(threading.Thread):
    """Each run's status and where it trains, from GET /api/runs every 0.1 s: a run is
    `running` from when the server takes it up, but trains only once Ray has placed it on a
    node with a free CPU (its `worker` is set then)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.changes, self.done = url, [], threading.Event()
        self.last: dict[int, tuple] = {}

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers=OWNER) as api:
            while not self.done.is_set():
                now = time.time()
                try:
                    runs = api.get("/api/runs?owner=all&limit=500").json()      # the page owns them, not OWNER
                except httpx.TransportError:             # the server stopped: a failed test's end
                    return
                for r in runs:
                    state = (r["status"], r["worker"])
                    if self.last.get(r["id"]) != state:
                        self.last[r["id"]] = state
                        self.changes.append((now, r["id"], *state))
                self.done.wait(0.1)

    def stop(self) -> None:
        self.done.set()
        self.join(10)

    def at_once(self) -> dict[int, float]:
        """Seconds during which n runs trained on nodes at once, by n."""
        training: dict[int, bool] = {}
        seconds: dict[int, float] = {}
        previous = None
        for t, run_id, status, worker in self.changes:
            if previous is not None:
                n = sum(training.values())
                seconds[n] = seconds.get(n, 0.0) + t - previous
            training[run_id] = status == "running" and worker is not None
            previous = t
        return seconds


def page_statuses(pg) -> dict[int, str]:
    """Each row's status as the page's table shows it now."""
    return {int(k): v for k, v in pg.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#runs-table tbody tr')]"
        ".map((tr) => [tr.dataset.run, tr.querySelector('.pill').dataset.status]))").items()}


def until(predicate, timeout: float, what: str, every: float = 0.1, also=None):
    """Poll `predicate` until it returns something truthy; `also` runs on every poll."""
    deadline = time.monotonic() + timeout
    while True:
        if also is not None:
            also()
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(every)


def test_four_runs_from_the_train_page_two_at_a_time_one_surviving_its_node(page, server, ray_cluster, tmp_path):
    page.set_default_timeout(60_000)
    api = httpx.Client(base_url=server.url, timeout=30, headers=OWNER)
    corpus_file = tmp_path / "shakespeare-excerpt.txt"
    corpus_file.write_text(excerpt(20_000), encoding="utf-8")

    timeline = Timeline(server.url)
    timeline.start()
    page.goto(f"{server.url}/train")
    page.locator("#training-capacity:not([hidden])").wait_for()
    summary = page.inner_text("#training-capacity .summary")
    assert "Ray cluster" in summary and "3 nodes (2 CPUs for runs)" in summary and "2 runs at once" in summary, summary
    # The session's cluster: earlier tests may have removed nodes, which Ray lists as dead.
    assert page.locator("#training-capacity .node:not(.lost, .more)").count() == 3
    lost_before = len([n for n in httpx.get(f"{server.url}/api/training").json()["nodes"] if not n["alive"]])
    # A marker a reload would wipe: the page below is the one loaded here.
    page.evaluate("() => { window.notReloaded = true; }")
    page.set_input_files("#file", str(corpus_file))
    page.locator("#config-card:not([hidden])").wait_for()

    # Four runs from the form, one after another.
    ids: list[int] = []
    for i in range(RUNS):
        for name, value in FORM.items():
            page.fill(f"#{name}", value)
        page.fill("#run-name-input", f"cluster run {i + 1}")
        page.click("#start")
        page.wait_for_function("(known) => { const id = new URLSearchParams(location.search).get('run');"
                               " return id && !known.includes(Number(id)); }", arg=ids)
        ids.append(int(page.evaluate("() => new URLSearchParams(location.search).get('run')")))
        page.locator("#start:not([disabled])").wait_for()
    submitted = time.time()

    # Two train, on the two worker nodes; two wait. The page shows it without a reload.
    page.wait_for_function("() => document.querySelectorAll('#runs-table .pill[data-status=running]').length === 2"
                           " && document.querySelectorAll('#runs-table .pill[data-status=queued]').length === 2")
    cap = api.get("/api/training").json()
    assert (cap["executor"], cap["parallel_runs"], cap["running"], cap["queued"]) == ("ray", 2, 2, 2), cap
    runs = {r["id"]: r for r in api.get("/api/runs?owner=all").json()}     # the page owns them, not OWNER
    assert [runs[i]["status"] for i in ids] == ["running", "running", "queued", "queued"]
    page.wait_for_function("() => [...document.querySelectorAll('#runs-table tr[data-status=running] .where')]"
                           ".every((w) => w.title.startsWith('ray node') && w.textContent === `on ${w.title.slice(9)}`)")
    page.wait_for_function("() => document.querySelector('#training-capacity .summary')"
                           ".textContent.includes('2 running, 2 waiting')")
    # The card shows the last run submitted: waiting for a slot, one run ahead of it.
    page.wait_for_function("() => document.getElementById('run-message').textContent"
                           ".includes('2 runs train at once on this cluster; 1 ahead')")
    first, second = (api.get(f"/api/runs/{i}").json() for i in ids[:2])
    page.wait_for_function("() => [...document.querySelectorAll('#runs-table tr[data-status=running] .steps .bar > div')]"
                           ".every((bar) => parseFloat(bar.style.width) > 0)")
    shoot(page, "1-two-running-two-queued")

    # Watch the first run on its card, then take its node away mid-run.
    page.click(f'#runs-table tr[data-run="{ids[0]}"] a.open')
    page.locator("#run-name:text-is('cluster run 1')").wait_for()
    victim = until(lambda: (r := api.get(f"/api/runs/{ids[0]}").json())["checkpoint_step"] is not None
                   and r["checkpoint_step"] >= 40 and r["step"] % 20 >= 5 and r["worker"] and r,
                   60, "the first run's second checkpoint", every=0.02)
    lost_node = node_of(ray_cluster, victim["worker"])
    survivor = [n for n in ray_cluster.list_all_nodes()
                if n.node_id not in (lost_node.node_id, ray_cluster.head_node.node_id)]
    assert len(survivor) == 1
    survivor = survivor[0]
    seen: dict[int, list[str]] = {i: [] for i in ids}          # the statuses the page's table went through

    def look() -> None:
        for run_id, status in page_statuses(page).items():
            if run_id in seen and (not seen[run_id] or seen[run_id][-1] != status):
                seen[run_id].append(status)

    look()
    removed = time.time()
    ray_cluster.remove_node(lost_node)
    replaced = False
    try:
        # The loss is noticed and a new attempt asked for at once ...
        attempts = until(lambda: len(a := api.get(f"/api/runs/{ids[0]}").json()["attempts"]) == 2 and a,
                         180, "the lost attempt's retry", also=look)
        lost_noticed = attempts[0]["ended"] - removed
        assert attempts[0]["outcome"] == "lost", attempts
        page.locator("#attempts li[data-outcome='lost']").wait_for()
        lost = f"{lost_before + 1} node{'s' if lost_before else ''} lost"
        page.wait_for_function("(lost) => document.querySelector('#training-capacity .summary')"
                               ".textContent.includes(lost)", arg=lost)
        assert page.locator("#training-capacity .node.lost").count() == min(lost_before + 1, 3)   # the latest three
        shoot(page, "2-node-removed")
        # ... and it trains again once the surviving node has a free CPU (the other run holds it).
        attempts = until(lambda: (a := api.get(f"/api/runs/{ids[0]}").json()["attempts"])[1]["worker"] and a,
                         180, "the resumed attempt on a node", also=look)
        placed = time.time() - removed
        assert f"({survivor.node_id[:8]})" in attempts[1]["worker"], (attempts, survivor.node_id)
        until(lambda: (r := api.get(f"/api/runs/{ids[0]}").json())["step"]
              > attempts[1]["from_step"] and r, 60, "the first resumed step", every=0.02)
        training_again = time.time() - removed
        page.locator(f"#attempts li[data-outcome='training']:has-text('({survivor.node_id[:8]})')").wait_for()
        page.locator(f"#runs-table tr[data-run='{ids[0]}'] .where:has-text('({survivor.node_id[:8]})')").wait_for()
        shoot(page, "3-resumed-on-the-other-node")
        # The cluster heals, as an autoscaler would: a fresh node for the runs still waiting.
        ray_cluster.add_node(num_cpus=1, object_store_memory=RAY_NODE_MEMORY)
        ray_cluster.wait_for_nodes()
        replaced = True

        until(lambda: all(s == "completed" for s in page_statuses(page).values()) and len(page_statuses(page)) == 4,
              300, "all four runs completed on the page", every=0.25, also=look)
    finally:
        if not replaced:                                    # later tests expect two worker nodes
            ray_cluster.add_node(num_cpus=1, object_store_memory=RAY_NODE_MEMORY)
            ray_cluster.wait_for_nodes()
    look()
    timeline.stop()
    assert page.evaluate("() => window.notReloaded === true"), "the page reloaded"
    # The page saw every run move on by itself: the first two from running, the others from queued.
    for run_id in ids[:2]:
        assert seen[run_id][-1] == "completed" and "running" in seen[run_id], seen
    for run_id in ids[2:]:
        assert seen[run_id][-1] == "completed" and seen[run_id][0] in ("queued", "running"), seen

    done = {i: api.get(f"/api/runs/{i}").json() for i in ids}
    assert all(r["status"] == "completed" and r["step"] == MAX_STEPS for r in done.values()), done
    lost_run = done[ids[0]]
    assert [a["outcome"] for a in lost_run["attempts"]] == ["lost", "completed"], lost_run["attempts"]
    resumed = lost_run["attempts"][1]
    assert resumed["from_step"] >= 40 and resumed["from_step"] % 20 == 0, resumed
    assert f"({lost_node.node_id[:8]})" in lost_run["attempts"][0]["worker"]
    for run_id in ids:                                      # history continuous, across the loss too
        m = api.get(f"/api/runs/{run_id}/metrics").json()
        assert m["step"] == list(range(1, MAX_STEPS + 1)) and m["stride"] == 1, run_id
    for run_id in ids[1:]:
        assert [a["outcome"] for a in done[run_id]["attempts"]] == ["completed"], done[run_id]["attempts"]
    # The card of the run that lost its node lists both attempts, from the server's strings.
    page.locator("#attempts li[data-outcome='completed']").wait_for()
    items = page.locator("#attempts li").all_inner_texts()
    assert len(items) == 2 and "lost" in items[0] and "completed" in items[1], items
    assert lost_run["attempts"][1]["worker"] in items[1] and f"resumed at {resumed['from_step']:,}" in items[1], items
    page.wait_for_function("() => document.querySelector('#training-capacity .summary')"
                           ".textContent.includes('none training now')")
    shoot(page, "4-all-four-done")

    # The figures.
    started = min(a["started"] for r in done.values() for a in r["attempts"])
    wall = max(r["finished"] for r in done.values()) - started
    trained = sum(r["seconds"] for r in done.values())
    at_once = timeline.at_once()
    assert at_once.get(2, 0) > 5, at_once                   # two trained at the same time, for a while
    print(f"\nfour runs of {MAX_STEPS} steps (LSTM 1x16, batch 4 x 16, a checkpoint every 20 steps):"
          f" wall {wall:.1f} s from the first start to the last finish"
          f" ({max(r['finished'] for r in done.values()) - submitted:.1f} s after the fourth submission);"
          f" training time {trained:.1f} s summed ({', '.join(format(r['seconds'], '.1f') for r in done.values())});"
          f" parallelism (summed / wall) {trained / wall:.2f}; runs training at once, seconds: "
          + ", ".join(f"{n}: {t:.1f}" for n, t in sorted(at_once.items()))
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"node removed at step {victim['step']} (checkpoint {victim['checkpoint_step']}), the run resumed at"
          f" {resumed['from_step']}:"
          f" loss noticed {lost_noticed:.2f} s after, a new attempt asked for at once;"
          f" placed on {resumed['worker']} {placed:.1f} s after (the other run held its CPU),"
          f" training again at step {resumed['from_step'] + 1} {training_again:.1f} s after;"
          f" the other runs trained on {[done[i]['attempts'][0]['worker'] for i in ids[1:]]}")
    # Same configuration, same seed: a resume from a checkpoint should end where never stopping does.
    print("final train / best validation loss, the resumed run first: "
          + ", ".join(f"{done[i]['train_loss']:.4f} / {done[i]['best_val_loss']:.4f}" for i in ids))
    for run_id in ids[1:]:      # a resume continues the run exactly (model.train), across machines too
        for key in ("train_loss", "best_val_loss"):
            assert done[run_id][key] == pytest.approx(lost_run[key], rel=1e-6, abs=0), (key, done)
    api.close()
