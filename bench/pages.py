"""Time to the first chart (issue 19): /explore and /compare opened in headless chromium
against `rnnscope serve` on loopback, from navigation start to the first Plotly chart drawn.

Each round opens each page in a fresh browser profile (an empty HTTP cache: "cold"), then
again in new tabs of the same profile: the second visit reads the Plotly bundle and the rest from
the HTTP cache, the third also from V8's code cache, which chromium writes on a script's
second run. One more profile opens /explore and then /compare: the files the two share are
reused across pages. Before the rounds, one unmeasured visit of each page in a throwaway
profile brings the server to its steady state (the vendored files compressed, the models'
code paths run once), so the rounds time the browser's side.

"First chart drawn": the moment the page's first Plotly.newPlot or Plotly.react call has
resolved (a script run before the page's own wraps both as Plotly is defined), read from the
page's clock, whose origin is the navigation's start. Also recorded: when Plotly was defined
(the Plotly bundle downloaded and run), the bundle's transfer size, and the CPU time the
page's renderer processes used until the first chart: on a machine others share, the times
grow with their load, this much less.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from .common import machine_info, render_table
from .http import code_version, server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TARGET_COLD_S = {"/explore": 1.0, "/compare": 1.5}
VISITS = ("cold", "2nd visit", "3rd visit")
VISIT_TIMEOUT_MS = 60_000

# Runs before any script of the page: records when Plotly is defined, and when its first
# newPlot or react (a fresh div's first react is a newPlot) has drawn.
TIMING_SCRIPT = """
(() => {
  const t = window.__firstChart = {};
  const wrap = (plotly, name) => {
    const original = plotly[name];
    if (typeof original !== "function") return;
    plotly[name] = function (...args) {
      return Promise.resolve(original.apply(this, args)).then((gd) => {
        if (t.drawn === undefined) t.drawn = performance.now();
        return gd;
      });
    };
  };
  let plotly;
  Object.defineProperty(window, "Plotly", {
    configurable: true,
    get() { return plotly; },
    set(value) {
      plotly = value;
      if (t.plotly === undefined) t.plotly = performance.now();
      if (value) { wrap(value, "newPlot"); wrap(value, "react"); }
    },
  });
})();
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pages (time to the first chart in chromium)")
    group.add_argument("--pages-rounds", type=int, default=None, help="fresh profiles per page (default 5, --quick 1)")


def renderer_cpu(profile: Path) -> dict[int, float]:
    """CPU seconds (user + system) of each renderer process of the browser using `profile`."""
    tick = os.sysconf("SC_CLK_TCK")
    marker = f"--user-data-dir={profile}".encode()
    found = {}
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                args = f.read().replace(b"\0", b" ").split()     # a child rewrites its argv as one string
            if b"--type=renderer" in args and marker in args:
                with open(cmdline.replace("cmdline", "stat")) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                found[int(cmdline.split("/")[2])] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue                         # a process that ended meanwhile
    return found


def visit(context, url: str) -> dict:
    """Open url in a new tab of `context`; the page's timings in seconds."""
    page = context.new_page()
    before = renderer_cpu(context.profile)
    try:
        page.goto(url, wait_until="commit", timeout=VISIT_TIMEOUT_MS)
        page.wait_for_function("window.__firstChart && window.__firstChart.drawn !== undefined",
                               timeout=VISIT_TIMEOUT_MS, polling=50)
        marks = page.evaluate("window.__firstChart")
        after = renderer_cpu(context.profile)
        plotly = page.evaluate("""performance.getEntriesByType("resource")
            .filter((e) => e.name.includes("/static/vendor/plotly"))
            .map((e) => ({transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize,
                          ms: e.responseEnd - e.startTime}))""")
    finally:
        page.close()
    return {"first_chart_s": marks["drawn"] / 1000, "plotly_defined_s": marks.get("plotly", 0) / 1000,
            "renderer_cpu_s": sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()),
            "plotly_js": plotly[0] if plotly else None}


def fresh_profile(playwright, profile: Path):
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1280, "height": 900})
    context.add_init_script(TIMING_SCRIPT)
    context.profile = profile                # for renderer_cpu
    return context


