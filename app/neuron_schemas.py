"""Request and response bodies of the neuron routes (app/routers/neurons.py): concept
probes, top contexts, clamping, input saliency, the memory horizon and memorisation."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from rnnscope.model.probes import CONCEPTS
from rnnscope.model.dynamics import CHAR_CLASSES

from .schemas import (TEMPERATURE, TEXT, TEXT_EXAMPLE, EncodedArray, Length, PredictionRequest, Prime, StrictBody,
                      Text, TextRequest, limit)

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
    saliency: list[float] = Field(description="position + 1 values: ||dL/dx_k|| for the one-hot input of "
                                              "character k, k = 0..position.")
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
    profile: list[float] = Field(description="window + 1 values: the mean over positions of "
                                             "||dL/dh_{p-d}|| / ||dL/dh_p|| at lag d.")


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


# ---- select and match (app/routers/select.py) -------------------------------------------

Span = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]


class SelectRequest(TextRequest):
    """Stretches of a text a person selected: which units are on there and off around it."""

    text: Annotated[str, limit("max_text_chars", "max_probe_chars")] = Field(
        min_length=2, description="The text to read, at most max_probe_chars characters (RNNSCOPE_MAX_PROBE_CHARS) "
                                  "and max_text_chars (RNNSCOPE_MAX_TEXT_CHARS).", examples=[TEXT_EXAMPLE])
    spans: Annotated[list[Span], limit("max_select_spans")] = Field(
        min_length=1, description="Selected stretches as [start, end] offsets into the text as read (after "
                                  "drop_unknown removes characters), end exclusive; they may overlap. At most "
                                  "max_select_spans (RNNSCOPE_MAX_SELECT_SPANS).", examples=[[[15, 22], [40, 48]]])
    context: int | None = Field(
        20, ge=1, le=1000, description="Characters on each side of each span that count as outside it; null: the "
                                      "whole rest of the text. Near, by default: a text usually holds unselected "
                                      "instances of what was selected, which would count against its unit.")
    top: Annotated[int, limit("max_probe_top")] = Field(
        12, ge=1, description="Units to return, strongest first; at most max_probe_top (RNNSCOPE_MAX_PROBE_TOP).")


class SelectResponse(BaseModel):
    text: str
    inside: int = Field(description="Characters inside the spans.")
    compared: int = Field(description="Characters ranked on: inside the spans and the context around them.")
    units: int = Field(description="Units ranked: every unit of every layer and quantity.")
    neurons: list[RankedNeuron] = Field(description="Strongest first; score is the AUC of inside against "
                                                    "outside; threshold is the middle of the gap between them "
                                                    "when the unit separates them completely, else Youden's cut. "
                                                    "Send a set of them, with sign and threshold, to /match.")
    dropped: list[str]


class MatchUnit(NeuronRef):
    sign: Literal[1, -1] = Field(1, description="+1: the unit is on above its threshold; -1: below.")
    threshold: float = Field(allow_inf_nan=False, description="As /select returns it.")


class MatchRequest(StrictBody):
    units: Annotated[list[MatchUnit], limit("max_match_units")] = Field(
        min_length=1, description="The units that should be on together; at most max_match_units "
                                  "(RNNSCOPE_MAX_MATCH_UNITS).")
    length: float = Field(gt=0, le=100_000, allow_inf_nan=False,
                          description="The length of the stretch sought, in characters: the selection's.")
    tolerance: float = Field(4.0, ge=1.0, le=1000.0, allow_inf_nan=False,
                             description="A match is from length / tolerance to length x tolerance characters long.")
    quorum: float = Field(0.5, gt=0.0, le=1.0, allow_inf_nan=False,
                          description="The fraction of the units that must be on at every character of a match.")
    gap: int = Field(1, ge=0, le=20, description="Runs at most this many characters apart are one match: a unit "
                                                 "may dip for a character inside the stretch it marks.")
    text: Annotated[str, Field(min_length=1), limit("max_text_chars")] | None = Field(
        None, description="Search this text instead of the first max_match_chars (RNNSCOPE_MAX_MATCH_CHARS) "
                          "characters of the model's validation text; at most max_text_chars "
                          "(RNNSCOPE_MAX_TEXT_CHARS).")
    drop_unknown: bool = False
    top: Annotated[int, limit("max_match_top")] = Field(
        10, ge=1, description="Matches to return, best first; at most max_match_top (RNNSCOPE_MAX_MATCH_TOP).")
    width: int = Field(30, ge=0, le=200, description="Characters of the snippet before and after each match.")


class MatchFound(BaseModel):
    start: int = Field(description="Offset in the text searched.")
    end: int = Field(description="Exclusive.")
    score: float = Field(description="Agreement: the fraction of the units on, averaged over [start, end).")
    snippet_start: int = Field(description="Where the snippet begins in the text searched.")
    snippet: str = Field(description="The match with `width` characters either side.")
    values: list[list[float]] = Field(description="Per unit, in the request's order, its value at each character "
                                                  "of the snippet (float16 precision).")


class MatchResponse(BaseModel):
    source: Literal["validation", "text"] = Field(description="What was searched: the first max_match_chars of "
                                                              "the model's validation text, or the text sent.")
    corpus: str | None = Field(description="The corpus the validation text came from.")
    chars: int = Field(description="Characters searched.")
    on: list[float] = Field(description="Per unit, the fraction of the text where it is on.")
    matches: list[MatchFound]
    dropped: list[str]


# ---- neurons in groups (app/routers/groups.py) -------------------------------------------

class GroupsRequest(StrictBody):
    """Factorise one layer's quantity into K groups of units (non-negative matrix factorisation)."""

    layer: int = Field(ge=0, description="The layer whose units are grouped.")
    quantity: str = Field("h", min_length=1, max_length=8, description="h, c or a gate.")
    components: Annotated[int, limit("max_groups_components")] = Field(
        8, ge=1, description="K, the number of groups; at most max_groups_components "
                             "(RNNSCOPE_MAX_GROUPS_COMPONENTS) and the layer's units.")
    text: Annotated[str, Field(min_length=1), limit("max_text_chars")] | None = Field(
        None, description="The passage to return the groups' tracks over (the explorer's text); default the "
                          "first `shown` characters of the validation text. When the model's training corpus is "
                          "not on this server the groups are fitted on this text too. At most max_text_chars "
                          "(RNNSCOPE_MAX_TEXT_CHARS).", examples=[TEXT_EXAMPLE])
    drop_unknown: bool = False
    shown: Annotated[int, limit("max_text_chars")] = Field(
        1000, ge=1, description="Without a text: the validation characters the tracks are returned over.")
    top: int = Field(8, ge=1, le=64, description="Heaviest units listed per group.")


