"""Bundles of runs with the second wave's optimizers round-trip: their state (Schedule-Free's z,
weights and train mode, AdaScale's gain estimates, Muon's two kinds of tensors, …) and the
surface runs that draw them."""

from __future__ import annotations

import pandas as pd

from dgs_core.runs import read_bundle
from dgs_core.runs.surface import export_surface
from dgs_core.runs.training import export_training, resume_trainer
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from tests.runs.test_bundles import CREATED, assert_identical

SECOND_WAVE = ("lamb", "adascale", "mars", "lion", "muon", "schedule_free")


def _config(steps: int) -> TrainConfig:
    return TrainConfig(
        task="moons",
        task_params={"n_samples": 200},
        optimizers=list(SECOND_WAVE),
        batch_size=8,
        steps=steps,
        eval_every=5,
        diag_every=5,
        device="cpu",
    )


def test_a_stopped_training_run_resumes_from_its_bundle_like_the_uninterrupted_run() -> None:
    stopped = Trainer(_config(20))
    events = stopped.run()
    for event in events:
        if event.step >= 10:
            break
    events.close()
    bundle = read_bundle(export_training(stopped, figures={}, created=CREATED))
    assert_identical(bundle.trainer.state_dict(), stopped.state_dict())
    resumed = resume_trainer(bundle)
    list(resumed.run())
    reference = Trainer(_config(20))
    list(reference.run())
    for label, result in reference.results.items():
        pd.testing.assert_frame_equal(resumed.results[label].metrics, result.metrics, check_exact=True)
        assert_identical(resumed.lanes[label].model.state_dict(), result.model.state_dict(), label)
        assert_identical(resumed.lanes[label].optimizer.state_dict(), result.optimizer.state_dict(), label)


def test_a_surface_run_round_trips() -> None:
    config = SurfaceConfig(surface="rosenbrock", optimizers=SECOND_WAVE, steps=40, noise_std=0.5)
    runs = config.simulate()
    bundle = read_bundle(export_surface(runs, config, figures={}, created=CREATED))
    assert SurfaceConfig.from_dict(bundle.config) == config
    for name, run in runs.items():
        assert_identical(bundle.runs[name].points, run.points, name)
