"""Bodies of the Learn page's chapters: each chapter's small experiment, asked and answered."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..web import pages
from ..web.schemas import StrictBody

Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="Training seed: another seed, another network.")]


Passage = Annotated[int, Field(ge=0, le=len(pages.PASSAGES) - 1,
                               description="Which built-in passage to read: " + "; ".join(
                                   f"{k}: {title}" for k, (title, _) in enumerate(pages.PASSAGES)))]


Position = Annotated[int | None, Field(None, ge=0, le=10_000, description=(
    "Which prediction to differentiate: L = -ln p(text[position+1] | text[..position]); default, or past "
    "the passage's end, its last."))]


class HelloRequest(StrictBody):
    seed: Seed = 0
    sample_length: int = Field(40, ge=0, le=200, description="Characters to sample from the trained network.")
    temperature: float = Field(1.0, ge=0.0, le=3.0, allow_inf_nan=False,
                               description="Sampling temperature; below 0.001 always the likeliest.")
    sample_seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the sampler's draws.")


class HelloStep(BaseModel):
    t: int
    input: str = Field(description="The character read at this step.")
    target: str = Field(description="The next character, which the network should predict.")
    x: list[float] = Field(description="One-hot input, in vocabulary order.")
    h_prev: list[float] = Field(description="h_{t-1}.")
    h: list[float] = Field(description="h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h).")
    y: list[float] = Field(description="Scores y_t = W_hy h_t + b_y.")
    p: list[float] = Field(description="softmax(y_t).")
    predicted: str = Field(description="The likeliest next character.")
    loss: float = Field(description="-ln p_t[target] in nats.")


class HelloResponse(BaseModel):
    text: str
    vocab: list[str]
    hidden_size: int
    seed: int
    train_steps: int
    train_ms: float = Field(description="Wall-clock training time on the server.")
    loss_history: list[float] = Field(description="Training loss per Adam step, nats/char.")
    weights: dict[str, list] = Field(description="W_xh (H, V), W_hh (H, H), b_h (H), W_hy (V, H), b_y (V).")
    steps: list[HelloStep]
    mean_loss: float
    sample: str = Field(description="Characters sampled after the prime 'h'.")


class UnrollRequest(StrictBody):
    seed: Seed = 0
    steps: int = Field(20, ge=2, le=60, description="How many steps to unroll.")


class UnrollResponse(BaseModel):
    vocab: list[str]
    continuation: str = Field(description="What every run reads after its first character.")
    first: list[str] = Field(description="The first character of each run, one run per vocabulary character.")
    h: list[list[list[float]]] = Field(description="Per run, per step, the 3 hidden units.")
    distance: list[list[float]] = Field(description="Per run, per step t: ||h_t(run) - h_t(the run that "
                                                    "began with 'h')||.")


Entry = Annotated[float, Field(ge=-3.0, le=3.0, allow_inf_nan=False)]


Start = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]


class PowerRequest(StrictBody):
    w11: Entry = 1.0
    w12: Entry = 0.5
    w21: Entry = 0.2
    w22: Entry = 0.8
    x0: Start = Field(-0.5, description="h_0's first coordinate.")
    y0: Start = Field(1.0, description="h_0's second coordinate.")
    steps: int = Field(12, ge=1, le=100, description="Iterations.")
    mode: Literal["normalise", "tanh"] = Field(
        "normalise",
        description="normalise: h <- W_r h / ||W_r h|| (power iteration); tanh: h <- tanh(W_r h).")


class Eigen(BaseModel):
    value: list[float] = Field(description="[real, imaginary].")
    vector: list[float] | None = Field(description="Unit eigenvector when real; null for a complex pair.")


class PowerResponse(BaseModel):
    mode: str
    trajectory: list[list[float]] = Field(description="h_0, h_1, ..., h_steps.")
    eigen: list[Eigen] = Field(description="Largest |eigenvalue| first.")
    leading: list[float] | None = Field(description="The eigenvector power iteration turns towards: the real "
                                                    "eigenvalue strictly largest in modulus; null if none.")
    alignment: list[float | None] = Field(
        description="Per step |cos| of the angle between h_k and `leading`.")
    spectral_radius: float


class BackwardRequest(StrictBody):
    passage: Passage = 0
    position: Position = Field(None, description=(
        "Which prediction to differentiate: L = -ln p(text[position+1] | text[..position]); default, or past "
        "the passage's end, its last; never past max_gradient_chars - 1 (RNNSCOPE_MAX_GRADIENT_CHARS)."))
    scale: float = Field(1.0, ge=0.25, le=2.0, allow_inf_nan=False,
                         description="Multiply every layer's W_hh by this before backpropagating.")


class BlockSpectrum(BaseModel):
    block: str
    spectral_radius: float = Field(description="Largest |eigenvalue| of the scaled H x H block.")
    sigma_max: float = Field(description="Largest singular value of the scaled block.")


class BackwardLayer(BaseModel):
    layer: int
    h_grad_norm: list[float | None] = Field(description="||dL/dh_k|| for k = 0..position, as POST "
                                                        "/api/models/{model_id}/gradients computes it.")
    blocks: list[BlockSpectrum]


class BackwardResponse(BaseModel):
    text: str = Field(description="The passage as read (without characters the model does not know).")
    position: int
    target: str
    loss: float
    scale: float
    layers: list[BackwardLayer]
    dropped: list[str]


CLIP_HIDDEN, CLIP_SEQ = 64, 25     # small enough for two runs of 600 steps in under a second


class ClippingRequest(StrictBody):
    passage: Passage = 0
    learning_rate: float = Field(1.0, ge=0.05, le=2.0, allow_inf_nan=False, description="SGD step size.")
    clip: float = Field(1.0, ge=0.25, le=10.0, allow_inf_nan=False,
                        description="The clipped run's global-norm threshold; the other run never clips.")
    steps: int = Field(400, ge=10, le=600, description="SGD steps of each run.")
    seed: Seed = 0


class ClipRunOut(BaseModel):
    clip: float = Field(description="The threshold; 0 for the run without clipping.")
    loss: list[float] = Field(description="Training loss per step, nats/char.")
    grad_norm: list[float] = Field(description="Global gradient norm per step, before clipping.")
    clipped: list[bool]
    diverged: str | None = Field(description="Why the run stopped early, if it did.")


class ClippingResponse(BaseModel):
    chars: int = Field(description="Characters of the passage the runs train on.")
    hidden_size: int
    seq_length: int
    runs: list[ClipRunOut] = Field(description="Without clipping, then with it: same seed, same batches.")


# What each cell carries back along its direct path: the model ids the chapter reads (the
# bundled ones), the quantity and how the page names it.
HIGHWAYS = (("rnn", "h", "∂h_t/∂h_k, the vanilla RNN: diag(1 − h_j²) W_hh per step"),
            ("lstm", "f", "∂c_t/∂c_k along the cell state, the LSTM: the product of forget gates f_j"),
            ("gru", "z", "the GRU's direct path from h_k to h_t: the product of update gates z_j"))


class HighwayRequest(StrictBody):
    passage: Passage = 0
    position: Position = None
    span: int = Field(60, ge=1, le=150, description="How many steps back from the position.")
    layer: Literal["bottom", "top"] = Field("top", description="Which layer of each model.")


class HighwayCurve(BaseModel):
    model: str
    cell: str
    layer: int
    label: str
    rms: list[float | None] = Field(description=(
        "For k = position, position - 1, ...: the root-mean-square gain ||J||_F / sqrt(H) of the path from "
        "step k on (for the RNN estimated from 256 random directions past 256 units)."))
    top: list[float | None] | None = Field(description="For the gated paths, the largest unit's product.")


class HighwayResponse(BaseModel):
    text: str
    position: int
    ks: list[int] = Field(description="The steps k the curves are given for, the position first.")
    curves: list[HighwayCurve] = Field(description="One per model present among rnn, lstm, gru.")
