"""The guided path /learn: the RNN lecture told with live models. One page, and one JSON call
per chapter's figure under /api/learn; the maths is model.lecture's.

Every input is a bounded number or a choice from a list (a passage, not free text), so a
request the schema allows is one every model can answer."""
from __future__ import annotations

import math
import time
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from rnnscope.model import lecture
from rnnscope.model.sample import sample

from ..deps import ComputeSlots, ModelDep, RegistryDep, RenderedInThread, SettingsDep
from ..errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid
from ..registry import block_names
from ..schemas import StrictBody
from . import pages
from .analysis import norms

router = APIRouter(route_class=RenderedInThread)
api = APIRouter(prefix="/api/learn", tags=["learn"], responses=BAD_BODY | TOO_LARGE,
                route_class=RenderedInThread)

# Query parameters the page keeps in its URL (all chapters' settings); learn.js validates them.
STATE = ("chapter", "seed", "t", "steps", "w", "h0", "mode", "iters", "model", "passage", "position", "scale",
         "span", "layer", "clip", "lr")

Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="Training seed: another seed, another network.")]
Passage = Annotated[int, Field(ge=0, le=len(pages.PASSAGES) - 1,
                               description="Which built-in passage to read: " + "; ".join(
                                   f"{k}: {title}" for k, (title, _) in enumerate(pages.PASSAGES)))]
Position = Annotated[int | None, Field(None, ge=0, le=10_000, description=(
    "Which prediction to differentiate: L = -ln p(text[position+1] | text[..position]); default, or past "
    "the passage's end, its last."))]


def passage_for(vocab, passage: int) -> tuple[str, list[str]]:
    """A built-in passage without the characters the model does not know, and those characters."""
    text = pages.PASSAGES[passage][1]
    unknown = vocab.unknown(text)
    if unknown:
        text = text.translate(dict.fromkeys(map(ord, unknown)))
    if len(text) < 2:
        raise invalid(("body", "passage"), "this model knows too few of the passage's characters to read it; "
                      "choose another passage or model", "too_short")
    return text, unknown


def clamp_position(position: int | None, text: str) -> int:
    last = len(text) - 2
    return last if position is None else min(position, last)


# ---- 1. "hello" ------------------------------------------------------------------------------

class HelloRequest(StrictBody):
    seed: Seed = 0
    sample_length: int = Field(40, ge=0, le=200, description="Characters to sample from the trained network.")
    temperature: float = Field(1.0, ge=0.0, le=3.0, allow_inf_nan=False,
                               description="Sampling temperature; below 0.001 always the likeliest.")
    sample_seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the sampler's draws.")


class HelloStep(BaseModel):
    t: int
    input: str = Field(description="The character read at this step.")
    target: str = Field(description="The next character, which the network should predict.")
    x: list[float] = Field(description="One-hot input, in vocabulary order.")
    h_prev: list[float] = Field(description="h_{t-1}.")
    h: list[float] = Field(description="h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h).")
    y: list[float] = Field(description="Scores y_t = W_hy h_t + b_y.")
    p: list[float] = Field(description="softmax(y_t).")
    predicted: str = Field(description="The likeliest next character.")
    loss: float = Field(description="-ln p_t[target] in nats.")


class HelloResponse(BaseModel):
    text: str
    vocab: list[str]
    hidden_size: int
    seed: int
    train_steps: int
    train_ms: float = Field(description="Wall-clock training time on the server.")
    loss_history: list[float] = Field(description="Training loss per Adam step, nats/char.")
    weights: dict[str, list] = Field(description="W_xh (H, V), W_hh (H, H), b_h (H), W_hy (V, H), b_y (V).")
    steps: list[HelloStep]
    mean_loss: float
    sample: str = Field(description="Characters sampled after the prime 'h'.")


