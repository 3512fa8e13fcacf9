"""Bodies of the state-space routes: projections of the hidden state, and fixed points."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from rnnscope.model.dynamics import CHAR_CLASSES
from rnnscope.model.probes import CONCEPTS

from ..inference.schemas import TEXT_EXAMPLE, TextRequest
from ..web.schemas import StrictBody, limit

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
