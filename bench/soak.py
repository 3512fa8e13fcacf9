"""A semester on one server (issue 18): a class's mix and the attacks of issue 18 against
`rnnscope serve` as the README starts it, for --minutes (default 30).

Students (--soak-students, each with an owner key of their own) read pages, trace, sample,
probe and take gradients of the bundled models, upload a corpus, train small runs, watch
their event streams and metrics, and delete old runs. Meanwhile an attacker takes turns at:
bursts of event streams, aborted uploads, clients that trickle their headers, a probe with
the most expensive regex RE2 accepts, malformed model imports, and a run far over the
memory budget. A prober in its own process asks /healthz every 0.2 s, and every
--soak-sample-seconds the server's open files (/proc/<pid>/fd) and resident memory are read and printed.

What it reports: open files and RSS over time (flat is the aim), the count of 500s (0 is
the aim), /healthz p50/p99 (p99 <= 50 ms is the aim), every status code per kind of request,
and what each attack got. It measures; it asserts nothing. It ends within --minutes plus
the server's start and a minute of shutdown whatever the server does: every request has a
timeout and every thread checks the same deadline.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from .common import machine_info, render_table
from .http import code_version, percentiles, server

TEXT = (Path(__file__).resolve().parent.parent / "tests" / "data" / "tinyshakespeare-head.txt").read_text("utf-8")
MODEL = "lstm"                                 # the bundled 2x256 LSTM a class reads
REQUEST_TIMEOUT = 30.0                         # no request may keep a thread past the deadline for long
HEALTHZ_TARGET_P99_MS = 50
PAGES = ["/", "/explore", "/train", "/probe", "/gradients", "/sample", "/learn", "/api/models", "/healthz"]
# issue 18: legal, 1.7-2 s of RE2 over 10,000 characters.
COSTLY_REGEX = "(?s)" + ".{0,999}" * 24 + "Z$"
# issue 18: within max_parameters and max_step_chars, 7 GB of memory when it trained.
OVERSIZED_RUN = {"cell": "lstm", "hidden_size": 1024, "num_layers": 2, "batch_size": 32, "seq_length": 1024,
                 "max_steps": 10}
SMALL_RUN = {"cell": "lstm", "hidden_size": 32, "num_layers": 1, "batch_size": 8, "seq_length": 32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("soak (a semester on one server)")
    group.add_argument("--minutes", type=float, default=30.0, help="how long the class works (default 30)")
    group.add_argument("--soak-students", type=int, default=12)
    group.add_argument("--soak-sample-seconds", type=float, default=30.0,
                       help="how often open files and RSS are read and printed")
    group.add_argument("--soak-attack-seconds", type=float, default=20.0, help="pause between two attacks")


class Record:
    """Every answer, by kind of request, and the server's vital signs over time; thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes: dict[str, Counter] = defaultdict(Counter)
        self.errors: list[str] = []                # 500s and transport failures, first few of each
        self.healthz_ms: list[float] = []
        self.vitals: list[dict] = []
        self.attacks: dict[str, list[dict]] = defaultdict(list)

    def answer(self, kind: str, status: int | str, detail: str = "") -> None:
        with self.lock:
            self.codes[kind][str(status)] += 1
            if (status == 500 or isinstance(status, str)) and len(self.errors) < 50:
                self.errors.append(f"{kind}: {status} {detail[:160]}")

    def add(self, kind: str, label: str, n: int) -> None:
        with self.lock:
            self.codes[kind][label] += n

    def count(self, status: str) -> int:
        with self.lock:
            return sum(c[status] for c in self.codes.values())


def request(client, record: Record, kind: str, method: str, path: str, **kw):
    """One request, recorded under `kind`; the response, or None when the transport failed."""
    import httpx
    try:
        r = client.request(method, path, timeout=REQUEST_TIMEOUT, **kw)
    except httpx.HTTPError as e:
        record.answer(kind, type(e).__name__, str(e))
        return None
    record.answer(kind, r.status_code, r.text if r.status_code == 500 else "")
    return r


# ---- the class ------------------------------------------------------------------------------------

