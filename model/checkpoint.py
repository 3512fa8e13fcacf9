"""Checkpoints: one safetensors file that both rnnscope and PyTorch read.

Tensors carry the torch state_dict names (see network.param_shapes); the metadata
holds everything else needed to rebuild the model from the file alone. No pickle.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

from .lm import LanguageModel
from .network import ModelConfig
from .vocab import Vocab

FORMAT = "rnnscope/1"


class CheckpointError(ValueError):
    """The file is missing, truncated, or not an rnnscope checkpoint."""


def model_metadata(model: LanguageModel, summary_key: str = "history") -> dict[str, str]:
    """What rebuilds a model besides its weights: cell and sizes, vocabulary, training
    configuration and history summary, as the string values safetensors metadata holds."""
    return {
        "config": json.dumps(model.config.to_dict()),
        "vocab": json.dumps(model.vocab.chars, ensure_ascii=False),
        "train_config": json.dumps(model.train_config),
        summary_key: json.dumps(model.history),
    }


def write_tensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    write_atomic(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata))


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: a reader sees
    the old file or the new one, never half of one, even if the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)          # mkstemp's 0600 would make the file private to its writer
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_tensors(path: str | os.PathLike, fmt: str, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors file whose metadata format is `fmt`;
    CheckpointError saying what is wrong otherwise. `what` names the expected kind of file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    try:
        tensors = load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); "
                              "it may be truncated or of another format") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path} is a safetensors file but not {what} "
                              f"(metadata format {meta.get('format')!r}, expected {fmt!r})")
    return tensors, meta


def model_from(meta: dict[str, str], params: dict[str, np.ndarray], summary_key: str = "history") -> LanguageModel:
    """Rebuild a model from model_metadata and its weights (KeyError/ValueError if inconsistent)."""
    return LanguageModel(ModelConfig(**json.loads(meta["config"])), Vocab(json.loads(meta["vocab"])), params,
                         json.loads(meta.get("train_config", "{}")), json.loads(meta.get(summary_key, "{}")))


def save_model(model: LanguageModel, path: str | os.PathLike) -> None:
    """Save weights (float32 unless the model is float64) under torch's state_dict names,
    with config, vocab and history as metadata."""
    write_tensors(path, model.params, {"format": FORMAT} | model_metadata(model))


def load_model(path: str | os.PathLike) -> LanguageModel:
    tensors, meta = read_tensors(path, FORMAT, "an rnnscope checkpoint")
    try:
        return model_from(meta, tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has inconsistent contents: {e}") from None


TRAIN_FORMAT = "rnnscope-train/1"


def save_train_state(path: str | os.PathLike, model: LanguageModel, state) -> None:
    """A resumable training run: current and best weights, optimizer moments, the carried
    recurrent state, the dropout generator and the full metric history. `model` supplies
    config, vocab, training config and corpus summary. A separate file from the model
    checkpoint, whose tensors must stay exactly torch's state_dict."""
    tensors = {f"params.{k}": v for k, v in state.params.items()}
    tensors |= {f"optimizer.{k}": np.asarray(v) for k, v in state.optimizer.items()}
    if state.best_params is not None:
        tensors |= {f"best.{k}": v for k, v in state.best_params.items()}
    if state.carried is not None:
        tensors["carried.h"] = state.carried.h
        if state.carried.c is not None:
            tensors["carried.c"] = state.carried.c
    metadata = {"format": TRAIN_FORMAT} | model_metadata(model, "history_summary") | {
        "step": str(state.step),
        "best_val": json.dumps(state.best_val if np.isfinite(state.best_val) else None),
        "seconds": repr(state.seconds),
        "rng": json.dumps(state.rng),
        "history": json.dumps(asdict(state.history)),
    }
    write_tensors(path, tensors, metadata)


def load_train_state(path: str | os.PathLike):
    """-> (model with the current weights, TrainState)."""
    from .network import State
    from .train import History, TrainState

    tensors, meta = read_tensors(path, TRAIN_FORMAT, "an rnnscope training state")

    def group(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        params = group("params.")
        model = model_from(meta, params, "history_summary")
        carried = None
        if "carried.h" in tensors:
            carried = State(tensors["carried.h"], tensors.get("carried.c"))
        best_val = json.loads(meta["best_val"])
        state = TrainState(params, group("optimizer."), int(meta["step"]), carried, json.loads(meta["rng"]),
                           group("best.") or None, np.inf if best_val is None else best_val,
                           History(**json.loads(meta["history"])), float(meta["seconds"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has inconsistent contents: {e}") from None
    return model, state
