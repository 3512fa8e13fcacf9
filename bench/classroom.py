"""A class on one server (issue 21, "A class benchmark"): N students clicking through the
pages with think time, open loop, against `rnnscope serve` as the README starts it.

Each student has an owner key of their own and clicks after an exponentially distributed
think time (mean --think-seconds), so each student's clicks are a Poisson process and the
class's are one of N / think clicks a second. Open loop: a click is sent when its time comes
whether or not the student's previous click has been answered, as a class does not slow
down when the server does (a closed loop would, and would hide the queue it builds).

A click is what a page asks when its button is pressed, with the page's default settings
and a passage of the model's own text (GET /api/models/{id}/passages, ~400 characters):
explore (a trace), gradients (the page compares rnn, gru and lstm: three requests at once, the
click answered when the last is), a probe, a sample, gates, a state-space view. Pages are
dealt from a shuffled deck of the six, so the mix is even however short the run. The few
passages a model offers are read again and again, as a class reading the offered passages
does, so the server's caches (a probe's activations, the states' fitted PCA) count as they
would in class; the server starts cold, as on the morning of the class.

Timing is of the server, not of the client: one asyncio loop sends every request (httpx,
each student a pool of six connections as a browser has), and the client's lag (sent minus
scheduled), its CPU time and the server's are reported, so a client that fell behind shows.
Latencies are of the clicks answered 2xx; a 503 is a refusal, anything else (or a transport
failure) an error. --closed-loop also runs `bench http`'s load test (20 clients back to
back, its mix) on the same server: the closed-loop served/s of the issue.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import machine_info, render_table, tree_cpu_seconds
from .http import REPO, code_version, log_tail, percentiles, server

PAGES = ("explore", "gradients", "probe", "sample", "gates", "states")
ONE_MODEL = "lstm"                             # what the pages choose when nothing is asked
COMPARED = ("rnn", "gru", "lstm")              # the gradients page's default comparison
# Concepts that hold for some characters of any passage of prose, so no probe is refused.
PROBE_CONCEPTS = ("vowel", "word_start", "whitespace", "upper", "line_position")
OWNER_HEADER = "X-Rnnscope-Owner"
CONNECTIONS_PER_STUDENT = 6                    # a browser's connections per host
# Below `rnnscope serve`'s keep-alive (5 s, uvicorn's): with httpx's default, also 5 s, a
# connection idle for a think time was sometimes reused just as the server closed it (a
# ReadError in the first 30-student run), a race a browser hides by sending again.
KEEPALIVE_SECONDS = 4.0
# Far above any target: a slow answer is a latency to report, not an error.
REQUEST_TIMEOUT = 120.0
# The settings that shape what a class waits for, shown beside the figures (the server reads
# the same environment as this process).
SETTINGS_SHOWN = ("max_concurrent_jobs", "max_waiting_jobs", "max_wait_seconds", "max_batch", "blas_threads",
                  "executor")
CLUSTER_SETTINGS_SHOWN = ("compute_workers", "ray_compute_replicas")


def positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value
    parse.__name__ = kind.__name__          # argparse names the type in its error message
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("class (issue 21: students with think time, open loop)")
    g.add_argument("--students", type=positive(int), default=30,
                   help="students clicking at once (default 30, quick 3)")
    g.add_argument("--think-seconds", type=positive(float), default=8.0,
                   help="mean of the exponential think time between a student's clicks (default 8, quick 2)")
    g.add_argument("--class-minutes", type=positive(float), default=3.0,
                   help="how long the class clicks (default 3, quick 0.2)")
    g.add_argument("--class-seed", type=int, default=0, help="seeds think times, pages and passages")
    g.add_argument("--class-sample-seconds", type=positive(float), default=15.0,
                   help="how often the load average and the server's CPU are read and printed")
    g.add_argument("--closed-loop", action="store_true",
                   help="afterwards, `bench http`'s load test on the same server (--http-clients back to "
                        "back, --closed-loop-seconds): the closed-loop served/s")
    g.add_argument("--closed-loop-seconds", type=positive(float), default=30.0,
                   help="length of the closed loop (default 30, quick 5)")
    g.add_argument("--cluster", action="store_true",
                   help="the same class against a server whose traces, samples and gradients compute on a "
                        "3-node Ray cluster made on this machine (a head without CPUs, two worker nodes of "
                        "one CPU each) inside a private network namespace, removed afterwards; needs Ray, "
                        "unshare and ip")


# --- what a click asks ----------------------------------------------------------------------

@dataclass
class Plan:
    """What the server offers the class: passages per model and the page defaults."""

    passages: dict[str, list[str]]             # model id -> its passages' texts
    shared: list[str]                          # passages every compared model can read

    def requests(self, page: str, rng: random.Random) -> list[tuple[str, str, dict]]:
        """(model, path, JSON body) of each request a click on `page` sends, as the page sends it."""
        text = rng.choice(self.passages[ONE_MODEL])
        base = f"/api/models/{ONE_MODEL}"
        if page == "explore":
            return [(ONE_MODEL, f"{base}/trace",
                     {"text": text, "layers": [0], "quantities": ["h"], "top_k": 5, "encoding": "float16"})]
        if page == "gradients":
            shared = rng.choice(self.shared) if self.shared else None
            return [(m, f"/api/models/{m}/gradients", {"text": shared or rng.choice(self.passages[m])})
                    for m in COMPARED]
        if page == "probe":
            return [(ONE_MODEL, f"{base}/probe",
                     {"text": text, "top": 12, "concept": rng.choice(PROBE_CONCEPTS)})]
        if page == "sample":
            return [(ONE_MODEL, f"{base}/sample",
                     {"prime": "", "length": 300, "temperature": 1.0, "top_k": 0})]
        if page == "gates":
            return [(ONE_MODEL, f"{base}/gates", {"text": text})]
        if page == "states":
            return [(ONE_MODEL, f"{base}/states",
                     {"text": text, "layer": 0, "quantity": "h", "colour_by": "char_class", "components": 2})]
        raise ValueError(page)


def plan(client) -> Plan:
    """Passages of each model's own text, asked once before the class starts (not timed)."""
    ids = {m["id"] for m in client.get("/api/models").raise_for_status().json()}
    missing = [m for m in {ONE_MODEL, *COMPARED} if m not in ids]
    if missing:
        raise RuntimeError(f"the server has no bundled model {', '.join(missing)}: the pages' defaults")
    passages = {}
    for m in sorted({ONE_MODEL, *COMPARED}):
        found = client.get(f"/api/models/{m}/passages").raise_for_status().json()["passages"]
        passages[m] = [p["text"] for p in found]
    shared = [t for t in passages[COMPARED[0]] if all(t in passages[m] for m in COMPARED)]
    return Plan(passages, shared)