def student(url: str, record: Record, stop: float, seed: int) -> None:
    """One person's session: a random walk over what the pages do, with a pause to read."""
    import httpx
    rng = random.Random(seed)
    key = secrets.token_urlsafe()
    corpus_id: int | None = None
    runs: list[int] = []
    with httpx.Client(base_url=url, headers={"X-Rnnscope-Owner": key}, trust_env=False) as c:
        while time.monotonic() < stop:
            start = rng.randrange(0, len(TEXT) - 2_000)
            passage = TEXT[start:start + rng.choice([200, 500, 1_000])]
            action = rng.choices(["page", "trace", "sample", "probe", "gradients", "train"],
                                 weights=[30, 15, 10, 10, 10, 25])[0]
            if action == "page":
                request(c, record, "page", "GET", rng.choice(PAGES))
            elif action == "trace":
                request(c, record, "trace", "POST", f"/api/models/{MODEL}/trace", json={"text": passage})
            elif action == "sample":
                request(c, record, "sample", "POST", f"/api/models/{MODEL}/sample",
                        json={"prime": passage[:50], "length": 200})
            elif action == "probe":
                body = {"text": passage, "concept": "vowel"} if rng.random() < 0.5 else {"text": passage,
                                                                                        "regex": "[A-Z]+"}
                request(c, record, "probe", "POST", f"/api/models/{MODEL}/probe", json=body)
            elif action == "gradients":
                request(c, record, "gradients", "POST", f"/api/models/{MODEL}/gradients",
                        json={"text": passage[:200]})
            else:
                corpus_id = train(c, record, rng, corpus_id, runs)
            time.sleep(rng.uniform(0.5, 2.0))
        for run_id in runs:                        # tidy up, as the class would at the term's end
            r = request(c, record, "run: delete", "DELETE", f"/api/runs/{run_id}")
            if r is not None and r.status_code == 409:              # still training
                request(c, record, "run: cancel", "POST", f"/api/runs/{run_id}/cancel")


def train(c, record: Record, rng: random.Random, corpus_id: int | None, runs: list[int]) -> int | None:
    """One step of a person's training: upload their text once, start a small run, watch it
    (metrics, a few seconds of its event stream), delete the oldest of their finished runs."""
    if corpus_id is None:
        start = rng.randrange(0, len(TEXT) - 20_000)
        r = request(c, record, "corpus upload", "POST", "/api/corpora",
                    files={"file": ("mine.txt", TEXT[start:start + 20_000].encode())})
        return r.json()["id"] if r is not None and r.status_code in (200, 201) else None
    if not runs or rng.random() < 0.3:
        r = request(c, record, "run: start", "POST", "/api/runs",
                    json={"corpus_id": corpus_id, **SMALL_RUN, "max_steps": rng.choice([50, 100, 200])})
        if r is not None and r.status_code == 201:
            runs.append(r.json()["id"])
        return corpus_id
    run_id = rng.choice(runs)
    watch = rng.choice(["metrics", "events", "samples", "gradients", "detail"])
    if watch == "events":
        stream_for(c, record, f"/api/runs/{run_id}/events", seconds=3.0)
    else:
        path = f"/api/runs/{run_id}" + ("" if watch == "detail" else f"/{watch}")
        request(c, record, f"run: {watch}", "GET", path)
    if len(runs) > 3:                          # keep a few; delete the oldest that has ended
        r = request(c, record, "run: detail", "GET", f"/api/runs/{runs[0]}")
        if r is not None and r.status_code == 200 and r.json()["status"] not in ("queued", "running"):
            request(c, record, "run: delete", "DELETE", f"/api/runs/{runs[0]}")
            runs.pop(0)
        elif r is not None and r.status_code == 404:
            runs.pop(0)
    return corpus_id


def stream_for(c, record: Record, path: str, seconds: float) -> None:
    import httpx
    try:
        with c.stream("GET", path, timeout=REQUEST_TIMEOUT) as r:
            record.answer("run: events", r.status_code)
            until = time.monotonic() + seconds
            for _ in r.iter_lines():
                if time.monotonic() > until:
                    break
    except httpx.HTTPError as e:
        record.answer("run: events", type(e).__name__, str(e))


# ---- the attacker ---------------------------------------------------------------------------------

