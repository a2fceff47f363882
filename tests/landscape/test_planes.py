"""Planes: the exact plane is exact at its three points, PCA sees points in its span without
error, filter normalization is Li et al.'s, and bad specs name their field."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from torch.nn.functional import cross_entropy

import dgs_core.landscape.planes
import dgs_core.landscape.weights
from dgs_core.landscape import (
    Landscape,
    PlaneSpec,
    WeightPath,
    build_plane,
    filter_normalize,
    losses_at,
    random_directions,
)
from dgs_core.params import ParamError
from dgs_core.training.models import build_model
from dgs_core.training.tasks import make_task
from dgs_core.training.trainer import Trainer
from tests.landscape.conftest import moons_config


def _ulp_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to float32 precision: every element within one float32 rounding of itself."""
    scale = torch.maximum(a.abs(), b.abs())
    return bool(((a - b).abs() <= scale * torch.finfo(torch.float32).eps).all())


# -- the landscape's paths -----------------------------------------------------------------------


def test_each_path_is_its_trajectory_then_its_current_weights(
    moons_trainer: Trainer, moons: Landscape
) -> None:
    assert moons.labels == ("sgd", "adam", "dgs")
    for label, path in moons.paths.items():
        assert path.steps == (0, 10, 20, 30, 40, 50, 55) and path.source == "trajectory"
        model = moons_trainer.results[label].model
        assert torch.equal(path.final, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert torch.equal(moons.initial, moons.paths["adam"].weights[0])
    # the landscape copied the weights: the run going on leaves it as it was
    assert moons.paths["sgd"].weights.data_ptr() != moons_trainer.results["sgd"].trajectory[0].data_ptr()


def test_runs_that_did_not_start_from_the_same_weights_are_refused(moons_trainer: Trainer) -> None:
    other = Trainer(moons_config(seed=1, steps=10))
    list(other.run())
    results = {"sgd": moons_trainer.results["sgd"], "sgd (seed 1)": other.results["sgd"]}
    with pytest.raises(ParamError, match="must start from the same initial weights") as info:
        Landscape.from_results(results, moons_trainer.task)
    assert info.value.field == "runs"


def test_unknown_labels_are_refused_naming_the_field(moons_trainer: Trainer, moons: Landscape) -> None:
    with pytest.raises(ParamError) as info:
        build_plane(moons, PlaneSpec.exact("sgd", "lion"))
    assert info.value.field == "labels" and "'lion'" in str(info.value)
    with pytest.raises(ParamError) as info:
        Landscape.from_trainer(moons_trainer, labels=["adam", "lion"])
    assert info.value.field == "labels"
    with pytest.raises(ParamError) as info:
        build_plane(moons, PlaneSpec.pca(centre="lion"))
    assert info.value.field == "centre"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "hessian"}, "kind"),
        ({"kind": "exact", "labels": ["sgd"]}, "labels"),
        ({"kind": "exact", "labels": ["sgd", "sgd"]}, "labels"),
        ({"kind": "random", "labels": ["sgd", "adam"]}, "labels"),
        ({"kind": "exact", "labels": ["sgd", "adam"], "seed": 3}, "seed"),
        ({"kind": "pca", "include_bias_and_norm": True}, "include_bias_and_norm"),
        ({"kind": "random", "labels": ["sgd"], "centre": "initial"}, "centre"),
        ({"kind": "random", "labels": ["sgd"], "seed": -1}, "seed"),
        ({"kind": "pca", "colour": "red"}, "colour"),
    ],
)
def test_bad_plane_specs_name_their_field(data: dict, field: str) -> None:
    with pytest.raises(ParamError) as info:
        PlaneSpec.from_dict(data)
    assert info.value.field == field


def test_plane_specs_round_trip_through_json() -> None:
    for spec in (
        PlaneSpec.exact("a", "b"),
        PlaneSpec.pca(["a"], centre="initial"),
        PlaneSpec.random("a", 7, True),
    ):
        assert PlaneSpec.from_dict(spec.to_dict()) == spec


# -- the exact plane ---------------------------------------------------------------------------------


