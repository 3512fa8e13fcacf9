"""Finding and explaining neurons: concept probes, top-activating contexts, clamping,
input saliency, the memory horizon, and verbatim memorisation of the training corpus."""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from rnnscope.model.attribution import intervention, memory_horizon, saliency
from rnnscope.model.data import split
from rnnscope.model.layers import Clamp
from rnnscope.model.lm import LanguageModel
from rnnscope.model.memorisation import merge_spans
from rnnscope.model.patterns import PatternError, PatternTooSlow
from rnnscope.model.probes import CONCEPTS, ranked_values, span_indicator, top_contexts, unit_values

from ..inference.checks import check_unit, prediction, readable_text
from ..inference.compute import encode_array, every_unit, norms, reading_bytes, rounded
from ..inference.costs import REQUEST_SECONDS, SUFFIX_INDEX_SECONDS, expected_seconds
from ..inference.corpus_index import training_corpus, val_fraction
from ..inference.deps import ComputeSlots, LibraryDep, ModelDep, RenderedInThread, SettingsDep
from ..inference.pattern_pool import PatternPool, PatternPoolDep
from ..inference.readings import ActivationsDep, on_reading
from ..inference.worker_pool import run_pure
from ..web import pages
from ..web.errors import BAD_BODY, NOT_FOUND, TOO_LARGE, invalid, vet_text
from .schemas import (ContextsRequest, ContextsResponse, HorizonLayer, HorizonRequest, HorizonResponse,
                      InterveneRequest, InterveneResponse, MemorisedPiece, MemorisedRequest, MemorisedResponse,
                      MemorisedSpan, ProbeRequest, ProbeResponse, RankedNeuron, SaliencyRequest,
                      SaliencyResponse, Snippet)

router = APIRouter(prefix="/api/models/{model_id}", tags=["neurons"], responses=BAD_BODY | NOT_FOUND | TOO_LARGE,
                   route_class=RenderedInThread)
page_router = APIRouter(tags=["pages"])


def user_pattern(regex: str, text: str, patterns: PatternPool) -> np.ndarray:
    """The one gate every user pattern passes (its length is the request's: max_regex_chars):
    RE2 (model/patterns.py), which refuses by name what would need backtracking, compiling
    and matching in a worker process (app/inference/pattern_pool.py) that is stopped past
    max_regex_seconds. 1 for each character of `text` inside a match."""
    try:
        spans = patterns.spans(regex, text)
    except PatternError as e:
        ctx = {"feature": e.feature} if e.feature else {}
        if isinstance(e, PatternTooSlow):
            ctx["max_seconds"] = patterns.max_seconds
        raise invalid(("body", "regex"), str(e), e.kind, **ctx) from None
    return span_indicator(len(text), spans)


@router.post("/probe", response_model=ProbeResponse)
def probe(req: ProbeRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
          cache: ActivationsDep, patterns: PatternPoolDep) -> ProbeResponse:
    """Rank every neuron of every layer and quantity by how well it tracks a concept over
    the text: AUC for binary concepts, correlation for graded ones, with the sign."""
    m = entry.model
    text, dropped = readable_text(req, m.vocab, settings, min_chars=2)
    # Before taking a compute slot: the pattern runs in another process, and a slow one
    # should not keep the NumPy work of others waiting.
    matched = None if req.regex is None else user_pattern(req.regex, text, patterns)
    # Every unit's values over the text (float32), and the ranking's copies of them.
    seconds = expected_seconds(m.config, **{"ranking" if cache.kept(entry, text) else "probe": len(text)})
    with slots.job(reading_bytes(m.config, len(text), 2 * every_unit(m.config)), "this probe", seconds):
        if matched is not None:
            name, description, graded = "regex", f"inside a match of /{req.regex}/", False
            indicator = matched
        else:
            concept = CONCEPTS[req.concept]
            name, description, graded = concept.name, concept.description, concept.graded
            indicator = concept.indicator(text)
        positives = int((indicator != 0).sum())
        if (not graded and positives in (0, len(text))) or (graded and np.ptp(indicator) == 0):
            holds = "everywhere" if positives == len(text) else "nowhere"
            raise invalid(("body", "text"), f"the concept ({description}) holds {holds} in this text, so no "
                          "neuron can be ranked against it; use a text where it holds for some characters only",
                          "concept_constant")
        acts = cache.reading(request.app.state, entry, text)
        result, columns = on_reading(request.app.state, ranked_values, m, acts, indicator, graded, req.top)
        del acts
    neurons = [RankedNeuron(layer=r.layer, quantity=r.quantity, unit=r.unit, score=r.score, strength=r.strength,
                            sign=r.sign, threshold=r.threshold, separation=r.separation, low=r.low, high=r.high)
               for r in result.ranked]
    return ProbeResponse(text=text, concept=name, description=description, graded=graded,
                         indicator=rounded(indicator, 3), positives=positives, units=result.total_units,
                         neurons=neurons, values=encode_array(columns, "float16"), dropped=dropped)


