"""Pieces the claims share: tuning specs, tuned arms, per-seed values and steps to a target.

Conventions every claim follows (docs/algorithms.md#claims):

* tuning runs on seed :data:`TUNING_SEED`; the measurement seeds are 1 … N, held out from it;
* a measured run that diverged counts as a model no better than guessing: final validation
  loss ln C and accuracy 1/C for C classes (a diverged run has no final model to measure);
* "steps to reach" a validation loss is the first evaluated step at or below it; a run that
  never gets there counts as one evaluation past its last step (the least it could be).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dgs_core.claims.base import Arm, Tuning
from dgs_core.claims.verdicts import Interval, interval
from dgs_core.studies.sweep import Range, StudySpec

TUNING_SEED = 0


def seeds(count: int) -> tuple[int, ...]:
    """The measurement seeds 1 … ``count`` (the tuning seed 0 is held out)."""
    return tuple(range(TUNING_SEED + 1, TUNING_SEED + 1 + count))


def training_spec(
    task: str,
    optimizers: Sequence[str],
    *,
    trials: int,
    steps: int,
    batch_size: int,
    eval_every: int,
    task_params: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    space: Mapping[str, Mapping[str, Range]] | None = None,
) -> StudySpec:
    """A grid study on a Training-lab task: every optimizer's lr over the same number of
    log-spaced points (its default × 10^±2 unless ``space`` says otherwise), scored by the final
    validation loss, at :data:`TUNING_SEED`."""
    return StudySpec(
        kind="training",
        task=task,
        task_params=dict(task_params or {}),
        model=dict(model or {"size": "small"}),
        optimizers=tuple(optimizers),
        space=dict(space or {}),
        trials=trials,
        seeds=1,
        seed=TUNING_SEED,
        search="grid",
        metric="final_val_loss",
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
    )


def tuned_arm(label: str, tuning: Tuning, optimizer: str, *, group: str = "", **changes: Any) -> Arm:
    """An arm that runs ``tuning``'s configuration of ``optimizer`` (``changes`` to its
    TrainConfig, e.g. another batch size) with the tuned hyperparameters."""
    config = tuning.spec.train_config(optimizer, tuning.fixed.get(optimizer, {}), TUNING_SEED)
    lr_factor = changes.pop("lr_factor", 1.0)
    samples = changes.pop("samples", None)
    if changes:
        config = config.replace(**changes)
    return Arm(
        label, config, group=group, tuned=(tuning.key, optimizer), lr_factor=lr_factor, samples=samples
    )


# ---------------------------------------------------------------------------------------------
# Reading the tables
# ---------------------------------------------------------------------------------------------


def seed_list(runs: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in runs["seed"].unique())


def arm_runs(runs: pd.DataFrame, arm: str) -> pd.DataFrame:
    """One arm's rows, one per seed, in seed order."""
    rows = runs[runs["arm"] == arm].sort_values("seed")
    if not len(rows):
        raise ValueError(f"Invalid arm: {arm!r} (not in the runs table)")
    return rows


def final_loss(runs: pd.DataFrame, arm: str) -> np.ndarray:
    """Final validation loss per seed; a diverged run counts as ln C."""
    rows = arm_runs(runs, arm)
    values = rows["final_val_loss"].to_numpy(dtype=float)
    return np.where(np.isfinite(values), values, rows["chance_loss"].to_numpy(dtype=float))


def final_accuracy(runs: pd.DataFrame, arm: str) -> np.ndarray:
    """Final validation accuracy per seed; a diverged run counts as 1/C."""
    rows = arm_runs(runs, arm)
    values = rows["final_val_accuracy"].to_numpy(dtype=float)
    chance = np.exp(-rows["chance_loss"].to_numpy(dtype=float))
    return np.where(np.isfinite(values), values, chance)


def diverged_count(runs: pd.DataFrame, arm: str) -> int:
    return int((arm_runs(runs, arm)["diverged_at"] >= 0).sum())


def steps_to_reach(curves: pd.DataFrame, arm: str, seed: int, target: float, *, steps: int) -> float:
    """The first evaluated step of ``arm`` at ``seed`` whose validation loss is ≤ ``target``;
    never: one evaluation past the last evaluated step."""
    rows = curves[(curves["arm"] == arm) & (curves["seed"] == seed)].sort_values("step")
    values, at = rows["val_loss"].to_numpy(dtype=float), rows["step"].to_numpy(dtype=int)
    hit = np.flatnonzero(values <= target)
    if len(hit):
        return float(at[hit[0]])
    every = int(np.diff(at).max()) if len(at) > 1 else steps
    last = int(at[-1]) if len(at) else 0
    return float(max(last, steps) + every)


def fraction_to_reach(
    runs: pd.DataFrame, curves: pd.DataFrame, arm: str, target_arm: str, *, steps: int
) -> Interval:
    """Per seed, the steps ``arm`` needs to reach ``target_arm``'s final validation loss (the
    same seed), as a fraction of ``steps``; the interval over seeds."""
    targets = final_loss(runs, target_arm)
    values = [
        steps_to_reach(curves, arm, seed, float(target), steps=steps) / steps
        for seed, target in zip(seed_list(runs), targets, strict=True)
    ]
    return interval(values)


def intervals(values: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """``{name: Interval.to_dict()}`` for the numbers."""
    return {name: interval(v).to_dict() for name, v in values.items()}


def fmt_lr(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)
