"""python -m bench [SUITE ...] [--quick] [suite options]: run benchmarks, print tables, write JSON."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from . import SUITES

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"suites to run: {', '.join(SUITES)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="few, short rounds: checks the benchmark works, numbers are indicative only")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory for <suite>.json")
    modules = {name: importlib.import_module(path) for name, path in SUITES.items()}
    for module in modules.values():
        module.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")

    args.results.mkdir(parents=True, exist_ok=True)
    for name in args.suites or SUITES:
        result = modules[name].run(args)
        print(modules[name].table(result), flush=True)
        path = args.results / f"{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