@router.post("/contexts", response_model=ContextsResponse)
def contexts(req: ContextsRequest, request: Request, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
             library: LibraryDep) -> ContextsResponse:
    """Where one neuron is most positive and most negative over a passage of the model's
    validation text (or the text sent), with the characters around each place."""
    m = entry.model
    check_unit(m, req.layer, req.quantity, req.unit)
    corpus = training_corpus(entry, library) if req.text is None else None
    if corpus is not None:
        _, val = split(library.text(corpus), val_fraction(m))
        passage = val[: settings.max_context_chars]
        passage, _ = vet_text(m.vocab, passage, True, len(passage), "max_context_chars")
        source = "validation"
    elif req.text is not None:
        passage, _ = vet_text(m.vocab, req.text, req.drop_unknown, settings.max_context_chars, "max_context_chars")
        source = "text"
    else:
        raise invalid(("body", "text"), "the model's training corpus is not available on this server, so "
                      "send a text to read instead", "corpus_unavailable")
    if not passage:
        raise invalid(("body", "text"), "nothing is left to read", "too_short")
    with slots.expect(expected_seconds(m.config, contexts=len(passage))):
        values = run_pure(request.app.state, unit_values, m, m.encode(passage), req.layer, req.quantity, req.unit)
    high_list, low_list = top_contexts(values, req.k, req.width)
    w = req.width

    def snippet(c) -> Snippet:
        a, b = max(0, c.position - w), min(len(passage), c.position + w + 1)
        return Snippet(position=c.position, value=c.value, before=passage[a:c.position], char=passage[c.position],
                       after=passage[c.position + 1:b], values=rounded(values[a:b], 4))

    low, high = np.percentile(values, [1, 99])
    return ContextsResponse(source=source, corpus=None if corpus is None else corpus.name, chars=len(passage),
                            low=float(low), high=float(high), positive=[snippet(c) for c in high_list],
                            negative=[snippet(c) for c in low_list])


def clamps(req: InterveneRequest, m: LanguageModel, limit: int) -> dict[int, Clamp]:
    cfg = m.config
    units: dict[int, dict[int, float]] = {}
    for i, spec in enumerate(req.clamp):
        check_unit(m, spec.layer, at=("body", "clamp", i))
        for j, u in enumerate(spec.units):
            if not 0 <= u < cfg.hidden_size:
                raise invalid(("body", "clamp", i, "units", j), f"unit {u} does not exist; layers have "
                              f"{cfg.hidden_size}", "less_than", lt=cfg.hidden_size)
            units.setdefault(spec.layer, {})[u] = spec.value          # a later entry wins
    total = sum(len(u) for u in units.values())
    if total > limit:
        raise invalid(("body", "clamp"), f"{total} units are clamped; the limit is {limit} "
                      "(setting RNNSCOPE_MAX_CLAMPED_UNITS)", "too_long")
    return {l: Clamp(np.array(list(u), np.int64), np.array(list(u.values()), m.dtype)) for l, u in units.items()}


@router.post("/intervene", response_model=InterveneResponse)
def intervene(req: InterveneRequest, request: Request, entry: ModelDep, settings: SettingsDep,
              slots: ComputeSlots) -> InterveneResponse:
    """Hold neurons at a value (0 ablates) after every step: the per-character loss over
    the text with and without, and a clamped sample beside the normal one, same seed."""
    m = entry.model
    text, dropped = readable_text(req, m.vocab, settings, min_chars=2)
    clamp = clamps(req, m, settings.max_clamped_units)
    prime, dropped_prime = vet_text(m.vocab, req.prime, req.drop_unknown, settings.max_prime_chars,
                                    "max_prime_chars", field="prime")
    ids = m.encode(text)
    with slots.expect(expected_seconds(m.config, intervene=len(text), sample=2 * (len(prime) + req.length))):
        base, clamped, normal_text, clamped_text = run_pure(request.app.state, intervention, m, ids, clamp, prime,
                                                            req.length, req.temperature, req.seed)
    if not np.isfinite(clamped).all():
        raise invalid(("body", "clamp"), "the clamped model's loss overflowed; clamp to a smaller value",
                      "overflow")
    return InterveneResponse(text=text, loss=rounded(base, 5), clamped_loss=rounded(clamped, 5),
                             mean_loss=float(base.mean()), mean_clamped_loss=float(clamped.mean()),
                             sample=normal_text, clamped_sample=clamped_text, seed=req.seed,
                             dropped=sorted(set(dropped) | set(dropped_prime)))