class GroupUnit(BaseModel):
    unit: int
    weight: float = Field(description="The unit's weight in the group, the heaviest 1.")


class Group(BaseModel):
    index: int = Field(description="Heaviest group first: by the size of its part of the factorisation.")
    share: float = Field(description="||w_k||^2 ||g_k||^2 of this group's rank-one piece over the sum of all.")
    units: list[GroupUnit] = Field(description="The heaviest units, heaviest first.")
    track: list[float] = Field(description="The group's weight at each character of the passage shown: "
                                           "non-negative, in the units of its heaviest unit's shifted value.")
    high: float = Field(description="The track's 99th percentile over the text fitted: the top of its scale.")


class GroupsResponse(BaseModel):
    source: Literal["validation", "text"] = Field(description="What the groups were fitted on: the first "
                                                              "max_groups_chars of the model's validation text, "
                                                              "or the text sent.")
    corpus: str | None = Field(description="The corpus the validation text came from.")
    chars: int = Field(description="Characters fitted.")
    layer: int
    quantity: str
    error: float = Field(description="Relative reconstruction error ||X - W G|| / ||X|| (Frobenius) over the text "
                                     "fitted, X each unit's values minus its minimum.")
    explained: float = Field(description="1 - error^2: the part of ||X||^2 the groups rebuild.")
    cached: bool = Field(description="The factorisation was kept from an earlier request.")
    text: str = Field(description="The passage the tracks are over, as read.")
    groups: list[Group]
    dropped: list[str]


# ---- state space and fixed points (app/routers/states.py) -------------------------------------

