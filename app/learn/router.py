"""The guided path /learn: the RNN lecture told with live models. One page, and one JSON call
per chapter's figure under /api/learn; the maths is model.lecture's.

Every input is a bounded number or a choice from a list (a passage, not free text), so a
request the schema allows is one every model can answer."""
from __future__ import annotations

import math
import time

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from rnnscope.model import lecture
from rnnscope.model.sample import sample

from ..inference.compute import norms
from ..inference.costs import LECTURE_SECONDS, expected_seconds
from ..inference.deps import ComputeSlots, ModelDep, RegistryDep, RenderedInThread, SettingsDep
from ..inference.registry import block_names
from ..web import pages
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid
from .schemas import (CLIP_HIDDEN, CLIP_SEQ, HIGHWAYS, BackwardLayer, BackwardRequest, BackwardResponse,
                      BlockSpectrum, ClipRunOut, ClippingRequest, ClippingResponse, Eigen, HelloRequest,
                      HelloResponse, HelloStep, HighwayCurve, HighwayRequest, HighwayResponse, PowerRequest,
                      PowerResponse, UnrollRequest, UnrollResponse)

page_router = APIRouter(route_class=RenderedInThread)


router = APIRouter(prefix="/api/learn", tags=["learn"], responses=BAD_BODY | TOO_LARGE,
                   route_class=RenderedInThread)


# Query parameters the page keeps in its URL (all chapters' settings); learn.js validates them.
STATE = ("chapter", "seed", "t", "steps", "w", "h0", "mode", "iters", "model", "passage", "position", "scale",
         "span", "layer", "clip", "lr")


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


@router.post("/hello", response_model=HelloResponse)
def hello(req: HelloRequest, slots: ComputeSlots) -> HelloResponse:
    """Chapter 1: a 3-unit vanilla RNN trained on "hello" now, unrolled over its four steps, and a sample."""
    with slots.expect(LECTURE_SECONDS["hello"]):
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


@router.post("/unroll", response_model=UnrollResponse)
def unroll(req: UnrollRequest, slots: ComputeSlots) -> UnrollResponse:
    """Chapter 2: the "hello" network unrolled; how a different first input still moves h_t, then fades."""
    continuation = "ello"
    with slots.expect(LECTURE_SECONDS["unroll"]):
        m = lecture.train_hello(req.seed).model
        first, hs, dist = lecture.first_input_effect(m, continuation, req.steps)
    base = first.index("h")
    rest = (continuation * req.steps)[: req.steps - 1]
    return UnrollResponse(vocab=m.vocab.chars, continuation=rest, first=first, h=hs.tolist(),
                          distance=dist[base].tolist())


@router.post("/power", response_model=PowerResponse)
def power(req: PowerRequest, slots: ComputeSlots) -> PowerResponse:
    """Chapter 3: iterate h <- W_r h (normalised, or through tanh) from h_0, with W_r's eigenvectors."""
    W = np.array([[req.w11, req.w12], [req.w21, req.w22]])
    with slots.expect(LECTURE_SECONDS["power"]):
        r = lecture.power_iteration(W, np.array([req.x0, req.y0]), req.steps, req.mode)
    eigen = [Eigen(value=[float(v.real), float(v.imag)],
                   vector=(vec.real / np.linalg.norm(vec.real)).tolist() if abs(v.imag) < 1e-12 else None)
             for v, vec in zip(r.eigenvalues, r.eigenvectors.T)]
    return PowerResponse(mode=req.mode, trajectory=r.trajectory.tolist(), eigen=eigen,
                         leading=None if r.leading is None else r.leading.tolist(),
                         alignment=[None if not math.isfinite(a) else float(a) for a in r.alignment],
                         spectral_radius=float(np.abs(r.eigenvalues).max()))


@router.post("/backward/{model_id}", response_model=BackwardResponse, responses=NOT_FOUND)
def backward(req: BackwardRequest, entry: ModelDep, settings: SettingsDep,
             slots: ComputeSlots) -> BackwardResponse:
    """Chapter 4: ||dL/dh_k|| through time with W_hh scaled; at scale 1 the gradients route's."""
    m = entry.model
    text, dropped = passage_for(m.vocab, req.passage)
    # BPTT reads position + 1 characters, at most max_gradient_chars, as on the gradients route.
    position = min(clamp_position(req.position, text), settings.max_gradient_chars - 1)
    with slots.expect(expected_seconds(m.config, gradients=position + 1)):
        g, spectra = lecture.backward_through_time(m, text[:position + 2], position, req.scale)
    names = block_names(m)
    layers = [BackwardLayer(layer=l, h_grad_norm=norms(g.h_grad_norm[l]),
                            blocks=[BlockSpectrum(block=b, spectral_radius=rho, sigma_max=s)
                                    for b, (rho, s) in zip(names, spectra[l])])
              for l in range(m.config.num_layers)]
    return BackwardResponse(text=text, position=position, target=text[position + 1],
                            loss=g.loss if math.isfinite(g.loss) else -1.0, scale=req.scale, layers=layers,
                            dropped=dropped)


@router.post("/clipping", response_model=ClippingResponse)
def clipping(req: ClippingRequest, slots: ComputeSlots) -> ClippingResponse:
    """Chapter 5: a small RNN trained by SGD twice, without and with gradient clipping."""
    text = pages.PASSAGES[req.passage][1]
    runs = []
    with slots.expect(2 * req.steps * LECTURE_SECONDS["clipping_step"]):
        for clip in (0.0, req.clip):
            r = lecture.sgd_clipping_run(text, CLIP_HIDDEN, req.steps, req.learning_rate, clip, req.seed,
                                         CLIP_SEQ)
            runs.append(ClipRunOut(clip=clip, loss=r.loss, grad_norm=r.grad_norm, clipped=r.clipped,
                                   diverged=r.diverged))
    return ClippingResponse(chars=len(text), hidden_size=CLIP_HIDDEN, seq_length=CLIP_SEQ, runs=runs)


@router.post("/highway", response_model=HighwayResponse)
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
    with slots.expect(sum(expected_seconds(m.config, trace=position + 1) for m in models.values())):
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


@page_router.get("/learn", response_class=HTMLResponse, include_in_schema=False)
def learn_page(request: Request):
    """The guided path: the RNN lecture's chapters, each with its live figure."""
    return pages.render(request, "learn", STATE, passages=pages.PASSAGES)