class Deck:
    """Pages dealt in a shuffled order, reshuffled when all six are dealt."""

    def __init__(self, rng: random.Random):
        self.rng, self.cards = rng, []

    def deal(self) -> str:
        if not self.cards:
            self.cards = list(PAGES)
            self.rng.shuffle(self.cards)
        return self.cards.pop()


# --- the open loop --------------------------------------------------------------------------

def failed(status: int | str) -> bool:
    """An error: a transport failure, or a status other than 2xx and 503 (the refusal)."""
    return not isinstance(status, int) or (status >= 300 and status != 503)


@dataclass
class Answer:
    model: str
    route: str
    status: int | str                          # an HTTP status, or the transport error's name
    ms: float
    retry_after: bool = False
    detail: str = ""


@dataclass
class Click:
    page: str
    student: int
    scheduled: float                           # seconds from the start
    sent: float | None = None
    done: float | None = None
    answers: list[Answer] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.done is None:
            return "unfinished"
        if any(failed(a.status) for a in self.answers):
            return "error"
        return "refused" if any(a.status == 503 for a in self.answers) else "served"

    @property
    def ms(self) -> float:
        return (self.done - self.sent) * 1e3


async def open_loop(url: str, the_plan: Plan, students: int, think: float, seconds: float, seed: int,
                    drain: float, sample_every: float, server_pid: int) -> dict:
    import httpx
    per_student = CONNECTIONS_PER_STUDENT
    limits = httpx.Limits(max_connections=per_student, max_keepalive_connections=per_student,
                          keepalive_expiry=KEEPALIVE_SECONDS)
    clients = [httpx.AsyncClient(base_url=url, headers={OWNER_HEADER: secrets.token_urlsafe()}, limits=limits,
                                 timeout=REQUEST_TIMEOUT, trust_env=False) for _ in range(students)]
    deck = Deck(random.Random(seed))
    clicks: list[Click] = []
    pending: set[asyncio.Task] = set()
    # The clock starts once the clients are made (tens of ms each), so no click starts late.
    start = time.perf_counter()
    stop = start + seconds

    async def ask(client, model: str, path: str, body: dict) -> Answer:
        route = path.rsplit("/", 1)[1]
        t0 = time.perf_counter()
        try:
            r = await client.post(path, json=body)              # the whole body is read before it returns
        except Exception as e:     # noqa: BLE001 - any failure to get an answer is an error to count
            ms = (time.perf_counter() - t0) * 1e3
            return Answer(model, route, type(e).__name__, ms, detail=str(e)[:200])
        ms = (time.perf_counter() - t0) * 1e3
        return Answer(model, route, r.status_code, ms, "retry-after" in r.headers,
                      r.text[:200] if r.status_code >= 300 else "")

    async def click(client, c: Click, asks: list[tuple[str, str, dict]]) -> None:
        c.sent = time.perf_counter() - start
        c.answers = list(await asyncio.gather(*(ask(client, *a) for a in asks)))
        c.done = time.perf_counter() - start

    async def student(i: int) -> None:
        rng = random.Random(f"{seed}/{i}")
        at = start + rng.expovariate(1 / think)
        while at < stop:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            c = Click(deck.deal(), i, at - start)
            clicks.append(c)
            task = asyncio.create_task(click(clients[i], c, the_plan.requests(c.page, rng)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            at += rng.expovariate(1 / think)

    timeline: list[dict] = []

    async def monitor() -> None:
        cpu0, t0 = tree_cpu_seconds(server_pid), time.perf_counter()
        while True:
            await asyncio.sleep(sample_every)
            cpu, now = tree_cpu_seconds(server_pid), time.perf_counter()
            point = {"seconds": round(now - start, 1), "load_average": list(os.getloadavg()),
                     "server_cores": round((cpu - cpu0) / (now - t0), 2), "clicks": len(clicks),
                     "in_flight": len(pending)}
            cpu0, t0 = cpu, now
            timeline.append(point)
            print(f"  {point['seconds']:6.1f} s  clicks {point['clicks']:5d}  in flight "
                  f"{point['in_flight']:3d}  server {point['server_cores']:.2f} cores  load "
                  f"{point['load_average'][0]:.2f}", flush=True)

    watcher = asyncio.create_task(monitor())
    client_cpu0, server_cpu0 = time.process_time(), tree_cpu_seconds(server_pid)
    try:
        await asyncio.gather(*(student(i) for i in range(students)))
        if pending:
            _, late = await asyncio.wait(set(pending), timeout=drain)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        wall = time.perf_counter() - start
        client_cpu, server_cpu = time.process_time() - client_cpu0, tree_cpu_seconds(server_pid) - server_cpu0
    finally:
        watcher.cancel()
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)
    return {"clicks": clicks, "wall": wall, "client_cpu": client_cpu, "server_cpu": server_cpu,
            "timeline": timeline}


# --- figures --------------------------------------------------------------------------------

def click_summary(clicks: list[Click], seconds: float) -> dict:
    served = [c for c in clicks if c.outcome == "served"]
    answers = [a for c in clicks for a in c.answers]
    return {"clicks": len(clicks), "served": len(served),
            "refused": sum(c.outcome == "refused" for c in clicks),
            "errors": sum(c.outcome in ("error", "unfinished") for c in clicks),
            "unfinished": sum(c.outcome == "unfinished" for c in clicks),
            "requests": len(answers), "answers_503": sum(a.status == 503 for a in answers),
            "answers_503_with_retry_after": sum(a.status == 503 and a.retry_after for a in answers),
            "served_per_second": sum(c.done <= seconds for c in served) / seconds,
            "ms": percentiles([c.ms for c in served]),
            "ms_all_answered": percentiles([c.ms for c in clicks if c.done is not None])}


def request_summary(answers: list[Answer]) -> dict:
    statuses = sorted({str(a.status) for a in answers})
    return {"count": len(answers), "status": {s: sum(str(a.status) == s for a in answers) for s in statuses},
            "ms_2xx": percentiles([a.ms for a in answers if isinstance(a.status, int) and a.status < 300])}


def summarise(run: dict, seconds: float) -> dict:
    clicks: list[Click] = run["clicks"]
    routes = sorted({(a.route, a.model) for c in clicks for a in c.answers})
    errors = [f"{c.page} {a.route} {a.model}: {a.status} {a.detail}" for c in clicks for a in c.answers
              if failed(a.status)]
    errors += [f"{c.page}: unfinished after the drain" for c in clicks if c.outcome == "unfinished"]
    lag = [(c.sent - c.scheduled) * 1e3 for c in clicks if c.sent is not None]
    return {
        "overall": click_summary(clicks, seconds) | {"offered_per_second": len(clicks) / seconds},
        "pages": {p: click_summary([c for c in clicks if c.page == p], seconds) for p in PAGES},
        "requests": {f"{route} {model}": request_summary([a for c in clicks for a in c.answers
                                                          if (a.route, a.model) == (route, model)])
                     for route, model in routes},
        "errors": errors[:30], "error_count": len(errors),
        "client": {"cpu_seconds": run["client_cpu"], "cpu_share_of_one_core": run["client_cpu"] / run["wall"],
                   "lag_ms": percentiles(lag)},
        "server_cpu": {"seconds": run["server_cpu"], "cores": run["server_cpu"] / run["wall"]},
        "wall_seconds": run["wall"], "timeline": run["timeline"],
        # page, student, scheduled, sent, done (seconds from the start), outcome, statuses
        "click_log": [[c.page, c.student, round(c.scheduled, 3), c.sent and round(c.sent, 3),
                       c.done and round(c.done, 3), c.outcome, [a.status for a in c.answers]]
                      for c in clicks],
    }


def closed_loop(url: str, clients: int, seconds: float) -> dict:
    """`bench http`'s load test, as it runs it: its five request types on the bundled LSTM
    2x256, `clients` threads back to back."""
    from rnnscope.model.bundled import bundled_paths
    from rnnscope.model.checkpoint import load_model
    from rnnscope.model.data import split

    from .http import CORPUS, VAL_FRACTION, kinds, load_test
    _, val = split(CORPUS.read_text(encoding="utf-8-sig").replace("\r\n", "\n"), VAL_FRACTION)
    mix = kinds(load_model(bundled_paths()[ONE_MODEL]), val)
    result = load_test(url, ONE_MODEL, mix, clients, seconds)
    result.pop("records")
    return result


def run(args) -> dict:
    return on_cluster(args) if args.cluster else run_class(args)


def run_class(args, replicas=None) -> dict:
    """The class against `rnnscope serve`, configured by this process's environment.
    `replicas`: on a cluster, a function reading the compute replicas' counters
    (replica_counters), read as the class starts and as it ends."""
    import httpx
    from rnnscope.app.settings import Settings

    import rnnscope
    settings = Settings()
    quick = args.quick
    students = min(args.students, 3) if quick else args.students
    think = min(args.think_seconds, 2.0) if quick else args.think_seconds
    minutes = min(args.class_minutes, 0.2) if quick else args.class_minutes
    sample_every = min(args.class_sample_seconds, 4.0) if quick else args.class_sample_seconds
    seconds = minutes * 60
    result = {"suite": "class", "quick": quick, "machine": machine_info(), "code": code_version(),
              "students": students, "think_seconds": think, "minutes": minutes, "seed": args.class_seed,
              "settings": {k: getattr(settings, k, None)
                           for k in SETTINGS_SHOWN + (CLUSTER_SETTINGS_SHOWN if replicas else ())},
              # The server imports what this process imports: the working tree, unless PYTHONPATH
              # names another copy (a commit's clean install, to measure it without today's edits).
              "rnnscope_path": str(Path(rnnscope.__file__).resolve().parent),
              # Inherited by the server: settings that change what is measured.
              "env": {k: v for k, v in os.environ.items()
                      if k.startswith(("RNNSCOPE_", "OPENBLAS_", "OMP_", "MALLOC_"))}}
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-class-") as tmp, server(Path(tmp)) as srv:
        with httpx.Client(base_url=srv.url, timeout=REQUEST_TIMEOUT, trust_env=False) as client:
            the_plan = plan(client)
        # A class meets a server up for a while: bench.http.server yields once its caches are
        # prepared (RNNSCOPE_WARM_ON_START), as they would be by the time students come.
        result["warm_seconds"] = srv.warm_seconds
        result["passages"] = {m: [len(t) for t in texts] for m, texts in the_plan.passages.items()}
        result["server_start_seconds"] = srv.start_seconds
        print(f"class: {students} students, think {think:g} s, {minutes:g} min against {srv.url} "
              f"(started in {srv.start_seconds:.1f} s, its caches prepared {result['warm_seconds']:.1f} s later)",
              flush=True)
        before = replicas() if replicas else None
        run_ = asyncio.run(open_loop(srv.url, the_plan, students, think, seconds, args.class_seed,
                                     drain=30.0 if quick else REQUEST_TIMEOUT + 10, sample_every=sample_every,
                                     server_pid=srv.process.pid))
        if replicas:
            result["replica_counters"] = {"start": before, "end": replicas()}
        result.update(summarise(run_, seconds))
        result["load_average_end"] = list(os.getloadavg())
        if args.closed_loop:
            loop_seconds = min(args.closed_loop_seconds, 5.0) if quick else args.closed_loop_seconds
            print(f"closed loop: bench http's load, {args.http_clients} clients x {loop_seconds:g} s",
                  flush=True)
            result["closed_loop"] = closed_loop(srv.url, args.http_clients, loop_seconds)
            result["closed_loop"]["load_average_end"] = list(os.getloadavg())
        log = srv.log.read_text(errors="replace")
        result["server_log"] = {"tracebacks": log.count("Traceback"), "errors": log.count("ERROR:"),
                                "tail": log_tail(srv.log, 5) if "Traceback" in log else ""}
    return result



# --- on a Ray cluster (--cluster) -----------------------------------------------------------

def on_cluster(args) -> dict:
    """The class run by a child inside a private network namespace (bench/cluster.py's), on a
    cluster the child makes there and removes; then a look that nothing of it still runs."""
    from .cluster import in_namespace, in_private_network
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-class-cluster-") as tmp:
        out = Path(tmp) / "class.json"
        given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        in_private_network(["bench.classroom", "--child", str(out), "--args", json.dumps(given)],
                           "the class on a cluster", capture=False)
        result = json.loads(out.read_text())
    cluster = result["cluster"]
    # The child was the namespace's last process: whatever is still in it outlived the teardown.
    cluster["left_after_exit"] = [f"{pid} {cmd}" for pid, cmd in in_namespace(cluster["namespace"]).items()]
    return result


def cluster_child(args, out: Path) -> None:
    """Inside the namespace: the cluster, the class against a server that joins it, the
    replicas' counters, the teardown and what outlived it, written to `out` as JSON."""
    from .cluster import left_in_this_namespace, local_cluster
    with local_cluster() as (cluster, start_seconds):
        roles = {cluster.head_node.node_id: "head (0 CPUs)"}
        for n, node in enumerate(sorted(cluster.worker_nodes, key=lambda node: node.node_id), 1):
            roles[node.node_id] = f"worker node {n} (1 CPU)"
        # The server joins this cluster. Its batched compute runs only on the replicas, unless
        # RNNSCOPE_COMPUTE_WORKERS asks for worker processes beside them.
        os.environ.update({"RNNSCOPE_EXECUTOR": "ray", "RNNSCOPE_RAY_ADDRESS": cluster.address})
        os.environ.setdefault("RNNSCOPE_COMPUTE_WORKERS", "0")
        result = run_class(args, replicas=replica_counters)
    counters = result.pop("replica_counters")
    result["cluster"] = {"start_seconds": start_seconds, "nodes": roles,
                         "replicas": replica_summary(counters["start"], counters["end"], roles),
                         "replicas_at_start": len(counters["start"]),
                         "gone": sorted(set(counters["start"]) - set(counters["end"])),
                         "namespace": os.readlink("/proc/self/ns/net"),
                         "left_running": left_in_this_namespace()}
    out.write_text(json.dumps(result))


def replica_counters() -> dict[str, dict]:
    """name -> {node_id, pid, calls, cpu_seconds} of each live compute replica on the cluster
    (app/inference/ray_workers.py): the calls as the replica counts them, the CPU seconds of
    its process from /proc (the cluster is on this machine)."""
    import ray
    from ray.exceptions import RayError
    from rnnscope.app.inference.ray_workers import REPLICA_NAMESPACE

    found = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] != REPLICA_NAMESPACE:
            continue
        try:
            handle = ray.get_actor(actor["name"], namespace=REPLICA_NAMESPACE)
            served = ray.get(handle.served.remote(), timeout=60)
        except (RayError, ValueError):
            continue                              # stopped meanwhile: replaced, or its node gone
        found[actor["name"]] = served | {"cpu_seconds": tree_cpu_seconds(served["pid"])}
    return found


