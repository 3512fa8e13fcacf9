"""Compute in worker processes, so a request's time loop runs on a core of its own (issue 21).

The time loop of a trace, a sample or a BPTT pass holds the GIL between its NumPy calls, so
in one process two such loops share about one core (two trace workers ran 1.26x one). With
RNNSCOPE_COMPUTE_WORKERS = N, the batched passes (app/inference/batching.py: traces, samples,
gradients) run in N processes instead: the API process keeps the scheduling (the compute
gate, the batchers' queues, admission and memory), the answers and the store, and a worker
holds only models and the passes it is given (an Engine of batching.py, the same code as in
one process, so every answer is the one a thread would give).

A pass is pinned to one worker for its life: its rows' states live there. Passes go to the
worker with the fewest calls in flight, then the fewest passes: as many workers as compute
slots gives each running pass a core. A model travels to a worker once (weights of a few MB,
pickled), when a pass there first needs it, and stays in that worker's small LRU.

A worker that dies (killed, out of memory) is replaced at once. The passes it held are
admitted again on a worker from the start, once: the work is pure, so the answers are the
same. A pass whose worker dies a second time answers its requests with a 503 that says so.
Nothing waits on a dead worker: its pipe closes, and every call on it fails at once.

Workers are forked from multiprocessing's fork server, never from the API process: that one
has threads (uvicorn's, the batchers'), and a fork copies whichever locks they held. The fork
server is a single-threaded process started once, with this module (NumPy, the model code)
imported, so a worker starts in milliseconds instead of a spawned interpreter's second.
"""
from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


from rnnscope.model.layers import set_blas_threads
from rnnscope.model.lm import LanguageModel

from .compute_gate import ComputeBusy, ComputeGate
from .costs import UNKNOWN_SECONDS
from .engines import ALONE, KINDS

log = logging.getLogger(__name__)

# Models a worker keeps (an LRU): a 2x256 LSTM is 3.5 MB, so 8 is ~30 MB a worker.
MODELS_PER_WORKER = 8
# A pass's call steps it on until a request is answered or this long has gone: fewer round
# trips through the API process, whose threads (rendering answers) delay each one. A newcomer
# joins a pass between calls, so it waits at most this (or one step: a trace's 128 characters),
# as it waited for the gate's slice (batching.SLICE_SECONDS) before. Closed loop: 20 ms 7.60
# served/s, 100 ms 8.33, the workers busy 0.75 and 0.80 of the time.
STEP_CALL_SECONDS = 0.1


class WorkerDied(RuntimeError):
    """The worker serving a call stopped before answering it."""


def died_twice(error: WorkerDied) -> ComputeBusy:
    """The answer to a request whose work was computed again after its worker died, and whose
    second worker died too."""
    return ComputeBusy(f"{error}, twice; the server is recovering: try again shortly", 1.0)


# ---- in the worker process ------------------------------------------------------------------

@dataclass(eq=False)
class _RemoteJob:
    """A request's work as a worker's engine sees it: like batching.Job, finished into an outbox."""

    key: int
    payload: object
    outbox: list = field(repr=False)

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.outbox.append((self.key, result, error))


class Dispatcher:
    """What a worker holds (models, the passes pinned to it) and how it answers a call; the
    same in a worker process (serve) and in a Ray replica (app/inference/ray_workers.py)."""

    def __init__(self):
        self.models: OrderedDict[int, LanguageModel] = OrderedDict()
        self.engines: dict[int, object] = {}
        self.outbox: list = []                   # jobs finished during a call, sent as its answer

    def model(self, token: int) -> LanguageModel | None:
        found = self.models.get(token)
        if found is not None:
            self.models.move_to_end(token)
        return found

    def handle(self, op: str, *args):
        """("ok", reply) or ("error", exception)."""
        self.outbox.clear()
        try:
            return "ok", self._handle(op, args)
        except Exception as e:                   # noqa: BLE001 - the caller raises it as its own
            return "error", e

    def _handle(self, op: str, args: tuple):
        if op == "model":
            token, model = args
            self.models[token] = model
            while len(self.models) > MODELS_PER_WORKER:
                self.models.popitem(last=False)
            return None
        if op == "open":
            pass_id, kind, token = args
            model = self.model(token)
            if model is None:
                return "missing"
            self.engines[pass_id] = KINDS[kind](model, None)
            return "opened"
        if op == "run":
            function, token, arguments = args
            model = self.model(token)
            return "missing" if model is None else ("answer", function(model, *arguments))
        if op == "admit":
            pass_id, key, payload = args
            self.engines[pass_id].admit(_RemoteJob(key, payload, self.outbox))
            return list(self.outbox)
        if op == "step":
            (pass_id,) = args
            engine = self.engines[pass_id]
            engine.step()
            # A shared sample's step is one character (~0.1 ms): a call per step cost as much
            # again in pipe round trips, and on a Ray replica, one call at a time, far more.
            deadline = time.monotonic() + STEP_CALL_SECONDS
            while engine.jobs and not self.outbox and time.monotonic() < deadline:
                engine.step()
            return list(self.outbox)
        if op == "close":
            (pass_id,) = args
            self.engines.pop(pass_id, None)
            return None
        raise ValueError(f"unknown call {op!r}")


