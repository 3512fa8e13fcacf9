"""Cells forming while a run trains (issue 23): what recording the concept strengths at
checkpoints costs a run. The issue allows 5 % of the training time.

The same run (2x128 LSTM on tests/data/tinyshakespeare-head.txt at 16 x 100, the batch the
preflight suggests for it, the same seed and steps,
BLAS on one thread as the server trains) is trained without recording and with it, in
turns (off, on, on, off, ...), so a slow spell on a shared machine hits both alike. Each
run reports its wall time and the seconds its recordings took (Reporter.concepts times
itself); the second is the cost, the first is its check. Recording is as the server does
it: the first checkpoint, then only while all recordings, the next estimated, take at most
RNNSCOPE_CONCEPT_SHARE of the attempt's time; `--share 1` records at every checkpoint.
CPU time of the training thread is reported beside wall time: on a machine others load,
it is the steadier of the two.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rnnscope.app.training.attempt import Cadence, Checkpoint, Job, gradient_passage, run_attempt, train_config
from rnnscope.app.training.schemas import RunConfig
from rnnscope.model.layers import one_blas_thread
from rnnscope.model.network import ModelConfig
from rnnscope.model.vocab import Vocab

from .common import machine_info, render_table

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "tinyshakespeare-head.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("concepts suite")
    g.add_argument("--concept-steps", type=int, default=600, help="training steps a run (default: 600)")
    g.add_argument("--concept-rounds", type=int, default=2, help="pairs of runs, off and on (default: 2)")
    g.add_argument("--concept-chars", type=int, default=3000, help="characters probed (default: 3,000)")
    g.add_argument("--share", type=float, default=0.05, help="RNNSCOPE_CONCEPT_SHARE (default: 0.05)")
    g.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (default: 200)")


def train_once(text: str, args, record: bool) -> dict:
    vocab = Vocab.from_text(text)
    cfg = RunConfig(corpus_id=1, cell="lstm", hidden_size=128, num_layers=2, batch_size=16, seq_length=100,
                    max_steps=args.concept_steps, seed=1)
    cadence = Cadence(args.checkpoint_every, 1e9, 0.5, 100, (0.8,), 200, args.share)
    job = Job(1, "bench", cfg, text, vocab, ModelConfig("lstm", len(vocab), 128, 2), train_config(cfg), "head",
              gradient_passage(text, 100), cadence, gradient_passage(text, args.concept_chars) if record else "")
    recorded: list[tuple[int, float]] = []

    def emit(message) -> None:
        if isinstance(message, Checkpoint) and message.concepts is not None:
            recorded.append((message.state.step, message.concepts["seconds"]))

    start, cpu = time.perf_counter(), time.thread_time()
    with one_blas_thread():
        run_attempt(job, None, emit, lambda: False)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.thread_time() - cpu, "recorded": recorded,
            "recording_seconds": sum(s for _, s in recorded)}


def run(args) -> dict:
    text = CORPUS.read_text(encoding="utf-8")
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for r in range(args.concept_rounds):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            runs[mode].append(train_once(text, args, mode == "on"))
    off = statistics.median(x["seconds"] for x in runs["off"])
    on = statistics.median(x["seconds"] for x in runs["on"])
    share = statistics.median(x["recording_seconds"] / (x["seconds"] - x["recording_seconds"]) for x in runs["on"])
    cpu_off = statistics.median(x["cpu_seconds"] for x in runs["off"])
    cpu_on = statistics.median(x["cpu_seconds"] for x in runs["on"])
    return {"machine": machine_info(), "steps": args.concept_steps, "chars": args.concept_chars,
            "share_setting": args.share, "runs": runs, "median_off_seconds": off, "median_on_seconds": on,
            "wall_slowdown": on / off - 1, "cpu_slowdown": cpu_on / cpu_off - 1, "recording_share": share}


def table(result: dict) -> str:
    rows = [[f"{mode} #{k + 1}", f"{x['seconds']:.1f}", f"{x['cpu_seconds']:.1f}", f"{x['recording_seconds']:.2f}",
             " ".join(f"{s}:{t:.2f}" for s, t in x["recorded"]) or "-"]
            for mode in ("off", "on") for k, x in enumerate(result["runs"][mode])]
    return (render_table(["run", "wall s", "cpu s", "recording s", "recorded (step:s)"], rows) +
            f"\n\n{result['steps']} steps, {result['chars']:,} characters probed, share setting "
            f"{result['share_setting']}: recording took {100 * result['recording_share']:.1f} % of the training "
            f"time; slowdown (medians) {100 * result['wall_slowdown']:+.1f} % wall clock, "
            f"{100 * result['cpu_slowdown']:+.1f} % CPU time of the training thread")