# A replica's calls that take in work: a request answered alone ("alone", or "run <function>",
# the pool's call for any view's function, which also takes a piece of a long reading) or
# admitted into a shared pass; its other calls (a pass's steps, a model sent, a pass opened or
# closed) serve work already counted.
REQUEST_OPS = ("alone", "run", "admit")


def takes_work(op: str) -> bool:
    return op.split()[0] in REQUEST_OPS


def replica_summary(start: dict[str, dict], end: dict[str, dict], roles: dict[str, str]) -> list[dict]:
    """Per replica alive at the end: its node (by role) and what it did during the class,
    the end's counters minus the start's (a replica started meanwhile counts from zero)."""
    rows = []
    for name, last in sorted(end.items()):
        first = start.get(name)
        if first is None or first["pid"] != last["pid"]:
            first = {"calls": {}, "cpu_seconds": 0.0}
        calls = {op: n - first["calls"].get(op, 0) for op, n in sorted(last["calls"].items())}
        rows.append({"name": name, "node_id": last["node_id"],
                     "node": roles.get(last["node_id"], "a node not of this cluster"),
                     "work_taken": sum(n for op, n in calls.items() if takes_work(op)), "calls": calls,
                     "cpu_seconds": last["cpu_seconds"] - first["cpu_seconds"]})
    return rows