def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    rounds = args.pages_rounds or (1 if args.quick else 5)
    result = {"suite": "pages", "quick": args.quick, "machine": machine_info(), "code": code_version(),
              "rounds": rounds, "targets_cold_s": TARGET_COLD_S}
    with tempfile.TemporaryDirectory(prefix="rnnscope-bench-pages-") as tmp, server(Path(tmp)) as srv, \
            sync_playwright() as pw:
        result["server_start_s"] = srv.start_seconds

        def with_profile(fn):
            profile = Path(tempfile.mkdtemp(prefix="profile-", dir=tmp))
            context = fresh_profile(pw, profile)
            try:
                return fn(context)
            finally:
                context.close()
                shutil.rmtree(profile, ignore_errors=True)

        result["chromium"] = with_profile(lambda c: c.browser.version if c.browser else None) or "?"
        for path in TARGET_COLD_S:                          # the server's steady state, unmeasured
            with_profile(lambda c: visit(c, srv.url + path))
        visits = {path: {name: [] for name in VISITS} for path in TARGET_COLD_S}
        across: list[dict] = []
        for _ in range(rounds):
            for path in TARGET_COLD_S:
                for name, timing in zip(VISITS, with_profile(lambda c: [visit(c, srv.url + path) for _ in VISITS])):
                    visits[path][name].append(timing)
            across.append(with_profile(lambda c: [visit(c, srv.url + p) for p in TARGET_COLD_S])[1])
        result["visits"] = visits
        result["compare_after_explore"] = across
    result["load_average_end"] = list(os.getloadavg())
    return result


def median(timings: list[dict], key: str) -> float:
    return statistics.median(t[key] for t in timings)


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"Time to the first chart in chromium{' (--quick: indicative only)' if result['quick'] else ''}",
             f"{m['cpu']}, {m['logical_cpus']} CPUs, load {m['load_average'][0]:.2f} at the start, "
             f"{result['load_average_end'][0]:.2f} at the end; chromium {result.get('chromium', '?')} headless; "
             f"`rnnscope serve` on 127.0.0.1; {result['rounds']} fresh profile(s) per row, medians",
             f"code: commit {result['code']['commit']}" + (
                 f" + uncommitted changes to {', '.join(result['code']['modified'])}"
                 if result["code"]["modified"] else "")]
    if m["load_average"][0] > 1.0:
        lines.append(f"WARNING: load average {m['load_average'][0]:.2f} on {m['logical_cpus']} CPUs: other "
                     "processes share them, and every time below includes waiting for them")
    rows = []
    for path, by_visit in result["visits"].items():
        for name, timings in by_visit.items():
            plotly = timings[0]["plotly_js"] or {}
            target = result["targets_cold_s"][path] if name == "cold" else None
            first = median(timings, "first_chart_s")
            rows.append([f"{path}, {name}", f"{first:.2f}", f"{median(timings, 'plotly_defined_s'):.2f}",
                         f"{median(timings, 'renderer_cpu_s'):.2f}",
                         " ".join(f"{t['first_chart_s']:.2f}" for t in timings),
                         f"{plotly.get('transfer', 0) / 1e6:.2f}",
                         None if target is None else f"<= {target:.1f}",
                         None if target is None else ("yes" if first <= target else "NO")])
    across = result["compare_after_explore"]
    rows.append(["/compare after /explore", f"{median(across, 'first_chart_s'):.2f}",
                 f"{median(across, 'plotly_defined_s'):.2f}", f"{median(across, 'renderer_cpu_s'):.2f}",
                 " ".join(f"{t['first_chart_s']:.2f}" for t in across),
                 f"{(across[0]['plotly_js'] or {}).get('transfer', 0) / 1e6:.2f}", None, None])
    note = ("\nfirst chart: navigation start to the first Plotly chart drawn; Plotly: to the Plotly bundle run; "
            "CPU: the page's renderer processes until the first chart; MB: the Plotly bundle over the wire "
            "(0 when read from the cache)")
    return "\n".join(lines) + "\n\n" + render_table(
        ["page, visit", "first chart s", "Plotly s", "CPU s", "rounds", "plotly MB", "target", "met"], rows) + note
