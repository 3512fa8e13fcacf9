"""Bodies of select and match: the units that follow a selection, and where else they fire."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..inference.schemas import TEXT_EXAMPLE, TextRequest
from ..probes.schemas import NeuronRef, RankedNeuron
from ..web.schemas import StrictBody, limit

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
