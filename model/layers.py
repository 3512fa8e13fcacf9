"""The building blocks every cell shares: one time loop, the one-hot input, the decoder
and the softmax loss, each a forward/backward pair.

Arrays inside the model are time-major, (T, N, ...), so each step reads and writes a
contiguous (N, ...) block; the network module converts at its boundary.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from .cells import Cell, Step

# Below this many sequences BLAS runs on one thread. A batch-1 step's (1, H) x (H, G*H)
# product is too small to split, and on a shared 2-core machine a threaded GEMM waits for
# a core that is busy elsewhere: a batch-1 trace of 2x256 measured 55 ms on one thread and
# 89 ms on two. One thread is never slower there, so two threads are never slower than one.
SMALL_BATCH = 4


class _OneBlasThread:
    """BLAS's thread count is one setting for the whole process: the first holder sets it
    to one, the last to leave restores it, so overlapping callers cannot leave it wrong."""

    def __init__(self):
        self._holders = 0
        self._limiter = None
        self._controller = None

    @contextmanager
    def __call__(self):
        with _blas_setting:
            if self._holders == 0:
                if self._controller is None:           # finding the BLAS libraries takes ~ms: once
                    from threadpoolctl import ThreadpoolController
                    self._controller = ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
                _let_go_of_blas()
            self._holders += 1
        try:
            yield
        finally:
            with _blas_setting:
                self._holders -= 1
                if self._holders == 0:
                    self._limiter.restore_original_limits()
                    _let_go_of_blas()
                    self._limiter = None


# Every change of BLAS's thread count in this process goes through this lock and lets go of
# OpenBLAS at once: threadpoolctl (3.8) lets only the thread that last set an OpenBLAS limit
# set one again until it lets go, and silently ignores every other thread's. Unreleased, the
# first request thread to read a short text kept control, and the server's own setting
# (RNNSCOPE_BLAS_THREADS), made at start-up from another thread, did nothing.
_blas_setting = threading.RLock()


def _let_go_of_blas() -> None:
    from threadpoolctl import OpenBLASController
    let_go = getattr(OpenBLASController, "clear_controlling_thread", None)     # threadpoolctl >= 3.8
    if let_go is not None:
        let_go(force=True)


def set_blas_threads(threads: int) -> None:
    """BLAS's threads for the whole process from now on, from whichever thread asks."""
    from threadpoolctl import threadpool_limits
    with _blas_setting:
        _let_go_of_blas()
        threadpool_limits(threads)
        _let_go_of_blas()


one_blas_thread = _OneBlasThread()


def blas_threads_for(batch_size: int):
    """One BLAS thread for a batch under SMALL_BATCH sequences, the caller's setting otherwise."""
    return one_blas_thread() if batch_size < SMALL_BATCH else nullcontext()


# A time loop's per-step (N, H) x (H, G*H) products below this many multiply-adds run on
# one BLAS thread: an LSTM H128 at N=32 (2.1M) trained at 129k chars/s on one thread and 95k
# on two, the split costing more than it saves; at H256 (8.4M) two threads win.
SMALL_STEP_MACS = 4_000_000


def step_threads_for(N: int, GH: int, H: int):
    """One BLAS thread for a time loop whose per-step products are small, else as set."""
    return one_blas_thread() if N * GH * H < SMALL_STEP_MACS else nullcontext()


# x (N, K), M (J, K), out (N, J): writes x M^T into out (h W_hh^T forward, dha W_hh backward).
Product = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


@dataclass
class LayerCache:
    """What one recurrent layer's backward needs, and what a trace shows."""

    # (T, N, G*H) input pre-activations (b_hh folded in unless `ha` is kept); None where a
    # one-row loop took xa over as its buffer of activations (no backward reads xa's values).
    xa: np.ndarray | None
    ha: np.ndarray | None   # (T, N, G*H) recurrent pre-activations, for cells whose backward reads them
    acts: np.ndarray        # (T, N, A*H) gate activations
    stash: np.ndarray | None  # (T, N, S*H) what the cell keeps for backward besides
    hs: np.ndarray          # (T+1, N, H) h_0 .. h_T, hs[0] is the carried state
    cs: np.ndarray | None   # (T+1, N, H) c_0 .. c_T for cells with a cell state

    def step(self, t: int) -> Step:
        cs, ha = self.cs, self.ha
        stash = self.stash
        return Step(None if self.xa is None else self.xa[t], None if ha is None else ha[t], self.acts[t],
                    None if stash is None else stash[t], self.hs[t],
                    None if cs is None else cs[t], self.hs[t + 1], None if cs is None else cs[t + 1])