@api.post("/hello", response_model=HelloResponse)
def hello(req: HelloRequest, slots: ComputeSlots) -> HelloResponse:
    """Chapter 1: a 3-unit vanilla RNN trained on "hello" now, unrolled over its four steps, and a sample."""
    with slots:
        start = time.perf_counter()
        result = lecture.train_hello(req.seed)
        ms = (time.perf_counter() - start) * 1000
        m = result.model
        u = lecture.unroll(m, lecture.HELLO)
        text, _ = sample(m, "h", req.sample_length, req.temperature, seed=req.sample_seed)
    chars = m.vocab.chars
    steps = [HelloStep(t=t, input=lecture.HELLO[t], target=lecture.HELLO[t + 1], x=u.x[t].tolist(),
                       h_prev=u.h_prev[t].tolist(), h=u.h[t].tolist(), y=u.y[t].tolist(), p=u.p[t].tolist(),
                       predicted=chars[int(u.p[t].argmax())], loss=float(u.loss[t]))
             for t in range(len(u.loss))]
    return HelloResponse(text=lecture.HELLO, vocab=chars, hidden_size=lecture.HELLO_HIDDEN, seed=req.seed,
                         train_steps=len(result.history.loss), train_ms=round(ms, 2),
                         loss_history=result.history.loss,
                         weights={k: v.tolist() for k, v in lecture.hello_weights(m).items()},
                         steps=steps, mean_loss=float(u.loss.mean()), sample="h" + text)


# ---- 2. One step, many steps ---------------------------------------------------------------------

class UnrollRequest(StrictBody):
    seed: Seed = 0
    steps: int = Field(20, ge=2, le=60, description="How many steps to unroll.")


class UnrollResponse(BaseModel):
    vocab: list[str]
    continuation: str = Field(description="What every run reads after its first character.")
    first: list[str] = Field(description="The first character of each run, one run per vocabulary character.")
    h: list[list[list[float]]] = Field(description="Per run, per step, the 3 hidden units.")
    distance: list[list[float]] = Field(description="Per run, per step t: ||h_t(run) - h_t(the run that "
                                                    "began with 'h')||.")


@api.post("/unroll", response_model=UnrollResponse)
def unroll(req: UnrollRequest, slots: ComputeSlots) -> UnrollResponse:
    """Chapter 2: the "hello" network unrolled; how a different first input still moves h_t, then fades."""
    continuation = "ello"
    with slots:
        m = lecture.train_hello(req.seed).model
        first, hs, dist = lecture.first_input_effect(m, continuation, req.steps)
    base = first.index("h")
    rest = (continuation * req.steps)[: req.steps - 1]
    return UnrollResponse(vocab=m.vocab.chars, continuation=rest, first=first, h=hs.tolist(),
                          distance=dist[base].tolist())


# ---- 3. Going forwards -----------------------------------------------------------------------

Entry = Annotated[float, Field(ge=-3.0, le=3.0, allow_inf_nan=False)]
Start = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class PowerRequest(StrictBody):
    w11: Entry = 1.0
    w12: Entry = 0.5
    w21: Entry = 0.2
    w22: Entry = 0.8
    x0: Start = Field(-0.5, description="h_0's first coordinate.")
    y0: Start = Field(1.0, description="h_0's second coordinate.")
    steps: int = Field(12, ge=1, le=100, description="Iterations.")
    mode: Literal["normalise", "tanh"] = Field(
        "normalise",
        description="normalise: h <- W_r h / ||W_r h|| (power iteration); tanh: h <- tanh(W_r h).")


class Eigen(BaseModel):
    value: list[float] = Field(description="[real, imaginary].")
    vector: list[float] | None = Field(description="Unit eigenvector when real; null for a complex pair.")


class PowerResponse(BaseModel):
    mode: str
    trajectory: list[list[float]] = Field(description="h_0, h_1, ..., h_steps.")
    eigen: list[Eigen] = Field(description="Largest |eigenvalue| first.")
    leading: list[float] | None = Field(description="The eigenvector power iteration turns towards: the real "
                                                    "eigenvalue strictly largest in modulus; null if none.")
    alignment: list[float | None] = Field(
        description="Per step |cos| of the angle between h_k and `leading`.")
    spectral_radius: float


@api.post("/power", response_model=PowerResponse)
def power(req: PowerRequest, slots: ComputeSlots) -> PowerResponse:
    """Chapter 3: iterate h <- W_r h (normalised, or through tanh) from h_0, with W_r's eigenvectors."""
    W = np.array([[req.w11, req.w12], [req.w21, req.w22]])
    with slots:
        r = lecture.power_iteration(W, np.array([req.x0, req.y0]), req.steps, req.mode)
    eigen = [Eigen(value=[float(v.real), float(v.imag)],
                   vector=(vec.real / np.linalg.norm(vec.real)).tolist() if abs(v.imag) < 1e-12 else None)
             for v, vec in zip(r.eigenvalues, r.eigenvectors.T)]
    return PowerResponse(mode=req.mode, trajectory=r.trajectory.tolist(), eigen=eigen,
                         leading=None if r.leading is None else r.leading.tolist(),
                         alignment=[None if not math.isfinite(a) else float(a) for a in r.alignment],
                         spectral_radius=float(np.abs(r.eigenvalues).max()))


