"""The maths of the guided path (/learn): the lecture's experiments, run on the project's own
cells, network and trainer.

1. "hello": a 3-unit vanilla RNN trained on the one string "hello" by model.train, unrolled
   step by step with every number the lecture figure shows.
2. The same network unrolled further: how a change of the first input moves h_t, then fades.
3. Going forwards: power iteration h <- W_r h / ||W_r h||, and the same with tanh.
4. Going backwards: dL/dh_k on a model whose W_hh is rescaled.
5. Clipping: the same small RNN trained by SGD with and without gradient clipping.
6. The highways: the product of the LSTM's forget gates (the GRU's update gates) beside the
   vanilla RNN's dh_t/dh_k.

Shapes: T time, H hidden, V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import network
from .analysis import GradientProfile, gradient_through_time
from .data import StreamBatches
from .layers import log_softmax, softmax_cross_entropy
from .lm import LanguageModel
from .network import ModelConfig, layer_params
from .optim import clip_by_global_norm
from .train import TrainConfig, TrainResult, train
from .vocab import Vocab

# ---- 1. "hello" ---------------------------------------------------------------------------

HELLO = "hello"
HELLO_HIDDEN = 3          # the lecture figure's hidden layer
# 60 Adam steps of the one 4-character sequence take ~15 ms and get every prediction right on
# 30 seeds of 30 (median p(target) 0.97, lowest 0.71): not yet saturated at 1.00, so the
# figure's numbers still say something.
HELLO_STEPS = 60
HELLO_TRAIN = {"batch_size": 1, "learning_rate": 0.05,
               "lr_decay": 1.0,          # one batch is an epoch here: per-epoch decay would starve it
               "grad_clip": 5.0, "val_fraction": 0.0, "eval_every": 10**6}


def train_hello(seed: int, steps: int = HELLO_STEPS, text: str = HELLO) -> TrainResult:
    """The lecture's network: a vanilla RNN, H = 3, trained on `text` from a zero state by the
    project's trainer, in float64, so the figure's two decimals never show float32 rounding."""
    cfg = TrainConfig(max_steps=steps, seed=seed, seq_length=len(text) - 1, **HELLO_TRAIN)
    return train(text, ModelConfig("rnn", len(set(text)), HELLO_HIDDEN, 1), cfg, corpus_name="hello",
                 dtype=np.float64)


@dataclass
class Unrolled:
    """The network read over text[:-1], predicting text[1:]: every number of the lecture figure."""

    x: np.ndarray            # (T, V) one-hot inputs
    h_prev: np.ndarray       # (T, H) h_{t-1}
    h: np.ndarray            # (T, H) h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)
    y: np.ndarray            # (T, V) scores y_t = W_hy h_t + b_y
    p: np.ndarray            # (T, V) softmax(y_t)
    targets: np.ndarray      # (T,) ids of text[1:]
    loss: np.ndarray         # (T,) -ln p_t[target]


def unroll(model: LanguageModel, text: str) -> Unrolled:
    """One forward pass of a 1-layer model over text[:-1], with the figure's intermediate values."""
    ids = model.encode(text)
    logits, _, cache = model.forward(ids[None, :-1])
    y = logits[0]                                                   # (T, V)
    logp = log_softmax(y)
    targets = ids[1:]
    hs = cache.layers[0].hs[:, 0]                                   # (T+1, H)
    x = np.eye(len(model.vocab))[ids[:-1]]                          # (T, V)
    return Unrolled(x, hs[:-1], hs[1:], y, np.exp(logp), targets, -logp[np.arange(len(targets)), targets])


def hello_weights(model: LanguageModel) -> dict[str, np.ndarray]:
    """The lecture's names for a 1-layer RNN's parameters; b_h = b_ih + b_hh, which only ever add."""
    W_ih, W_hh, b_ih, b_hh = layer_params(model.params, 0)
    return {"W_xh": W_ih, "W_hh": W_hh, "b_h": b_ih + b_hh,
            "W_hy": model.params["decoder.weight"], "b_y": model.params["decoder.bias"]}


# ---- 2. One step, many steps ----------------------------------------------------------------