# --- the table ------------------------------------------------------------------------------

def ms(p: dict, key: str) -> str | None:
    v = p.get(key)
    return None if v is None else f"{v:,.0f}"


LABELS = {"explore": "explore (trace)", "gradients": "gradients (rnn, gru, lstm)", "probe": "probe",
          "sample": "sample 300", "gates": "gates", "states": "states (state space)"}


def table(result: dict) -> str:
    m, o, code = result["machine"], result["overall"], result["code"]
    loads = "/".join(f"{v:.2f}" for v in m["load_average"])
    loads_end = "/".join(f"{v:.2f}" for v in result["load_average_end"])
    quick = " (--quick: indicative only)" if result["quick"] else ""
    env = " ".join(f"{k}={v}" for k, v in result["env"].items())
    cluster = result.get("cluster")
    where = "a server computing on a 3-node Ray cluster" if cluster else "one server"
    lines = [
        (f"## A class on {where}: {result['students']} students, think {result['think_seconds']:g} s "
         f"(exponential), open loop, {result['minutes']:g} min{quick}"),
        (f"CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; load average (1/5/15 min) {loads} at the "
         f"start, {loads_end} at the end"),
        (f"code: commit {code['commit']}"
         + (f" + uncommitted changes to {', '.join(code['modified'])}" if code["modified"] else "")
         if result["rnnscope_path"].startswith(str(REPO)) else
         f"code: rnnscope imported from {result['rnnscope_path']} (PYTHONPATH), not this working tree")
        + (f"; environment: {env}" if env else ""),
        "server settings: " + ", ".join(f"{k} {v}" for k, v in result["settings"].items())
        + f"; the class began {result.get('warm_seconds', 0):.1f} s after start-up, its caches prepared",
        ""]
    rows = []
    for label, p in [*((LABELS[page], result["pages"][page]) for page in PAGES), ("all clicks", o)]:
        rows.append([label, p["clicks"], p["served"], p["refused"], p["errors"],
                     *(ms(p["ms"], k) for k in ("p50", "p95", "p99", "max"))])
    lines.append(render_table(["page", "clicks", "served", "refused 503", "errors", "p50 ms", "p95 ms",
                               "p99 ms", "max ms"], rows))
    lines.append("")
    rows = [[name, r["count"], ", ".join(f"{k}: {v}" for k, v in r["status"].items()), ms(r["ms_2xx"], "p50"),
             ms(r["ms_2xx"], "p99")] for name, r in result["requests"].items()]
    lines.append(render_table(["request", "n", "status", "p50 ms (2xx)", "p99 ms (2xx)"], rows))
    c, s, lag = result["client"], result["server_cpu"], result["client"]["lag_ms"]
    lines += [
        "",
        (f"clicks/s: offered {o['offered_per_second']:.2f}, served {o['served_per_second']:.2f} "
         f"(answered 2xx within the {result['minutes'] * 60:g} s)"),
        (f"refusals: {o['answers_503']} answers 503, {o['answers_503_with_retry_after']} with Retry-After; "
         f"errors: {result['error_count']} ({o['unfinished']} clicks unfinished after the drain)"),
        (f"server CPU{' (the API process; the replicas are below)' if cluster else ''}: {s['seconds']:.0f} s "
         f"= {s['cores']:.2f} cores on average over {result['wall_seconds']:.0f} s"),
        (f"client: {c['cpu_seconds']:.1f} CPU s = {c['cpu_share_of_one_core']:.1%} of one core; lag from "
         f"scheduled to sent p50 {lag.get('p50', 0):.1f} ms, p99 {lag.get('p99', 0):.1f} ms, "
         f"max {lag.get('max', 0):.1f} ms"),
        "load average (1 min) during the run: " + ", ".join(f"{t['load_average'][0]:.2f}"
                                                           for t in result["timeline"])]
    if result["errors"]:
        lines.append("first errors: " + "; ".join(result["errors"][:5]))
    log = result["server_log"]
    lines.append(f"server log: {log['tracebacks']} tracebacks, {log['errors']} ERROR lines")
    loop = result.get("closed_loop")
    if loop:
        a = loop["all"]
        lines.append(f"closed loop (bench http's load: {loop['clients']} clients back to back for "
                     f"{loop['seconds']:g} s, its LSTM 2x256 mix): {loop['served_per_second']:.2f} served/s, "
                     f"p50 {ms(a, 'p50')} ms, p99 {ms(a, 'p99')} ms, {loop['refused_503']} refused 503, "
                     f"{loop['errors']} errors; load {loop['load_average_end'][0]:.2f} at its end")
    if cluster:
        lines += ["", *cluster_lines(result)]
    lines.append("latencies: of the clicks answered 2xx, from sending to the last byte of the last answer "
                 "(a gradients click is three requests at once)")
    return "\n".join(lines)


