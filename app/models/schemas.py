"""Bodies of the model routes: the listing, one model's detail, and imports from PyTorch."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

if TYPE_CHECKING:
    pass


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


class RecognisedModel(BaseModel):
    """What the tensors were taken to be: check it against the model's code."""

    cell: str = Field(description="rnn, gru or lstm, from W_hh's shape: (G*H, H) with G = 1, 3 or 4.")
    num_layers: int
    hidden_size: int
    vocab_size: int
    input_size: int = Field(description="What layer 0 read: the embedding's width, or the vocabulary "
                                        "(one-hot).")
    rnn: str = Field(description="The recurrent module's name in the state dict.")
    decoder: str = Field(description="The final Linear's module name.")
    embedding: str | None = Field(description="The embedding's module name; null for one-hot input.")
    embedding_folded: bool = Field(description="The embedding E was folded into layer 0: W_ih E^T, one "
                                               "column per character, computes the same.")
    decoder_bias: bool = Field(description="False: a Linear(bias=False), served with a zero bias.")
    nonlinearity: str | None = Field(description="For an RNN: tanh, PyTorch's default (its weights cannot "
                                                 "show it; relu is refused).")
    source_dtype: str
    dtype: str
    source_parameters: int = Field(description="Parameters in the file's tensors that were used.")
    parameters: int = Field(description="Parameters as rnnscope keeps them, after folding.")
    tensors: dict[str, list[str]] = Field(description="Role (embedding, rnn, decoder) -> tensor names.")
    ignored: list[str] = Field(description="Tensors of modules the person's role names left out.")


class Guess(BaseModel):
    char: str
    p: float = Field(description="Probability of this next character.")


class ImportedModel(BaseModel):
    model_id: str = Field(description="The id in GET /api/models and every /api/models/{model_id} route.",
                          examples=["import-1"])
    name: str
    filename: str | None = Field(description="The uploaded file's name.")
    created: float = Field(description="Unix time of the import.")
    yours: bool = Field(description="Whether you may delete it: you imported it, or you are the admin.")
    recognised: RecognisedModel
    vocab_source: str = Field(description="Where the characters and their order came from.")
    probe: str = Field(description="A short text the model read...")
    next: list[Guess] = Field(description="...and its five likeliest next characters, so you can see it is "
                                          "yours.")
