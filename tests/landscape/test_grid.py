"""Grids, interpolation and the cache: the batched fast path equals the plain loop, progress and
Stop behave, the memory budget and grid size are checked, results are keyed by what they depend on."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import dgs_core.landscape
import dgs_core.landscape.grid
from dgs_core.landscape import (
    GridSpec,
    Landscape,
    LandscapeCache,
    PlaneSpec,
    build_plane,
    evaluate_grid,
    interpolate,
    losses_at,
)
from dgs_core.landscape.grid import GRID_COLUMNS, _batched_function, plan_chunks, resolve_method
from dgs_core.params import ParamError
from dgs_core.studies.large_batch import LargeBatchStudy, large_batch_base
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer


def _trained(task: str, params: dict, model: dict, steps: int = 20) -> Landscape:
    config = TrainConfig(
        task=task,
        task_params=params,
        model=model,
        optimizers=[("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01})],
        steps=steps,
        eval_every=10,
        diag_every=0,
        device="cpu",
    )
    trainer = Trainer(config)
    list(trainer.run())
    return Landscape.from_trainer(trainer)


# -- the fast path against the reference ---------------------------------------------------------


def test_the_batched_grid_matches_the_plain_loop(moons: Landscape) -> None:
    plane = build_plane(moons, PlaneSpec.pca())
    grid = GridSpec(resolution=7)
    fast = evaluate_grid(moons, plane, grid, method="batched")
    slow = evaluate_grid(moons, plane, grid, method="loop")
    assert fast.complete and slow.complete
    for split in ("train", "val"):
        assert fast.losses[split].shape == (7, 7) and np.isfinite(fast.losses[split]).all()
        np.testing.assert_allclose(fast.losses[split], slow.losses[split], rtol=1e-5, atol=1e-7)
        for label in moons.labels:
            np.testing.assert_allclose(
                fast.paths[label].losses[split], slow.paths[label].losses[split], rtol=1e-5
            )
            np.testing.assert_allclose(
                fast.paths[label].plane_losses[split], slow.paths[label].plane_losses[split], rtol=1e-5
            )
    np.testing.assert_array_equal(fast.xs, slow.xs)


@pytest.mark.parametrize(
    ("task", "params", "model"),
    [
        ("digits", {"val_fraction": 0.1}, {"size": "tiny"}),
        ("modular", {"modulus": 7}, {"size": "tiny"}),
        ("spirals", {"n_samples": 200}, {"size": "tiny"}),
    ],
)
def test_the_batched_losses_match_the_loop_on_every_model_family(
    task: str, params: dict, model: dict
) -> None:
    landscape = _trained(task, params, model)
    plane = build_plane(landscape, PlaneSpec.random("adam", seed=1, include_bias_and_norm=True))
    coords = torch.tensor(
        [[0.0, 0.0], [0.3, -0.2], [-0.5, 0.8], [1.0, 1.0], [0.05, 0.0]], dtype=torch.float64
    )
    points = plane.points(coords)
    reference, _ = losses_at(landscape, lambda a, b: points[a:b], 5, method="loop")
    fast, done = losses_at(landscape, lambda a, b: points[a:b], 5, method="batched")  # as planned
    assert done == 5
    sliced = _batched_function(landscape, ("train", "val"), examples=7)(points)  # examples in slices of 7
    for split, column in (("train", 0), ("val", 1)):
        np.testing.assert_allclose(fast[split], reference[split], rtol=1e-5, err_msg=f"{task} {split}")
        np.testing.assert_allclose(
            sliced[:, column], reference[split], rtol=1e-5, err_msg=f"{task} {split} sliced"
        )
    # the loss at the final weights is the trainer's own last evaluation
    final = landscape.paths["adam"]
    train, val = landscape.evaluate(final.final, "train")[0], landscape.evaluate(final.final, "val")[0]
    np.testing.assert_allclose([fast["train"][0], fast["val"][0]], [train, val], rtol=1e-5)


def test_auto_picks_the_loop_for_convolutions_on_the_cpu(moons: Landscape) -> None:
    assert resolve_method(moons, "auto") == "batched" and resolve_method(moons, "loop") == "loop"
    digits = _trained("digits", {"val_fraction": 0.1}, {"size": "tiny"}, steps=1)
    assert resolve_method(digits, "auto") == "loop" and resolve_method(digits, "batched") == "batched"
    with pytest.raises(ParamError) as info:
        resolve_method(moons, "fast")
    assert info.value.field == "method"


def test_the_grid_spans_the_paths_and_the_frame_is_row_major(moons: Landscape) -> None:
    plane = build_plane(moons, PlaneSpec.exact("sgd", "adam"))
    grid = evaluate_grid(moons, plane, GridSpec(resolution=5, margin=0.5), splits=("val",), path_losses=False)
    coords = np.concatenate([p.coords for p in grid.paths.values()])
    assert grid.xs[0] < coords[:, 0].min() and grid.xs[-1] > coords[:, 0].max()
    assert grid.ys[0] < coords[:, 1].min() and grid.ys[-1] > coords[:, 1].max()
    frame = grid.frame()
    assert list(frame.columns) == list(GRID_COLUMNS) and len(frame) == 25
    assert frame["train_loss"].isna().all()  # not asked for
    row = frame.iloc[7]  # j = 1, i = 2
    assert (row["i"], row["j"]) == (2, 1) and row["x"] == grid.xs[2] and row["y"] == grid.ys[1]
    assert row["val_loss"] == grid.losses["val"][1, 2]
    assert grid.paths["adam"].losses == {}
    fixed = evaluate_grid(moons, plane, GridSpec(resolution=3, extent=(-1, 1, 0, 2)), splits=("val",))
    np.testing.assert_array_equal(fixed.xs, [-1, 0, 1])
    np.testing.assert_array_equal(fixed.ys, [0, 1, 2])
    random = evaluate_grid(
        moons, build_plane(moons, PlaneSpec.random("sgd")), GridSpec(resolution=3), splits=("val",)
    )
    np.testing.assert_array_equal(random.xs, [-1, 0, 1])  # Li et al.'s window


def test_path_losses_say_how_far_the_drawing_is_from_the_truth(moons: Landscape) -> None:
    plane = build_plane(moons, PlaneSpec.exact("sgd", "dgs"))
    grid = evaluate_grid(moons, plane, GridSpec(resolution=3))
    sgd, adam = grid.paths["sgd"], grid.paths["adam"]
    # sgd's end is on the plane: its projection is itself; adam's points are off it
    assert sgd.distances[-1] < 1e-5
    np.testing.assert_allclose(sgd.plane_losses["val"][-1], sgd.losses["val"][-1], rtol=1e-5)
    assert adam.distances[-1] > 0.01 and adam.plane_losses["val"][-1] != pytest.approx(adam.losses["val"][-1])
    # the truth at the final weights: the trainer's own evaluation is of the last evaluated step
    assert adam.steps[-1] == 55 and adam.steps[-2] == 50


# -- progress, Stop, bad inputs ------------------------------------------------------------------


def test_progress_counts_every_point_and_stop_leaves_the_rest_blank(moons: Landscape) -> None:
    plane = build_plane(moons, PlaneSpec.pca())
    reports: list[tuple[int, int]] = []
    grid = evaluate_grid(
        moons, plane, GridSpec(resolution=4), method="loop", progress=lambda d, t: reports.append((d, t))
    )
    extra = 2 * sum(len(p.steps) for p in moons.paths.values())
    assert reports[-1] == (16 + extra, 16 + extra) and reports[0] == (1, 16 + extra)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports) and grid.complete

    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 5  # five points, then Stop

    stopped = evaluate_grid(moons, plane, GridSpec(resolution=4), method="loop", stop=stop)
    values = stopped.losses["val"].reshape(-1)
    assert not stopped.complete and np.isfinite(values[:5]).all() and np.isnan(values[5:]).all()
    assert stopped.paths["sgd"].losses == {}  # the paths come after the grid
    np.testing.assert_allclose(values[:5], grid.losses["val"].reshape(-1)[:5], rtol=1e-6)


def test_bad_grid_inputs_name_their_field(moons: Landscape) -> None:
    plane = build_plane(moons, PlaneSpec.pca())
    cases = [
        (lambda: GridSpec(resolution=1001), "resolution"),
        (lambda: GridSpec(resolution=2), "resolution"),
        (lambda: GridSpec(extent=(1, 0, 0, 1)), "extent"),
        (lambda: GridSpec(extent=(0, 1, 0)), "extent"),
        (lambda: GridSpec(margin=-1), "margin"),
        (lambda: GridSpec.from_dict({"resolution": 5, "size": 3}), "size"),
        (lambda: evaluate_grid(moons, plane, GridSpec(resolution=3), splits=("test",)), "splits"),
        (lambda: evaluate_grid(moons, plane, GridSpec(resolution=3), method="fast"), "method"),
        (lambda: evaluate_grid(moons, plane, GridSpec(resolution=3), memory_budget_mb=0), "memory_budget_mb"),
    ]
    for make, field in cases:
        with pytest.raises(ParamError) as info:
            make()
        assert info.value.field == field, field
    assert GridSpec.from_dict(GridSpec(resolution=5, extent=(0, 1, 2, 3)).to_dict()) == GridSpec(
        5, (0, 1, 2, 3)
    )


def test_a_grid_point_too_large_for_the_memory_budget_is_refused() -> None:
    # 128 channels: ~300k weights (1.2 MB) and ~1 MB of activations per example
    landscape = _trained("digits", {"val_fraction": 0.1}, {"size": "tiny", "channels": 128}, steps=1)
    plane = build_plane(landscape, PlaneSpec.random("sgd"))
    with pytest.raises(
        ParamError, match=r"Invalid memory_budget_mb: 1 \(must be >= \d+: one grid point"
    ) as info:
        evaluate_grid(landscape, plane, GridSpec(resolution=3), memory_budget_mb=1)
    assert info.value.field == "memory_budget_mb"
    plan = plan_chunks(landscape, ("val",), 8)  # fits: fewer examples per call
    assert plan.points == 1 and plan.examples < len(landscape.task.y_val)


# -- interpolation -------------------------------------------------------------------------------


def test_interpolation_ends_at_the_two_solutions(moons: Landscape) -> None:
    curve = interpolate(moons, "sgd", "adam", points=9, alpha_range=(-1.0, 3.0))
    assert curve.complete and list(curve.alphas) == [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    for alpha_index, label in ((2, "sgd"), (4, "adam")):
        for split in ("train", "val"):
            expected = moons.evaluate(moons.paths[label].final, split)[0]
            np.testing.assert_allclose(curve.losses[split][alpha_index], expected, rtol=2e-6)
    distance = float((moons.paths["adam"].final.double() - moons.paths["sgd"].final.double()).norm())
    assert curve.distance == pytest.approx(distance)
    loop = interpolate(moons, "sgd", "adam", points=9, alpha_range=(-1.0, 3.0), method="loop")
    assert resolve_method(moons, "auto") == "batched"  # so curve was the batched path
    np.testing.assert_allclose(curve.losses["val"], loop.losses["val"], rtol=1e-5)
    assert list(curve.frame().columns) == ["alpha", "train_loss", "val_loss"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start": "lion", "end": "adam"}, "start"),
        ({"start": "sgd", "end": "lion"}, "end"),
        ({"start": "sgd", "end": "sgd"}, "end"),
        ({"start": "sgd", "end": "adam", "points": 2}, "points"),
        ({"start": "sgd", "end": "adam", "alpha_range": (1.0, 0.0)}, "alpha_range"),
        ({"start": "sgd", "end": "adam", "alpha_range": (0.0, 100.0)}, "alpha_range"),
    ],
)
def test_bad_interpolations_name_their_field(moons: Landscape, kwargs: dict, field: str) -> None:
    with pytest.raises(ParamError) as info:
        interpolate(moons, **kwargs)
    assert info.value.field == field


def test_a_small_and_a_large_batch_solution_of_the_large_batch_study() -> None:
    base = large_batch_base("moons", task_params={"n_samples": 200}, device="cpu", diag_every=0)
    study = LargeBatchStudy(base, small_batch=16, large_batch=128, epochs=2)
    with pytest.raises(ParamError) as info:
        Landscape.from_large_batch(study)
    assert info.value.field == "study"
    list(study.run())
    landscape = Landscape.from_large_batch(study, labels=["sgd", "lars"])
    assert landscape.labels == ("sgd · batch 16", "lars · batch 16", "sgd · batch 128", "lars · batch 128")
    curve = interpolate(landscape, "sgd · batch 16", "sgd · batch 128", points=5, alpha_range=(0.0, 1.0))
    for index, batch in ((0, 16), (4, 128)):
        result = study.trainers[batch].results["sgd"]
        np.testing.assert_allclose(curve.losses["val"][index], result.columns["val_loss"][-1], rtol=2e-6)


# -- the cache -----------------------------------------------------------------------------------


def test_the_cache_keys_what_a_grid_depends_on(moons: Landscape, moons_trainer: Trainer) -> None:
    cache = LandscapeCache(max_entries=2)
    spec, grid = PlaneSpec.exact("sgd", "adam"), GridSpec(resolution=3)
    first = cache.grid(moons, spec, grid, splits=("val",))
    assert cache.grid(moons, spec, grid, splits=("val",), method="loop") is first  # how, not what
    key = LandscapeCache.key(moons, spec, grid, ("val",))
    assert key != LandscapeCache.key(moons, PlaneSpec.exact("adam", "sgd"), grid, ("val",))
    assert key != LandscapeCache.key(moons, spec, GridSpec(resolution=5), ("val",))
    assert key != LandscapeCache.key(moons, spec, grid, ("train", "val"))
    assert key != LandscapeCache.key(moons, spec, grid, ("val",), path_losses=False)
    same = Landscape.from_trainer(moons_trainer)
    assert same is not moons and LandscapeCache.key(same, spec, grid, ("val",)) == key  # the same weights
    fewer = Landscape.from_trainer(moons_trainer, labels=["sgd", "adam"])
    assert LandscapeCache.key(fewer, spec, grid, ("val",)) != key
    cache.grid(moons, PlaneSpec.pca(), grid, splits=("val",))
    cache.grid(moons, PlaneSpec.random("sgd"), grid, splits=("val",))
    assert len(cache) == 2 and cache.get(key) is None  # the least recently used went first
    stopped = cache.grid(moons, PlaneSpec.exact("sgd", "dgs"), grid, splits=("val",), stop=lambda: True)
    assert (
        not stopped.complete
        and cache.get(LandscapeCache.key(moons, PlaneSpec.exact("sgd", "dgs"), grid, ("val",))) is None
    )


def test_the_grid_modules_examples_run() -> None:
    for module in (dgs_core.landscape, dgs_core.landscape.grid):
        failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failed == 0, module.__name__
