"""Schedule-Free AdamW in the landscape: its path is made of the points it is evaluated at (the
average x), never of y, the point its parameters hold while training."""

from __future__ import annotations

import copy

import torch
from torch.nn.functional import cross_entropy
from torch.nn.utils import vector_to_parameters

from dgs_core.landscape import WeightPath
from dgs_core.training.trainer import Trainer
from tests.landscape.conftest import moons_config


def test_a_schedule_free_path_ends_at_its_last_evaluation_point() -> None:
    config = moons_config(optimizers=[("schedule_free", {"lr": 0.05}), ("adam", {"lr": 0.01})])
    trainer = Trainer(config)
    list(trainer.run(stop=lambda: trainer.step >= 55))  # stopped between evaluations
    adam = WeightPath.of("adam", trainer.results["adam"])
    assert adam.steps[-1] == 55  # the current weights close an ordinary path
    result = trainer.results["schedule_free"]
    path = WeightPath.of("schedule_free", result)
    assert path.steps[-1] == 50  # its current weights are y: left out
    # every snapshot is x, the point the validation loss was measured at
    probe = copy.deepcopy(result.model)
    columns = result.columns
    for step, weights in zip(path.steps[1:], path.weights[1:], strict=True):
        vector_to_parameters(weights, probe.parameters())
        with torch.no_grad():
            loss = float(cross_entropy(probe(trainer.task.x_val), trainer.task.y_val))
        recorded = columns["val_loss"][columns["step"].index(step)]
        assert abs(loss - recorded) <= 1e-6 * abs(recorded)
    at_y = torch.cat([p.detach().reshape(-1) for p in result.model.parameters()])
    assert not torch.allclose(path.final, at_y, atol=1e-4)
