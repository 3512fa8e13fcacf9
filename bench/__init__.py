"""rnnscope's benchmarks (`make bench`, `python -m bench`): measurements, never timed tests.

Each suite is a module with `add_arguments(parser)`, `run(args) -> dict` and
`table(result) -> str`; `python -m bench` runs the suites named on its command line
(all by default), prints each one's table and writes its result to bench/results/<suite>.json.
"""

# Suite name -> module under bench/. A new benchmark is one more entry.
SUITES = {
    "model": "bench.model",
    "http": "bench.http",
    "probe": "bench.probe",
    "shared": "bench.shared",
    "cli": "bench.cli",             # issue 10's independent check: `rnnscope train` against a torch loop
    "cluster": "bench.cluster",     # issue 14: the Ray executor against the thread executor, recovery
    "pages": "bench.pages",         # issue 19: time to the first chart in chromium, cold and warm
    "soak": "bench.soak",           # issue 18: a class's mix and attacks for --minutes; open files, RSS, 500s
    "class": "bench.classroom",     # issue 21: students with think time, open loop; p50/p95/p99, refusals
    "concepts": "bench.concepts",   # issue 23: training slowed by recording concept strengths at checkpoints
    "cells": "bench.cells",         # issue 23: the python model's showcase cells on code it never saw
}
