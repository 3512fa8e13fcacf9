"""Recurrent cells: the per-step equations of the vanilla RNN, GRU and LSTM.

Every cell uses PyTorch's parameter layout and gate order, so weights move between
rnnscope and `torch.nn.RNN/GRU/LSTM` unchanged. A layer with G gates owns

    W_ih (G*H, D)   W_hh (G*H, H)   b_ih (G*H,)   b_hh (G*H,)

and the shared time loop (layers.py) hands each step two pre-activations:

    xa = x_t W_ih^T + b_ih        (N, G*H), computed for the whole sequence at once
    ha = h_{t-1} W_hh^T + b_hh    (N, G*H), one matmul per step

Only xa + ha matters to a cell whose backward never reads ha alone (all but the GRU),
so for those the time loop adds b_hh into xa once for the whole sequence instead.

A cell turns them into the next state and records its gate activations in `acts`;
its backward step turns dL/dh_t (and dL/dc_t) into dL/dxa and dL/dha, from which the
time loop gets every weight gradient with one matmul per parameter.
Derivatives are taken from cached outputs: sigmoid' = y(1 - y), tanh' = 1 - y^2.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

# The few-rows steps' ufuncs, bound once: a batch-1 step makes ten calls of about a
# microsecond each, and looking up np.<name> added ~60 ns to every one (0.5 us a step).
_exp, _add, _subtract, _multiply, _divide, _tanh = np.exp, np.add, np.subtract, np.multiply, np.divide, np.tanh
# A one-row product: np.dot calls the same BLAS gemv as np.matmul (the tests hold the values
# equal bit for bit) with ~0.4 us less of dispatch than matmul's gufunc machinery.
_dot = np.dot


# Steps of the one-row loop (LSTMCell.forward_rows) between copies of its [g | c] rows into
# the trace: the copies then cost ~0.1 us a step, and the rows stay in L1.
ROWS_CHUNK = 64


def gate(a: np.ndarray, k: int, H: int) -> np.ndarray:
    """The k-th H-wide gate block of a fused (..., G*H) array (a view)."""
    return a[..., k * H:(k + 1) * H]


def sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-x)). NumPy's float32 exp is twice as fast as its
    tanh here; exp(-x) overflows to inf for x < -88, giving the right limit 0, so callers
    run it under np.errstate(over="ignore")."""
    out = np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.divide(1.0, out, out=out)        # SIMD here, where np.reciprocal is not
    return out


def dot_layout(M: np.ndarray) -> np.ndarray:
    """M (K, J) as the transposed view of a C-contiguous (J, K) copy, for x (1, K) @ M: OpenBLAS
    then takes each output as a dot product over a contiguous row (its gemv "T" kernel). On the
    EPYC a (1, 256) x (256, 1024) product ran in 0.66-0.69x the time this way than from a
    C-contiguous (K, J), whose gemv streams the whole output vector per input element."""
    return M if M.flags.f_contiguous else np.ascontiguousarray(M.T).T


class Step(NamedTuple):
    """One time step's cached values, all views into the layer's (T, N, ...) buffers."""

    xa: np.ndarray        # (N, G*H)
    ha: np.ndarray | None  # (N, G*H), kept only for cells with separate_recurrent_grad
    acts: np.ndarray      # (N, A*H) gate activations (A = len(gate_names))
    stash: np.ndarray | None  # (N, S*H) what the cell keeps for backward besides (S = num_stashed)
    h_prev: np.ndarray    # (N, H)
    c_prev: np.ndarray | None
    h: np.ndarray         # (N, H)
    c: np.ndarray | None