def test_the_exact_plane_reproduces_the_loss_at_its_three_points(
    moons_trainer: Trainer, moons: Landscape
) -> None:
    plane = build_plane(moons, PlaneSpec.exact("sgd", "dgs"))
    assert list(plane.anchors) == ["initial", "sgd", "dgs"]
    assert torch.allclose(
        plane.directions @ plane.directions.T, torch.eye(2, dtype=torch.float64), atol=1e-12
    )
    task = moons_trainer.task
    originals = {"initial": moons.initial, "sgd": moons.paths["sgd"].final, "dgs": moons.paths["dgs"].final}
    coords = torch.tensor([plane.anchors[name] for name in originals], dtype=torch.float64)
    on_plane = plane.points(coords)
    values, done = losses_at(moons, lambda a, b: on_plane[a:b], 3)
    assert done == 3
    for k, (name, weights) in enumerate(originals.items()):
        assert _ulp_close(on_plane[k], weights), name  # the plane gives the weights back
        with torch.no_grad():  # the model's own loss at the real weights
            model = moons.model_at(weights)
            train = float(cross_entropy(model(task.x_train), task.y_train))
            val = float(cross_entropy(model(task.x_val), task.y_val))
        np.testing.assert_allclose(values["train"][k], train, rtol=2e-6, err_msg=name)
        np.testing.assert_allclose(values["val"][k], val, rtol=2e-6, err_msg=name)
    # the third optimizer's path does not lie on it, and the plane says how far it is
    assert plane.max_distance > 0.01 and 0 < plane.relative_distance <= 1
    _, distances = plane.coordinates(moons.paths["adam"].weights)
    assert distances.max() == pytest.approx(plane.max_distance) and distances[0] < 1e-5
    assert "Exact plane through the initial weights, sgd and dgs" in plane.title