def cluster_lines(result: dict) -> list[str]:
    """Where the class's compute ran: the cluster, each replica's node and work, what outlived it."""
    cluster, wall = result["cluster"], result["wall_seconds"]
    nodes = list(cluster["nodes"].values())
    replicas = cluster["replicas"]
    rows = [[r["name"], f"{r['node']} {r['node_id'][:8]}", r["work_taken"], r["calls"].get("step", 0),
             f"{r['cpu_seconds']:.1f}", f"{r['cpu_seconds'] / wall:.2f}"] for r in replicas]
    on_head = sum(r["node"].startswith("head") for r in replicas)
    answered = {name: r["status"].get("200", 0) for name, r in result["requests"].items()}
    batched = sum(n for name, n in answered.items() if name.split()[0] in ("trace", "sample", "gradients"))
    left = cluster["left_running"] + cluster["left_after_exit"]
    return [
        (f"Ray cluster on this machine, in a private network namespace: {', '.join(nodes)}; started in "
         f"{cluster['start_seconds']:.1f} s; the server joined it (executor ray) with {len(replicas)} compute "
         f"replicas ({cluster['replicas_at_start']} as the class began)"),
        render_table(["replica", "node", "work taken", "pass steps", "CPU s", "cores"], rows),
        *(f"  {r['name']} answered " + ", ".join(f"{op} {n}" for op, n in r["calls"].items() if n)
          for r in replicas),
        (f"work taken by the replicas ({', '.join(REQUEST_OPS)} calls): {sum(r['work_taken'] for r in replicas)}; "
         f"the class's requests answered 200: {sum(answered.values())}, of which trace, sample and gradients "
         f"(always batched in the compute pool) {batched}"),
        (f"replicas on the head node: {on_head}; replicas gone during the class: {len(cluster['gone'])}; "
         f"left running after the teardown: {'; '.join(left) if left else 'nothing'}"),
    ]


if __name__ == "__main__":             # bench --cluster's child, inside the private network
    child = argparse.ArgumentParser()
    child.add_argument("--child", type=Path, required=True, help="where the result goes (JSON)")
    child.add_argument("--args", required=True, help="the parent's arguments (JSON)")
    given = child.parse_args()
    cluster_child(argparse.Namespace(**json.loads(given.args)), given.child)
