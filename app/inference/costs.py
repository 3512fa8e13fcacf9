"""What a compute job is expected to cost, in seconds of one core, from its shape: the one
cost model the routes give the compute gate (compute_gate.py), which serves the shortest
expected job first and refuses a newcomer by the wait it can expect.

A character's step through one layer is one (1, H) x (H, G*H) product (G gates: 1 for an
RNN, 3 for a GRU, 4 for an LSTM) and a few elementwise calls, so a read of T characters costs

    T x layers x (STEP_SECONDS + SECONDS_PER_MAC x G x H^2)

and a route does `ROUTE_FACTOR[route]` such reads per character it is asked for (a gradient
is a forward and a backward pass; a probe reads every unit and ranks them), plus
REQUEST_SECONDS for what every request pays (parsing, checking, building the answer).
The estimate only has to order jobs and say roughly how long a queue is: a 50 ms trace
against a 5 s state-space fit, not 50 against 60 ms.

How the constants were measured (2026-12-06, this machine: AMD EPYC, 2 cores shared with
other sessions' work, load average 3 to 10, 1 BLAS thread): a model's read (model.read,
3,000 characters) timed for rnn 1x128, lstm 1x128, gru/rnn/lstm 2x256 and lstm 1x512/2x512;
every route timed through the app (TestClient, one request at a time, best of two) on the
bundled 2x256 LSTM and RNN at 100 to 10,000 characters, cold and warm where a route keeps
what it read. The compute gate scales every estimate by what jobs really take, so these
set the ratios between jobs more than the seconds.
- SECONDS_PER_MAC, STEP_SECONDS: the reads fitted to the formula; the load inflated every
  time alike, so the fit's ratios were kept and its scale set to `python -m bench model`'s
  quiet 2x256 LSTM on this CPU, 19.9k characters a second (issue 21): 50 us a character,
  2 layers x (1 us + 0.09 ns x 4 x 256^2).
- ROUTE_FACTOR: each route's time per character over the trace route's at the same
  length (the ratios held within ~25 % between the LSTM and the RNN and across lengths),
  times the trace route's own factor over a bare read, 2.5 (a quiet 400-character trace of
  the 2x256 LSTM answers in ~50 ms: 125 us a character, top-k and every internal encoded).
- The rest (per request, per n-gram counted, per lecture) divided by 3.4, the loaded trace
  route over the quiet one.
"""
from __future__ import annotations

from rnnscope.model.cells import get_cell

# Per layer per character: NumPy's dispatch of the step's few calls, which dominates below H ~ 64.
STEP_SECONDS = 1.0e-6
# Per multiply-add of the recurrent product, 1 BLAS thread (~11 GMAC/s: a (1, H) x (H, 4H)
# product is bound by reading W_hh from cache, not by arithmetic).
SECONDS_PER_MAC = 0.09e-9
# Every request: the body parsed and checked, the answer built (a 100-character trace of the
# 2x256 LSTM took 23 ms loaded beyond its characters, the RNN's 6 ms).
REQUEST_SECONDS = 0.005
# A job that does not say what it costs: more than most clicks, so it is not put ahead of
# ones known to be small, and little enough not to be refused on a short queue.
UNKNOWN_SECONDS = 1.0
# Extra per character sampled: a batch-1 sampling step's softmax and draw, beyond the read
# (the 2x256 RNN sampled at 3x its trace's time a character, the LSTM at 1.2x).
SAMPLE_STEP_SECONDS = 40e-6
# Counting a training text's n-grams for the error analysis, once per corpus and order
# (1.1M characters of tinyshakespeare took 17 s loaded), per character counted.
NGRAM_SECONDS_PER_CHAR = 4.7e-6
# Building a corpus's suffix index for /memorised, once per corpus (its docstring: ~1 s a MB;
# the corpora a class reads are about a megabyte).
SUFFIX_INDEX_SECONDS = 1.0
# The lecture's small fixed jobs (app/learn/router.py), measured loaded / 3.4: training the
# 3-unit "hello" RNN, unrolling it, iterating a 2x2 map, one SGD step of the clipping demo.
LECTURE_SECONDS = {"hello": 0.04, "unroll": 0.02, "power": 0.005, "clipping_step": 0.0005}

# Bare reads of the text (char_seconds) per character asked for, by route; what the
# characters are is said where each route calls expected_seconds. Measured ratio to the
# trace route x 2.5.
ROUTE_FACTOR = {
    "trace": 2.5,              # the reading, top-k predictions, every internal encoded
    "gates": 2.2,              # the reading, saturation counted
    "gradients": 4.75,         # a forward and a BPTT pass to the position
    "saliency": 5.75,          # the same, and the gradient to each input
    "sample": 2.5,             # per character written, plus SAMPLE_STEP_SECONDS
    "intervene": 3.25,         # per character of text: two reads as losses (samples: "sample")
    "contexts": 2.1,           # one reading of the passage, one unit kept
    "horizon": 2.1,            # per window x positions: one batched BPTT pass
    # Every unit read, then ranked against the concept: between the loaded ratio here (5.5) and
    # ActivationCache's quiet 1.6 s for 10,000 characters of the 2x256 LSTM (3.2).
    "probe": 4.5,
    "ranking": 0.8,            # a probe or selection whose text's activations are kept: ranking only
    "match_read": 2.2,         # every unit over the validation text (once: then kept)
    "match": 0.1,              # matching units in a kept reading
    "states_fit": 2.5,         # one layer over the fitted text and its PCA (once: then kept)
    "states": 1.5,             # one layer over the text sent, projected
    "groups_fit": 16.0,        # one layer over the fitted text, factorised by NMF (once: then kept)
    "errors": 2.5,             # the model's losses and the n-grams' over the text
}


def char_seconds(cfg) -> float:
    """One character read through every layer of a model of config `cfg`."""
    G = get_cell(cfg.cell).num_gates
    return cfg.num_layers * (STEP_SECONDS + SECONDS_PER_MAC * G * cfg.hidden_size ** 2)


def expected_seconds(cfg, extra: float = 0.0, **chars: int) -> float:
    """Seconds a job is expected to hold a compute slot: a request on a model of config
    `cfg` doing, for each route named, that route's work over so many characters, and
    `extra` seconds besides. `expected_seconds(cfg, states_fit=20_000, states=400)`."""
    seconds = REQUEST_SECONDS + extra
    for route, n in chars.items():
        per_char = ROUTE_FACTOR[route] * char_seconds(cfg)
        seconds += n * (per_char + SAMPLE_STEP_SECONDS if route == "sample" else per_char)
    return seconds