def serve(conn) -> None:
    """A worker's loop: calls in, answers out, until the pipe closes."""
    set_blas_threads(1)                      # one core a worker: N workers, N cores
    dispatcher = Dispatcher()
    while True:
        try:
            op, *args = conn.recv()
        except (EOFError, OSError):
            return
        status, value = dispatcher.handle(op, *args)
        try:
            conn.send((status, value))
        except Exception as e:                   # noqa: BLE001 - an error that cannot be pickled
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))


# ---- in the API process ---------------------------------------------------------------------

def fork_server():
    """multiprocessing's fork-server context, preloading this module (and not the program's
    __main__, which the default preloads: a script without a main guard would run again)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class Worker:
    """Somewhere passes run: calls answered one at a time, in order, by a Dispatcher; dead once
    its transport fails. A subclass says how a call travels (`_exchange`), which errors mean
    the other end is gone (`lost`), and how to start, describe and stop one."""

    lost: tuple[type[BaseException], ...] = ()
    noun = "compute worker"

    def __init__(self, number: int):
        self.number = number
        self.lock = threading.Lock()
        self.in_flight = 0                       # calls sent or waiting to be sent
        self.passes = 0                          # passes pinned here
        self.pinned_seconds = 0.0                # what they expected when they opened, summed
        self.dead = False

    def call(self, *message):
        with self.lock:
            if self.dead:
                raise WorkerDied(f"the {self.noun} has stopped")
            try:
                status, value = self._exchange(message)
            except self.lost:
                self.dead = True
                raise WorkerDied(f"the {self.noun} stopped while serving this request") from None
        if status == "error":
            raise value
        return value

    def _exchange(self, message: tuple) -> tuple[str, object]:
        raise NotImplementedError

    def respawn(self) -> Worker:
        """A new worker in this one's place."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class ProcessWorker(Worker):
    """A worker process on this machine and its pipe."""

    lost = (EOFError, OSError)

    def __init__(self, context, number: int):
        super().__init__(number)
        self.context = context
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child,), name=f"rnnscope-compute-{number}", daemon=True)
        self.process.start()
        child.close()

    def _exchange(self, message: tuple) -> tuple[str, object]:
        self.conn.send(message)
        return self.conn.recv()

    def respawn(self) -> ProcessWorker:
        return ProcessWorker(self.context, self.number)

    def describe(self) -> str:
        return f"{self.process.name} (exit code {self.process.exitcode})"

    def stop(self) -> None:
        self.dead = True
        try:
            self.conn.close()
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


def lone_load(worker: Worker, taken: bool = False) -> tuple:
    """Where a lone piece of work goes first: a worker no other slot's work is on (`taken`),
    then the fewest calls in flight, then the fewest passes pinned (a lone call is not one:
    it holds a worker only while in flight)."""
    return taken, worker.in_flight, worker.passes


def pass_load(worker: Worker, taken: bool = False) -> tuple:
    """Where a pass goes first: the least work pinned, the seconds the passes pinned there
    expected, running or waiting for a slot again (each will need its worker's core), then a
    worker not taken. Placed by what ran at the moment, two long trace passes were pinned to
    one worker, taking turns on its core while the other idled (0.92 and 0.18 cores busy)."""
    return worker.pinned_seconds, worker.passes, taken, worker.in_flight


