"""Comparing runs: TensorBoard's EMA smoothing, effective configurations and their diff."""

from __future__ import annotations

import numpy as np
import pytest

from dgs_core.runs import export_surface, read_bundle
from dgs_core.runs.compare import MISSING, config_diff, diff_table, effective_config, smooth_ema
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.viz.runs import surface_figures
from tests.runs.test_bundles import small_training_bundle

# -- smoothing ---------------------------------------------------------------------------------


def test_smoothing_is_tensorboards_debiased_ema() -> None:
    values = np.array([4.0, 2.0, 6.0, 1.0])
    w = 0.6
    # the closed form: a weighted mean of the values so far, weights w^(t-i), normalised
    expected = [
        sum(w ** (t - i) * values[i] for i in range(t + 1)) / sum(w ** (t - i) for i in range(t + 1))
        for t in range(len(values))
    ]
    np.testing.assert_allclose(smooth_ema(values, w), expected, rtol=1e-12)
    assert smooth_ema(values, w)[0] == values[0]  # debiased: starts on the data, not at 0


def test_zero_smoothing_returns_the_values_and_a_constant_stays_constant() -> None:
    values = np.array([3.0, 1.0, 2.0])
    np.testing.assert_array_equal(smooth_ema(values, 0.0), values)
    np.testing.assert_allclose(smooth_ema(np.full(50, 2.5), 0.99), np.full(50, 2.5), rtol=1e-12)


def test_non_finite_values_pass_through_and_are_skipped_by_the_average() -> None:
    smoothed = smooth_ema([1.0, np.nan, 3.0, np.inf], 0.5)
    assert np.isnan(smoothed[1]) and np.isinf(smoothed[3])
    np.testing.assert_allclose(smoothed[[0, 2]], smooth_ema([1.0, 3.0], 0.5))


@pytest.mark.parametrize("weight", [-0.1, 1.0, 2, "0.5"])
def test_a_bad_smoothing_weight_is_named(weight) -> None:
    with pytest.raises(ValueError, match="smoothing"):
        smooth_ema([1.0, 2.0], weight)


# -- the diff ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs() -> dict:
    """The same run twice, but DGS's lr: 0.05 set by hand against its default."""
    base = {"optimizers": [("sgd", {"lr": 0.1}), "dgs"]}
    _, first = small_training_bundle(steps=10, **base)
    _, second = small_training_bundle(steps=10, optimizers=[("sgd", {"lr": 0.1}), ("dgs", {"lr": 0.05})])
    return {"a": read_bundle(first), "b": read_bundle(second)}


def test_the_effective_config_resolves_every_default(two_runs: dict) -> None:
    flat = effective_config(two_runs["a"])
    assert flat["optimizers.dgs.optimizer"] == "dgs"
    assert "optimizers.dgs.lr" in flat  # the registry's default, though the config never set it
    assert flat["optimizers.sgd.lr"] == "0.1"
    assert flat["task_params.n_samples"] == "200"
    assert "task_params.noise" in flat  # the task's default
    assert flat["batch_policy"] == "fixed"  # a TrainConfig default


def test_the_one_real_difference_is_the_only_row(two_runs: dict) -> None:
    diff = config_diff(two_runs)
    assert list(diff["setting"]) == ["optimizers.dgs.lr"]
    assert diff.iloc[0]["b"] == "0.05" and diff.iloc[0]["a"] != "0.05"
    everything = config_diff(two_runs, all_settings=True)
    assert everything.iloc[0]["setting"] == "optimizers.dgs.lr"  # differences first
    assert len(everything) > 20
    equal = everything.iloc[1:]
    assert (equal["a"] == equal["b"]).all()


def test_differences_come_before_settings_only_some_runs_have() -> None:
    flat = {
        "x": {"steps": "10", "seed": "0", "optimizers.sgd.lr": "0.1", "task": "moons"},
        "y": {"steps": "20", "seed": "0", "optimizers.adam.lr": "0.001", "task": "moons"},
    }
    diff = diff_table(flat)
    assert list(diff["setting"]) == ["steps", "optimizers.sgd.lr", "optimizers.adam.lr"]
    assert list(diff.iloc[1]) == ["optimizers.sgd.lr", "0.1", MISSING]
    assert list(diff_table(flat, all_settings=True)["setting"])[-2:] == ["seed", "task"]


def test_surface_runs_diff_their_resolved_hyperparameters() -> None:
    config = SurfaceConfig(surface="quadratic", optimizers=("sgd", "adam"), steps=20)
    changed = SurfaceConfig(
        surface="quadratic", optimizers=("sgd", "adam"), steps=20, hparams={"adam": {"lr": 0.3}}
    )
    bundles = {}
    for name, c in (("plain", config), ("tuned", changed)):
        runs = c.simulate()
        bundles[name] = read_bundle(export_surface(runs, c, figures=surface_figures(runs)))
    diff = config_diff(bundles)
    assert list(diff["setting"]) == ["optimizers.adam.lr"]
    assert diff.iloc[0]["tuned"] == "0.3"
    assert "surface_params.kappa" in effective_config(bundles["plain"])  # the surface's default
