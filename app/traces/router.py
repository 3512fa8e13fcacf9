"""Looking inside a model while it reads a text: the trace of its internals, gradients
through time, gate saturation."""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from rnnscope.model.analysis import gate_saturation, gradient_through_time

from ..inference.batching import BatchersDep, GradientWork, TraceWork, trace_alone
from ..inference.checks import chosen, prediction, readable_text
from ..inference.compute import SENT_BYTES, norms, reading_bytes, rounded
from ..inference.costs import expected_seconds
from ..inference.corpus_index import CorpusLibrary
from ..inference.deps import ComputeSlots, LibraryDep, ModelDep, RegistryDep, RenderedInThread, SettingsDep
from ..inference.registry import ModelRegistry, block_names
from ..inference.schemas import Predictions
from ..inference.worker_pool import run_pure
from ..models.router import get_model, own_passages
from ..web.auth import RequesterDep
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid
from ..web.pages import render
from ..web.security import Requester
from .schemas import (GateSaturation, GatesLayer, GatesRequest, GatesResponse, GradientLayer, GradientsRequest,
                      GradientsResponse, Spectrum, TraceLayer, TraceRequest, TraceResponse)

router = APIRouter(prefix="/api/models/{model_id}", tags=["analysis"],
                   responses=BAD_BODY | NOT_FOUND | TOO_LARGE, route_class=RenderedInThread)
page_router = APIRouter(tags=["pages"])


@router.post("/trace", response_model=TraceResponse)
def trace(req: TraceRequest, entry: ModelDep, settings: SettingsDep, batchers: BatchersDep) -> TraceResponse:
    """Read a text: per character the loss, the top-k next-character predictions, and the
    chosen internals of the chosen layers as T x H arrays."""
    m, L = entry.model, entry.model.config.num_layers
    text, dropped = readable_text(req, m.vocab, settings)
    layers = chosen(req.layers, list(range(L)), "layers", f"this {L}-layer model")
    quantities = chosen(req.quantities, list(m.cell.quantities), "quantities", f"a {m.cell.name}")
    if req.top_k > settings.max_top_k:
        raise invalid(("body", "top_k"), f"top_k must be at most {settings.max_top_k} "
                      "(setting RNNSCOPE_MAX_TOP_K)", "less_than_equal", le=settings.max_top_k)
    size = len(text) * m.config.hidden_size * len(layers) * len(quantities) * SENT_BYTES[req.encoding]
    if size > settings.max_trace_bytes:
        raise HTTPException(413, f"the trace's arrays would be {size:,.0f} bytes; the limit is "
                                 f"{settings.max_trace_bytes:,} (setting RNNSCOPE_MAX_TRACE_BYTES): ask for "
                                 "fewer layers or quantities, a shorter text, or int8")
    ids, wanted = m.encode(text), [(l, q) for l in layers for q in quantities]
    work = TraceWork(ids, wanted, req.top_k, req.encoding)

    # Read alone, or in a pass shared with concurrent traces of this model, and encoded where
    # it was read, holding the memory budget's bytes for the float32 reading, its encoding and the JSON.
    peak = reading_bytes(m.config, len(text), len(wanted) * m.config.hidden_size + 2 * req.top_k + 1) + 2 * size
    with batchers.gate.hold(int(peak), "this trace"):
        r, arrays = batchers.run(entry.id, "trace", m, work, size, lambda: trace_alone(m, work),
                                 expected_seconds(m.config, trace=len(text)))
    out = [TraceLayer(layer=l, quantities={q: arrays[(l, q)] for q in quantities}) for l in layers]
    top_chars = np.array(m.vocab.chars)[r.top_ids].tolist()
    # Built without validating: every list was just made here from arrays of the right types,
    # and checking them again (a 10,000-character trace has 50,000 predictions) held the GIL
    # for ~20 ms, as long as making them, while the server's other requests waited for it.
    return TraceResponse.model_construct(
        text=text, chars=list(text), loss=rounded(r.loss), mean_loss=float(r.loss.mean()) if r.loss.size else None,
        predictions=Predictions.model_construct(chars=top_chars, probs=rounded(r.top_probs)),
        layers=out, dropped=dropped)