def raw_head(port: int, head: bytes, timeout: float = REQUEST_TIMEOUT) -> tuple[socket.socket, int | None]:
    """Send `head` on a new connection; the socket and the status of the answer's first line
    (None if the server closed the connection without one)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head)
    answer = b""
    while b"\r\n" not in answer:
        chunk = s.recv(4096)
        if not chunk:
            return s, None
        answer += chunk
    return s, int(answer.split()[1])


def stream_burst(url: str, port: int, record: Record, owner: str, count: int = 300) -> dict:
    """`count` event streams of an active run opened at once (the attacker queues a small run
    of its own when no run is active): how many were accepted."""
    import httpx
    with httpx.Client(base_url=url, headers={"X-Rnnscope-Owner": owner}, trust_env=False) as c:
        runs = c.get("/api/runs?owner=all", timeout=REQUEST_TIMEOUT).json()
        active = [r["id"] for r in runs if r["status"] in ("queued", "running")]
        if not active:
            r = request(c, record, "attack: corpus", "POST", "/api/corpora",
                        files={"file": ("watched.txt", TEXT[:20_000].encode())})
            if r is not None and r.status_code in (200, 201):
                r = request(c, record, "attack: run to watch", "POST", "/api/runs",
                            json={"corpus_id": r.json()["id"], **SMALL_RUN, "max_steps": 300})
                if r is not None and r.status_code == 201:
                    active = [r.json()["id"]]
    if not active:
        return {"skipped": "no run is queued or running, and none could be queued"}
    head = f"GET /api/runs/{active[0]}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    statuses: list[int | str] = []
    sockets: list[socket.socket] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            s, status = raw_head(port, head)
            with lock:
                sockets.append(s)
                statuses.append(status if status is not None else "closed")
        except OSError as e:
            with lock:
                statuses.append(type(e).__name__)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT + 5)
    time.sleep(1.0)                           # held open together for a moment
    for s in sockets:
        s.close()
    for status in statuses:
        record.answer("attack: stream burst", status)
    return {"run": active[0], "sent": count, "answers": dict(Counter(map(str, statuses)))}


def aborted_uploads(port: int, record: Record, count: int = 20) -> dict:
    """Uploads cut off by their client after 100 kB of a declared megabyte."""
    head = (b"POST /api/corpora HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
            b"filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\n")
    done = 0
    for _ in range(count):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
                s.sendall(head + TEXT[:100_000].encode())
                time.sleep(0.05)
            done += 1
        except OSError as e:
            record.answer("attack: aborted upload", type(e).__name__, str(e))
    record.add("attack: aborted upload", "sent", done)
    return {"aborted": done}


def trickling_clients(port: int, record: Record, stop: float, count: int = 100) -> dict:
    """Connections that send their request line and headers a byte a second: how long each
    was held before the server closed it (it is given up at the soak's end)."""
    request_bytes = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"." * 200 + b"\r\n\r\n"
    opened = time.monotonic()
    conns = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            conns.append(s)
        except OSError as e:
            record.answer("attack: trickle", type(e).__name__, str(e))
    held: list[float] = []
    sent = 0
    while conns and time.monotonic() < stop and sent < len(request_bytes):
        for s in list(conns):
            try:
                s.send(request_bytes[sent:sent + 1])
                if s.recv(4096) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                continue
            except OSError:
                held.append(time.monotonic() - opened)
                conns.remove(s)
                s.close()
        sent += 1
        time.sleep(1.0)
    for s in conns:
        s.close()
    record.add("attack: trickle", "closed by the server", len(held))
    record.add("attack: trickle", "still open at the end", len(conns))
    return {"connections": count, "closed_by_server": len(held), "still_open": len(conns),
            "held_seconds_max": round(max(held), 1) if held else None}


def costly_regex_probes(url: str, record: Record, owner: str, count: int = 2) -> dict:
    """`count` probes at once with the most expensive regex RE2 accepts, over 10,000 characters."""
    import httpx
    body = {"text": TEXT[:10_000], "regex": COSTLY_REGEX}
    statuses: list = []

    def one() -> None:
        with httpx.Client(base_url=url, headers={"X-Rnnscope-Owner": owner}, trust_env=False) as c:
            r = request(c, record, "attack: costly regex", "POST", f"/api/models/{MODEL}/probe", json=body)
            statuses.append(None if r is None else r.status_code)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT + 5)
    return {"answers": dict(Counter(map(str, statuses)))}


