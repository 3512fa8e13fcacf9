"""Request and response bodies of the JSON API: the contract /docs shows.

Requests are strict (no "5" for 5, no unknown fields), so a typo such as `temprature`
is refused instead of silently ignored. Every limit a field takes from the settings is
declared on it (Limit), so the document and the validation say the same number.
"""
from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError,
                      ValidatorFunctionWrapHandler, field_validator, model_validator)
from pydantic_core import PydanticCustomError, core_schema

if TYPE_CHECKING:
    from .settings import Settings

Encoding = Literal["int8", "float16", "float32", "json"]

# The settings of the app serving the request, bound by openapi.bind_settings (a dependency of
# every route, solved before the body is read) so the limits below check the server's own
# values. Outside a request (a script building a request body) no limit applies.
REQUEST_SETTINGS: ContextVar[Settings | None] = ContextVar("rnnscope_request_settings", default=None)
# Where a published limit goes in the JSON schema; app/openapi.py fills in the number.
LIMIT_KEY = "x-rnnscope-limit"
KEYWORDS = {"string": "maxLength", "array": "maxItems", "integer": "maximum", "number": "maximum"}


@dataclass(frozen=True)
class Limit:
    """Field metadata: the value may be at most the smallest of these settings plus `offset`
    (characters of a string, items of a list, or the number itself). One declaration both
    refuses a value over it with a 422 naming the setting and publishes it in /openapi.json
    as maxLength, maxItems or maximum, so the contract is the server's real one."""

    settings: tuple[str, ...]
    offset: int = 0

    def bound(self, settings: Settings) -> int:
        return min(getattr(settings, name) for name in self.settings) + self.offset

    def names(self) -> str:
        return " and ".join(f"RNNSCOPE_{name.upper()}" for name in self.settings)

    def check(self, value: Any) -> Any:
        settings = REQUEST_SETTINGS.get()
        if settings is None:
            return value
        bound = self.bound(settings)
        if isinstance(value, str | list) and len(value) > bound:
            kind, what = ("string_too_long", "String") if isinstance(value, str) else ("too_long", "List")
            unit = "characters" if isinstance(value, str) else "items"
            raise PydanticCustomError(kind, f"{what} should have at most {{max_length}} {unit} "
                                            f"(setting {self.names()})", {"max_length": bound})
        if isinstance(value, int | float) and value > bound:
            raise PydanticCustomError("less_than_equal", f"Input should be less than or equal to {{le}} "
                                                         f"(setting {self.names()})", {"le": bound})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema[LIMIT_KEY] = self.marker(KEYWORDS[json_schema["type"]])
        return json_schema

    def marker(self, keyword: str) -> dict[str, Any]:
        return {"keyword": keyword, "settings": list(self.settings), "offset": self.offset}


def limit(*settings: str, offset: int = 0) -> Limit:
    return Limit(settings, offset)


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def integral_numbers_are_integers(cls, data: Any) -> Any:
        """JSON Schema's integer is any number without a fraction, so 5.0 is one; strict
        pydantic would refuse it. Strings stay refused."""
        if not isinstance(data, dict):
            return data
        fields = integer_fields(cls)
        return {k: integer(v) if k in fields else v for k, v in data.items()}


def integer(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integer(v) for v in value]
    return value


