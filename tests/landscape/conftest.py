"""Shared runs for the landscape tests: three optimizers on moons from one initialisation."""

from __future__ import annotations

import pytest

from dgs_core.landscape import Landscape
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer


def moons_config(**changes) -> TrainConfig:
    base = {
        "task": "moons",
        "task_params": {"n_samples": 300},
        "optimizers": [("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01}), "dgs"],
        "steps": 60,
        "eval_every": 10,
        "diag_every": 10,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="session")
def moons_trainer() -> Trainer:
    trainer = Trainer(moons_config())
    list(trainer.run(stop=lambda: trainer.step >= 55))  # stopped between evaluations
    return trainer


@pytest.fixture(scope="session")
def moons(moons_trainer: Trainer) -> Landscape:
    return Landscape.from_trainer(moons_trainer)