@dataclass(frozen=True)
class Clamp:
    """An intervention on one layer: after every step, before the state feeds the next step,
    the layer above and the decoder, units are held at values: h_t[units] = values, and
    c_t[units] = values too for cells with a cell state unless cell_state is False.
    Zeros ablate. For reading and sampling only: backward ignores it."""

    units: np.ndarray                 # (K,) int
    values: np.ndarray                # (K,) or a scalar
    cell_state: bool = True

    def apply(self, h: np.ndarray, c: np.ndarray | None) -> None:
        h[..., self.units] = self.values
        if c is not None and self.cell_state:
            c[..., self.units] = self.values


def recurrent_forward(cell: Cell, xa: np.ndarray, W_hh: np.ndarray, b_hh: np.ndarray | None,
                      h0: np.ndarray, c0: np.ndarray | None, clamp: Clamp | None = None,
                      product: Product | None = None, take_xa: bool = False) -> LayerCache:
    """Run `cell` over a sequence. xa: (T, N, G*H); h0, c0: (N, H). Outputs are cache.hs[1:].
    b_hh None means xa already holds it (only for cells without separate_recurrent_grad).
    With a clamp, its units are overwritten after each step (see Clamp). `product(h, W_hh, out)`
    writes h W_hh^T into out in place of the default (model/batch.py's for a few rows).
    take_xa: xa is the caller's to give away, so a one-row loop may overwrite it (see below)."""
    T, N, GH = xa.shape
    H = W_hh.shape[1]
    dtype = xa.dtype
    keep_ha = cell.separate_recurrent_grad
    if b_hh is not None and not keep_ha:
        xa = xa + b_hh                         # one pass for the sequence instead of one per step
        b_hh = None
        take_xa = True
    if N == 1 and cell.has_rows_form and b_hh is None:
        # One row: the cell's own loop of fewer, fused NumPy calls (LSTMCell.row_step), equal
        # bit for bit. `product` only chooses how rows share a matrix; one row shares nothing.
        # An xa given away becomes the activations in place: a (T, 4H) array fewer, whose
        # fresh pages alone cost ~3 ms per 1,000 characters on this project's VMs.
        with np.errstate(over="ignore"), step_threads_for(N, GH, H):
            acts, stash, hs, cs = cell.forward_rows(xa, W_hh, h0, c0, clamp, in_place=take_xa)
        return LayerCache(xa=None if take_xa else xa, ha=None, acts=acts, stash=stash, hs=hs, cs=cs)
    cache = LayerCache(
        xa=xa,
        ha=np.empty_like(xa) if keep_ha else None,
        acts=np.empty((T, N, len(cell.gate_names) * H), dtype),
        stash=np.empty((T, N, cell.num_stashed * H), dtype) if cell.num_stashed else None,
        hs=np.empty((T + 1, N, H), dtype),
        cs=np.empty((T + 1, N, H), dtype) if cell.has_cell_state else None,
    )
    hs, cs, acts, stash = cache.hs, cache.cs, cache.acts, cache.stash
    hs[0] = h0
    if cs is not None:
        cs[0] = c0
    # A contiguous copy of W_hh^T, made per call so it always matches the weights: on an
    # AVX-512 Xeon's OpenBLAS h W_hh^T ran 1.6x faster from it than from the transposed view
    # (on the EPYC, equal at one thread), and copying 4H x H floats per sequence costs ~0.1 ms.
    # One row takes dot_layout's faster gemv, which W_hh.T already is.
    W_hhT = W_hh.T if N == 1 else np.ascontiguousarray(W_hh.T)
    scratch = None if keep_ha else np.empty((N, GH), dtype)
    with np.errstate(over="ignore"), step_threads_for(N, GH, H):     # see cells.sigmoid
        for t in range(T):
            ha = scratch if scratch is not None else cache.ha[t]
            if product is None:
                np.matmul(hs[t], W_hhT, out=ha)
            else:
                product(hs[t], W_hh, ha)
            if b_hh is not None:
                ha += b_hh
            c_prev, c = (None, None) if cs is None else (cs[t], cs[t + 1])
            cell.forward_step(xa[t], ha, hs[t], c_prev, acts[t], None if stash is None else stash[t], hs[t + 1], c)
            if clamp is not None:
                clamp.apply(hs[t + 1], c)
    return cache


@dataclass
class LayerGrads:
    dxa: np.ndarray           # (T, N, G*H) dL/dxa, from which dW_ih, db_ih and dx follow
    dW_hh: np.ndarray         # (G*H, H)
    db_hh: np.ndarray         # (G*H,)
    dh: np.ndarray            # (T+1, N, H) total dL/dh_t for t = 0..T (index 0: the carried state)
    dc: np.ndarray | None     # (T+1, N, H) total dL/dc_t


