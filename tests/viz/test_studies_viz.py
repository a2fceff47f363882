"""Study tables without Ray: the best score so far per optimizer while a study runs, and the
tuned configurations as one training run."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from dgs_core.params import ParamError
from dgs_core.studies.sweep import SEEDS, TUNE, StudySpec
from dgs_core.studies.tuner import CURVE_COLUMNS, TRIAL_COLUMNS, StudyResult
from dgs_core.viz.studies import progress_table

SPEC = StudySpec(task="moons", optimizers=("sgd", "adam"), trials=3, seeds=2, steps=40)


def row(phase: str, optimizer: str, lr: float, score: float, diverged_at: int = -1) -> dict:
    return {
        "phase": phase,
        "optimizer": optimizer,
        "trial": 0,
        "seed": 0,
        "hparams": json.dumps({"lr": lr}),
        "score": score,
        "status": "done",
        "diverged_at": diverged_at,
        "step": 40,
        "seconds": 1.0,
    }


ROWS = [
    row(TUNE, "sgd", 0.1, 0.40),
    row(TUNE, "sgd", 0.01, 0.30),
    row(TUNE, "sgd", 3.0, math.inf, diverged_at=7),
    row(TUNE, "adam", 0.5, math.inf, diverged_at=2),
    row(SEEDS, "sgd", 0.01, 0.31),
]


def test_the_progress_table_counts_each_optimizer_and_keeps_its_best_so_far() -> None:
    table = progress_table(SPEC, ROWS).set_index("optimizer")
    best = "best so far (best validation loss)"
    assert table.loc["SGD", "tuning trials"] == "3 / 3"
    assert table.loc["SGD", best] == pytest.approx(0.30)
    assert table.loc["SGD", "at"] == "lr=0.01"
    assert table.loc["SGD", "diverged"] == 1
    assert table.loc["SGD", "seed runs"] == "1 / 2"
    # every Adam trial so far diverged: no best yet
    assert table.loc["Adam", "tuning trials"] == "1 / 3"
    assert math.isnan(table.loc["Adam", best]) and table.loc["Adam", "at"] == "–"
    assert table.loc["Adam", "diverged"] == 1


def test_the_tuned_config_trains_every_optimizer_at_its_best_side_by_side() -> None:
    trials = pd.DataFrame(ROWS, columns=list(TRIAL_COLUMNS))
    result = StudyResult(SPEC, trials, pd.DataFrame(columns=list(CURVE_COLUMNS)))
    config = result.tuned_config(eval_every=5, diag_every=10)
    assert [(s.name, dict(s.hparams)) for s in config.optimizers] == [("sgd", {"lr": 0.01}), ("adam", {})]
    assert (config.task, config.steps, config.batch_size, config.seed) == ("moons", 40, 32, 0)
    assert (config.eval_every, config.diag_every, config.device) == (5, 10, "cpu")
    surface = StudyResult(StudySpec(kind="surface", optimizers=("sgd",)), trials, result.curves)
    with pytest.raises(ParamError, match="Invalid kind: 'surface'"):
        surface.tuned_config(eval_every=5, diag_every=5)
