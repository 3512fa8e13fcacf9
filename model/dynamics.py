"""State space and fixed points of one recurrent layer (Sussillo & Barak, "Opening the black box", 2013).

Two tools:

- PCA of a layer's h (or c) over a text: fitted once (T, H) -> the top K directions with their
  explained variance, so that any text's trajectory can be drawn in the same 2-D or 3-D frame.
- Fixed points of the layer's update with one input held constant: F(s) = the state after one
  step from state s. For the RNN and GRU s = h (H); for the LSTM s = (h, c) (2H), the full
  state, since the cell carries c between steps and a point fixed in h alone need not stay
  put. Minimise q(s) = 1/2 ||F(s) - s||^2 from states sampled along real trajectories: Adam on
  the batch with the gradient J^T r - r (a vector-Jacobian product, no Jacobian formed), then
  Levenberg-Marquardt with the full Jacobian J on the distinct survivors, which converges
  quadratically onto an exact fixed point. Each kept point (q below a tolerance) is classified
  by the eigenvalues of J there: stable (all |lambda| < 1), unstable (all > 1), saddle (mixed).

Layer l > 0 reads the layer below, not a character: "character x held constant" there means
the mean input layer l receives at the steps where x is read (see `layer_input`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cells import gate, sigmoid
from .lm import LanguageModel
from .network import layer_params


# ---- PCA -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PCA:
    mean: np.ndarray            # (H,)
    components: np.ndarray      # (K, H) orthonormal rows, largest variance first
    variance: np.ndarray        # (K,) variance along each component
    total_variance: float       # trace of the covariance: explained = variance / total

    @property
    def explained(self) -> np.ndarray:
        return self.variance / self.total_variance if self.total_variance > 0 else np.zeros_like(self.variance)

    def project(self, X: np.ndarray) -> np.ndarray:
        """X (T, H) -> (T, K)."""
        return (np.asarray(X, np.float64) - self.mean) @ self.components.T


def fit_pca(X: np.ndarray, k: int = 3) -> PCA:
    """Principal components of the rows of X (T, H): the eigenvectors of the covariance (H, H),
    in float64. Cheaper than the SVD of the data when T >> H (20,000 x 256: 0.2 s against 2.5 s)."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError("PCA needs at least two states")
    mean = X.mean(axis=0)
    Xc = X - mean
    variance, V = np.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
    variance, V = np.clip(variance[::-1], 0.0, None), V[:, ::-1]
    k = min(k, len(variance))
    # A component's sign is arbitrary: point each so its largest coordinate is positive, so
    # two fits of the same data draw the same picture.
    comps = V[:, :k].T
    comps = comps * np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])[:, None]
    return PCA(mean, comps, variance[:k], float(variance.sum()))


# ---- reading the states of one layer --------------------------------------------------------

@dataclass
class LayerReading:
    """One layer's values over a text: after reading character t, its h, its c (LSTM only) and
    the input it read (the layer below's h; layers above the first only), side by side in one
    array, so a reading kept in a file is one file and a state (h, c) is one row of it."""

    ids: np.ndarray             # (T,)
    values: np.ndarray | None   # (T, K): h (H), then c (H), then x (H), those the layer has
    hidden: int
    has_c: bool
    has_x: bool

    @property
    def h(self) -> np.ndarray:
        return self.values[:, :self.hidden]

    @property
    def c(self) -> np.ndarray | None:
        return self.values[:, self.hidden:2 * self.hidden] if self.has_c else None

    @property
    def x(self) -> np.ndarray | None:
        return self.values[:, -self.hidden:] if self.has_x else None

    def state(self) -> np.ndarray:
        """(T, S): the full state F acts on, (h, c) for the LSTM; a view, so gathering a few
        rows of a reading in a file reads only those rows."""
        return self.values[:, :self.hidden * (2 if self.has_c else 1)]

    def quantity(self, q: str) -> np.ndarray:
        if q == "h":
            return self.h
        if q == "c" and self.has_c:
            return self.c
        raise ValueError(f"quantity {q!r} is not a state of this layer; choose h" + (" or c" if self.has_c else ""))


def reading_width(model: LanguageModel, layer: int) -> int:
    """Values a character of a LayerReading of `layer`: h, c (LSTM), x (above the first layer)."""
    return model.config.hidden_size * (1 + model.cell.has_cell_state + (layer > 0))