class Cell:
    """Interface of a recurrent cell; see the module docstring for the contract."""

    name: str
    num_gates: int                  # G: blocks of rows in W_ih and W_hh
    gate_names: tuple[str, ...]     # activations recorded per step, in `acts` order
    tanh_gates: tuple[str, ...] = ()  # those in [-1, 1] (candidates); the rest are sigmoids in [0, 1]
    # H-wide blocks kept for backward in a buffer of their own: beside the gates in one row
    # they would make every whole-gate operation strided, measured 2-3x slower in NumPy.
    num_stashed: int = 0
    has_cell_state: bool = False
    # True when dL/dha differs from dL/dxa (the GRU's reset gate multiplies W_hn h).
    separate_recurrent_grad: bool = False
    # The few-rows form (see LSTMCell.row_step): the scale of each gate block in the weights
    # it reads. Empty: the cell has none, and every path steps with forward_step.
    row_scale: tuple[float, ...] = ()

    @property
    def has_rows_form(self) -> bool:
        return bool(self.row_scale)

    def gate_rows(self, M: np.ndarray, order: str = "C", out: np.ndarray | None = None) -> np.ndarray:
        """M with each gate block (last axis) times its row_scale, into `out` (M itself for in
        place) or a new array in memory order `order` ("F": a matrix in dot_layout, copied in
        one pass). Scales are powers of two, so every product and sum taken with the result
        is the original one times the scale, exactly (barring overflow and subnormals)."""
        H = M.shape[-1] // self.num_gates
        scale = np.repeat(np.asarray(self.row_scale, M.dtype), H)
        return np.multiply(M, scale, out=np.empty(M.shape, M.dtype, order=order) if out is None else out)

    @property
    def quantities(self) -> tuple[str, ...]:
        """Every internal value a trace can show, states first."""
        return ("h", "c")[: 1 + self.has_cell_state] + self.gate_names

    def forward_step(self, xa, ha, h_prev, c_prev, acts, stash, h_out, c_out) -> None:
        """Write the activations into `acts` (and `stash`) and the next state into h_out (c_out)."""
        raise NotImplementedError

    def backward_step(self, dh, step: Step, dxa, dha, dc, dc_prev, work):
        """Fill dxa (and dha) from dh = dL/dh_t.

        Cells with a cell state read dc = dL/dc_t from step t+1, add what reaches c_t
        through h_t so that dc holds the total dL/dc_t on return, and write dL/dc_{t-1}
        through the cell state into dc_prev. `work` is an (N, G*H) scratch buffer.
        Returns the part of dL/dh_{t-1} that does not pass through W_hh, or None.
        """
        raise NotImplementedError


class RNNCell(Cell):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    name = "rnn"
    num_gates = 1
    gate_names = ()

    def forward_step(self, xa, ha, h_prev, c_prev, acts, stash, h_out, c_out):
        np.add(xa, ha, out=h_out)
        np.tanh(h_out, out=h_out)

    def backward_step(self, dh, step, dxa, dha, dc, dc_prev, work):
        np.multiply(step.h, step.h, out=dxa)
        np.subtract(1.0, dxa, out=dxa)
        dxa *= dh
        return None