def recurrent_backward(cell: Cell, cache: LayerCache, dh_out: np.ndarray, W_hh: np.ndarray,
                       dh_last: np.ndarray | None = None, dc_last: np.ndarray | None = None,
                       product: Product | None = None) -> LayerGrads:
    """BPTT through one layer. `product(dha, W_hh^T, out)` replaces dha W_hh, as in recurrent_forward.

    dh_out: (T, N, H) gradient reaching each output h_t from above (decoder or next layer).
    dh_last, dc_last: (N, H) gradient on the final state carried back from a later segment.
    The returned dh[t] and dc[t] are total derivatives of the loss through every path.
    """
    T, N, H = dh_out.shape
    dxa = np.empty((T, N, W_hh.shape[0]), cache.hs.dtype)
    dha = np.empty_like(dxa) if cell.separate_recurrent_grad else dxa
    dh = np.empty((T + 1, N, H), dh_out.dtype)
    dc = np.empty_like(dh) if cell.has_cell_state else None
    work = np.empty_like(dxa[0])
    # dh[t+1] collects dL/dh_t: first through W_hh from step t+1 (written by that step's
    # matmul), then from above; dc[t+1] likewise, the cell adding its own part in place.
    if dh_last is None:
        dh[T] = 0.0
    else:
        dh[T] = dh_last
    if dc is not None:
        if dc_last is None:
            dc[T] = 0.0
        else:
            dc[T] = dc_last
    GH = dxa.shape[-1]
    with step_threads_for(N, GH, H):
        for t in reversed(range(T)):
            dh_t = dh[t + 1]
            dh_t += dh_out[t]
            direct = cell.backward_step(dh_t, cache.step(t), dxa[t], dha[t],
                                        None if dc is None else dc[t + 1], None if dc is None else dc[t], work)
            if product is None:
                np.matmul(dha[t], W_hh, out=dh[t])
            else:
                product(dha[t], W_hh.T, dh[t])
            if direct is not None:
                dh[t] += direct
    dha_flat = dha.reshape(T * N, GH)
    return LayerGrads(
        dxa=dxa,
        dW_hh=dha_flat.T @ cache.hs[:-1].reshape(T * N, H),
        db_hh=dha_flat.sum(axis=0),
        dh=dh,
        dc=dc,
    )


def onehot_forward(ids: np.ndarray, W_ih: np.ndarray, b_ih: np.ndarray) -> np.ndarray:
    """One-hot input times W_ih^T is a row lookup: ids (T, N) -> (T, N, G*H). Gathering
    contiguous rows of the (V, G*H) table W_ih^T + b_ih also saves a separate bias pass."""
    return np.take(W_ih.T + b_ih, ids, axis=0)


def onehot_backward(ids: np.ndarray, dxa: np.ndarray, V: int) -> np.ndarray:
    """dW_ih (G*H, V) for a one-hot input: scatter-add each step's dxa into its column."""
    # The transpose of a row lookup is a product with the one-hot matrix; one GEMM
    # beats np.add.at's scatter-add about five times over at training sizes.
    GH = dxa.shape[-1]
    flat_ids = ids.ravel()
    onehot = np.zeros((flat_ids.size, V), dxa.dtype)               # (T*N, V)
    onehot[np.arange(flat_ids.size), flat_ids] = 1.0
    return dxa.reshape(-1, GH).T @ onehot                           # (G*H, V)


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (..., D) @ W^T (D, K) + b -> (..., K), as one 2-D GEMM (a 3-D matmul loops over T)."""
    y = x.reshape(-1, x.shape[-1]) @ W.T
    y += b
    return y.reshape(*x.shape[:-1], W.shape[0])


def dense_backward(x: np.ndarray, dy: np.ndarray, W: np.ndarray, need_dx: bool = True):
    """Gradients of y = x W^T + b: returns (dx or None, dW, db)."""
    D, K = x.shape[-1], dy.shape[-1]
    x2, dy2 = x.reshape(-1, D), dy.reshape(-1, K)
    dx = (dy2 @ W).reshape(x.shape) if need_dx else None
    return dx, dy2.T @ x2, dy2.sum(axis=0)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray, need_grad: bool = True):
    """Mean of -ln p(target) over every position. logits (..., V), targets (...).

    Returns (loss, dlogits or None, per-position losses (...)).
    """
    V = logits.shape[-1]
    logp = log_softmax(logits.reshape(-1, V))
    flat_targets = targets.ravel()
    rows = np.arange(flat_targets.size)
    losses = -logp[rows, flat_targets]
    loss = float(losses.mean())
    dlogits = None
    if need_grad:
        dlogits = np.exp(logp)
        dlogits[rows, flat_targets] -= 1.0
        dlogits /= flat_targets.size
        dlogits = dlogits.reshape(logits.shape)
    return loss, dlogits, losses.reshape(targets.shape)