def first_input_effect(model: LanguageModel, continuation: str, steps: int) -> tuple[list[str], np.ndarray,
                                                                                      np.ndarray]:
    """Read every vocabulary character first, then the same `steps - 1` characters of
    `continuation` (repeated as needed). Returns the first characters, the hidden states
    (V, steps, H) of a 1-layer model, and the distances ||h_t(c) - h_t(c')|| (V, V, steps)."""
    first = list(model.vocab.chars)
    rest = (continuation * (steps // max(1, len(continuation)) + 1))[: steps - 1]
    ids = np.stack([model.encode(c + rest) for c in first])        # (V, steps)
    _, _, cache = model.forward(ids)
    hs = cache.layers[0].hs[1:].transpose(1, 0, 2)                  # (V, steps, H)
    dist = np.linalg.norm(hs[:, None] - hs[None, :], axis=-1)       # (V, V, steps)
    return first, hs, dist


# ---- 3. Going forwards ----------------------------------------------------------------------

@dataclass
class PowerIteration:
    trajectory: np.ndarray     # (steps+1, n) h_0, h_1, ...
    eigenvalues: np.ndarray    # (n,) complex, largest |lambda| first
    eigenvectors: np.ndarray   # (n, n) complex, column i for eigenvalue i, unit length
    leading: np.ndarray | None  # (n,) the real leading eigenvector, when one dominates
    alignment: np.ndarray      # (steps+1,) |cos| of the angle between h_k and `leading` (NaN without one)


def power_iteration(W_r: np.ndarray, h0: np.ndarray, steps: int, mode: str = "normalise") -> PowerIteration:
    """h <- W_r h, then h <- h / ||h|| ("normalise": the power method, which turns h towards the
    eigenvector of the largest |eigenvalue|), or h <- tanh(W_r h) ("tanh": the RNN's own update
    without input). A zero h stays zero."""
    if mode not in ("normalise", "tanh"):
        raise ValueError(f"mode must be 'normalise' or 'tanh', got {mode!r}")
    W_r = np.asarray(W_r, np.float64)
    h = np.asarray(h0, np.float64).copy()
    out = [h.copy()]
    for _ in range(steps):
        h = W_r @ h
        if mode == "tanh":
            h = np.tanh(h)
        else:
            norm = np.linalg.norm(h)
            h = h / norm if norm > 0 else h
        out.append(h.copy())
    trajectory = np.array(out)
    values, vectors = np.linalg.eig(W_r)
    order = np.argsort(-np.abs(values), kind="stable")
    values, vectors = values[order], vectors[:, order]
    leading = None
    # One eigenvalue strictly largest in modulus and real: the power method converges to its vector.
    if abs(values[0].imag) < 1e-12 and (len(values) == 1 or abs(values[0]) > abs(values[1]) * (1 + 1e-9)):
        leading = vectors[:, 0].real / np.linalg.norm(vectors[:, 0].real)
    norms = np.linalg.norm(trajectory, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alignment = (np.abs(trajectory @ leading) / norms if leading is not None
                     else np.full(len(trajectory), np.nan))
    return PowerIteration(trajectory, values, vectors, leading, alignment)


# ---- 4. Going backwards -----------------------------------------------------------------------

def scaled_recurrence(model: LanguageModel, scale: float) -> LanguageModel:
    """The model with every layer's W_hh multiplied by `scale` (the other weights shared)."""
    params = dict(model.params)
    for l in range(model.config.num_layers):
        name = f"rnn.weight_hh_l{l}"
        params[name] = (model.params[name] * scale).astype(model.params[name].dtype)
    return LanguageModel(model.config, model.vocab, params, model.train_config, model.history)


def recurrence_spectrum(W_hh: np.ndarray, num_gates: int) -> list[tuple[float, float]]:
    """Per H x H block of W_hh (G*H, H): (spectral radius, largest singular value)."""
    H = W_hh.shape[1]
    blocks = W_hh.astype(np.float64).reshape(num_gates, H, H)
    return [(float(np.max(np.abs(np.linalg.eigvals(B)))), float(np.linalg.norm(B, 2))) for B in blocks]


def backward_through_time(model: LanguageModel, text: str, position: int, scale: float
                          ) -> tuple[GradientProfile, list[list[tuple[float, float]]]]:
    """||dL/dh_k|| through time on the model with W_hh scaled, and each layer's scaled spectrum.
    At scale 1 this is gradient_through_time itself."""
    scaled = model if scale == 1.0 else scaled_recurrence(model, scale)
    profile = gradient_through_time(scaled, text, position)
    spectra = [recurrence_spectrum(layer_params(scaled.params, l)[1], scaled.cell.num_gates)
               for l in range(model.config.num_layers)]
    return profile, spectra


# ---- 6. The highways --------------------------------------------------------------------------

def rnn_jacobian_gain(W_hh: np.ndarray, hs: np.ndarray, t: int, span: int, max_rows: int = 256) -> np.ndarray:
    """||dh_t/dh_k||_F / sqrt(H) for k = t, t-1, ..., t-span (clipped at 0) of a vanilla RNN layer,
    with dh_j/dh_{j-1} = diag(1 - h_j^2) W_hh. hs (T, H): h_j after reading character j.
    The root-mean-square gain, so a diagonal Jacobian scores the RMS of its diagonal.

    Exact up to H = max_rows (one H x H product per step). Beyond, H^3 per step is too much for
    a request: max_rows random orthonormal rows P stand in for the identity, and
    ||P J||_F^2 * H / max_rows estimates ||J||_F^2 without bias (seeded, so repeatable)."""
    H = W_hh.shape[1]
    if H <= max_rows:
        J, correction = np.eye(H), 1.0                  # dh_t/dh_t
    else:
        q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(H, max_rows)))
        J, correction = q.T, H / max_rows               # (max_rows, H) rows of P
    W = W_hh.astype(np.float64)
    gains = [1.0]
    for j in range(t, max(0, t - span), -1):           # J <- J diag(1 - h_j^2) W_hh: one more step back
        J = (J * (1.0 - hs[j].astype(np.float64) ** 2)) @ W
        gains.append(float(np.linalg.norm(J) * math.sqrt(correction / H)))
    return np.array(gains)


def gate_product(gates: np.ndarray, t: int, span: int) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal path dc_t/dc_k = diag(prod_{j=k+1..t} f_j) (the LSTM's forget gates; the GRU's
    update gates z along h likewise) for k = t, ..., t-span. gates (T, H). Returns its RMS over
    units (the same measure as rnn_jacobian_gain) and its largest unit."""
    prod = np.ones(gates.shape[1])
    rms, top = [1.0], [1.0]
    for j in range(t, max(0, t - span), -1):
        prod = prod * gates[j].astype(np.float64)
        rms.append(float(np.sqrt(np.mean(prod ** 2))))
        top.append(float(prod.max()))
    return np.array(rms), np.array(top)


def gates_of(model: LanguageModel, text: str, layer: int, gate_name: str) -> np.ndarray:
    """One recorded quantity (T, H) of one layer while reading `text` from a zero state: a gate,
    or the state h (c)."""
    _, _, cache = model.run(text)
    return model.internals(cache, layer, gate_name)


# ---- 5. Clipping ------------------------------------------------------------------------------

# Divergence as the trainer judges it: cross-entropy three times its starting ln V (char-rnn).
EXPLODED = 3.0


@dataclass
class ClipRun:
    loss: list[float]          # per SGD step, nats/char
    grad_norm: list[float]     # global norm before clipping
    clipped: list[bool]
    diverged: str | None       # why the run stopped early, if it did


def sgd_clipping_run(text: str, hidden: int, steps: int, learning_rate: float, clip: float, seed: int,
                     seq_length: int) -> ClipRun:
    """A 1-layer vanilla RNN trained on `text` by plain SGD, p <- p - lr * g, with global-norm
    clipping at `clip` (0: off), batches of one stream of `seq_length` characters, state carried.

    Not model.train: its optimizers (Adam, Adagrad) rescale every step by the gradient's own
    history, which hides what clipping does; with plain SGD, as in Pascanu, Mikolov & Bengio
    (2013), a gradient 50 times larger is a step 50 times longer. The network's forward and
    backward, the loss and the clipping are the trainer's own."""
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    cfg = ModelConfig("rnn", len(vocab), hidden, 1)
    params = network.init_params(cfg, seed, np.float64)
    batches = StreamBatches(ids, 1, seq_length)
    run = ClipRun([], [], [], None)
    state = None
    for step in range(steps):
        k = step % len(batches)
        if k == 0:
            state = None
        x, y = batches[k]
        logits, state, cache = network.forward(cfg, params, x, state)
        loss, dlogits, _ = softmax_cross_entropy(logits, y)
        if not math.isfinite(loss) or loss > EXPLODED * math.log(len(vocab)):
            run.diverged = f"loss is exploding ({loss:.3g} at step {step + 1}), aborting"
            break
        grads = network.backward(cfg, params, dlogits, cache).params
        norm, clipped = clip_by_global_norm(grads, clip)
        for name, p in params.items():
            p -= learning_rate * grads[name]
        run.loss.append(loss)
        run.grad_norm.append(norm)
        run.clipped.append(clipped)
    return run