class LSTMCell(Cell):
    """LSTM with gates i, f, g, o (PyTorch order):

    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g);  a = xa + ha
    c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)
    """

    name = "lstm"
    num_gates = 4
    gate_names = ("i", "f", "g", "o")
    tanh_gates = ("g",)
    num_stashed = 1               # tanh(c_t), computed forward, needed backward
    has_cell_state = True

    def forward_step(self, xa, ha, h_prev, c_prev, acts, stash, h_out, c_out):
        H = h_out.shape[-1]
        gates = acts
        np.add(xa, ha, out=gates)
        i, f, g, o = (gate(acts, k, H) for k in range(4))
        # tanh(x) = 2 sigmoid(2x) - 1, so one sigmoid call serves all four gates.
        g *= 2.0
        sigmoid(gates, out=gates)
        g *= 2.0
        g -= 1.0
        np.multiply(f, c_prev, out=c_out)
        tanh_c = stash                            # tanh(c_t) for backward; i * g borrows it first
        np.multiply(i, g, out=tanh_c)
        c_out += tanh_c
        np.tanh(c_out, out=tanh_c)
        np.multiply(o, tanh_c, out=h_out)

    # The few-rows form, for a batch-1 trace and the sampler, where NumPy's per-call dispatch
    # costs more than the arithmetic on a (1, 4H) row: ten calls a step with the product
    # against forward_step's fourteen, and no per-step slicing. The weights keep the gate
    # blocks i, f, g, o scaled by -1, -1, -2, -1 (row_scale), so the product and the input
    # term sum to -a for the sigmoids and -2 a_g for tanh(a_g) = 2 sigmoid(2 a_g) - 1, with
    # no negation or doubling per step. [i | f] is one block, to be multiplied by one
    # [g | c_{t-1}] block; the trace's buffer of activations is its record in forward_step's
    # layout with g written back per chunk of steps (forward_rows), where gate blocks in
    # another order cost a 4 MB reorder copy per 1,000 characters, and its fresh pages.
    # Every value equals forward_step's bit for bit: scaling by a power of two commutes with
    # rounding, 2 / (1 + e) is 2 (1 / (1 + e)) exactly where that is normal (and where it is
    # not, both give g = -1), and i g + f c is one rounded sum either way.
    row_scale = (-1.0, -1.0, -2.0, -1.0)

    @staticmethod
    def row_constants(H: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """row_step's constants: (4H,) numerators over 1 + exp(-a) per gate block (1 gives each
        sigmoid, 2 gives 2 sigmoid(2 a_g)), (4H,) ones and (H,) ones. Ones as arrays, not the
        scalar 1.0: NumPy 2 spends ~0.4 us per call resolving a Python scalar's type, a third
        of an add on 1,024 floats; the sums are the same float32 (or float64) additions."""
        ones = np.ones(4 * H, dtype)
        return np.repeat(np.asarray([1.0, 1.0, 2.0, 1.0], dtype), H), ones, ones[:H]

    @staticmethod
    def row_step(numerators, ones, ones_g, a, i_f, two_sig_g, o, gc_prev, g, ig_fc, ig, fc, c, tanh_c, h) -> None:
        """One step from a (N, 4H) = the summed prepared pre-activations [-a_i, -a_f, -2 a_g, -a_o],
        overwritten with [i, f, 2 sigmoid(2 a_g), o]; i_f, two_sig_g and o are views of its blocks.
        gc_prev (N, 2H) holds [room | c_{t-1}]: g is written into the room (the view `g`), so
        one multiply by [i | f] gives [i g | f c_{t-1}] in ig_fc (N, 2H), whose halves are ig
        and fc. Writes c_t into c, tanh(c_t) into tanh_c and h_t into h. The first three
        arguments are row_constants. Views are taken by the caller once, not per step.
        Run under np.errstate(over="ignore"), as sigmoid."""
        _exp(a, out=a)
        _add(a, ones, out=a)
        _divide(numerators, a, out=a)
        _subtract(two_sig_g, ones_g, out=g)
        _multiply(i_f, gc_prev, out=ig_fc)
        _add(ig, fc, out=c)
        _tanh(c, out=tanh_c)
        _multiply(o, tanh_c, out=h)

    def forward_rows(self, xa, W_hh, h0, c0, clamp=None, in_place=False):
        """The time loop over one row (N = 1) with row_step, for a trace: xa (T, 1, 4H) input
        pre-activations with b_hh folded in, W_hh (4H, H), h0 and c0 (1, H); clamp as in
        layers.Clamp. Returns what forward_step's loop records, in its layout: acts (T, 1, 4H)
        as i, f, g, o, tanh(c_t) (T, 1, H), hs and cs (T+1, 1, H). in_place: acts is xa,
        overwritten (C-contiguous xa only)."""
        T, N, GH = xa.shape
        H = GH // 4
        dtype = xa.dtype
        in_place = in_place and xa.flags.c_contiguous
        acts = self.gate_rows(xa, out=xa if in_place else None)   # (T, N, 4H), the step adds -ha into it
        W_hhT = self.gate_rows(W_hh.T, "F")                     # (H, 4H) in dot_layout
        hs = np.empty((T + 1, N, H), dtype)
        hs[0] = h0
        cs = np.empty((T + 1, N, H), dtype)
        cs[0] = c0
        # [g_t | c_{t-1}] rows for ROWS_CHUNK steps at a time, copied out per chunk: a (T+1, 2H)
        # buffer for the whole text would be 2 MB of fresh pages per 1,000 characters.
        gc = np.empty((ROWS_CHUNK + 1, N, 2 * H), dtype)
        gc[0, :, H:] = c0
        tanh_cs = np.empty((T, N, H), dtype)
        numerators, ones, ones_g = self.row_constants(H, dtype)
        ha = np.empty((N, GH), dtype)
        ig_fc = np.empty((N, 2 * H), dtype)
        ig, fc = ig_fc[:, :H], ig_fc[:, H:]
        step = self.row_step
        # zip walks every per-step view in C; slicing them per step in Python cost ~2 us a step.
        views = zip(acts, acts[..., : 2 * H], acts[..., 2 * H: 3 * H], acts[..., 3 * H:], hs[:-1], hs[1:], tanh_cs)
        chunk_views = list(zip(gc[:-1], gc[:-1, :, :H], gc[1:, :, H:]))
        with np.errstate(over="ignore"):                        # see sigmoid
            for s in range(0, T, ROWS_CHUNK):
                # chunk_views first: zip stops there without drawing a step from `views`.
                for (gc_prev, g, c), (a_t, i_f, two_sig_g, o, h_prev, h, tanh_c) in zip(chunk_views, views):
                    _dot(h_prev, W_hhT, out=ha)
                    _add(a_t, ha, out=a_t)
                    step(numerators, ones, ones_g, a_t, i_f, two_sig_g, o, gc_prev, g, ig_fc, ig, fc, c, tanh_c, h)
                    if clamp is not None:
                        clamp.apply(h, c)
                n = min(ROWS_CHUNK, T - s)
                cs[s + 1:s + n + 1] = gc[1:n + 1, :, H:]
                gate(acts[s:s + n], 2, H)[...] = gc[:n, :, :H]     # g in place of 2 sigmoid(2 a_g)
                gc[0, :, H:] = gc[n, :, H:]
        return acts, tanh_cs, hs, cs

    def backward_step(self, dh, step, dxa, dha, dc, dc_prev, work):
        H = dh.shape[-1]
        acts, tanh_c = step.acts, step.stash
        i, f, g, o = (gate(acts, k, H) for k in range(4))
        di, df, dg, do = (gate(dxa, k, H) for k in range(4))
        # Every gate's local derivative in one pass: y (1 - y), then 1 - g^2 on the g block.
        slope = work
        np.subtract(1.0, acts, out=slope)
        slope *= acts
        slope_g = gate(slope, 2, H)
        np.multiply(g, g, out=slope_g)
        np.subtract(1.0, slope_g, out=slope_g)
        # dc += dh * o * (1 - tanh(c)^2): the cell state reaches L through h too. dc_prev is
        # free until the last line, and contiguous where the gate blocks of dxa are not.
        np.multiply(tanh_c, tanh_c, out=dc_prev)
        np.subtract(1.0, dc_prev, out=dc_prev)
        dc_prev *= o
        dc_prev *= dh
        dc += dc_prev
        np.multiply(dc, g, out=di)              # di = dc * g
        np.multiply(dc, step.c_prev, out=df)    # df = dc * c_{t-1}
        np.multiply(dc, i, out=dg)              # dg = dc * i
        np.multiply(dh, tanh_c, out=do)         # do = dh * tanh(c)
        dxa *= slope
        np.multiply(dc, f, out=dc_prev)         # dc_{t-1} = dc * f
        return None


class GRUCell(Cell):
    """GRU with gates r, z, n (PyTorch order and equations):

    r = sigmoid(xa_r + ha_r);  z = sigmoid(xa_z + ha_z);  n = tanh(xa_n + r * ha_n)
    h_t = (1 - z) * n + z * h_{t-1}
    """

    name = "gru"
    num_gates = 3
    gate_names = ("r", "z", "n")
    tanh_gates = ("n",)
    separate_recurrent_grad = True

    def forward_step(self, xa, ha, h_prev, c_prev, acts, stash, h_out, c_out):
        H = h_out.shape[-1]
        rz = acts[:, : 2 * H]
        np.add(xa[:, : 2 * H], ha[:, : 2 * H], out=rz)
        sigmoid(rz, out=rz)
        r, z, n = (gate(acts, k, H) for k in range(3))
        np.multiply(r, gate(ha, 2, H), out=n)
        n += gate(xa, 2, H)
        np.tanh(n, out=n)
        np.subtract(h_prev, n, out=h_out)        # h = n + z * (h_{t-1} - n)
        h_out *= z
        h_out += n

    def backward_step(self, dh, step, dxa, dha, dc, dc_prev, work):
        H = dh.shape[-1]
        r, z, n = (gate(step.acts, k, H) for k in range(3))
        da_r, da_z, da_n = (gate(dxa, k, H) for k in range(3))
        # Three contiguous (N, H) scratch blocks: column blocks of work would be strided, slower.
        one_minus_z, slope, direct = work.reshape(3, -1, H)
        np.subtract(step.h_prev, n, out=da_z)    # dz = dh * (h_{t-1} - n)
        da_z *= dh
        np.subtract(1.0, z, out=one_minus_z)
        np.multiply(one_minus_z, z, out=slope)
        da_z *= slope
        np.multiply(one_minus_z, dh, out=da_n)   # dn = dh * (1 - z)
        np.multiply(n, n, out=slope)
        np.subtract(1.0, slope, out=slope)
        da_n *= slope
        np.multiply(da_n, gate(step.ha, 2, H), out=da_r)  # dr = da_n * ha_n
        np.subtract(1.0, r, out=slope)
        slope *= r
        da_r *= slope
        dha[:, : 2 * H] = dxa[:, : 2 * H]
        np.multiply(da_n, r, out=gate(dha, 2, H))
        np.multiply(dh, z, out=direct)
        return direct


CELLS: dict[str, Cell] = {cell.name: cell for cell in (RNNCell(), GRUCell(), LSTMCell())}


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(CELLS)}") from None
