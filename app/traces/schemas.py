"""Bodies of the trace, gradients and gates routes: what a model computes while it reads a text."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    pass
from ..inference.schemas import EncodedArray, Encoding, PredictionRequest, Predictions, TextRequest
from ..web.schemas import limit


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