def test_the_exact_plane_needs_three_points_off_one_line(moons_trainer: Trainer) -> None:
    twins = Trainer(moons_config(optimizers=[("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.1})], steps=10))
    list(twins.run())
    landscape = Landscape.from_trainer(twins)
    with pytest.raises(ParamError, match="on one line") as info:
        build_plane(landscape, PlaneSpec.exact("sgd", "sgd#2"))
    assert info.value.field == "labels"


# -- the PCA plane -----------------------------------------------------------------------------------


def _synthetic(offplane: float = 0.0) -> tuple[Landscape, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three paths whose every point lies in the affine plane c + span(u, v) (+ offplane · w)."""
    task = make_task("moons", n_samples=60)
    torch.manual_seed(0)
    model = build_model(task, {"size": "tiny"})
    n = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(1)
    c, u, v, w = (torch.randn(n, generator=generator) for _ in range(4))
    paths = {}
    for k, label in enumerate(("a", "b", "c")):
        t = torch.linspace(0, 1, 6)
        a, b = (k + 1) * t, torch.sin(3 * t + k) - torch.sin(torch.tensor(float(k)))
        weights = c + a[:, None] * u + b[:, None] * v + offplane * (t**2)[:, None] * w
        paths[label] = WeightPath(label, "sgd", "done", tuple(range(0, 60, 10)), weights.float())
    return Landscape(paths, model, task), c, u, v


def test_pca_projection_error_is_zero_for_points_in_its_span() -> None:
    landscape, *_ = _synthetic()
    for centre in ("mean", "initial", "b"):
        plane = build_plane(landscape, PlaneSpec.pca(centre=centre))
        assert plane.max_distance <= 1e-5 * plane.extent, centre
        first, second = plane.explained_variance
        assert first >= second > 0 and first + second == pytest.approx(1.0, abs=1e-9)
        for path in landscape.paths.values():
            coords, distances = plane.coordinates(path.weights)
            assert distances.max() <= 1e-5 * plane.extent
            assert torch.allclose(plane.points(torch.from_numpy(coords)), path.weights, atol=1e-5)
        # the axes point towards the first optimizer's final weights
        assert (plane.coordinates(landscape.paths["a"].final[None])[0] >= 0).all()


def test_pca_reports_how_far_points_off_its_span_are() -> None:
    landscape, *_ = _synthetic(offplane=0.5)
    plane = build_plane(landscape, PlaneSpec.pca())
    first, second = plane.explained_variance
    assert first + second < 1.0
    everything = torch.cat([p.weights for p in landscape.paths.values()]).double()
    coords, distances = plane.coordinates(everything)
    residual = everything - plane.origin - torch.from_numpy(coords) @ plane.directions
    np.testing.assert_allclose(distances, residual.norm(dim=1).numpy(), rtol=1e-9)
    assert plane.max_distance == pytest.approx(distances.max()) and plane.max_distance > 0.01
    assert f"{first:.1%} + {second:.1%}" in plane.title


def test_pca_of_a_real_run(moons: Landscape) -> None:
    plane = build_plane(moons, PlaneSpec.pca())
    assert 0.5 < sum(plane.explained_variance) <= 1.0
    assert torch.allclose(
        plane.directions @ plane.directions.T, torch.eye(2, dtype=torch.float64), atol=1e-10
    )
    centred = build_plane(moons, PlaneSpec.pca(["sgd", "adam"], centre="initial"))
    assert torch.equal(centred.origin, moons.initial.double())
    coords, distances = centred.coordinates(moons.initial[None])
    assert np.abs(coords).max() < 1e-12 and distances[0] < 1e-12


# -- filter normalization ----------------------------------------------------------------------------


def _li_et_al(direction: dict, weights: dict, include: bool) -> dict:
    """Li et al.'s ``normalize_directions_for_weights`` (net_plotter.py), loop for loop."""
    out = {}
    for name, d in direction.items():
        d, w = d.clone(), weights[name]
        if d.dim() <= 1:
            d = w.clone() if include else torch.zeros_like(d)
        else:
            for di, wi in zip(d, w, strict=True):
                di.mul_(wi.norm() / (di.norm() + 1e-10))
        out[name] = d
    return out


@pytest.mark.parametrize(("task", "params"), [("digits", {}), ("modular", {"modulus": 7}), ("moons", {})])
def test_filter_normalization_gives_each_filter_its_weights_norm(task: str, params: dict) -> None:
    data = make_task(task, **params)
    torch.manual_seed(0)
    model = build_model(data, {"size": "tiny"})
    weights = {n: p.detach().double() for n, p in model.named_parameters()}
    generator = torch.Generator().manual_seed(3)
    direction = {
        n: torch.randn(w.shape, generator=generator, dtype=torch.float64) for n, w in weights.items()
    }
    for include in (False, True):
        normalized = filter_normalize(direction, weights, include_bias_and_norm=include)
        reference = _li_et_al(direction, weights, include)
        for name, d in normalized.items():
            w = weights[name]
            assert torch.allclose(d, reference[name], rtol=1e-12, atol=1e-15), name
            if w.ndim >= 2:  # every filter (output channel, row, token) has its weights' norm
                dims = tuple(range(1, w.ndim))
                norms = torch.linalg.vector_norm(d, dim=dims), torch.linalg.vector_norm(w, dim=dims)
                assert torch.allclose(*norms, rtol=1e-9), name
            else:
                assert torch.equal(d, w if include else torch.zeros_like(w)), name
    assert any(w.ndim == 4 for w in weights.values()) or task != "digits"  # convolutions were covered


def test_random_directions_are_seeded_and_filter_normalized(moons: Landscape) -> None:
    final = moons.paths["adam"].final.double()
    first = random_directions(moons.layout, final, seed=5)
    assert torch.equal(first, random_directions(moons.layout, final, seed=5))
    assert not torch.equal(first, random_directions(moons.layout, final, seed=6))
    plane = build_plane(moons, PlaneSpec.random("adam", seed=5))
    assert torch.equal(plane.directions, first) and torch.equal(plane.origin, final)
    assert plane.anchors == {"adam": (0.0, 0.0)}
    for row in first:
        for name, d in moons.layout.unflatten(row).items():
            w = moons.layout.unflatten(final)[name]
            if w.ndim == 1:
                assert not d.any(), name  # biases left out by default
            else:
                assert torch.allclose(d.norm(dim=1), w.norm(dim=1)), name
    with_bias = build_plane(moons, PlaneSpec.random("adam", seed=5, include_bias_and_norm=True))
    bias = moons.layout.unflatten(with_bias.directions[0])["0.bias"]
    assert torch.equal(bias, moons.layout.unflatten(final)["0.bias"])
    assert "seed 5, biases and norms included" in with_bias.title


def test_the_landscape_modules_examples_run() -> None:
    for module in (dgs_core.landscape.weights, dgs_core.landscape.planes):
        failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failed == 0, module.__name__