@router.post("/gradients", response_model=GradientsResponse)
def gradients(req: GradientsRequest, entry: ModelDep, settings: SettingsDep,
              batchers: BatchersDep) -> GradientsResponse:
    """How one loss reaches back through time: ||dL/dh_k|| (and ||dL/dc_k||) for every
    earlier step k and layer, and the singular values of each layer's W_hh."""
    m = entry.model
    text, dropped, position = prediction(req, m.vocab, settings)
    # Alone, or in one BPTT pass shared with concurrent gradients of this model.
    g = batchers.run(entry.id, "gradients", m, GradientWork(m.encode(text[:position + 2]), position),
                     position + 1, lambda: gradient_through_time(m, text[:position + 2], position),
                     expected_seconds(m.config, gradients=position + 1))
    blocks = block_names(m)
    layers = [GradientLayer(layer=l, h_grad_norm=norms(g.h_grad_norm[l]),
                            c_grad_norm=None if g.c_grad_norm is None else norms(g.c_grad_norm[l]),
                            singular_values=[Spectrum(block=b, values=sv.tolist())
                                             for b, sv in zip(blocks, entry.singular_values[l])])
              for l in range(m.config.num_layers)]
    return GradientsResponse(position=position, target=text[position + 1], loss=g.loss, layers=layers,
                             dropped=dropped)


@router.post("/gates", response_model=GatesResponse)
def gates(req: GatesRequest, request: Request, entry: ModelDep, settings: SettingsDep,
          slots: ComputeSlots) -> GatesResponse:
    """Per layer, gate and unit: the fraction of steps left-saturated (< 0.1) and
    right-saturated (> 0.9) while reading the text."""
    m = entry.model
    text, dropped = readable_text(req, m.vocab, settings)
    with slots.expect(expected_seconds(m.config, gates=len(text))):
        sat = run_pure(request.app.state, gate_saturation, m, text)
    layers = [GatesLayer(layer=l, gates=[GateSaturation(gate=g, left=rounded(sat[l, g][0]),
                                                        right=rounded(sat[l, g][1]))
                                         for g in m.cell.gate_names])
              for l in range(m.config.num_layers)]
    return GatesResponse(steps=len(text), layers=layers, dropped=dropped)


@page_router.get("/explore", response_class=HTMLResponse, include_in_schema=False)
def explore_page(request: Request, registry: RegistryDep, requester: RequesterDep, library: LibraryDep):
    """Neuron explorer: text coloured by one neuron, and a heatmap of all of them."""
    try:
        hint = first_read(request, registry, requester, library)
    except Exception:               # only a head start: a model that fails to load says so to the script
        hint = None
    return render(request, "explore", first_read=hint)


def first_read(request: Request, registry: ModelRegistry, requester: Requester,
               library: CorpusLibrary) -> dict | None:
    """What /explore will read first when its link names no text: the model it opens on (the
    link's, else the first listed), that model's first passage (as GET .../passages gives it)
    and the layer and quantity it starts on (the top layer's h). The page asks for that trace
    as its script starts, before plotly.js runs, instead of after three requests that each wait
    for the browser's main thread (issue 19). None where it would take computing to know."""
    q = request.query_params
    if q.get("text"):
        return None
    if q.get("model"):
        # Only a model the registry holds: a snapshot id (run-7@1800) is made when first asked
        # for, which is the API's work, in the compute gate, not a page's.
        entry = next((e for e in registry if e.id == q["model"]), None)
        if entry is None:
            return None
    else:
        entries, _ = registry.listing(requester.owner, 1, 0)
        if not entries:
            return None
        entry = entries[0]
    passages = own_passages(entry, library)
    if passages is None:
        return None
    m = entry.model
    layer = int(q["layer"]) if q.get("layer", "").isdigit() and int(q["layer"]) < m.config.num_layers \
        else m.config.num_layers - 1
    quantities = list(m.cell.quantities)
    quantity = q.get("quantity") if q.get("quantity") in quantities else "h" if "h" in quantities else quantities[0]
    # The model's detail and passages too, as GET /api/models/{id} and .../passages answer: the
    # page needs them before it draws, and asking would wait for plotly.js to finish running.
    return {"model": entry.id, "text": passages.passages[0].text, "layer": layer, "quantity": quantity,
            "detail": get_model(entry, requester).model_dump(mode="json"),
            "passages": passages.model_dump(mode="json")}


@page_router.get("/gradients", response_class=HTMLResponse, include_in_schema=False)
def gradients_page(request: Request):
    """Gradient norms through time for every cell type, and W_hh's singular values."""
    return render(request, "gradients")


@page_router.get("/gates", response_class=HTMLResponse, include_in_schema=False)
def gates_page(request: Request):
    """Gate saturation scatter, as figure 3 of Karpathy, Johnson & Fei-Fei 2015."""
    return render(request, "gates")
