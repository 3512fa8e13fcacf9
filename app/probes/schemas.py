"""Bodies of the neuron routes: probes, top contexts, clamping, saliency, the memory horizon, memorisation."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from rnnscope.model.probes import CONCEPTS

from ..inference.schemas import (TEMPERATURE, TEXT, TEXT_EXAMPLE, EncodedArray, Length, PredictionRequest,
                                 Prime, Text, TextRequest)
from ..web.schemas import StrictBody, limit

ConceptName = Literal[tuple(CONCEPTS)]  # type: ignore[valid-type]


class ProbeRequest(TextRequest):
    """A concept or a regex, exactly one."""

    text: Annotated[str, limit("max_text_chars", "max_probe_chars")] = Field(
        min_length=2, description="The text to read, at most max_probe_chars characters (RNNSCOPE_MAX_PROBE_CHARS) "
                                  "and max_text_chars (RNNSCOPE_MAX_TEXT_CHARS).", examples=[TEXT_EXAMPLE])
    concept: ConceptName | None = Field(
        None, description="A built-in concept: " + "; ".join(f"`{c.name}`: {c.description}"
                                                         for c in CONCEPTS.values()) + ".",
        examples=["quotes"])
    regex: Annotated[str, Field(min_length=1), limit("max_regex_chars")] | None = Field(
        None, description="Instead of a concept, a regular expression in Python's syntax: every character inside "
                          "a match is 1. It runs on RE2, in time linear in the text, so what needs backtracking "
                          "is refused (422, naming it): backreferences, look-ahead and look-behind, atomic groups, "
                          "possessive quantifiers, conditionals. \\w, \\d and \\s match as in Python; \\b sees ASCII "
                          "word characters only; $ without (?m) matches only at the very end. At most "
                          "max_regex_chars characters (RNNSCOPE_MAX_REGEX_CHARS).", examples=[r"[A-Z]+"])
    top: Annotated[int, limit("max_probe_top")] = Field(
        12, ge=1, description="Neurons to return, strongest first; at most max_probe_top (RNNSCOPE_MAX_PROBE_TOP).")

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in ("concept", "regex")]})

    @model_validator(mode="after")
    def exactly_one_concept(self) -> ProbeRequest:
        if (self.concept is None) == (self.regex is None):
            raise PydanticCustomError("missing_concept", "send exactly one of concept and regex")
        return self


class RankedNeuron(BaseModel):
    layer: int
    quantity: str = Field(description="h, c or a gate.")
    unit: int
    score: float = Field(description="AUC for a binary concept (0.5: no better than chance), Pearson r for a "
                                     "graded one.")
    strength: float = Field(description="What the ranking sorts by, in [0, 1]: |2 AUC - 1| or |r|.")
    sign: Literal[1, -1] = Field(description="+1: the neuron is higher where the concept holds; -1: lower.")
    threshold: float | None = Field(description="Binary concepts: the value that best separates the concept "
                                                "(Youden's J); the concept lies above it for sign +1, below for -1.")
    separation: float | None = Field(description="Youden's J = TPR - FPR at that threshold.")
    low: float = Field(description="The neuron's 1st percentile over the text: the bottom of its own scale.")
    high: float = Field(description="Its 99th percentile: the top of its own scale.")


class ProbeResponse(BaseModel):
    text: str
    concept: str = Field(description="The concept's name, or `regex`.")
    description: str
    graded: bool
    indicator: list[float] = Field(description="The concept's value at each character of the text.")
    positives: int = Field(description="Characters where the concept is non-zero.")
    units: int = Field(description="Neurons ranked: every unit of every layer and quantity.")
    neurons: list[RankedNeuron]
    values: EncodedArray = Field(description="T x K (float16): the returned neurons' values over the text, "
                                             "column k for neurons[k].")
    dropped: list[str]


class NeuronRef(StrictBody):
    layer: int = Field(ge=0)
    quantity: str = Field("h", description="h, c or a gate, as the model's `quantities` lists.")
    unit: int = Field(ge=0)


class ContextsRequest(NeuronRef):
    k: Annotated[int, limit("max_contexts")] = Field(
        5, ge=1, description="Snippets on each side; at most max_contexts (RNNSCOPE_MAX_CONTEXTS).")
    width: int = Field(40, ge=1, le=200, description="Characters shown before and after each one.")
    text: Annotated[str, Field(min_length=1), limit("max_context_chars")] | None = Field(
        None, description="Read this instead of the model's validation text (used anyway when its corpus is not "
                          "found); at most max_context_chars characters (RNNSCOPE_MAX_CONTEXT_CHARS).")
    drop_unknown: bool = False


class Snippet(BaseModel):
    position: int = Field(description="Offset of the character in the passage read.")
    value: float = Field(description="The neuron's value after reading it.")
    before: str
    char: str
    after: str
    values: list[float] = Field(description="The neuron's value at each character of before + char + after.")


class ContextsResponse(BaseModel):
    source: Literal["validation", "text"] = Field(description="What was read: the first max_context_chars of "
                                                              "the model's validation text, or the text sent.")
    corpus: str | None = Field(description="The corpus the passage came from, when it is the validation text.")
    chars: int = Field(description="Characters read.")
    low: float = Field(description="The neuron's 1st percentile over the passage.")
    high: float = Field(description="Its 99th percentile.")
    positive: list[Snippet] = Field(description="Where the neuron is highest, highest first, at least `width` "
                                                "characters apart.")
    negative: list[Snippet] = Field(description="Where it is lowest, lowest first.")


class ClampSpec(StrictBody):
    layer: int = Field(ge=0)
    units: Annotated[list[Annotated[int, Field(ge=0)]], limit("max_clamped_units")] = Field(
        min_length=1, description="Units held fixed after every step: h and, for the LSTM, c.")
    value: float = Field(0.0, allow_inf_nan=False, ge=-100.0, le=100.0, description="0 ablates.")


PRIME_OF_BOTH = ("Prime of the two samples, at most max_prime_chars characters (RNNSCOPE_MAX_PRIME_CHARS); "
                 "empty: a newline.")


class InterveneRequest(TextRequest):
    text: Text = Field(min_length=2, description=TEXT + " Two at least: one to read, one to predict.",
                       examples=[TEXT_EXAMPLE])
    clamp: list[ClampSpec] = Field(min_length=1, description="At most max_clamped_units "
                                                             "(RNNSCOPE_MAX_CLAMPED_UNITS) units in all.")
    prime: Prime = Field("", description=PRIME_OF_BOTH)
    length: Length = Field(200, ge=0, description="Characters in each sample (0: none); at most "
                                                  "max_sample_length (RNNSCOPE_MAX_SAMPLE_LENGTH).")
    temperature: float = Field(0.8, ge=0.0, le=5.0, allow_inf_nan=False, description=TEMPERATURE)
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Both samples draw the same uniform numbers.")


class InterveneResponse(BaseModel):
    text: str
    loss: list[float] = Field(description="T - 1 values: -ln p(text[t+1] | text[..t]) of the model as it is.")
    clamped_loss: list[float] = Field(description="The same with the units clamped.")
    mean_loss: float
    mean_clamped_loss: float
    sample: str = Field(description="What the model writes from the prime.")
    clamped_sample: str = Field(description="What it writes with the units clamped, from the same seed.")
    seed: int
    dropped: list[str]


class SaliencyRequest(PredictionRequest):
    pass


class SaliencyResponse(BaseModel):
    position: int
    target: str
    loss: float
    saliency: list[float | None] = Field(description="position + 1 values: ||dL/dx_k|| for the one-hot input of "
                                                     "character k, k = 0..position, at float32's precision (they "
                                                     "span many decades); null where float32 overflowed.")
    dropped: list[str]


class HorizonRequest(TextRequest):
    text: Text = Field(min_length=3, description=TEXT + " Three at least.", examples=[TEXT_EXAMPLE])
    window: int = Field(200, ge=2, description="Lags looked at; each prediction reads this many characters. "
                                               "Shortened to fit the text (len(text) - 2) and so that window x "
                                               "positions is at most max_horizon_chars "
                                               "(RNNSCOPE_MAX_HORIZON_CHARS); the response says the window used.")
    positions: int = Field(8, ge=1, le=64, description="Predictions averaged over, spread over the text. "
                                                       "Fewer when the text is short.")
    fraction: float = Field(0.01, gt=0.0, lt=1.0, description="The horizon is the first lag where the "
                                                              "gradient norm falls below this fraction of "
                                                              "its value at the position itself.")


class HorizonLayer(BaseModel):
    layer: int
    horizon: float = Field(description="Mean over positions of the first lag below the fraction.")
    lags: list[int]
    censored: int = Field(description="Positions where the norm never fell that low within the window "
                                      "(their lag counts as the window: the mean is then a lower bound).")
    profile: list[float | None] = Field(description="window + 1 values: the mean over positions of "
                                                    "||dL/dh_{p-d}|| / ||dL/dh_p|| at lag d, at float32's "
                                                    "precision; null where float32 overflowed.")


class HorizonResponse(BaseModel):
    window: int
    fraction: float
    positions: list[int]
    horizon: float = Field(description="The model's memory horizon: the largest of its layers'.")
    layers: list[HorizonLayer]
    dropped: list[str]


class MemorisedRequest(StrictBody):
    text: Annotated[str, limit("max_memorisation_chars")] = Field(
        description="Generated text to look for in the model's training corpus; at most max_memorisation_chars "
                    "characters (RNNSCOPE_MAX_MEMORISATION_CHARS).")
    min_length: int = Field(20, ge=4, le=1000, description="Shortest span reported.")


class MemorisedPiece(BaseModel):
    start: int
    end: int = Field(description="Exclusive.")
    corpus_position: int = Field(description="Where text[start:end] is in the corpus.")


class MemorisedSpan(MemorisedPiece):
    corpus_position: int = Field(description="Where the first piece is in the corpus.")
    pieces: list[MemorisedPiece] = Field(description="The maximal verbatim matches this span joins, each with "
                                                     "its own place in the corpus.")


class MemorisedResponse(BaseModel):
    available: bool = Field(description="Whether the model's training corpus was found (by the sha256 its "
                                        "checkpoint records); if not, spans is empty.")
    corpus: str | None
    spans: list[MemorisedSpan] = Field(description="Copied passages: maximal verbatim matches, those that "
                                                   "overlap or touch joined into one (see `pieces`).")
    count: int = Field(description="Copied passages, as joined.")
    memorised_chars: int = Field(description="Characters inside at least one span.")
