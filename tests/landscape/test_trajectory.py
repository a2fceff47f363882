"""The weights' trajectory the trainer keeps for the landscape: what it holds, how it is thinned,
that it resumes and travels in a bundle, and that bundles without one (format 2) still load."""

from __future__ import annotations

import io
import json
import math
import zipfile

import pytest
import safetensors.torch
import torch

from dgs_core.runs.archive import SnapshotError
from dgs_core.runs.read import read_bundle
from dgs_core.runs.training import export_training
from dgs_core.training.config import TrainConfig
from dgs_core.training.results import (
    TRAJECTORY_MAX_BYTES,
    TRAJECTORY_MAX_SNAPSHOTS,
    trajectory_capacity,
    trajectory_stride,
)
from dgs_core.training.trainer import Trainer
from tests.runs.test_bundles import CREATED, refused, rewrite


def _config(**changes) -> TrainConfig:
    base = {
        "task": "moons",
        "task_params": {"n_samples": 200},
        "optimizers": [("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01})],
        "steps": 30,
        "eval_every": 10,
        # diagnostics on: with diag_every=0 the export writes an untyped empty diagnostics table
        # that reading refuses (a bug of the bundle's diagnostics table, not of the trajectory)
        "diag_every": 10,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize(
    ("task", "params"),
    [("moons", {"n_samples": 200}), ("digits", {}), ("modular", {"modulus": 7})],
)
def test_every_task_keeps_the_initial_weights_and_every_evaluation(task: str, params: dict) -> None:
    trainer = Trainer(_config(task=task, task_params=params, model={"size": "tiny"}, steps=25))
    initial = {label: _flat(lane.model).clone() for label, lane in trainer.lanes.items()}
    list(trainer.run())
    for label, result in trainer.results.items():
        trajectory = result.trajectory
        assert list(trajectory) == [0, 10, 20, 25]
        for flat in trajectory.values():
            assert flat.dtype == torch.float32 and flat.device.type == "cpu" and flat.ndim == 1
        assert torch.equal(trajectory[0], initial[label])
        assert torch.equal(trajectory[25], _flat(result.model))
    first, second = trainer.results.values()
    assert torch.equal(first.trajectory[0], second.trajectory[0])  # one initialisation for all
    assert not torch.equal(first.trajectory[25], second.trajectory[25])


def test_the_trajectory_is_thinned_evenly_to_its_capacity() -> None:
    trainer = Trainer(_config(steps=300, eval_every=1, optimizers=[("sgd", {"lr": 0.1})]))
    list(trainer.run(stop=lambda: trainer.step >= 130))
    steps = sorted(trainer.results["sgd"].trajectory)
    assert len(steps) <= TRAJECTORY_MAX_SNAPSHOTS
    assert steps[0] == 0 and steps[-1] == 130
    assert steps[:-1] == list(range(0, 130, 4))  # stride doubled twice: 1 → 2 → 4 steps
    list(trainer.run())
    steps = sorted(trainer.results["sgd"].trajectory)
    assert steps == [*range(0, 300, 8), 300] and len(steps) <= TRAJECTORY_MAX_SNAPSHOTS


def test_capacity_and_stride() -> None:
    assert trajectory_capacity(1_000) == TRAJECTORY_MAX_SNAPSHOTS
    assert trajectory_capacity(TRAJECTORY_MAX_BYTES // (4 * 10)) == 10  # bytes bound the big models
    assert trajectory_capacity(10**9) == 3  # never fewer than start, one more, latest
    for latest in range(0, 5000, 7):
        stride = trajectory_stride(latest, every=5, capacity=20)
        assert latest // stride + 2 <= 20 and stride % 5 == 0
        assert stride == 5 or latest // (stride // 2) + 2 > 20  # the smallest that fits


def test_a_resumed_run_keeps_the_same_trajectory_as_an_uninterrupted_one() -> None:
    config = _config(steps=200, eval_every=2)
    whole = Trainer(config)
    list(whole.run())
    parts = Trainer(config)
    list(parts.run(stop=lambda: parts.step >= 73))
    resumed = Trainer.from_state_dict(parts.state_dict())
    list(resumed.run())
    for label, result in whole.results.items():
        again = resumed.results[label].trajectory
        assert list(again) == list(result.trajectory)
        assert all(torch.equal(again[s], w) for s, w in result.trajectory.items())


# -- bundles -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_and_bundle() -> tuple[Trainer, bytes]:
    trainer = Trainer(_config(steps=40, optimizers=[("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01}), "dgs"]))
    list(trainer.run(stop=lambda: trainer.step >= 35))
    return trainer, export_training(trainer, figures={}, created=CREATED)


def test_the_trajectory_survives_a_bundle_round_trip(run_and_bundle) -> None:
    trainer, data = run_and_bundle
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {f"trajectory/{k}.safetensors" for k in ("sgd", "adam", "dgs")} <= set(names)
    bundle = read_bundle(data)
    assert bundle.notes == ()
    for label, result in trainer.results.items():
        restored = bundle.results[label].trajectory
        assert list(restored) == [0, 10, 20, 30] == list(result.trajectory)
        for step, flat in result.trajectory.items():
            assert restored[step].dtype == torch.float32
            assert restored[step].numpy().tobytes() == flat.numpy().tobytes()


def as_format_2(data: bytes) -> bytes:
    """A training bundle rewritten as format 2 wrote it: no trajectory members."""
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))
    manifest["format_version"] = 2
    removed = {n: None for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.startswith("trajectory/")}
    return rewrite(data, {**removed, "manifest.json": json.dumps(manifest).encode()})


def test_a_format_2_bundle_loads_without_trajectories(run_and_bundle) -> None:
    trainer, data = run_and_bundle
    bundle = read_bundle(as_format_2(data))
    assert bundle.notes and "format-2 bundle: no weight trajectories" in bundle.notes[0]
    assert all(r.trajectory == {} for r in bundle.results.values())
    assert bundle.results["sgd"].checkpoints.keys() == trainer.results["sgd"].checkpoints.keys()
    # a format-3 bundle must have them
    refused(rewrite(data, {"trajectory/adam.safetensors": None}), "trajectory/adam.safetensors is missing")


def _tensors(data: bytes, name: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(zipfile.ZipFile(io.BytesIO(data)).read(name))


def test_a_tampered_trajectory_is_refused(run_and_bundle) -> None:
    _, data = run_and_bundle
    name = "trajectory/adam.safetensors"
    original = _tensors(data, name)

    def with_(tensors: dict[str, torch.Tensor]) -> bytes:
        return rewrite(data, {name: safetensors.torch.save({k: t.clone() for k, t in tensors.items()})})

    refused(with_({**original, "15": original["10"]}), "'15' is not step 0 or an evaluated step")
    refused(with_({**original, "x": original["10"]}), "'x' is not step 0 or an evaluated step")
    refused(with_({**original, "10": original["10"][:-1]}), r"step 10 has shape \(\d+,\) torch.float32")
    refused(with_({**original, "10": original["10"].double()}), "float64")
    refused(with_({**original, "10": torch.full_like(original["10"], math.nan)}), "not finite")
    many = {str(step): original["10"] for step in range(0, 10 * 70, 10)}
    assert len(many) > TRAJECTORY_MAX_SNAPSHOTS
    with pytest.raises(SnapshotError, match="snapshots"):
        read_bundle(with_(many))
