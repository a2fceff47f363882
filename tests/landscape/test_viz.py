"""The Landscape lab's figures: what they draw is the grid's and the paths' data, in the labs'
colours, with the plane's title."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

import dgs_core.viz.landscape
from dgs_core.landscape import (
    GridSpec,
    Landscape,
    LossGrid,
    PlaneSpec,
    build_plane,
    evaluate_grid,
    interpolate,
)
from dgs_core.params import ParamError
from dgs_core.viz.landscape import (
    _bilinear,
    interpolation_figure,
    landscape_contour_figure,
    landscape_figures,
    landscape_surface_figure,
    sharpness_figure,
)
from dgs_core.viz.surface import OPTIMIZER_COLORS


@pytest.fixture(scope="module")
def exact(moons: Landscape) -> LossGrid:
    return evaluate_grid(moons, build_plane(moons, PlaneSpec.exact("sgd", "adam")), GridSpec(resolution=6))


def test_the_contour_draws_the_grid_and_every_path_in_its_colour(exact: LossGrid) -> None:
    fig = landscape_contour_figure(exact)
    contour, *paths = fig.data
    np.testing.assert_allclose(np.asarray(contour.z), np.log10(exact.losses["val"]))
    np.testing.assert_allclose(np.asarray(contour.customdata), exact.losses["val"])
    assert len(paths) == 3 * 3  # line, start, end per optimizer
    for k, label in enumerate(("sgd", "adam", "dgs")):
        line, start, end = paths[3 * k : 3 * k + 3]
        coords = exact.paths[label].coords
        np.testing.assert_allclose(line.x, coords[:, 0])
        np.testing.assert_allclose(line.y, coords[:, 1])
        assert (start.x[0], start.y[0]) == (
            coords[0, 0],
            coords[0, 1],
        ) and start.marker.symbol == "circle-open"
        assert (end.x[0], end.y[0]) == (coords[-1, 0], coords[-1, 1]) and end.marker.symbol == "star"
        assert line.line.color == OPTIMIZER_COLORS[label] == end.marker.color
        data = np.asarray(line.customdata)
        np.testing.assert_array_equal(data[:, 0], exact.paths[label].steps)
        np.testing.assert_allclose(data[:, 1], exact.paths[label].distances)
        np.testing.assert_allclose(data[:, 2], exact.paths[label].losses["val"])
        np.testing.assert_allclose(data[:, 3], exact.paths[label].plane_losses["val"])
    title = fig.layout.title.text
    what, faithful = exact.title.split(" · ")
    assert what in title and faithful in title
    assert fig.layout.xaxis.title.text == exact.plane.axis_titles[0]
    assert fig.layout.yaxis.scaleanchor == "x"  # orthonormal axes keep their proportions
    linear = landscape_contour_figure(exact, split="train", log_scale=False)
    np.testing.assert_allclose(np.asarray(linear.data[0].z), exact.losses["train"])


def test_the_surface_draws_each_path_at_its_projections_loss(exact: LossGrid, moons: Landscape) -> None:
    fig = landscape_surface_figure(exact)
    surface, *paths = fig.data
    np.testing.assert_allclose(np.asarray(surface.z), exact.losses["val"])
    line = paths[0]
    np.testing.assert_allclose(line.z, exact.paths["sgd"].plane_losses["val"])
    assert fig.layout.scene.zaxis.title.text == "validation loss"
    bare = evaluate_grid(moons, exact.plane, exact.grid, path_losses=False)
    line = landscape_surface_figure(bare).data[1]
    np.testing.assert_allclose(line.z, _bilinear(bare, bare.losses["val"], bare.paths["sgd"].coords))


def test_bilinear_interpolation_is_exact_at_the_nodes_and_blank_outside(exact: LossGrid) -> None:
    values = exact.losses["val"]
    nodes = np.array([[exact.xs[i], exact.ys[j]] for j in range(6) for i in range(6)])
    np.testing.assert_allclose(_bilinear(exact, values, nodes), values.reshape(-1))
    middle = np.array([[(exact.xs[1] + exact.xs[2]) / 2, exact.ys[3]]])
    np.testing.assert_allclose(_bilinear(exact, values, middle), [(values[3, 1] + values[3, 2]) / 2])
    assert np.isnan(_bilinear(exact, values, np.array([[exact.xs[-1] + 1, exact.ys[0]]])))[0]


def test_partial_grids_and_missing_splits(moons: Landscape, exact: LossGrid) -> None:
    stopped = evaluate_grid(moons, exact.plane, exact.grid, splits=("val",), stop=lambda: True)
    assert "stopped before the end" in landscape_contour_figure(stopped).layout.title.text
    with pytest.raises(ParamError) as info:
        landscape_contour_figure(stopped, split="train")
    assert info.value.field == "split"


def test_the_interpolation_figure(moons: Landscape) -> None:
    curves = [interpolate(moons, "sgd", "adam", points=5), interpolate(moons, "adam", "dgs", points=5)]
    fig = interpolation_figure(curves)
    assert [t.name for t in fig.data] == [
        "sgd → adam: training loss",
        "sgd → adam: validation loss",
        "adam → dgs: training loss",
        "adam → dgs: validation loss",
    ]
    np.testing.assert_allclose(fig.data[1].y, curves[0].losses["val"])
    np.testing.assert_allclose(fig.data[0].x, curves[0].alphas)
    assert f"‖Δθ‖ = {curves[0].distance:.3g}" in fig.layout.title.text
    assert len(interpolation_figure(curves[0]).data) == 2


def test_the_sharpness_table_figure() -> None:
    table = pd.DataFrame(
        {
            "label": ["sgd", "adam"],
            "optimizer": ["sgd", "adam"],
            "top_eigenvalue": [3.25, 12.5],
            "iterations": [8, 100],
            "converged": [True, False],
            "train_loss": [0.2, 0.1],
            "val_loss": [0.25, 0.2],
            "loss_gap": [0.05, 0.1],
            "train_metric": [0.9, 0.95],
            "val_metric": [0.88, 0.9],
        }
    )
    cells = sharpness_figure(table).data[0].cells
    assert list(cells.values[0]) == ["sgd (SGD)", "adam (Adam)"]
    assert list(cells.values[1]) == ["3.25", "12.5"] and list(cells.values[2]) == ["8", "100 (not converged)"]
    assert list(cells.values[5]) == ["+0.05", "+0.1"] and list(cells.values[7]) == ["88.0%", "90.0%"]
    assert list(cells.fill.color[0]) == [OPTIMIZER_COLORS["sgd"], OPTIMIZER_COLORS["adam"]]
    with pytest.raises(ParamError):
        sharpness_figure(pd.DataFrame({"x": [1]}))


def test_landscape_figures_for_a_bundle(exact: LossGrid, moons: Landscape) -> None:
    figures = landscape_figures([exact], [interpolate(moons, "sgd", "adam", points=3)])
    name = exact.title.split(" · ")[0]
    assert list(figures) == [f"{name}: contours", f"{name}: surface", "Linear interpolation"]


def test_the_figure_modules_examples_run() -> None:
    failed, _ = doctest.testmod(dgs_core.viz.landscape, optionflags=doctest.ELLIPSIS)
    assert failed == 0
