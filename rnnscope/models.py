"""Where a notebook's models come from: the bundled ones, checkpoints, PyTorch, min-char-rnn
and the NumPy layouts of the lecture notes.

Every importer here builds a PyTorch-layout state dict and hands it to the one converter the
server's `rnnscope import` uses (rnnscope.model.importer), so the checks, the vocabulary's
reordering and the exact folding of an embedding are the same code everywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnscope.model.bundled import BUNDLED, bundled_paths
from rnnscope.model.checkpoint import load_model
from rnnscope.model.importer import ImportRefused, Roles, import_tensors, vocab_from_json

from .views import Model

# The lecture's gate letters. PyTorch (and rnnscope) keep the LSTM blocks in the order i, f, g, o.
TORCH_LSTM_ORDER = "ifgo"


def load(name_or_path: str | Path) -> Model:
    """A bundled model by id ("lstm", "gru", "rnn", "python") or a .safetensors checkpoint
    written by `rnnscope train`, the Train page or `rnnscope import`."""
    bundled = bundled_paths()
    if isinstance(name_or_path, str) and name_or_path in bundled:
        return Model(load_model(bundled[name_or_path]), BUNDLED[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{name_or_path!r} is neither a bundled model ({', '.join(bundled)}) "
                                "nor a checkpoint file")
    return Model(load_model(path), path.stem)


def as_array(x, name: str) -> np.ndarray:
    """A NumPy array of a tensor, an array or nested lists; float64 unless it is float32."""
    if hasattr(x, "detach"):                      # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold numbers, not {a.dtype}")
    return a if a.dtype == np.float32 else a.astype(np.float64)


def vocab_list(chars, what: str) -> list[str]:
    """The characters in id order: a list, a string, or a mapping {char: id} / {id: char}."""
    if isinstance(chars, str):
        chars = list(chars)
    return vocab_from_json(chars if isinstance(chars, dict) else list(chars), what).chars


def convert(tensors: dict[str, np.ndarray], chars, name: str, roles: Roles = Roles()) -> Model:
    try:
        lm, _ = import_tensors(tensors, vocab_from_json(vocab_list(chars, "the vocabulary"), "the vocabulary"),
                               roles, name)
    except ImportRefused as e:
        raise ValueError(str(e)) from None
    return Model(lm, name)


def from_torch(module_or_state_dict, vocab, name: str = "torch model") -> Model:
    """A PyTorch char model: an nn.Module or its state_dict, with an nn.RNN/GRU/LSTM, a Linear
    decoder and optionally an nn.Embedding (folded exactly into layer 0's W_ih), as
    `rnnscope import` understands them. `vocab`: the characters in id order (a string or a
    list), or a mapping {char: id}."""
    state = module_or_state_dict.state_dict() if hasattr(module_or_state_dict, "state_dict") else module_or_state_dict
    tensors = {k: as_array(v, k) for k, v in state.items()}
    return convert(tensors, vocab, name)


def from_min_char_rnn(Wxh, Whh, Why, bh, by, chars, name: str = "min-char-rnn") -> Model:
    """Karpathy's min-char-rnn (column vectors, one-hot x):

        h_t = tanh(Wxh x_t + Whh h_{t-1} + bh),   y_t = Why h_t + by,   p_t = softmax(y_t)

    Wxh (H, V), Whh (H, H), Why (V, H), bh (H, 1), by (V, 1); `chars` in the order of his
    char_to_ix (ids 0..V-1). Those are exactly nn.RNN's weights with a zero hidden bias."""
    Wxh, Whh, Why = (as_array(a, n) for a, n in ((Wxh, "Wxh"), (Whh, "Whh"), (Why, "Why")))
    bh, by = as_array(bh, "bh").reshape(-1), as_array(by, "by").reshape(-1)
    return convert({"rnn.weight_ih_l0": Wxh, "rnn.weight_hh_l0": Whh, "rnn.bias_ih_l0": bh,
                    "rnn.bias_hh_l0": np.zeros_like(bh), "decoder.weight": Why, "decoder.bias": by},
                   chars, name, Roles(cell="rnn"))


def reorder_gates(blocks: np.ndarray, order: str, H: int) -> np.ndarray:
    """Rows in the caller's gate order -> PyTorch's i, f, g, o (axis 0 holds 4H rows)."""
    letters = order.lower()
    if sorted(letters) != sorted(TORCH_LSTM_ORDER):
        raise ValueError(f"gates must name each of i, f, o, g once (e.g. 'ifog' or 'fiog'), not {order!r}")
    return np.concatenate([blocks[letters.index(g) * H:(letters.index(g) + 1) * H] for g in TORCH_LSTM_ORDER])


def from_arrays(chars, *, Wy, by=None, W=None, Wx=None, Wh=None, b=None, gates: str = "ifog",
                cell: str = "lstm", embedding=None, name: str = "lecture model") -> Model:
    """A one-layer LSTM (or vanilla RNN, cell="rnn") from the layouts students write:

    stacked, as the lecture notes (column vectors over [h_{t-1}; x_t]):
        a = W @ concat(h_{t-1}, x_t) + b,    W (G*H, H + D),  y = Wy @ h + by,  Wy (V, H)
    split, as the assignments (row vectors):
        a = x_t @ Wx + h_{t-1} @ Wh + b,     Wx (D, G*H), Wh (H, G*H),  y = h @ Wy + by,  Wy (H, V)

    then, for the LSTM, with the four blocks of `a` in the order `gates` names them
    (the notes write f, i, o, g: gates="fiog"; the assignments i, f, o, g: gates="ifog"):
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
        c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
    and for the RNN h_t = tanh(a). Biases may be None (zero). The input x_t is the one-hot
    vector of the character (D = V), or its row of `embedding` (V, D), which is folded
    exactly into the input weights."""
    if cell not in ("lstm", "rnn"):
        raise ValueError("from_arrays takes cell='lstm' or cell='rnn'; for a GRU, use from_torch")
    G = 4 if cell == "lstm" else 1
    Wy = as_array(Wy, "Wy")
    if W is not None:
        if Wx is not None or Wh is not None:
            raise ValueError("give either W (stacked over [h; x]) or Wx and Wh (split), not both")
        W = as_array(W, "W")
        if W.ndim != 2 or W.shape[0] % G:
            raise ValueError(f"W must be ({G}*H, H + D); it is {W.shape}")
        H = W.shape[0] // G
        W_hh, W_ih = W[:, :H], W[:, H:]                      # (G*H, H), (G*H, D)
        decoder = Wy                                          # (V, H), column style
    elif Wx is not None and Wh is not None:
        Wx, Wh = as_array(Wx, "Wx"), as_array(Wh, "Wh")
        if Wh.ndim != 2 or Wh.shape[1] != G * Wh.shape[0]:
            raise ValueError(f"Wh must be (H, {G}*H); it is {Wh.shape}")
        H = Wh.shape[0]
        W_ih, W_hh = Wx.T, Wh.T                               # to column style
        decoder = Wy.T                                        # (H, V) -> (V, H)
    else:
        raise ValueError("give the recurrent weights: W (stacked over [h; x]) or both Wx and Wh")
    if W_ih.ndim != 2 or W_ih.shape[0] != G * H:
        raise ValueError(f"the input weights must have {G}*H = {G * H} gate rows; they have {W_ih.shape}")
    bias = np.zeros(G * H, W_hh.dtype) if b is None else as_array(b, "b").reshape(-1)
    if bias.shape != (G * H,):
        raise ValueError(f"b must have {G * H} entries; it has {bias.size}")
    if embedding is not None:
        E = as_array(embedding, "embedding")                  # (V, D)
        if E.ndim != 2 or E.shape[1] != W_ih.shape[1]:
            raise ValueError(f"the embedding must be (V, {W_ih.shape[1]}); it is {E.shape}")
        W_ih = W_ih @ E.T                                     # x = E[id]: W_ih x is column id of W_ih E^T
    if cell == "lstm":
        W_ih, W_hh, bias = (reorder_gates(a, gates, H) for a in (W_ih, W_hh, bias))
    out_bias = np.zeros(decoder.shape[0], decoder.dtype) if by is None else as_array(by, "by").reshape(-1)
    return convert({"rnn.weight_ih_l0": W_ih, "rnn.weight_hh_l0": W_hh, "rnn.bias_ih_l0": bias,
                    "rnn.bias_hh_l0": np.zeros_like(bias), "decoder.weight": decoder, "decoder.bias": out_bias},
                   chars, name, Roles(cell=cell))
