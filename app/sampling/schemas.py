"""Bodies of the sample routes: the prime, the length, the temperature, and what was written."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    pass
from ..inference.schemas import Length, PRIME, Prime, TEMPERATURE
from ..web.schemas import StrictBody


class SampleRequest(StrictBody):
    prime: Prime = Field("", description=PRIME + " Empty starts from a newline.", examples=["ROMEO:\n"])
    length: Length = Field(200, ge=0, description="Characters to write, at most max_sample_length "
                                                  "(RNNSCOPE_MAX_SAMPLE_LENGTH).")
    temperature: float = Field(1.0, ge=0.0, le=5.0, allow_inf_nan=False, description=TEMPERATURE)
    top_k: int = Field(0, ge=0, description="Draw only among the k likeliest characters; 0 = all.")
    # JavaScript's integers are exact up to 2^53 - 1, and so is the float a JSON parser may
    # compare the seed with: a larger bound would let 2^63 + 191 pass as 2^63 - 1.
    seed: int | None = Field(None, ge=0, le=2**53 - 1, description="The same seed and settings give the same "
                                                                   "text; default: a fresh one, returned.")
    drop_unknown: bool = Field(False, description="Remove characters of the prime outside the vocabulary "
                                                  "instead of refusing the request with 422.")


class SampleResponse(BaseModel):
    text: str = Field(description="The written characters, without the prime.")
    probs: list[float] = Field(description="Per character, the probability it had when drawn.")
    seed: int = Field(description="The seed used: send it back to get the same text.")
    dropped: list[str]


class SampleChunk(BaseModel):
    """Data of a `chunk` event of the sample stream."""

    text: str
    probs: list[float]


class SampleDone(BaseModel):
    """Data of the final `done` event of the sample stream."""

    length: int
    seed: int
    dropped: list[str]