# ---- 4. Going backwards ---------------------------------------------------------------------

class BackwardRequest(StrictBody):
    passage: Passage = 0
    position: Position = Field(None, description=(
        "Which prediction to differentiate: L = -ln p(text[position+1] | text[..position]); default, or past "
        "the passage's end, its last; never past max_gradient_chars - 1 (RNNSCOPE_MAX_GRADIENT_CHARS)."))
    scale: float = Field(1.0, ge=0.25, le=2.0, allow_inf_nan=False,
                         description="Multiply every layer's W_hh by this before backpropagating.")


class BlockSpectrum(BaseModel):
    block: str
    spectral_radius: float = Field(description="Largest |eigenvalue| of the scaled H x H block.")
    sigma_max: float = Field(description="Largest singular value of the scaled block.")


class BackwardLayer(BaseModel):
    layer: int
    h_grad_norm: list[float | None] = Field(description="||dL/dh_k|| for k = 0..position, as POST "
                                                        "/api/models/{model_id}/gradients computes it.")
    blocks: list[BlockSpectrum]


class BackwardResponse(BaseModel):
    text: str = Field(description="The passage as read (without characters the model does not know).")
    position: int
    target: str
    loss: float
    scale: float
    layers: list[BackwardLayer]
    dropped: list[str]


@api.post("/backward/{model_id}", response_model=BackwardResponse, responses=NOT_FOUND)
def backward(req: BackwardRequest, entry: ModelDep, settings: SettingsDep,
             slots: ComputeSlots) -> BackwardResponse:
    """Chapter 4: ||dL/dh_k|| through time with W_hh scaled; at scale 1 the gradients route's."""
    m = entry.model
    text, dropped = passage_for(m.vocab, req.passage)
    # BPTT reads position + 1 characters, at most max_gradient_chars, as on the gradients route.
    position = min(clamp_position(req.position, text), settings.max_gradient_chars - 1)
    with slots:
        g, spectra = lecture.backward_through_time(m, text[:position + 2], position, req.scale)
    names = block_names(m)
    layers = [BackwardLayer(layer=l, h_grad_norm=norms(g.h_grad_norm[l]),
                            blocks=[BlockSpectrum(block=b, spectral_radius=rho, sigma_max=s)
                                    for b, (rho, s) in zip(names, spectra[l])])
              for l in range(m.config.num_layers)]
    return BackwardResponse(text=text, position=position, target=text[position + 1],
                            loss=g.loss if math.isfinite(g.loss) else -1.0, scale=req.scale, layers=layers,
                            dropped=dropped)


# ---- 5. Clipping ----------------------------------------------------------------------------

CLIP_HIDDEN, CLIP_SEQ = 64, 25     # small enough for two runs of 600 steps in under a second


class ClippingRequest(StrictBody):
    passage: Passage = 0
    learning_rate: float = Field(1.0, ge=0.05, le=2.0, allow_inf_nan=False, description="SGD step size.")
    clip: float = Field(1.0, ge=0.25, le=10.0, allow_inf_nan=False,
                        description="The clipped run's global-norm threshold; the other run never clips.")
    steps: int = Field(400, ge=10, le=600, description="SGD steps of each run.")
    seed: Seed = 0


class ClipRunOut(BaseModel):
    clip: float = Field(description="The threshold; 0 for the run without clipping.")
    loss: list[float] = Field(description="Training loss per step, nats/char.")
    grad_norm: list[float] = Field(description="Global gradient norm per step, before clipping.")
    clipped: list[bool]
    diverged: str | None = Field(description="Why the run stopped early, if it did.")


class ClippingResponse(BaseModel):
    chars: int = Field(description="Characters of the passage the runs train on.")
    hidden_size: int
    seq_length: int
    runs: list[ClipRunOut] = Field(description="Without clipping, then with it: same seed, same batches.")


