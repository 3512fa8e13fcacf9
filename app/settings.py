"""Server settings: the data directory and every limit, each overridable as RNNSCOPE_<NAME>."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RNNSCOPE_", frozen=True)

    data_dir: Path = Path("data")       # user checkpoints live in <data_dir>/models/*.safetensors
    host: str = "127.0.0.1"             # local only; serving the network is an explicit choice
    port: int = Field(8000, ge=1, le=65535)
    load_bundled: bool = True           # tests turn the bundled models off: fast and deterministic

    # Reading costs ~0.1 ms a character per 2x256 layer, so 20,000 take a few seconds;
    # the pages send passages far shorter.
    max_text_chars: int = Field(20_000, ge=1)
    # Sampling costs ~0.15 ms a character on a 2x256 LSTM: 5,000 take about a second.
    max_sample_length: int = Field(5_000, ge=1)
    # The sampler reads its prime in one pass that keeps every step, ~28 kB a character
    # for a 2x256 LSTM; a prime is a prompt, not a corpus.
    max_prime_chars: int = Field(2_000, ge=1)
    # Top-k predictions per position in a trace; more is unreadable and multiplies the payload.
    max_top_k: int = Field(20, ge=1)
    # A trace's arrays, estimated as sent (int8 is 4/3 bytes a value in base64): 10,000
    # characters of every quantity of a 2x256 LSTM are 41 MB; the server holds them as
    # float32 first, three times that.
    max_trace_bytes: int = Field(64_000_000, ge=1_000)
    # BPTT keeps every step's activations and their gradients, ~60 kB a character for a
    # 2x256 LSTM; gradients through this many steps have long vanished (or exploded).
    max_gradient_chars: int = Field(2_000, ge=2)
    # NumPy jobs running at once. The time loop holds the GIL, so more than the core count
    # only queues inside the interpreter while multiplying memory.
    max_concurrent_jobs: int = Field(2, ge=1)
    # Processes the batched passes (traces, samples, gradients) run in (app/inference/workers.py):
    # in one process two time loops share one core through the GIL; in two, each has its own.
    # Unset: one per compute slot (max_concurrent_jobs), at most one per core, as more would
    # idle; 0 runs them in this process's threads.
    compute_workers: int | None = Field(None, ge=0, le=64)
    # Prepare the views' caches ahead of requests (app/inference/warming.py): every model's
    # after start-up, bundled first, and each new one's once its run ends or it is imported,
    # in a compute slot taken only while no request runs or waits. On: a class's first
    # state-space view otherwise read and fitted the validation text (~3 s) while the clicks
    # behind it waited. Off (tests/conftest.py) where a test needs caches cold, or to keep
    # the CPU for something else.
    warm_on_start: bool = True
    # BLAS threads per process. A step's (1, H) x (H, 4H) product is too small to split:
    # a second thread made BPTT of 1,000 characters 1.5x slower on two cores.
    blas_threads: int = Field(1, ge=1)
    # glibc malloc arenas for the whole process (0: leave glibc's default, 8 per core). Each
    # request thread otherwise keeps its own, and freed NumPy buffers stay resident in them.
    malloc_arenas: int = Field(2, ge=0)
    # Arrays of this many bytes or more get pages of their own, returned to the system when
    # freed (0: glibc's moving threshold). Off by default: a fixed 4 MB kept the 20-client peak
    # at 278 MB but made training runs in this process 20 % slower (their per-step arrays were
    # faulted in again each step); the batchers' periodic trim keeps the peak at 285 MB instead.
    malloc_mmap_threshold: int = Field(0, ge=0, le=2**25)
    # Request bodies beyond this are refused before parsing: max_text_chars of \uXXXX escapes fit.
    max_body_bytes: int = Field(1_000_000, ge=1_000)
    # Characters per server-sent event while streaming a sample: smooth on screen, few events.
    stream_chunk_chars: int = Field(16, ge=1)
    # Slow clients (app/slow_clients.py). A browser sends a request's line and headers in one
    # packet; 10 s covers a bad phone link and frees a connection that trickles them (1,000
    # such connections were held for a minute each). Applies under `rnnscope serve`.
    header_timeout_seconds: float = Field(10.0, gt=0)
    # A body may keep a route waiting this long, plus a second per body_min_bytes_per_second
    # bytes received (Apache's mod_reqtimeout defaults, body=20,MinRate=500): a 50 MB upload at
    # 1 MB/s waits 50 s of its 100,020; a client sending a byte a second is cut at 20 s.
    body_timeout_seconds: float = Field(20.0, gt=0)
    body_min_bytes_per_second: float = Field(500.0, gt=0)

    # ---- a server shared by a class (app/web/security.py, app/auth.py) ----
    # The admin's token: `Authorization: Bearer <token>` (or the ?token= URL `rnnscope serve`
    # prints) may cancel, resume and delete what anyone owns. Everyone else changes only their own.
    token: SecretStr | None = None
    # Only the admin may upload and start runs (a server one person trains on and a class reads).
    create_needs_token: bool = False
    # Host names this server answers to (comma-separated); default: the loopback names and the
    # bind address (for 0.0.0.0, also this machine's name and addresses). "*" answers any name,
    # which lets DNS rebinding in.
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    # Per owner (one browser): runs waiting to train, and bytes of uploaded corpora kept.
    max_queued_runs_per_owner: int = Field(3, ge=1)
    # Training time still to do in one owner's queued and running runs (remaining steps x the
    # seconds a step of that shape measured here): six of the preflight's 10-minute runs. A
    # count alone let one person queue three runs of 10M steps, days of the only worker.
    max_queued_seconds_per_owner: float = Field(3600.0, gt=0)
    # The same over everyone's runs: owner keys are free, so per-owner bounds alone do not bound
    # the wait. A class of 30 with two 10-minute runs each is 36,000 s; a run that would wait
    # longer than half a day is better refused (429, retry later) than queued.
    max_queued_seconds: float = Field(43_200.0, gt=0)
    max_corpus_bytes_per_owner: int = Field(200_000_000, ge=1)
    # Owner keys are free (a script that drops its cookie is a new person each time), so all
    # corpora together are bounded too: uploads beyond this are refused with 507.
    max_corpus_bytes_total: int = Field(2_000_000_000, ge=1)
    # Live event streams at once (each polls the store every events_poll_seconds); more wait
    # for a 503's Retry-After, so 150 watchers cannot slow the pages for everyone.
    max_event_streams: int = Field(64, ge=1)
    # Uploads and checkpoints are refused (507) when the data directory's disk has less free.
    min_free_bytes: int = Field(100_000_000, ge=0)
    # Model files kept: every run's checkpoints (5 x its parameters x 4 bytes: the model, and
    # the training state with Adam's moments and the best weights) and imported models. Per
    # owner, a few large models (a 2x1024 LSTM's checkpoints are 260 MB); in all, a class's
    # worth that still leaves the disk to its other users.
    max_model_bytes_per_owner: int = Field(1_000_000_000, ge=1)
    max_model_bytes_total: int = Field(20_000_000_000, ge=1)

    # ---- compute and memory (app/inference/compute_gate.py, app/inference/registry.py) ----
    # Requests waiting for a compute slot; one more is refused with 503 and Retry-After at once.
    # A hard bound on threads and parsed bodies held: the expected wait below does the refusing
    # (8 refused 15 % of a 60-student class's clicks while most were 50 ms traces). 24 waiting
    # and 2 running leave 14 of the server's 40 worker threads to pages, lists and uploads.
    max_waiting_jobs: int = Field(24, ge=0)
    # A request whose expected wait for a slot (the running jobs' remaining expected time and
    # the jobs served before it, app/inference/costs.py) is longer is refused at once with 503
    # and Retry-After that wait. Half max_wait_seconds, so an estimate off by 2x still runs.
    max_expected_wait_seconds: float = Field(5.0, gt=0)
    # A request that waited this long for a slot is refused with 503 and Retry-After: a
    # backstop for estimates that were wrong.
    max_wait_seconds: float = Field(10.0, gt=0)
    # Concurrent trace, sample and gradients requests one shared pass serves (app/inference/batching.py).
    # Past ~8 rows of a 2x256 LSTM a step stops being free: under the 20-client load 8 served
    # about as many requests a second as 16 (8.4 against 9.0-9.4) with a lower p99 and a peak
    # of 285 MB instead of 381-429. 1 switches batching off: each request alone in its slot.
    max_batch: int = Field(8, ge=1)
    # Trained models kept loaded (least recently used unloaded first; reloaded from disk on demand).
    max_loaded_models: int = Field(8, ge=1)
    # The bound bench/load.py checks peak RSS against under the worst request mix: compute slots
    # times the largest request, the probe cache, loaded models and the training worker. The
    # compute gate counts it in bytes: a training run or request whose estimated peak alone is
    # over it is refused (the 2x1024 LSTM at 32 x 1,024 characters a step needs ~6.5 GB), and
    # one that would take the running jobs' sum past it waits (app/inference/compute_gate.py).
    memory_budget: int = Field(3_000_000_000, ge=100_000_000)

    # ---- where training runs (app/training/executors.py) ----
    # thread: in this process, one machine. ray: in Ray actors on a cluster's nodes
    # (pip install 'rnnscope[cluster]'); the server stays the store's only writer.
    executor: Literal["thread", "ray"] = "thread"
    # The Ray cluster to join ("auto", or HOST:6379); unset with executor=ray starts a local instance.
    ray_address: str | None = None
    # Runs training at once; unset: 1 for thread, the cluster's CPUs / run_cpus for ray.
    max_parallel_runs: int | None = Field(None, ge=1)
    # CPUs each run asks Ray for (and BLAS threads it uses there); the thread executor uses one.
    run_cpus: int = Field(1, ge=1)
    # Compute replicas (Ray actors) that serve traces, samples and gradients beside this
    # machine's workers when the executor is ray (app/inference/ray_workers.py): unset, one per
    # node with a CPU, so a machine that joins before start-up adds capacity for the views; 0 none.
    ray_compute_replicas: int | None = Field(None, ge=0, le=256)
    # Attempts a run may lose to a dead worker process or node, each resumed from the last
    # checkpoint; then it is interrupted with the reason.
    max_run_retries: int = Field(3, ge=0)

    # ---- training from the browser (app/training/) ----
    # tinyshakespeare is 1.1 MB; 50 MB trains for days on a CPU, so more is a mistake, not a corpus.
    max_upload_bytes: int = Field(50_000_000, ge=1)
    # The output layer has one row per character; past a few hundred the text is not one language.
    max_vocab: int = Field(1000, ge=2)
    # Below this the validation 10% is a sentence or two and its loss means nothing.
    min_corpus_chars: int = Field(200, ge=3)
    # 2048 units of LSTM is 33M weights per layer: hours a step on two cores.
    max_hidden_size: int = Field(1024, ge=1)
    # Weights, Adam's two moments and the best copy: 20M parameters is ~320 MB of float32.
    max_parameters: int = Field(20_000_000, ge=1)
    # Characters per step (batch_size x seq_length) bound the activations BPTT keeps: ten
    # times char-rnn's 32 x 100.
    max_step_chars: int = Field(32_768, ge=1)
    max_queued_runs: int = Field(20, ge=1)
    # A checkpoint of a 2x256 LSTM with its Adam moments is ~14 MB; every 200 steps (a minute
    # or so) bounds what a crash loses without writing all the time.
    checkpoint_every_steps: int = Field(200, ge=1)
    checkpoint_every_seconds: float = Field(120.0, gt=0)    # for big models, whose 200 steps take long
    sample_every_steps: int = Field(100, ge=0)             # 0: no samples
    sample_temperatures: tuple[float, ...] = (0.5, 0.8, 1.0)
    sample_length: int = Field(200, ge=1, le=5000)
    # Metrics are committed in batches: a commit per step of a tiny model would cost more than the step.
    flush_seconds: float = Field(0.5, gt=0)
    gradient_passage_chars: int = Field(100, ge=2, le=2000)
    # Concepts forming while a run trains (issue 23): at a checkpoint, the best unit for each
    # concept over this many characters of the run's validation text. 3,000 (about 80 lines)
    # holds quotes, brackets and comments of prose or code, and costs 0.43 s of one core for
    # a 2x128 LSTM (0.15 ms a character): 3 % of 200 steps at the preflight's 16 x 100 for a
    # small corpus, where 5,000 took 5.4 % (bench concepts).
    concept_text_chars: int = Field(3_000, ge=0, le=20_000)      # 0: no recording
    # The training time recording may take, at most (the bound): a checkpoint goes
    # unrecorded when the run's recordings, the next estimated as long as the last, would take
    # more than this share of its time (the first is always recorded). 1: every checkpoint.
    concept_share: float = Field(0.05, ge=0, le=1)
    # Weight snapshots kept per run for the explorer's checkpoint slider: 8 show how a cell
    # forms (a few early, some late) for 8 model files, thinned evenly as the run goes on.
    run_snapshots: int = Field(8, ge=0, le=64)
    # The preflight's default max_steps aims at this much training time.
    target_run_seconds: float = Field(600.0, gt=0)
    # How often an event stream looks for new steps; each look is one indexed query.
    events_poll_seconds: float = Field(0.25, gt=0)
    # An event stream ends after this long and the browser reconnects with Last-Event-ID, so a
    # server shutdown never waits on a watcher for longer.
    events_max_seconds: float = Field(30.0, gt=0)
    # A model imported from PyTorch (POST /api/models/import), as uploaded: RNNSCOPE_MAX_PARAMETERS
    # (20M) of float32 is 80 MB, so more than 100 MB is float64 or not a model rnnscope would serve.
    max_import_bytes: int = Field(100_000_000, ge=1)
    # Per owner: bytes of imported models kept (their converted checkpoints), a few large models.
    max_import_bytes_per_owner: int = Field(400_000_000, ge=1)

    # ---- neurons: probes, contexts, interventions, saliency, memory (app/probes/router.py) ----
    # A probe holds every unit's value over the text: 3,072 units of a 2x256 LSTM times
    # 10,000 characters is 123 MB of float32, and ranks in under a second.
    max_probe_chars: int = Field(10_000, ge=2)
    # Texts whose activations are kept for the next probe (up to 123 MB each, see above): the
    # page probes one text for concept after concept, and reading it is 80 % of a probe.
    probe_cache_texts: int = Field(2, ge=0)
    # Neurons a probe returns with their values over the text; the page shows a dozen.
    max_probe_top: int = Field(100, ge=1)
    # Patterns run on RE2 (model/patterns.py), linear in the text whatever the pattern; this
    # bounds the pattern's own size: RE2 compiles it into an automaton with a memory budget.
    max_regex_chars: int = Field(200, ge=1)
    # Top contexts read this much validation text (~2 s for a 2x256 LSTM) per request.
    max_context_chars: int = Field(20_000, ge=100)
    max_contexts: int = Field(20, ge=1)          # snippets per side; more is a scroll, not an answer
    # Units clamped at once: enough for a concept's top neurons, few enough to read the result.
    max_clamped_units: int = Field(256, ge=1)
    # The memory horizon is one batched BPTT over positions x window characters, ~60 kB a
    # character for a 2x256 LSTM: 4,000 is ~240 MB.
    max_horizon_chars: int = Field(4_000, ge=2)
    # More texts a model's corpus is looked for in, by the sha256 its checkpoint records (plain
    # or .gz; relative to the working directory), besides the corpora the bundled models ship
    # with (model/weights/*.txt.gz) and the uploads in <data_dir>/corpora. None by default: the
    # bundled models carry their own, so a clone or a wheel needs nothing beside it.
    corpus_paths: tuple[Path, ...] = ()
    # Corpus texts kept decoded (by sha256) for the views that read them: a person alternating
    # /match between two models would otherwise re-read and re-decode each on every request.
    # Bundled ones are 1.1 and 3.0 MB; an upload is at most max_upload_bytes.
    corpus_cache_texts: int = Field(2, ge=0)
    # n-gram losses kept in memory for /errors (each orders x text characters float32: the
    # default 20 orders of 20,000 characters are 1.6 MB); all are kept on disk too.
    max_ngram_results: int = Field(8, ge=0)
    # Characters an error analysis reads: the n-gram pass costs the same whatever the text (it
    # counts the training text), the model's reading and the oracles grow with it.
    max_errors_chars: int = Field(20_000, ge=100)
    # Suffix-array indexes kept in memory, ~9 bytes a corpus character each (tinyshakespeare: 10 MB).
    max_corpus_indexes: int = Field(2, ge=1)
    # Generated text checked against the corpus at once (~30 us a character).
    max_memorisation_chars: int = Field(20_000, ge=1)
    # One RE2 search is linear in the text, but finding every match of a pattern like a(.*z)?
    # rereads the rest of the text after each one: quadratic, 10 s for 10,000 characters.
    # Ordinary patterns take under 0.1 s, even `.` with a match per character. The budget
    # covers compiling too (a pattern of repeats like .{0,999} x 24 compiles for a second or
    # more) and is enforced by killing the worker process (app/inference/pattern_pool.py).
    max_regex_seconds: float = Field(2.0, gt=0)
    # Processes user patterns are compiled and matched in, off the server's interpreter: RE2
    # holds the GIL while compiling. ~15 MB each; more than the cores would only share them.
    regex_workers: int = Field(2, ge=1)
    # ---- select and match (app/matching/router.py) ----
    # Validation characters a match reads: 100,000 read once in ~15 s on a 2x256 LSTM, then
    # answer from the kept reading in milliseconds.
    max_match_chars: int = Field(100_000, ge=100)
    # Models whose validation reading is kept for matching: every unit of every quantity as
    # float16, 3,072 units x 100,000 characters = 614 MB for a 2x256 LSTM.
    match_cache_models: int = Field(1, ge=0)
    # Units matched together, and matches returned: a set a person ticks, a list a person reads.
    max_match_units: int = Field(32, ge=1)
    max_match_top: int = Field(100, ge=1)
    # Spans selected at once: a few examples of one thing, not an annotation of the text.
    max_select_spans: int = Field(50, ge=1)
    # ---- state space and fixed points (app/states/router.py) ----
    # Validation characters the PCA is fitted on and fixed-point searches start from: enough
    # for every kind of line and word; 20,000 read and fitted in ~2 s on a 2x256 LSTM.
    max_state_fit_chars: int = Field(20_000, ge=100)
    # Layers whose validation reading (h, c and input, float32) is kept: 60 MB each at 20,000 x 256.
    state_cache_readings: int = Field(2, ge=0)
    # Characters of a trajectory sent back: a path a person scrubs through, not a corpus.
    max_state_chars: int = Field(5_000, ge=2)
    # Starting states of one search, and Adam steps on each: 64 starts x 500 steps take
    # ~1.5 s on a 256-unit RNN layer, ~3 s on an LSTM's 512-dim (h, c) state.
    max_fixed_point_starts: int = Field(128, ge=1)
    fixed_point_iterations: int = Field(500, ge=1)
    # Distinct candidates polished by Levenberg-Marquardt: each step solves an (S, S) system,
    # ~40 ms for an LSTM's S = 512, so this bounds the slow part.
    fixed_point_polished: int = Field(8, ge=1)
    # q = 1/2 ||F(s) - s||^2 below which a state counts as fixed: a step of 1.4e-4 at most.
    fixed_point_tolerance: float = Field(1e-8, gt=0)
    # ---- neurons in groups (app/groups/router.py) ----
    # Validation characters a factorisation reads: one layer's quantity, (T, H) float32, is
    # 20 MB for 20,000 characters of 256 units; NMF then takes a few seconds on one core.
    max_groups_chars: int = Field(20_000, ge=100)
    # Components a person may ask for: past a few dozen each is a unit or two, not a group.
    max_groups_components: int = Field(32, ge=1)
    # Factorisations kept, per (model, layer, quantity, K): each its components (K x H) and
    # tracks over the text fitted (T x K), under a megabyte at the defaults.
    groups_cache_size: int = Field(16, ge=0)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def comma_separated(cls, value):
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, read once."""
    return Settings()