class WorkerPool:
    """N worker processes (and any remote workers): `pick` finds the least busy for a pass,
    `alone` answers a lone request on one, and a dead one is replaced in place."""

    def __init__(self, size: int, remote: list | None = None, gate: ComputeGate | None = None):
        """`size` worker processes on this machine, and the `remote` workers given (Ray
        replicas, app/inference/ray_workers.py), which serve passes alike. With the compute
        `gate`, the work of a slot goes to a worker no other slot's work is on (gate.place)."""
        self.size, self.gate = size, gate
        self._context = fork_server() if size else None
        self._lock = threading.Lock()
        # id(model) -> (a weak reference to it, its token): models are dataclasses, unhashable.
        self._tokens: dict[int, tuple[weakref.ref, int]] = {}
        self._token_numbers = itertools.count()
        self.workers = [ProcessWorker(self._context, n) for n in range(size)] + list(remote or ())
        self.replaced = 0                        # for tests and the bench
        self._replacing: set = set()             # dead workers whose successor is starting
        self.closed = False

    def token(self, model: LanguageModel) -> int:
        """The model's number in the workers: one per model object (a re-import is a new one)."""
        with self._lock:
            found = self._tokens.get(id(model))
            if found is None or found[0]() is not model:
                for key in [k for k, (ref, _) in self._tokens.items() if ref() is None]:
                    del self._tokens[key]
                found = self._tokens[id(model)] = (weakref.ref(model), next(self._token_numbers))
            return found[1]

    def pick(self, local: bool = False, for_pass: float | None = None) -> Worker:
        """The least busy worker (`local`: of the processes on this machine) for a lone piece
        of work or a pass (`for_pass`: the seconds it expects)."""
        with self._lock:
            if self.closed:
                raise WorkerDied("the server is shutting down")
            eligible = [w for w in self.workers if isinstance(w, ProcessWorker) or not local]
            live = [w for w in eligible if not w.dead] or eligible    # a successor may be starting
            load = lone_load if for_pass is None else pass_load
            worker = self.gate.place(live, load) if self.gate is not None else None
            worker = worker or min(live, key=load)
            if for_pass is not None:                 # until the pass closes: release()
                worker.passes += 1
                worker.pinned_seconds += for_pass
            return worker

    def replace(self, worker: Worker) -> None:
        """Start a worker in place of a dead one (once, however many passes saw it die)."""
        with self._lock:
            if self.closed or worker not in self.workers or worker in self._replacing:
                return
            self._replacing.add(worker)
        try:
            fresh = worker.respawn()             # outside the lock: a Ray replica may take seconds to place
        finally:
            with self._lock:
                self._replacing.discard(worker)
        with self._lock:
            if self.closed or worker not in self.workers:
                stale = fresh
            else:
                stale = None
                self.workers[self.workers.index(worker)] = fresh
                self.replaced += 1
        if stale is not None:
            stale.stop()
            return
        log.warning("a compute worker stopped: %s; started %s in its place", worker.describe(), fresh.describe())
        threading.Thread(target=worker.stop, daemon=True).start()

    def call(self, worker: Worker, *message):
        with self._lock:
            worker.in_flight += 1
        try:
            return worker.call(*message)
        except WorkerDied:
            self.replace(worker)
            raise
        finally:
            with self._lock:
                worker.in_flight -= 1

    def open(self, worker: Worker, pass_id: int, kind: str, model: LanguageModel) -> None:
        token = self.token(model)
        if self.call(worker, "open", pass_id, kind, token) == "missing":
            self.call(worker, "model", token, model)
            self.call(worker, "open", pass_id, kind, token)

    def alone(self, kind: str, model: LanguageModel, payload: object) -> object:
        """One request answered alone in a worker, by the lone code path (engines.ALONE)."""
        return self.run(ALONE[kind], model, payload)

    def run(self, function: Callable, model: LanguageModel, *arguments, local: bool = False) -> object:
        """function(model, *arguments) in a worker (`local`: a process on this machine, for work
        on its files): a pure function defined at a module's top level (it travels by name,
        the model by its token), retried once on another worker if its worker dies, then a 503."""
        for attempt in range(2):
            worker = self.pick(local)
            try:
                token = self.token(model)
                reply = self.call(worker, "run", function, token, arguments)
                if reply == "missing":
                    self.call(worker, "model", token, model)
                    reply = self.call(worker, "run", function, token, arguments)
                return reply[1]
            except WorkerDied as e:
                if attempt:
                    raise died_twice(e) from None

    def release(self, worker: Worker, seconds: float) -> None:
        """A pass pinned to `worker`, which expected `seconds`, has closed."""
        with self._lock:
            worker.passes -= 1
            worker.pinned_seconds -= seconds

    def close(self) -> None:
        with self._lock:
            self.closed = True
            workers, self.workers = self.workers, []
        for worker in workers:
            worker.stop()