@api.post("/clipping", response_model=ClippingResponse)
def clipping(req: ClippingRequest, slots: ComputeSlots) -> ClippingResponse:
    """Chapter 5: a small RNN trained by SGD twice, without and with gradient clipping."""
    text = pages.PASSAGES[req.passage][1]
    runs = []
    with slots:
        for clip in (0.0, req.clip):
            r = lecture.sgd_clipping_run(text, CLIP_HIDDEN, req.steps, req.learning_rate, clip, req.seed,
                                         CLIP_SEQ)
            runs.append(ClipRunOut(clip=clip, loss=r.loss, grad_norm=r.grad_norm, clipped=r.clipped,
                                   diverged=r.diverged))
    return ClippingResponse(chars=len(text), hidden_size=CLIP_HIDDEN, seq_length=CLIP_SEQ, runs=runs)


# ---- 6. The highways --------------------------------------------------------------------------

# What each cell carries back along its direct path: the model ids the chapter reads (the
# bundled ones), the quantity and how the page names it.
HIGHWAYS = (("rnn", "h", "∂h_t/∂h_k, the vanilla RNN: diag(1 − h_j²) W_hh per step"),
            ("lstm", "f", "∂c_t/∂c_k along the cell state, the LSTM: the product of forget gates f_j"),
            ("gru", "z", "the GRU's direct path from h_k to h_t: the product of update gates z_j"))


class HighwayRequest(StrictBody):
    passage: Passage = 0
    position: Position = None
    span: int = Field(60, ge=1, le=150, description="How many steps back from the position.")
    layer: Literal["bottom", "top"] = Field("top", description="Which layer of each model.")


class HighwayCurve(BaseModel):
    model: str
    cell: str
    layer: int
    label: str
    rms: list[float | None] = Field(description=(
        "For k = position, position - 1, ...: the root-mean-square gain ||J||_F / sqrt(H) of the path from "
        "step k on (for the RNN estimated from 256 random directions past 256 units)."))
    top: list[float | None] | None = Field(description="For the gated paths, the largest unit's product.")


class HighwayResponse(BaseModel):
    text: str
    position: int
    ks: list[int] = Field(description="The steps k the curves are given for, the position first.")
    curves: list[HighwayCurve] = Field(description="One per model present among rnn, lstm, gru.")


@api.post("/highway", response_model=HighwayResponse)
def highway(req: HighwayRequest, registry: RegistryDep, slots: ComputeSlots) -> HighwayResponse:
    """Chapter 6: the LSTM's product of forget gates (the GRU's update gates) beside the RNN's dh_t/dh_k."""
    present = [(mid, q, label) for mid, q, label in HIGHWAYS if mid in registry.ids()]
    # The text is the passage less every character one of the models lacks, so all read the same.
    text = pages.PASSAGES[req.passage][1]
    models = {mid: registry.get(mid).model for mid, _, _ in present}
    for m in models.values():
        text = text.translate(dict.fromkeys(map(ord, m.vocab.unknown(text))))
    if len(text) < 2:
        raise invalid(("body", "passage"), "the models share too few of this passage's characters; choose "
                      "another passage", "too_short")
    position = clamp_position(req.position, text)
    curves = []
    with slots:
        for mid, q, label in present:
            m = models[mid]
            if m.cell.name != {"h": "rnn", "f": "lstm", "z": "gru"}[q]:
                continue                        # an id that names another kind of model
            layer = 0 if req.layer == "bottom" else m.config.num_layers - 1
            acts = lecture.gates_of(m, text[:position + 1], layer, q)
            if q == "h":
                W_hh = m.params[f"rnn.weight_hh_l{layer}"]
                rms, top = lecture.rnn_jacobian_gain(W_hh, acts, position, req.span), None
            else:
                rms, top = lecture.gate_product(acts, position, req.span)
            curves.append(HighwayCurve(model=mid, cell=m.cell.name, layer=layer, label=label,
                                       rms=norms(rms), top=None if top is None else norms(top)))
    ks = list(range(position, max(0, position - req.span) - 1, -1))
    return HighwayResponse(text=text, position=position, ks=ks, curves=curves)


router.include_router(api)


@router.get("/learn", response_class=HTMLResponse, include_in_schema=False)
def learn_page(request: Request):
    """The guided path: the RNN lecture's chapters, each with its live figure."""
    return pages.render(request, "learn", STATE, passages=pages.PASSAGES)
