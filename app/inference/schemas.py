"""What the model views' bodies share: the text to read, the position to predict, the
prime and length of a sample, and arrays encoded for the wire."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    pass
from ..web.schemas import LIMIT_KEY, REQUEST_SETTINGS, StrictBody, limit


Encoding = Literal["int8", "float16", "float32", "json"]


Text = Annotated[str, limit("max_text_chars")]


TEXT = "The text to read, at most max_text_chars characters (setting RNNSCOPE_MAX_TEXT_CHARS)."


TEXT_EXAMPLE = "First Citizen:\nBefore we proceed any further, hear me speak.\n"


class TextRequest(StrictBody):
    text: Text = Field(min_length=1, description=TEXT, examples=[TEXT_EXAMPLE])
    drop_unknown: bool = Field(False, description="Remove characters outside the model's vocabulary "
                                                  "instead of refusing the request with 422.")


class PredictionRequest(TextRequest):
    """One prediction's loss, differentiated by BPTT over the characters up to it."""

    text: Text = Field(min_length=2, description=TEXT + " Two at least: one to read, one to predict.",
                       examples=[TEXT_EXAMPLE])
    position: Annotated[int, Field(ge=0), limit("max_gradient_chars", offset=-1)] | None = Field(
        None,
        description="Which loss to differentiate: L = -ln p(text[position+1] | text[..position]); default the "
                    "last, len(text) - 2. BPTT reads position + 1 characters, at most max_gradient_chars "
                    "(RNNSCOPE_MAX_GRADIENT_CHARS), so without a position the text may have one more.")

    # Without a position BPTT reads all but the last character: the text's own limit is then
    # max_gradient_chars + 1. JSON Schema says so with if/then; the validator enforces it.
    # `enum: [null]` rather than `type: null`: ReDoc merges the `if` into position's own schema
    # and warns of incompatible types (integer and null) in that allOf.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"position": {"enum": [None]}}},
        "then": {"properties": {"text": {LIMIT_KEY: limit("max_gradient_chars", offset=1).marker("maxLength")}}},
    })

    @model_validator(mode="after")
    def default_position_within_bptt_limit(self) -> PredictionRequest:
        settings = REQUEST_SETTINGS.get()
        bound = limit("max_gradient_chars", offset=1)
        if self.position is None and settings is not None and len(self.text) > bound.bound(settings):
            raise PydanticCustomError(
                "string_too_long", "Without a position the text should have at most {max_length} characters: "
                "BPTT reads all but the last, at most max_gradient_chars (setting RNNSCOPE_MAX_GRADIENT_CHARS); "
                "send a position or a shorter text", {"max_length": bound.bound(settings)})
        return self


class EncodedArray(BaseModel):
    """A T x H array: row t is the value after reading character t, column j is unit j.

    - `int8`: `data` is base64 of T*H signed bytes q, row-major; value = q * scale with
      scale = max|v| / 127 (1 when every value is 0), so each value is within scale / 2.
      A 10,000-character trace of 256 units is 3.4 MB of base64.
    - `float16`, `float32`: `data` is base64 of little-endian IEEE floats, row-major; scale is 1.
    - `json`: `values` holds the rows as nested lists (rounded to 6 decimals), `data` is null;
      convenient for scripts, four times the size of int8.

    In a browser: `new Int8Array(Uint8Array.from(atob(data), c => c.charCodeAt(0)).buffer)`.
    """

    shape: list[int] = Field(description="[T, H]")
    dtype: Literal["int8", "float16", "float32"]
    scale: float
    data: str | None = None
    values: list[list[float]] | None = None


class Predictions(BaseModel):
    chars: list[list[str]] = Field(description="T x k: after character t, the k likeliest next characters.")
    probs: list[list[float]] = Field(description="T x k: their probabilities, rounded to 6 decimals.")


Prime = Annotated[str, limit("max_prime_chars")]


PRIME = ("Text the model reads before writing (not repeated in the output), at most max_prime_chars "
         "characters (RNNSCOPE_MAX_PRIME_CHARS).")


Length = Annotated[int, limit("max_sample_length")]


TEMPERATURE = ("Divides the logits: below 1 is safer, above 1 wilder; below 0.001 (0 included) always takes "
               "the likeliest character, with probability 1.")
