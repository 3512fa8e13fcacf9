"""Request and response bodies of the JSON API: the contract /docs shows.

Requests are strict (no "5" for 5, no unknown fields), so a typo such as `temprature`
is refused instead of silently ignored.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidatorFunctionWrapHandler,
                      field_validator)

Encoding = Literal["int8", "float16", "float32", "json"]


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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


class ModelDetail(ModelSummary):
    vocab: str = Field(description="Every character the model knows, in id order; others are refused "
                                   "(or dropped with drop_unknown).")
    history: TrainingSummary
    quantities: list[str] = Field(description="What a trace can show: h (and c), then the gates.")
    gates: list[str] = Field(description="Gate activations: i, f, g, o (LSTM); r, z, n (GRU); none (RNN).")


# --- requests that read a text -------------------------------------------------------

class TextRequest(StrictBody):
    text: str = Field(min_length=1, description="The text to read, at most max_text_chars characters "
                                                "(setting RNNSCOPE_MAX_TEXT_CHARS, default 20,000).",
                      examples=["First Citizen:\nBefore we proceed any further, hear me speak.\n"])
    drop_unknown: bool = Field(False, description="Remove characters outside the model's vocabulary "
                                                  "instead of refusing the request with 422.")


class TraceRequest(TextRequest):
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Layers to return, 0 = nearest the input; default all.", examples=[[0]])
    quantities: list[str] | None = Field(
        None, description="Internals to return per layer (see the model's `quantities`); default all.",
        examples=[["h"]])
    top_k: int = Field(5, ge=0, description="Next-character predictions per position, most likely first; "
                                            "at most max_top_k (RNNSCOPE_MAX_TOP_K, default 20).")
    encoding: Encoding = Field("int8", description="How each T x H array is sent; see EncodedArray. The "
                                                   "arrays, as sent, may total max_trace_bytes "
                                                   "(RNNSCOPE_MAX_TRACE_BYTES, default 64 MB).")


class GradientsRequest(TextRequest):
    position: int | None = Field(
        None, ge=0,
        description="Which loss to differentiate: L = -ln p(text[position+1] | text[..position]); default the "
                    "last, len(text) - 2. BPTT reads position + 1 characters, at most max_gradient_chars "
                    "(RNNSCOPE_MAX_GRADIENT_CHARS, default 2,000).")


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

class SampleRequest(StrictBody):
    prime: str = Field("", description="Text the model reads before writing (not repeated in the output); "
                                       "empty starts from a newline. At most max_prime_chars (RNNSCOPE_MAX_PRIME_CHARS, "
                                       "default 2,000).", examples=["ROMEO:\n"])
    length: int = Field(200, ge=0, description="Characters to write, at most max_sample_length "
                                               "(RNNSCOPE_MAX_SAMPLE_LENGTH, default 5,000).")
    temperature: float = Field(1.0, ge=0.0, le=5.0, allow_inf_nan=False,
                               description="Divides the logits: below 1 is safer, above 1 wilder, 0 always "
                                           "takes the likeliest.")
    top_k: int = Field(0, ge=0, description="Draw only among the k likeliest characters; 0 = all.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="The same seed and settings give the same "
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
