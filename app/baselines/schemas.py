"""Bodies of the error analysis route (app/baselines/router.py)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from rnnscope.model.ngram import MAX_ORDER

from ..inference.schemas import EncodedArray
from ..web.schemas import StrictBody, limit


class ErrorsRequest(StrictBody):
    """What to analyse: a text, or (without one) the start of the model's validation text."""

    text: Annotated[str, limit("max_errors_chars")] | None = Field(
        None, min_length=2, description="The text to analyse, at most max_errors_chars characters (setting "
                                        "RNNSCOPE_MAX_ERRORS_CHARS). Default: the first max_errors_chars of the "
                                        "model's validation text, which neither it nor the n-grams trained on.")
    drop_unknown: bool = Field(False, description="Remove characters outside the model's vocabulary instead of "
                                                  "refusing the request with 422.")
    max_order: int = Field(MAX_ORDER, ge=1, le=MAX_ORDER,
                           description="The n-gram orders to count, 1..max_order; the best of them is compared.")


class DistanceBin(BaseModel):
    low: int = Field(description="Closers whose opener is low..high characters back.")
    high: int
    count: int
    model_wins: float | None = Field(description="The fraction of those closers where the model's loss is "
                                                 "below the best n-gram's; null when there are none.")
    mean_advantage: float | None = Field(description="Mean of (n-gram loss - model loss) there, nats.")


class Category(BaseModel):
    name: str
    count: int = Field(description="Errors this oracle removes among those the ones before it left.")
    meaning: str


class Breakdown(BaseModel):
    errors: int = Field(description="Characters the model gave probability < 0.5.")
    characters: int
    categories: list[Category]


class ErrorsResponse(BaseModel):
    text: str
    source: Literal["request", "validation"]
    corpus: str = Field(description="The corpus whose first 90 % the n-grams counted (the model's own).")
    train_chars: int
    best_order: int
    model_mean: float = Field(description="The model's mean loss over the text, nats a character.")
    ngram_means: list[float] = Field(description="Each order's mean loss, orders 1..max_order.")
    model_loss: EncodedArray = Field(description="Per character t (len(text) - 1): -ln p(text[t+1] | text[..t]).")
    ngram_loss: EncodedArray = Field(description="The same for the best order.")
    long_range: list[DistanceBin]
    far_share: float | None = Field(description="Of the model's advantage on closers, the share on closers more "
                                                "than 20 characters from their opener.")
    far_closers: float | None = Field(description="The share of closers more than 20 characters from their opener.")
    breakdown: Breakdown
    dropped: list[str] = Field(default_factory=list)