def safetensors(header: bytes | dict, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# issue 18's malformed files: each must be a 4xx naming what is wrong, never a 500.
MALFORMED = {
    "deeply nested header": safetensors(b"[" * 100_000 + b"]" * 100_000),
    "2^32 x 2^32 shape, no data": safetensors({"rnn.weight_ih_l0": {"dtype": "F32", "shape": [2**32, 2**32],
                                                                    "data_offsets": [0, 0]}}),
    "65 dimensions": safetensors({"rnn.weight_ih_l0": {"dtype": "F32", "shape": [1] * 65,
                                                       "data_offsets": [0, 4]}}, b"\0" * 4),
    "header longer than the file": struct.pack("<Q", 10**12) + b"{}",
    "not JSON": safetensors(b"\xff\xfe not json"),
    "overlapping tensors": safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
}


def malformed_imports(url: str, record: Record, owner: str) -> dict:
    import httpx
    answers = {}
    with httpx.Client(base_url=url, headers={"X-Rnnscope-Owner": owner}, trust_env=False) as c:
        for name, data in MALFORMED.items():
            r = request(c, record, "attack: malformed import", "POST", "/api/models/import",
                        files={"model": ("bad.safetensors", data)}, data={"chars": "abcdefgh"})
            answers[name] = None if r is None else r.status_code
            if r is not None and r.status_code == 201:          # accepted: do not keep it
                request(c, record, "attack: malformed import", "DELETE", f"/api/models/{r.json()['id']}")
    return answers


def oversized_run(url: str, record: Record, owner: str) -> dict:
    """issue 18's 2x1024 LSTM, B32 x T1024: refused, or cancelled at once if it was queued."""
    import httpx
    with httpx.Client(base_url=url, headers={"X-Rnnscope-Owner": owner}, trust_env=False) as c:
        r = request(c, record, "attack: corpus", "POST", "/api/corpora",
                    files={"file": ("big.txt", TEXT[:50_000].encode())})
        if r is None or r.status_code not in (200, 201):
            return {"skipped": f"the upload answered {None if r is None else r.status_code}"}
        r = request(c, record, "attack: oversized run", "POST", "/api/runs",
                    json={"corpus_id": r.json()["id"], **OVERSIZED_RUN})
        if r is None:
            return {"answer": None}
        if r.status_code == 201:
            run_id = r.json()["id"]
            request(c, record, "attack: oversized run", "POST", f"/api/runs/{run_id}/cancel")
            return {"answer": 201, "note": "accepted, and cancelled at once"}
        return {"answer": r.status_code}


def attacker(url: str, port: int, record: Record, began: float, stop: float, pause: float) -> None:
    owner = secrets.token_urlsafe()
    attacks = [
        ("stream burst", lambda: stream_burst(url, port, record, owner)),
        ("aborted uploads", lambda: aborted_uploads(port, record)),
        ("trickling clients", lambda: trickling_clients(port, record, stop)),
        ("costly regex probes", lambda: costly_regex_probes(url, record, owner)),
        ("malformed imports", lambda: malformed_imports(url, record, owner)),
        ("oversized run", lambda: oversized_run(url, record, owner)),
    ]
    i = 0
    time.sleep(min(pause, max(0.0, stop - time.monotonic())))
    while time.monotonic() < stop:
        name, attack = attacks[i % len(attacks)]
        i += 1
        started = time.monotonic()
        try:
            outcome = attack()
        except Exception as e:                  # an attack that cannot run is a finding, not a crash
            outcome = {"error": f"{type(e).__name__}: {e}"}
        with record.lock:
            record.attacks[name].append({"minute": round((started - began) / 60, 2), **outcome})
        time.sleep(min(pause, max(0.0, stop - time.monotonic())))


# ---- the server's vital signs ---------------------------------------------------------------------

def probe_healthz(url: str, stop_wall: float, timings) -> None:
    """In a process of its own: GET /healthz every 0.2 s until `stop_wall` (time.time()), putting
    (status, ms) on `timings`. Its own process, so what it times is the server: in the soak's
    process it waited for the GIL behind a dozen student threads, and that wait counted as the
    server's."""
    import httpx
    with httpx.Client(base_url=url, trust_env=False) as c:
        while time.time() < stop_wall:
            t0 = time.perf_counter()
            try:
                status = c.get("/healthz", timeout=REQUEST_TIMEOUT).status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            timings.put((status, (time.perf_counter() - t0) * 1e3))
            time.sleep(0.2)
        timings.put(None)


def healthz_prober(url: str, record: Record, stop: float) -> None:
    """Run probe_healthz in a spawned process and record what it measured as it arrives."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    timings = context.Queue()
    prober = context.Process(target=probe_healthz, args=(url, time.time() + (stop - time.monotonic()), timings),
                             daemon=True)
    prober.start()
    try:
        while True:
            try:
                item = timings.get(timeout=REQUEST_TIMEOUT * 2)
            except queue.Empty:
                if prober.is_alive():
                    continue
                break
            if item is None:
                break
            status, ms = item
            record.answer("healthz", status)
            if status == 200:
                with record.lock:
                    record.healthz_ms.append(ms)
    finally:
        prober.join(REQUEST_TIMEOUT)
        if prober.is_alive():
            prober.kill()


def vitals(pid: int) -> dict:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = value.split()[0]
    return {"open_files": len(os.listdir(f"/proc/{pid}/fd")), "rss_mb": int(values["VmRSS"]) / 1024,
            "threads": int(values["Threads"])}


def monitor(pid: int, record: Record, began: float, stop: float, every: float) -> None:
    """Read and print the server's open files, RSS and threads every `every` seconds."""
    seen = 0
    while True:
        try:
            v = vitals(pid)
        except OSError:                         # the server is gone: the soak says so at the end
            return
        with record.lock:
            recent = record.healthz_ms[seen:]
            seen = len(record.healthz_ms)
        fives = record.count("500")
        v |= {"minute": round((time.monotonic() - began) / 60, 2), "500s": fives,
              "healthz_p99_ms": round(percentiles(recent).get("p99", float("nan")), 1)}
        record.vitals.append(v)
        print(f"  {v['minute']:6.2f} min  open files {v['open_files']:4d}  RSS {v['rss_mb']:7.1f} MB  "
              f"threads {v['threads']:3d}  500s {fives}  /healthz p99 {v['healthz_p99_ms']} ms", flush=True)
        if time.monotonic() >= stop:
            return
        time.sleep(min(every, max(0.0, stop - time.monotonic())))


def after_the_class(pid: int, record: Record, began: float, warm_minute: float,
                    settle_seconds: float = 60.0) -> dict:
    """The server's vitals once the class has left: the last attack's connections (300 event
    streams, 100 trickling clients) are sockets, open files until the server closes them, so
    a sample taken mid-attack counts them. Waits up to `settle_seconds` for them to close: 15 s
    was once too short (a 75-minute soak read 99 open files against 88, 31 threads still
    serving the last burst, after 75 minutes of 88-97 between attacks)."""
    warm = [v for v in record.vitals if v["minute"] >= warm_minute] or record.vitals
    first = warm[0]["open_files"] if warm else 0
    deadline = time.monotonic() + settle_seconds
    while True:
        v = vitals(pid) | {"minute": round((time.monotonic() - began) / 60, 2), "settled": True}
        if v["open_files"] <= first + 10 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    record.vitals.append(v)
    print(f"  {v['minute']:6.2f} min  open files {v['open_files']:4d}  RSS {v['rss_mb']:7.1f} MB  "
          f"threads {v['threads']:3d}  (the class has left)", flush=True)
    return v


# ---- the suite ----------------------------------------------------------------------------------

def run(args) -> dict:
    minutes = min(args.minutes, 1.0) if args.quick else args.minutes
    students = min(args.soak_students, 4) if args.quick else args.soak_students
    sample_every = min(args.soak_sample_seconds, 10.0) if args.quick else args.soak_sample_seconds
    attack_every = min(args.soak_attack_seconds, 5.0) if args.quick else args.soak_attack_seconds
    result = {"suite": "soak", "quick": args.quick, "machine": machine_info(), "code": code_version(),
              "minutes": minutes, "students": students}
    record = Record()
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-soak-") as tmp, server(Path(tmp)) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        began = time.monotonic()
        stop = began + minutes * 60
        print(f"soak: {students} students and an attacker for {minutes:g} min against {srv.url} "
              f"(started in {srv.start_seconds:.1f} s)", flush=True)
        threads = [threading.Thread(target=student, args=(srv.url, record, stop, i), daemon=True)
                   for i in range(students)]
        threads += [threading.Thread(target=attacker, args=(srv.url, port, record, began, stop, attack_every),
                                     daemon=True),
                    threading.Thread(target=healthz_prober, args=(srv.url, record, stop), daemon=True),
                    threading.Thread(target=monitor, args=(srv.process.pid, record, began, stop, sample_every),
                                     daemon=True)]
        for t in threads:
            t.start()
        for t in threads:                       # every request has a timeout: a minute is ample
            t.join(max(0.0, stop - time.monotonic()) + REQUEST_TIMEOUT * 2)
        alive = sum(t.is_alive() for t in threads)
        settled = after_the_class(srv.process.pid, record, began, min(2.0, minutes / 4))
        log = srv.log.read_text(errors="replace")
    warm = [v for v in record.vitals if v["minute"] >= min(2.0, minutes / 4)] or record.vitals
    result.update(
        vitals=record.vitals,
        open_files={"first": warm[0]["open_files"], "last": settled["open_files"],
                    "max": max(v["open_files"] for v in warm)} if warm else None,
        rss_mb={"first": warm[0]["rss_mb"], "last": settled["rss_mb"],
                "max": max(v["rss_mb"] for v in warm)} if warm else None,
        count_500=record.count("500"), errors=record.errors,
        codes={kind: dict(c) for kind, c in sorted(record.codes.items())},
        healthz=percentiles(record.healthz_ms), attacks=dict(record.attacks),
        log={"bytes": len(log), "tracebacks": log.count("Traceback"), "errors": log.count("ERROR:")},
        threads_left_running=alive, load_average_end=list(os.getloadavg()))
    h = result["healthz"]
    result["passed"] = {
        "no 500": result["count_500"] == 0,
        f"/healthz p99 <= {HEALTHZ_TARGET_P99_MS} ms": h.get("p99", 1e9) <= HEALTHZ_TARGET_P99_MS,
        "open files flat (last <= first + 10)":
            bool(warm) and settled["open_files"] <= warm[0]["open_files"] + 10,
    }
    return result


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"## A semester on one server: {result['students']} students and an attacker, "
             f"{result['minutes']:g} min",
             f"CPU: {m.get('cpu')} · {m.get('logical_cpus')} logical CPUs · load at end "
             f"{result['load_average_end'][0]:.1f}", ""]
    rows = [[f"{v['minute']:.2f}" + (" (the class has left)" if v.get("settled") else ""), v["open_files"],
             f"{v['rss_mb']:.1f}", v["threads"], v.get("500s", result["count_500"]), v.get("healthz_p99_ms", "-")]
            for v in result["vitals"]]
    lines.append(render_table(["minute", "open files", "RSS MB", "threads", "500s so far", "/healthz p99 ms"],
                              rows))
    lines.append("")
    rows = [[kind, sum(c.values()), ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))]
            for kind, c in result["codes"].items()]
    lines.append(render_table(["request", "answers", "status codes"], rows))
    h = result["healthz"]
    lines += ["", f"/healthz: {h.get('count', 0)} asked, p50 {h.get('p50', float('nan')):.1f} ms, "
                  f"p99 {h.get('p99', float('nan')):.1f} ms (aim <= {HEALTHZ_TARGET_P99_MS})",
              f"500s: {result['count_500']}  {result['errors'][:3]}",
              f"open files after warm-up: {result['open_files']}; RSS MB: {result['rss_mb']}",
              f"server log: {result['log']['bytes']:,} bytes, {result['log']['tracebacks']} tracebacks, "
              f"{result['log']['errors']} ERROR lines"]
    for name, outcomes in result["attacks"].items():
        lines.append(f"attack {name}: {len(outcomes)}x, last {json.dumps(outcomes[-1])[:300]}")
    lines.append("aims: " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in result["passed"].items()))
    return "\n".join(lines)
