"""A run's weight snapshots, kept for the explorer's checkpoint slider: a bounded number
(RNNSCOPE_RUN_SNAPSHOTS) spread over the run. Each checkpoint adds one; once there are
more than the bound, the snapshot whose removal leaves the most even spacing goes."""
from __future__ import annotations

from rnnscope.model.checkpoint import save_model
from rnnscope.model.lm import LanguageModel

from .store import DataPaths


def to_drop(steps: list[int], keep: int) -> list[int]:
    """The steps to delete so that `keep` of the sorted `steps` remain. The first and the
    latest stay (while keep >= 2); of the others, each time the one whose two neighbours are
    closest together goes, so the widest gap it leaves is as narrow as can be (the earlier of
    equals, as later steps are where a run changes least)."""
    steps = sorted(steps)
    if keep <= 0:
        return steps
    if keep == 1:
        return steps[:-1]
    dropped = []
    while len(steps) > keep:
        i = min(range(1, len(steps) - 1), key=lambda k: (steps[k + 1] - steps[k - 1], k))
        dropped.append(steps.pop(i))
    return sorted(dropped)


def snapshot_bytes(model_bytes: int) -> int:
    """Bytes on disk of one snapshot: the model's weights and the file's header (names,
    shapes, config, vocabulary)."""
    return model_bytes + 100_000


def keep_snapshot(paths: DataPaths, run_id: int, model: LanguageModel, step: int, keep: int) -> list[int]:
    """Write the run's weights at `step` and thin its snapshots to `keep`; the steps dropped."""
    if keep <= 0:
        return []
    save_model(model, paths.snapshot(run_id, step))
    dropped = to_drop(paths.snapshot_steps(run_id), keep)
    for s in dropped:
        paths.snapshot(run_id, s).unlink(missing_ok=True)
    return dropped


def remove_snapshots(paths: DataPaths, run_id: int, after_step: int = -1) -> None:
    """Delete the run's snapshots after `after_step` (all of them by default)."""
    for s in paths.snapshot_steps(run_id):
        if s > after_step:
            paths.snapshot(run_id, s).unlink(missing_ok=True)