def read_layer(model: LanguageModel, ids: np.ndarray, layer: int, chunk: int = 1024) -> LayerReading:
    """Read ids (T,) from a zero state and keep layer `layer`'s states and input."""
    return read_layer_piece(model, ids, None, layer, chunk)[0]


def read_layer_piece(model: LanguageModel, ids: np.ndarray, state, layer: int,
                     chunk: int = 1024) -> tuple[LayerReading, object]:
    """read_layer of the characters ids (T,) read on from `state` (None: the zero state), and
    the state after them: pieces whose lengths are multiples of `chunk`, joined one after another,
    are read_layer's reading of the whole text bit for bit, as the model reads the same chunks."""
    if not 0 <= layer < model.config.num_layers:
        raise ValueError(f"layer {layer} does not exist; the model has {model.config.num_layers}")
    has_c = model.cell.has_cell_state
    values = np.empty((len(ids), reading_width(model, layer)), model.dtype)
    for s in range(0, len(ids), chunk):
        _, state, cache = model.forward(ids[None, s:s + chunk], state)
        kept = [model.internals(cache, layer, "h")] + ([model.internals(cache, layer, "c")] if has_c else []) \
            + ([model.internals(cache, layer - 1, "h")] if layer > 0 else [])
        np.concatenate(kept, axis=1, out=values[s:s + chunk])
    return LayerReading(np.asarray(ids), values, model.config.hidden_size, has_c, layer > 0), state


def layer_pca(reading: LayerReading, quantity: str, k: int) -> PCA:
    """fit_pca of one quantity of a reading (h or c)."""
    return fit_pca(reading.quantity(quantity), k)


def layer_input(model: LanguageModel, layer: int, char_id: int, reading: LayerReading | None = None) -> np.ndarray:
    """The input vector (D,) layer `layer` reads when character `char_id` is held constant: its
    one-hot for layer 0; above, the mean of the layer below's h over the steps of `reading` that
    read that character (held_input; ValueError when it never does)."""
    if layer == 0:
        x = np.zeros(model.config.vocab_size)
        x[char_id] = 1.0
        return x
    if reading is None or reading.x is None:
        raise ValueError("a layer above the first needs a reading to take its input from")
    return held_input(reading, char_id)


def held_input(reading: LayerReading, char_id: int) -> np.ndarray:
    """The mean input (H,) of a layer above the first over the steps of `reading` that read `char_id`."""
    at = reading.ids == char_id
    if not at.any():
        raise ValueError("the character is never read in the text the states come from, so the layer "
                         "has no input to hold constant for it")
    return reading.x[at].astype(np.float64).mean(axis=0)


# ---- the one-step map F and its vector-Jacobian product, per cell ------------------------------

