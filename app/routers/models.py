"""The models on offer: a list, and one model's vocabulary and training summary."""
from __future__ import annotations

from fastapi import APIRouter

from ..deps import ModelDep, RegistryDep
from ..errors import NOT_FOUND
from ..registry import Entry
from ..schemas import ModelDetail, ModelSummary, TrainingSummary

router = APIRouter(prefix="/api/models", tags=["models"])


def training_summary(entry: Entry) -> TrainingSummary:
    history = entry.model.history
    return TrainingSummary.model_validate(history if isinstance(history, dict) else {})


def summary(entry: Entry) -> ModelSummary:
    m, cfg, h = entry.model, entry.model.config, training_summary(entry)
    return ModelSummary(id=entry.id, name=entry.name, cell=cfg.cell, hidden_size=cfg.hidden_size,
                        num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, parameters=m.num_parameters,
                        val_loss=h.val_loss if h.best_val_loss is None else h.best_val_loss)


@router.get("", response_model=list[ModelSummary])
def list_models(registry: RegistryDep) -> list[ModelSummary]:
    """Every loaded model, the bundled ones first."""
    return [summary(e) for e in registry]


@router.get("/{model_id}", response_model=ModelDetail, responses=NOT_FOUND)
def get_model(entry: ModelDep) -> ModelDetail:
    """One model: its architecture, vocabulary, training summary and what a trace can show."""
    cell = entry.model.cell
    return ModelDetail(**summary(entry).model_dump(), vocab=entry.model.vocab.to_string(),
                       history=training_summary(entry), quantities=list(cell.quantities),
                       gates=list(cell.gate_names))
