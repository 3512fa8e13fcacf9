"""A stacked character-level recurrent language model.

ids (N, T) -> one-hot -> L recurrent layers (dropout after each) -> linear decoder
-> logits (N, T, V). Parameters live in a flat dict whose names and shapes are exactly
the state_dict of a torch module with `rnn = nn.RNN|GRU|LSTM(V, H, L)` and
`decoder = nn.Linear(H, V)`, so checkpoints load into PyTorch unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from .cells import get_cell
from .layers import (Clamp, LayerCache, LayerGrads, Product, blas_threads_for, dense_backward, dense_forward,
                     onehot_backward, onehot_forward, recurrent_backward, recurrent_forward)


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "lstm"          # LSTM: the cell whose gradients survive long spans
    vocab_size: int = 65        # tinyshakespeare's character count
    hidden_size: int = 256      # 2x256 is ~0.9M parameters, about one per training char
    num_layers: int = 2         # a second layer buys ~0.05 nats/char over one on Shakespeare

    def __post_init__(self):
        get_cell(self.cell)
        for name in ("vocab_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The torch state_dict names and shapes, in torch's order."""
    G, H, V = get_cell(cfg.cell).num_gates, cfg.hidden_size, cfg.vocab_size
    shapes = {}
    for l in range(cfg.num_layers):
        D = V if l == 0 else H
        shapes[f"rnn.weight_ih_l{l}"] = (G * H, D)
        shapes[f"rnn.weight_hh_l{l}"] = (G * H, H)
        shapes[f"rnn.bias_ih_l{l}"] = (G * H,)
        shapes[f"rnn.bias_hh_l{l}"] = (G * H,)
    shapes["decoder.weight"] = (V, H)
    shapes["decoder.bias"] = (V,)
    return shapes


def layer_params(params: dict[str, np.ndarray], l: int):
    """(W_ih, W_hh, b_ih, b_hh) of layer l."""
    return (params[f"rnn.weight_ih_l{l}"], params[f"rnn.weight_hh_l{l}"],
            params[f"rnn.bias_ih_l{l}"], params[f"rnn.bias_hh_l{l}"])