class StepMap:
    """F(s) for a batch of states s (N, S) with the input fixed; vjp(v) = v^T dF/ds at the states
    of the last call. Float64 throughout: fixed points are sought to q ~ 1e-12."""

    size: int

    def __init__(self, W_ih, W_hh, b_ih, b_hh, x):
        self.W_hh = np.asarray(W_hh, np.float64)                  # (G*H, H)
        self.b_hh = np.asarray(b_hh, np.float64)
        self.xa = np.asarray(W_ih, np.float64) @ x + b_ih         # (G*H,)
        self.H = self.W_hh.shape[1]

    def __call__(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def vjp(self, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def jacobian(self, s: np.ndarray) -> np.ndarray:
        """dF/ds (S, S) at one state s (S,): the vjp of every unit vector at once (row i is e_i^T J)."""
        S = len(s)
        self(np.broadcast_to(s, (S, S)))
        return self.vjp(np.eye(S))                                     # row i: e_i^T J


class RNNMap(StepMap):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh);  dh'/dh = diag(1 - h'^2) W_hh."""

    def __call__(self, s):
        self.out = np.tanh(self.xa + s @ self.W_hh.T + self.b_hh)
        return self.out

    def vjp(self, v):
        return (v * (1.0 - self.out ** 2)) @ self.W_hh


class GRUMap(StepMap):
    """r, z = sigmoid(xa + ha);  n = tanh(xa_n + r ha_n);  h' = (1 - z) n + z h, ha = W_hh h + b_hh."""

    def __call__(self, s):
        H = self.H
        ha = s @ self.W_hh.T + self.b_hh                                # (N, 3H)
        with np.errstate(over="ignore"):
            rz = sigmoid(gate(self.xa, 0, 2 * H) + ha[:, :2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = np.tanh(gate(self.xa, 2, H) + r * gate(ha, 2, H))
        self.h, self.r, self.z, self.n, self.ha_n = s, r, z, n, gate(ha, 2, H)
        return n + z * (s - n)

    def vjp(self, v):
        r, z, n = self.r, self.z, self.n
        da_z = v * (self.h - n) * z * (1.0 - z)
        da_n = v * (1.0 - z) * (1.0 - n ** 2)
        da_r = da_n * self.ha_n * r * (1.0 - r)
        dha = np.concatenate([da_r, da_z, da_n * r], axis=1)             # dL/dha (N, 3H): r gates W_hn h
        return v * z + dha @ self.W_hh


class LSTMMap(StepMap):
    """s = (h, c):  i, f, o = sigmoid(a), g = tanh(a_g), a = xa + W_hh h + b_hh;
    c' = f c + i g;  h' = o tanh(c')."""

    def __call__(self, s):
        H = self.H
        h, c = s[:, :H], s[:, H:]
        a = self.xa + h @ self.W_hh.T + self.b_hh                        # (N, 4H)
        with np.errstate(over="ignore"):
            i, f, o = (sigmoid(gate(a, k, H)) for k in (0, 1, 3))
        g = np.tanh(gate(a, 2, H))
        c_next = f * c + i * g
        tc = np.tanh(c_next)
        self.c, self.i, self.f, self.g, self.o, self.tc = c, i, f, g, o, tc
        return np.concatenate([o * tc, c_next], axis=1)

    def vjp(self, v):
        H = self.H
        vh, vc = v[:, :H], v[:, H:]
        i, f, g, o, tc = self.i, self.f, self.g, self.o, self.tc
        w_c = vc + vh * o * (1.0 - tc ** 2)                              # total dL/dc'
        da = np.concatenate([w_c * g * i * (1.0 - i), w_c * self.c * f * (1.0 - f),
                             w_c * i * (1.0 - g ** 2), vh * tc * o * (1.0 - o)], axis=1)  # (N, 4H)
        return np.concatenate([da @ self.W_hh, w_c * f], axis=1)


MAPS: dict[str, type[StepMap]] = {"rnn": RNNMap, "gru": GRUMap, "lstm": LSTMMap}


def step_map(model: LanguageModel, layer: int, x: np.ndarray) -> StepMap:
    """The update of layer `layer` of `model` with input x (D,) held constant."""
    W_ih, W_hh, b_ih, b_hh = (np.asarray(p, np.float64) for p in layer_params(model.params, layer))
    return MAPS[model.config.cell](W_ih, W_hh, b_ih, b_hh, x)


# ---- fixed points ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FixedPoint:
    state: np.ndarray           # (S,)
    q: float                    # 1/2 ||F(s) - s||^2
    eigenvalues: np.ndarray     # (S,) complex, of dF/ds, largest modulus first
    kind: str                   # stable | unstable | saddle


@dataclass(frozen=True)
class Search:
    points: list[FixedPoint]
    slowest_q: float            # the lowest q reached, kept or not


def classify(eigenvalues: np.ndarray) -> str:
    modulus = np.abs(eigenvalues)
    if (modulus < 1.0).all():
        return "stable"
    if (modulus > 1.0).all():
        return "unstable"
    return "saddle"


def _speeds(F: StepMap, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = F(s) - s
    return r, 0.5 * (r ** 2).sum(axis=1)


def _levenberg_marquardt(F: StepMap, s: np.ndarray, steps: int, tol: float) -> tuple[np.ndarray, float]:
    """Polish one state toward a root of r(s) = F(s) - s with the full Jacobian A = J - I."""
    S = len(s)
    r, q = _speeds(F, s[None])
    r, q = r[0], float(q[0])
    mu = 1e-3
    for k in range(steps):
        if q < tol * 1e-6:
            break
        # Near a root LM converges quadratically; still far after 8 steps, it is at a slow
        # point (a minimum of q above 0) and each further step costs an (S, S) solve.
        if k >= 8 and q > 1e3 * tol:
            break
        A = F.jacobian(s) - np.eye(S)
        AtA = A.T @ A
        g = A.T @ r
        delta = np.linalg.solve(AtA + mu * np.diag(np.diag(AtA) + 1e-12), -g)
        r_new, q_new = _speeds(F, (s + delta)[None])
        if q_new[0] < q:
            s, r, q = s + delta, r_new[0], float(q_new[0])
            mu = max(mu / 10.0, 1e-12)
        else:
            mu *= 10.0
            if mu > 1e8:
                break
    return s, q


def _distinct(states: np.ndarray, order: np.ndarray, distance: float) -> list[int]:
    kept: list[int] = []
    for i in order:
        if all(np.linalg.norm(states[i] - states[j]) > distance for j in kept):
            kept.append(int(i))
    return kept


def find_fixed_points(F: StepMap, starts: np.ndarray, iterations: int = 500, learning_rate: float = 0.02,
                      polish_steps: int = 30, max_polished: int = 8, tol: float = 1e-8,
                      distance: float = 1e-3, settle: int = 100) -> Search:
    """Fixed points of F from starts (N, S) (every other one first run `settle` steps of F): Adam on q for `iterations` steps, then Levenberg-
    Marquardt (`polish_steps`) on the `max_polished` lowest distinct candidates; those with
    q < tol, one per `distance` (Euclidean), lowest q first, each with its eigenvalues and class,
    and the lowest q reached: when nothing is kept, how far from fixed the slowest state is."""
    s = np.array(starts, np.float64)
    # Half the starts first follow the dynamics themselves for `settle` steps: they flow into
    # the attractors, which Adam alone may approach slowly; the other half find the saddles.
    settled = s[::2]
    for _ in range(settle):
        settled = F(settled)
    s[::2] = settled
    m, v = np.zeros_like(s), np.zeros_like(s)
    b1, b2, eps = 0.9, 0.999, 1e-12
    for t in range(1, iterations + 1):
        r, _ = _speeds(F, s)
        grad = F.vjp(r) - r                                              # dq/ds = (J - I)^T r
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad ** 2
        s -= learning_rate * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    _, q = _speeds(F, s)
    candidates = _distinct(s, np.argsort(q), distance)[:max_polished]
    polished = [_levenberg_marquardt(F, s[i], polish_steps, tol) for i in candidates]
    slowest = min([q for _, q in polished], default=float("inf"))
    found = [(p, q) for p, q in polished if q < tol]
    if not found:
        return Search([], slowest)
    states = np.array([p for p, _ in found])
    qs = np.array([q for _, q in found])
    points = []
    for i in _distinct(states, np.argsort(qs), distance):
        eig = np.linalg.eigvals(F.jacobian(states[i]))
        eig = eig[np.argsort(-np.abs(eig), kind="stable")]
        points.append(FixedPoint(states[i], float(qs[i]), eig, classify(eig)))
    return Search(points, slowest)


def fixed_points_for(model: LanguageModel, layer: int, x: np.ndarray, starts: np.ndarray, iterations: int,
                     max_polished: int, tol: float) -> Search:
    """find_fixed_points of layer `layer`'s update with its input held at x, from `starts`:
    the model and a few arrays in, the search out, so it can run in another process."""
    return find_fixed_points(step_map(model, layer, x), starts, iterations=iterations, max_polished=max_polished,
                             tol=tol)


def sample_starts(states: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n states (n, S) drawn without replacement (when there are enough) from a trajectory (T, S)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(states), size=n, replace=n > len(states))
    return np.asarray(states[np.sort(idx)], np.float64)


# ---- colouring a trajectory -------------------------------------------------------------------

CHAR_CLASSES = ("letter", "upper", "digit", "space", "newline", "punctuation")


def char_class(text: str) -> np.ndarray:
    """Per character the index of its class in CHAR_CLASSES (upper before letter)."""
    def one(c: str) -> int:
        if c.isupper():
            return 1
        if c.isalpha():
            return 0
        if c.isdigit():
            return 2
        if c == "\n":
            return 4
        if c.isspace():
            return 3
        return 5
    return np.fromiter((one(c) for c in text), np.float32, count=len(text))