ColourBy = Literal[tuple(CONCEPTS) + ("char_class",)]  # type: ignore[valid-type]
Components = Annotated[int, Field(ge=2, le=3, description="Principal components to project onto: 2 or 3.")]
StateQuantity = Literal["h", "c"]


class StatesRequest(TextRequest):
    text: Annotated[str, limit("max_text_chars", "max_state_chars")] = Field(
        min_length=1, description="The text whose trajectory to project, at most max_state_chars characters "
                                  "(RNNSCOPE_MAX_STATE_CHARS) and max_text_chars (RNNSCOPE_MAX_TEXT_CHARS).",
        examples=[TEXT_EXAMPLE])
    layer: int = Field(0, ge=0)
    quantity: StateQuantity = Field("h", description="h, or c for an LSTM.")
    components: Components = 2
    colour_by: ColourBy = Field(
        "char_class", description="What colours each step: `char_class` (the class of the character just read: "
                                  + ", ".join(CHAR_CLASSES) + ") or a concept: "
                                  + "; ".join(f"`{c.name}`: {c.description}" for c in CONCEPTS.values()) + ".")


class StatesResponse(BaseModel):
    text: str
    layer: int
    quantity: str
    fitted_on: Literal["validation", "text"] = Field(
        description="What the PCA was fitted on: the first max_state_fit_chars (RNNSCOPE_MAX_STATE_FIT_CHARS) "
                    "characters of the model's validation text, or, when its corpus is not on this server, the "
                    "text sent.")
    corpus: str | None
    fit_chars: int
    explained: list[float] = Field(description="Per component, the fraction of the variance it explains.")
    coords: list[list[float]] = Field(description="Per character read, the state's coordinates (K values).")
    colour_by: str
    description: str
    graded: bool = Field(description="True: `colour` is a number per step; false: a class index or 0/1.")
    colour: list[float] = Field(description="Per character, its colouring value (for char_class, an index "
                                            "into `classes`).")
    classes: list[str] | None
    dropped: list[str]


class FixedPointsRequest(StrictBody):
    layer: int = Field(0, ge=0)
    char: str = Field(min_length=1, max_length=1, examples=[" "],
                      description="The input character held constant. Layer 0 reads its one-hot; a layer above "
                                  "reads the layer below's h, so it is held at that h's mean over the steps that "
                                  "read the character (422 when none does). An LSTM is searched in its full "
                                  "state (h, c).")
    quantity: StateQuantity = Field("h", description="The projection to give coordinates in: PCA of h, or of c.")
    components: Components = 2
    starts: Annotated[int, limit("max_fixed_point_starts")] = Field(
        32, ge=1, description="Starting states, sampled along the trajectory of the validation text; at most "
                              "max_fixed_point_starts (RNNSCOPE_MAX_FIXED_POINT_STARTS).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Which starting states are sampled.")
    text: Annotated[str, Field(min_length=2), limit("max_text_chars")] | None = Field(
        None, description="Sample starts from (and fit the PCA on) this text instead of the model's validation "
                          "text; needed when the model's corpus is not on this server.")
    drop_unknown: bool = False


class FixedPointOut(BaseModel):
    coords: list[float] = Field(description="In the same projection as /states (same layer, quantity, "
                                            "components).")
    q: float = Field(description="1/2 ||F(s) - s||^2 at the point.")
    kind: Literal["stable", "unstable", "saddle"] = Field(
        description="From the eigenvalues of dF/ds: stable if all |lambda| < 1, unstable if all > 1, else saddle.")
    eigenvalues: list[list[float]] = Field(description="The largest few by modulus, as [real, imaginary].")
    unstable_directions: int = Field(description="How many eigenvalues have |lambda| > 1.")


class FixedPointsResponse(BaseModel):
    layer: int
    char: str
    state: str = Field(description="The state F acts on: h (RNN, GRU) or (h, c) (LSTM), with its size.")
    fitted_on: Literal["validation", "text"]
    explained: list[float]
    starts: int
    points: list[FixedPointOut] = Field(description="Lowest q first; empty when no state within the tolerance "
                                                    "was found.")
    slowest_q: float | None = Field(description="The lowest q reached, kept or not: when no point is fixed, "
                                                "how fast the slowest state still moves.")
    tolerance: float
    seconds: float