def init_params(cfg: ModelConfig, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """PyTorch's default U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, except the
    LSTM forget gate bias, set to 1 so the cell remembers by default early in training
    (Jozefowicz et al. 2015)."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(cfg.hidden_size)
    params = {name: rng.uniform(-k, k, shape).astype(dtype) for name, shape in param_shapes(cfg).items()}
    if cfg.cell == "lstm":
        H = cfg.hidden_size
        for l in range(cfg.num_layers):
            params[f"rnn.bias_ih_l{l}"][H:2 * H] = 1.0
            params[f"rnn.bias_hh_l{l}"][H:2 * H] = 0.0
    return params


def count_parameters(params: dict[str, np.ndarray]) -> int:
    return int(sum(p.size for p in params.values()))


class State(NamedTuple):
    """Recurrent state carried between calls, PyTorch's layout: h, c (L, N, H)."""

    h: np.ndarray
    c: np.ndarray | None


def zero_state(cfg: ModelConfig, batch_size: int, dtype=np.float32) -> State:
    shape = (cfg.num_layers, batch_size, cfg.hidden_size)
    has_c = get_cell(cfg.cell).has_cell_state
    return State(np.zeros(shape, dtype), np.zeros(shape, dtype) if has_c else None)


@dataclass
class Cache:
    """Everything the forward pass computed: backward's input and the trace's source."""

    ids: np.ndarray                   # (T, N)
    layers: list[LayerCache]
    masks: list[np.ndarray | None]    # dropout mask applied to each layer's output (scaled)
    inputs: list[np.ndarray]          # (T, N, H) what layer l+1 (or the decoder, last) read


@dataclass
class Gradients:
    params: dict[str, np.ndarray]
    dh: list[np.ndarray] = field(default_factory=list)           # per layer (N, T+1, H): dL/dh_t, t=0..T
    dc: list[np.ndarray | None] = field(default_factory=list)    # per layer (N, T+1, H): dL/dc_t
    dx: np.ndarray | None = None      # (N, T, V) dL/dx_t for the one-hot inputs, when asked for

    @property
    def state(self) -> State:
        """dL/d(initial state), to carry into the backward pass of the previous segment."""
        h = np.stack([d[:, 0] for d in self.dh])
        c = None if self.dc[0] is None else np.stack([d[:, 0] for d in self.dc])
        return State(h, c)


def forward(cfg: ModelConfig, params: dict[str, np.ndarray], ids: np.ndarray,
            state: State | None = None, dropout: float = 0.0,
            rng: np.random.Generator | None = None,
            clamp: dict[int, Clamp] | None = None, product: Product | None = None) -> tuple[np.ndarray, State, Cache]:
    """ids (N, T) int -> logits (N, T, V), the final state, and the cache.

    `state` is the carried (h, c), zeros when None. Dropout (inverted, rate `dropout`)
    is applied to every layer's output, the top one included, as char-rnn does: on
    a 2-layer model, dropout between layers alone barely regularises.
    `clamp` maps a layer to units held fixed after every step (an intervention; see Clamp).
    `product` replaces the time loop's h W_hh^T (see layers.recurrent_forward).
    """
    if ids.shape[1] < 1:
        raise ValueError("a sequence needs at least one character")
    with blas_threads_for(ids.shape[0]):
        return _forward(cfg, params, ids, state, dropout, rng, clamp, product)


def _forward(cfg, params, ids, state, dropout, rng, clamp, product=None):
    cell = get_cell(cfg.cell)
    N, T = ids.shape
    dtype = params["decoder.weight"].dtype
    if state is None:
        state = zero_state(cfg, N, dtype)
    ids_tm = np.ascontiguousarray(ids.T)                       # (T, N)
    layers, masks, inputs = [], [], []
    x = None
    # Cells that never read ha = h W_hh^T + b_hh alone take b_hh with the input term.
    fold = not cell.separate_recurrent_grad
    for l in range(cfg.num_layers):
        W_ih, W_hh, b_ih, b_hh = layer_params(params, l)
        b_in = b_ih + b_hh if fold else b_ih
        xa = onehot_forward(ids_tm, W_ih, b_in) if l == 0 else dense_forward(x, W_ih, b_in)  # (T, N, G*H)
        lc = recurrent_forward(cell, xa, W_hh, None if fold else b_hh, state.h[l],
                               None if state.c is None else state.c[l], None if clamp is None else clamp.get(l),
                               product, take_xa=True)                # xa is ours, used nowhere else
        layers.append(lc)
        x = lc.hs[1:]                                            # (T, N, H)
        mask = None
        if dropout > 0.0:
            mask = (rng.random(x.shape) >= dropout).astype(dtype) / dtype.type(1.0 - dropout)
            x = x * mask
        masks.append(mask)
        inputs.append(x)
    logits = dense_forward(x, params["decoder.weight"], params["decoder.bias"])  # (T, N, V)
    final = State(np.stack([lc.hs[-1] for lc in layers]),
                  None if state.c is None else np.stack([lc.cs[-1] for lc in layers]))
    return logits.transpose(1, 0, 2), final, Cache(ids_tm, layers, masks, inputs)


def backward(cfg: ModelConfig, params: dict[str, np.ndarray], dlogits: np.ndarray, cache: Cache,
             dstate: State | None = None, input_grad: bool = False, product: Product | None = None) -> Gradients:
    """BPTT through the whole stack. dlogits (N, T, V); dstate: gradient on the final
    state carried back from a later segment. Returns parameter gradients and the total
    dL/dh_t, dL/dc_t of every layer and step; with input_grad also dL/dx_t, the gradient
    on each one-hot input (input saliency): layer 0's dxa times W_ih. `product` as in forward."""
    with blas_threads_for(dlogits.shape[0]):
        return _backward(cfg, params, dlogits, cache, dstate, input_grad, product)


def _backward(cfg, params, dlogits, cache, dstate, input_grad, product=None):
    cell = get_cell(cfg.cell)
    grads: dict[str, np.ndarray] = {}
    dlogits_tm = dlogits.transpose(1, 0, 2)                      # (T, N, V)
    dx, grads["decoder.weight"], grads["decoder.bias"] = dense_backward(
        cache.inputs[-1], dlogits_tm, params["decoder.weight"])
    dh, dc = [None] * cfg.num_layers, [None] * cfg.num_layers
    dx_input = None
    for l in reversed(range(cfg.num_layers)):
        W_ih, W_hh, b_ih, b_hh = layer_params(params, l)
        if cache.masks[l] is not None:
            dx = dx * cache.masks[l]
        lg: LayerGrads = recurrent_backward(
            cell, cache.layers[l], dx, W_hh,
            None if dstate is None else dstate.h[l],
            None if dstate is None or dstate.c is None else dstate.c[l], product)
        if l == 0:
            if input_grad:
                dx_input = (lg.dxa @ W_ih).transpose(1, 0, 2)           # (N, T, V)
            grads[f"rnn.weight_ih_l{l}"] = onehot_backward(cache.ids, lg.dxa, cfg.vocab_size)
            grads[f"rnn.bias_ih_l{l}"] = lg.dxa.sum(axis=(0, 1))
        else:
            dx, grads[f"rnn.weight_ih_l{l}"], grads[f"rnn.bias_ih_l{l}"] = dense_backward(
                cache.inputs[l - 1], lg.dxa, W_ih)
        grads[f"rnn.weight_hh_l{l}"] = lg.dW_hh
        grads[f"rnn.bias_hh_l{l}"] = lg.db_hh
        dh[l] = lg.dh.transpose(1, 0, 2)
        dc[l] = None if lg.dc is None else lg.dc.transpose(1, 0, 2)
    return Gradients({name: grads[name] for name in params}, dh, dc, dx_input)

