"""What every benchmark suite shares: machine facts, alternating timed rounds, a text table."""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU, library versions and BLAS builds: what a number needs beside it to mean anything."""
    import numpy as np
    from threadpoolctl import threadpool_info

    info = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        # A busy machine explains a slow number; the load at the start is recorded for that.
        "load_average": list(os.getloadavg()),
        "threadpools": [{k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture",
                                               "threading_layer", "num_threads", "filepath")}
                        for p in threadpool_info()],
    }
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration")}
    except Exception:                      # show_config's layout is not a stable API
        info["numpy_blas"] = None
    try:
        import torch
    except ImportError:
        info["torch"] = None
    else:
        cfg = torch.__config__.show()
        blas_info = next((part.split("=", 1)[1] for part in cfg.replace(",", "\n").split()
                          if part.startswith("BLAS_INFO=")), None)
        info["torch"] = {"version": torch.__version__, "blas": blas_info,
                         "mkldnn": torch.backends.mkldnn.is_available(),
                         "capability": torch.backends.cpu.get_cpu_capability()}
    return info


def seconds(fn: Callable[[], object], repeat: int = 1) -> float:
    """Wall time of `repeat` calls of fn."""
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return time.perf_counter() - start


def calls_per_round(fn: Callable[[], object], round_seconds: float) -> int:
    """How many calls of fn fill a round of about round_seconds (at least one); calls fn once."""
    return max(1, round(round_seconds / seconds(fn)))


def alternate(contenders: dict[str, tuple[Callable[[], object], int, float]], rounds: int,
              settle_seconds: float = 0.0) -> dict[str, list[float]]:
    """Time short rounds of each contender in turn and return each one's rates (work/s).

    contenders: name -> (fn, calls per round, work per call). The order reverses every
    round (A B, B A, ...) so a slow spell on a shared machine hits both sides alike; the
    medians of these rates, and their ratio, are what a report should use. Each round
    starts after an untimed pause of settle_seconds.
    """
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn, calls, work = contenders[name]
            time.sleep(settle_seconds)
            rates[name].append(calls * work / seconds(fn, calls))
    return rates


def summary(rates: Sequence[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "rounds": list(rates)}


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain text: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


# --- the CPU a process tree used (a server and its workers) ------------------------------------

def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants (/proc/<pid>/stat)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])       # utime, stime: fields 14 and 15 of stat
    return total / os.sysconf("SC_CLK_TCK")