@cache
def integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields whose type is int, int | None or list[int]."""
    def holds_int(tp: Any) -> bool:
        if tp is int:
            return True
        args = [a for a in get_args(tp) if a is not type(None)]
        origin = get_origin(tp)
        if origin is Annotated:
            return holds_int(args[0])
        return origin in (list, Union, UnionType) and len(args) == 1 and holds_int(args[0])
    return frozenset(name for name, f in model.model_fields.items() if holds_int(f.annotation))


class ErrorMessage(BaseModel):
    detail: str = Field(description="What was wrong, and the limit or setting involved.")


# --- models --------------------------------------------------------------------------

class TrainingSummary(BaseModel):
    """How the model was trained, as its checkpoint records it; fields it lacks are null."""

    steps: int | None = None
    train_loss: float | None = Field(None, description="Mean training loss of the last 100 steps, nats/char.")
    val_loss: float | None = Field(None, description="Validation loss at the last evaluation, nats/char.")
    best_val_loss: float | None = Field(None, description="Best validation loss: the saved weights'.")
    corpus_name: str | None = None
    corpus_sha256: str | None = None
    corpus_chars: int | None = None
    seconds: float | None = Field(None, description="Training wall-clock time.")
    stopped: str | None = Field(None, description="Why training ended: max_steps, max_seconds or cancelled.")

    @field_validator("*", mode="wrap")
    @classmethod
    def null_if_unreadable(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """A checkpoint written by another tool may hold anything; what cannot be read is null."""
        try:
            value = handler(value)
        except ValidationError:
            return None
        return None if isinstance(value, float) and not math.isfinite(value) else value


class ModelSummary(BaseModel):
    id: str = Field(description="Used in every /api/models/{model_id} URL.", examples=["lstm"])
    name: str
    cell: Literal["rnn", "gru", "lstm"]
    hidden_size: int
    num_layers: int
    vocab_size: int
    parameters: int
    val_loss: float | None = Field(description="Best validation loss in nats/char; null if never validated.")
    shared: bool = Field(True, description="Nobody owns it (a bundled model, or one the server's operator "
                                           "placed): every listing shows it.")
    yours: bool = Field(False, description="A run or import of yours.")


class ModelDetail(ModelSummary):
    vocab: str = Field(description="Every character the model knows, in id order; others are refused "
                                   "(or dropped with drop_unknown).")
    history: TrainingSummary
    quantities: list[str] = Field(description="What a trace can show: h (and c), then the gates.")
    gates: list[str] = Field(description="Gate activations: i, f, g, o (LSTM); r, z, n (GRU); none (RNN).")


# --- requests that read a text -------------------------------------------------------

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


class TraceRequest(TextRequest):
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Layers to return, 0 = nearest the input; default all.", examples=[[0]])
    quantities: list[str] | None = Field(
        None, description="Internals to return per layer (see the model's `quantities`); default all.",
        examples=[["h"]])
    top_k: Annotated[int, limit("max_top_k")] = Field(
        5, ge=0, description="Next-character predictions per position, most likely first; at most max_top_k "
                             "(RNNSCOPE_MAX_TOP_K).")
    encoding: Encoding = Field("int8", description="How each T x H array is sent; see EncodedArray. The "
                                                   "arrays, as sent, may total max_trace_bytes "
                                                   "(RNNSCOPE_MAX_TRACE_BYTES, default 64 MB).")


class GradientsRequest(PredictionRequest):
    pass


class GatesRequest(TextRequest):
    pass


# --- responses of the analysis routes -----------------------------------------------

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


class TraceLayer(BaseModel):
    layer: int
    quantities: dict[str, EncodedArray]


class TraceResponse(BaseModel):
    text: str = Field(description="The text read (without dropped characters).")
    chars: list[str] = Field(description="text as a list of T characters.")
    loss: list[float] = Field(description="T - 1 values: loss[t] = -ln p(text[t+1] | text[..t]) in nats, "
                                          "rounded to 6 decimals.")
    mean_loss: float | None = Field(description="Mean of loss in nats/char; null for a one-character text.")
    predictions: Predictions
    layers: list[TraceLayer]
    dropped: list[str] = Field(description="Distinct characters removed by drop_unknown.")


class Spectrum(BaseModel):
    block: str = Field(description="The gate whose H x H block of W_hh this is (i, f, g, o; r, z, n), "
                                   "or h for the vanilla RNN's single block.")
    values: list[float] = Field(description="Singular values, largest first. Above 1 gradients through "
                                            "time can explode; all below 1 they can only vanish.")


class GradientLayer(BaseModel):
    layer: int
    h_grad_norm: list[float | None] = Field(
        description="position + 1 values: ||dL/dh_k|| for k = 0..position, the total derivative through "
                    "every path (what BPTT computes). null where float32 overflowed.")
    c_grad_norm: list[float | None] | None = Field(
        description="||dL/dc_k|| likewise for the LSTM's cell state; null for other cells.")
    singular_values: list[Spectrum]


class GradientsResponse(BaseModel):
    position: int
    target: str = Field(description="text[position + 1], the character whose loss is differentiated.")
    loss: float = Field(description="L = -ln p(target | text[..position]) in nats.")
    layers: list[GradientLayer]
    dropped: list[str]


class GateSaturation(BaseModel):
    gate: str
    left: list[float] = Field(description="Per unit, the fraction of steps with the gate below 0.1.")
    right: list[float] = Field(description="Per unit, the fraction of steps with the gate above 0.9.")


class GatesLayer(BaseModel):
    layer: int
    gates: list[GateSaturation] = Field(description="Empty for the vanilla RNN, which has no gates.")


class GatesResponse(BaseModel):
    """Figure 3 of Karpathy, Johnson & Fei-Fei (2015). tanh gates (LSTM g, GRU n) are
    mapped from [-1, 1] to [0, 1] first, so the thresholds mean the same for every gate."""

    steps: int = Field(description="Characters read.")
    layers: list[GatesLayer]
    dropped: list[str]


# --- sampling ------------------------------------------------------------------------

Prime = Annotated[str, limit("max_prime_chars")]
PRIME = ("Text the model reads before writing (not repeated in the output), at most max_prime_chars "
         "characters (RNNSCOPE_MAX_PRIME_CHARS).")
Length = Annotated[int, limit("max_sample_length")]
TEMPERATURE = ("Divides the logits: below 1 is safer, above 1 wilder; below 0.001 (0 included) always takes "
               "the likeliest character, with probability 1.")

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


class Health(BaseModel):
    status: Literal["ok"]
    models: int