class RemoteEngine:
    """batching.Engine's contract, served by an engine of the same kind in a worker process.
    `fits` and `continuous` are the local kind's (bounds are the API process's business)."""

    _pass_ids = itertools.count()

    def __init__(self, pool: WorkerPool, kind: str, model: LanguageModel, settings):
        self.pool, self.kind, self.model, self.settings = pool, kind, model, settings
        self.local = KINDS[kind]
        self.continuous = self.local.continuous
        self.jobs: list = []
        self._keys = itertools.count()
        self._by_key: dict[int, object] = {}
        self._retried = False
        self.worker = None
        self.expected = 0.0                      # seconds its jobs expected when it was placed
        self.pass_id = next(self._pass_ids)

    def fits(self, job, joining) -> bool:
        # The local kind's bounds, read off this engine's jobs and settings (they call the
        # base class's explicitly, so they accept an engine that only looks like theirs).
        return self.local.fits(self, job, joining)

    def _ensure_open(self) -> None:
        if self.worker is None:
            self.expected = max((j.seconds for j in self.jobs), default=UNKNOWN_SECONDS)
            self.worker = self.pool.pick(for_pass=self.expected)
            try:
                self.pool.open(self.worker, self.pass_id, self.kind, self.model)
            except BaseException:
                self._drop_worker()
                raise

    def _drop_worker(self) -> None:
        if self.worker is not None:
            self.pool.release(self.worker, self.expected)
            self.worker = None

    def _finish(self, done: list) -> None:
        for key, result, error in done:
            job = self._by_key.pop(key)
            if job in self.jobs:
                self.jobs.remove(job)
            job.finish(result, error)

    def admit(self, job) -> None:
        key = next(self._keys)
        self._by_key[key] = job
        self.jobs.append(job)
        try:
            self._run("admit", key, job.payload)
        except WorkerDied as e:
            self._fail(e)
        except Exception:
            self._by_key.pop(key, None)
            self.jobs.remove(job)
            raise

    def step(self) -> None:
        try:
            self._run("step")
        except WorkerDied as e:
            self._fail(e)

    def _run(self, op: str, *args) -> None:
        """One call on the pass's worker; if the worker dies, the pass starts again from its
        requests on another (once), and the call's op is redone there."""
        while True:
            self._ensure_open()
            try:
                done = self.pool.call(self.worker, op, self.pass_id, *args)
                self._finish(done)
                return
            except WorkerDied:
                self._drop_worker()
                if self._retried:
                    raise
                self._retried = True
                self._readmit(skip=args[0] if op == "admit" else None)
                if op == "step":
                    return                       # the restarted pass steps on the next call

    def _readmit(self, skip) -> None:
        """Admit every request of the pass again, from the start, on a fresh pass id."""
        self.pass_id = next(self._pass_ids)
        self._ensure_open()
        for key, job in list(self._by_key.items()):
            if key != skip:
                self._finish(self.pool.call(self.worker, "admit", self.pass_id, key, job.payload))

    def _fail(self, error: WorkerDied) -> None:
        busy = died_twice(error)
        for job in list(self.jobs):
            job.finish(error=busy)
        self.jobs.clear()
        self._by_key.clear()

    def close(self) -> None:
        """The pass is over: free its engine in the worker and the worker for other passes."""
        if self.worker is not None:
            try:
                self.pool.call(self.worker, "close", self.pass_id)
            except WorkerDied:
                pass
            self._drop_worker()