@router.post("/saliency", response_model=SaliencyResponse)
def input_saliency(req: SaliencyRequest, request: Request, entry: ModelDep, settings: SettingsDep,
                   slots: ComputeSlots) -> SaliencyResponse:
    """Which earlier characters one prediction depends on: ||dL/dx_k|| for every earlier
    one-hot input x_k, L = -ln p(text[position+1] | text[..position])."""
    m = entry.model
    text, dropped, position = prediction(req, m.vocab, settings)
    with slots.expect(expected_seconds(m.config, saliency=position + 1)):
        s = run_pure(request.app.state, saliency, m, text[:position + 2], position)
    return SaliencyResponse(position=position, target=text[position + 1], loss=s.loss,
                            saliency=norms(s.norms), dropped=dropped)


@router.post("/horizon", response_model=HorizonResponse)
def horizon(req: HorizonRequest, request: Request, entry: ModelDep, settings: SettingsDep,
            slots: ComputeSlots) -> HorizonResponse:
    """The memory horizon: per layer, the lag at which the gradient through time falls
    below a fraction (1 %) of its value at the position itself, averaged over positions."""
    m = entry.model
    text, dropped = readable_text(req, m.vocab, settings, min_chars=3)
    # Shortened like the window, not refused: window x positions is a budget, not a rule the
    # schema could state; the answer says what was used.
    positions = min(req.positions, len(text) - 2, settings.max_horizon_chars)
    window = min(req.window, len(text) - 2, settings.max_horizon_chars // positions)
    with slots.expect(expected_seconds(m.config, horizon=positions * window)):
        h = run_pure(request.app.state, memory_horizon, m, text, positions, window, req.fraction)
    layers = [HorizonLayer(layer=l, horizon=float(h.mean[l]), lags=h.lags[l].tolist(),
                           censored=int(h.censored[l].sum()), profile=norms(h.profile[l]))
              for l in range(m.config.num_layers)]
    return HorizonResponse(window=h.window, fraction=h.fraction, positions=h.positions,
                           horizon=float(h.mean.max()), layers=layers, dropped=dropped)


@router.post("/memorised", response_model=MemorisedResponse)
def memorised(req: MemorisedRequest, entry: ModelDep, settings: SettingsDep, slots: ComputeSlots,
              library: LibraryDep) -> MemorisedResponse:
    """Spans of a text (a sample) found verbatim in the model's training corpus, from a
    suffix-array index built once per corpus."""
    corpus = training_corpus(entry, library)
    if corpus is None:
        return MemorisedResponse(available=False, corpus=None, spans=[], count=0, memorised_chars=0)
    # Building the index takes ~1 s a megabyte of corpus, once; a lookup milliseconds.
    with slots.expect(REQUEST_SECONDS if library.indexed(corpus) else SUFFIX_INDEX_SECONDS):
        pieces = library.index(corpus).spans(req.text, req.min_length)
    joined = []
    for span in merge_spans(pieces):
        inside = [MemorisedPiece(start=p.start, end=p.end, corpus_position=p.corpus_position)
                  for p in pieces if span.start <= p.start and p.end <= span.end]
        joined.append(MemorisedSpan(start=span.start, end=span.end, corpus_position=span.corpus_position,
                                    pieces=inside))
    return MemorisedResponse(available=True, corpus=corpus.name, spans=joined, count=len(joined),
                             memorised_chars=sum(s.end - s.start for s in joined))


# Query parameters each page keeps in its URL, validated by the page's script.
STATE = {
    "probe": ("model", "concept", "regex", "text"),
    "compare": ("models", "text", "position"),
}


def render(request: Request, page: str) -> HTMLResponse:
    return pages.render(request, page, STATE[page], concepts=list(CONCEPTS.values()))


@page_router.get("/probe", response_class=HTMLResponse, include_in_schema=False)
def probe_page(request: Request):
    """Concept probes: which neurons track a concept, each shown over the text."""
    return render(request, "probe")


@page_router.get("/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(request: Request):
    """Models side by side on one text: loss, gradient through time, memory horizon, gates."""
    return render(request, "compare")
