"""Surface-lab figure builders: the traces, panels, frames and markers they promise."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dgs_core import metrics
from dgs_core.surfaces.functions import get_surface
from dgs_core.surfaces.simulator import compare, simulate
from dgs_core.surfaces.studies import basin_map, lr_sweep
from dgs_core.viz import surface as viz
from dgs_core.viz.style import optimizer_label


@pytest.fixture(scope="module")
def runs():
    return compare("rosenbrock", ["sgd", "momentum", "adam"], steps=120)


def _named(fig: go.Figure, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def _path_trace(fig: go.Figure, label: str) -> go.Scatter:
    (trace,) = [t for t in fig.data if t.name == label and t.mode == "lines+markers"]
    return trace


def test_contour_draws_surface_minima_start_and_paths(runs) -> None:
    fig = viz.contour_figure("rosenbrock", runs)
    assert isinstance(fig.data[0], go.Contour)
    (minimum,) = _named(fig, "global minimum")
    assert (minimum.x[0], minimum.y[0]) == (1.0, 1.0)
    (start,) = _named(fig, "start")
    assert (start.x[0], start.y[0]) == (-2.0, 2.0)
    for name, run in runs.items():
        path = _path_trace(fig, optimizer_label(name))
        np.testing.assert_array_equal(path.x, run.points[:, 0, 0])
        np.testing.assert_array_equal(path.y, run.points[:, 0, 1])
    # log colours on Rosenbrock: the colour axis spans several decades
    assert fig.layout.coloraxis.cmax - fig.layout.coloraxis.cmin > 3
    assert fig.layout.xaxis.range == (-2.0, 2.0) and fig.layout.yaxis.range == (-1.0, 3.0)


def test_step_cuts_every_path_and_moves_the_head(runs) -> None:
    fig = viz.contour_figure("rosenbrock", runs, step=40)
    label = optimizer_label("adam")
    path = _path_trace(fig, label)
    assert len(path.x) == 41
    index = fig.data.index(path)
    head = fig.data[index + 1]
    expected = runs["adam"].points[40, 0]
    assert (head.x[0], head.y[0]) == (expected[0], expected[1])


def test_click_grid_gives_coordinates(runs) -> None:
    fig = viz.contour_figure("rosenbrock", runs, click_density=21)
    (grid,) = _named(fig, viz.CLICK_GRID)
    assert len(grid.x) == 21 * 21
    assert min(grid.x) == -2.0 and max(grid.y) == 3.0
    assert fig.layout.clickmode == "event+select"
    selection = {"selection": {"points": [{"curve_number": 1, "point_index": 5, "x": 0.4, "y": -1.0}]}}
    assert viz.start_from_selection(selection) == (0.4, -1.0)
    assert viz.start_from_selection({"points": []}) is None
    assert viz.start_from_selection(None) is None
    assert not _named(viz.contour_figure("rosenbrock", runs, clickable=False), viz.CLICK_GRID)


def test_overshoot_and_oscillation_markers_sit_on_the_path() -> None:
    run = simulate("quadratic", "sgd", {"lr": 0.0195}, steps=50)
    fig = viz.contour_figure("quadratic", run)
    path = _path_trace(fig, "SGD")
    index = fig.data.index(path)
    overshoots, oscillations = fig.data[index + 2], fig.data[index + 3]
    pts = run.points[:, 0]
    over = np.flatnonzero(metrics.overshoot_mask(pts, run.surface.grad(pts))) + 1
    np.testing.assert_array_equal(overshoots.x, pts[over, 0])
    np.testing.assert_array_equal(overshoots.customdata, over)
    assert len(oscillations.x) == int(run.metrics()["oscillations"][0]) > 0
    assert {t.name for t in fig.data} >= {"overshoot ⟨∇f(x⁺), Δ⟩ > 0", "oscillation cos(Δₜ, Δₜ₋₁) < 0"}
    quiet = viz.contour_figure("quadratic", run, events=False)
    index = quiet.data.index(_path_trace(quiet, "SGD"))
    assert len(quiet.data[index + 2].x) == len(quiet.data[index + 3].x) == 0
    assert not _named(quiet, "overshoot ⟨∇f(x⁺), Δ⟩ > 0")


def test_divergence_is_marked_at_the_last_finite_point() -> None:
    run = simulate("rosenbrock", "sgd", lrs=[1e-3, 0.05], steps=100)
    fig = viz.contour_figure("rosenbrock", run)
    d = int(run.diverged_at[1])
    marks = [t for t in fig.data if t.text and t.text[0] == f"diverged at step {d}"]
    assert len(marks) == 1
    assert (marks[0].x[0], marks[0].y[0]) == tuple(run.points[d - 1, 1])
    assert _named(fig, "diverged")  # legend key
    assert any("lr 0.05" in (t.name or "") for t in fig.data)


def test_extrasgd_extrapolated_points_are_drawn() -> None:
    run = simulate("booth", "extrasgd", steps=15)
    fig = viz.contour_figure("booth", run, step=10)
    index = fig.data.index(_path_trace(fig, optimizer_label("extrasgd")))
    segments, points = fig.data[index + 4], fig.data[index + 5]
    np.testing.assert_array_equal(points.x, run.extrapolated[:10, 0, 0])
    assert len(segments.x) == 3 * 10  # x_t, x_t + δ, gap
    assert _named(fig, "extrapolated point (ExtraSGD)")


def test_animation_frames_and_one_shared_slider(runs) -> None:
    fig = viz.small_multiples_figure("rosenbrock", runs, animate=True, max_frames=13)
    steps = viz.timeline_steps(120, 13)
    assert [f.name for f in fig.frames] == [str(k) for k in steps]
    assert len(fig.layout.sliders) == 1 and len(fig.layout.sliders[0].steps) == len(steps)
    assert fig.layout.updatemenus[0].buttons[0].label.endswith("play")
    frame = fig.frames[3]
    assert len(frame.traces) == len(frame.data)
    first = fig.data[frame.traces[0]]
    assert first.mode == "lines+markers"  # the frame replaces the path traces themselves
    x = np.frombuffer(base64.b64decode(frame.data[0].x["bdata"]), dtype=np.float32)
    np.testing.assert_allclose(x, runs["sgd"].points[: steps[3] + 1, 0, 0], rtol=1e-6)
    # the frame's traces belong to the three panels, and only traces that ever draw are listed
    assert {fig.data[i].xaxis for i in frame.traces} == {"x", "x2", "x3"}
    assert all(fig.data[i].mode != "markers+text" for i in frame.traces)  # nothing diverged
    # frames survive plotly's full validation
    assert len(go.Figure(fig.to_dict()).frames) == len(steps)


def test_small_multiples_share_axes_and_colour_scale(runs) -> None:
    fig = viz.small_multiples_figure("rosenbrock", runs, cols=2)
    contours = [t for t in fig.data if isinstance(t, go.Contour)]
    assert len(contours) == 3
    assert {c.coloraxis for c in contours} == {"coloraxis"}
    assert [a.text for a in fig.layout.annotations] == [optimizer_label(n) for n in runs]
    assert fig.layout.xaxis.range == fig.layout.xaxis3.range == (-2.0, 2.0)
    with pytest.raises(ValueError, match="Invalid runs"):
        viz.small_multiples_figure("booth", runs)


def test_contour_of_the_saddle_uses_linear_colours() -> None:
    fig = viz.contour_figure("saddle", simulate("saddle", "sgd", steps=20))
    assert fig.layout.coloraxis.colorbar.title.text == "f"
    assert not _named(fig, "global minimum")


def test_loss_scaling_batch_and_3d_figures(runs) -> None:
    loss = viz.loss_figure(runs, step=30)
    assert len(loss.data) == 3 and loss.layout.yaxis.type == "log"
    assert loss.layout.shapes[0].x0 == 30
    scaling = viz.scaling_figure(runs)
    assert len(scaling.data) == 6  # two coordinates per run
    sgd = scaling.data[0]
    np.testing.assert_allclose(sgd.y, runs["sgd"].lr[:, 0], rtol=1e-6)  # η·scaling = η for SGD
    dgs = viz.scaling_figure(simulate("quadratic", "dgs", steps=20))
    assert any("own" in t.name for t in dgs.data)
    batch = viz.batch_size_figure(runs)
    assert len(batch.data) == 3
    three = viz.surface_3d_figure("rosenbrock", runs, step=10)
    assert isinstance(three.data[0], go.Surface)
    paths = [t for t in three.data if isinstance(t, go.Scatter3d) and t.mode == "lines+markers"]
    assert [len(t.x) for t in paths] == [11] * 3


def test_basin_map_figures() -> None:
    basin = basin_map("himmelblau", "sgd", {"lr": 0.01}, resolution=12, steps=100)
    fig = viz.basin_map_figure(basin)
    heat = fig.data[0]
    assert isinstance(heat, go.Heatmap) and np.shape(heat.z) == (12, 12)
    ticks = list(heat.colorbar.ticktext)
    assert ticks[:2] == ["diverged", "elsewhere"] and ticks[2].startswith("global min (3.00, 2.00)")
    assert _named(fig, viz.CLICK_GRID)
    steps = viz.basin_map_figure(basin, kind="steps").data[0]
    assert np.nanmax(np.asarray(steps.z, dtype=float)) <= 100
    assert isinstance(viz.basin_map_figure(basin, kind="gap").data[0], go.Heatmap)
    with pytest.raises(ValueError, match="Invalid kind"):
        viz.basin_map_figure(basin, kind="nope")


def test_lr_sensitivity_marks_divergence_default_and_tuned() -> None:
    sweeps = {
        "SGD": lr_sweep("rosenbrock", "sgd", steps=100),
        "Adam": lr_sweep("rosenbrock", "adam", steps=100),
    }
    fig = viz.lr_sensitivity_figure(sweeps)
    assert fig.layout.xaxis.type == "log"
    curves = [t for t in fig.data if t.mode == "lines+markers"]
    assert [c.name for c in curves] == ["SGD", "Adam"]
    diverged = [t for t in fig.data if t.marker.symbol == "x"]
    assert diverged and len(diverged[0].x) == int((sweeps["SGD"].diverged_at >= 0).sum())
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert [s.x[0] for s in stars] == [sweeps["SGD"].best_lr(), sweeps["Adam"].best_lr()]
    rings = [t for t in fig.data if t.marker.symbol == "circle-open"]
    assert [r.x[0] for r in rings] == [sweeps["SGD"].default_lr, sweeps["Adam"].default_lr]
    table = viz.tuning_table(sweeps)
    assert list(table["optimizer"]) == ["SGD", "Adam"]
    assert table.loc[0, "default lr"] == sweeps["SGD"].default_lr
    assert table.loc[1, "tuned lr"] == sweeps["Adam"].best_lr()


def test_metrics_table_matches_run_metrics(runs) -> None:
    table = viz.metrics_table(runs)
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == [
        "optimizer",
        "lr",
        "final gap",
        "steps to ε=0.001",
        "overshoots",
        "overshoot %",
        "oscillations",
        "oscillation %",
        "spikes K",
        "diverged",
    ]
    for i, run in enumerate(runs.values()):
        values = run.metrics()
        assert table.loc[i, "final gap"] == values["final_gap"][0]
        assert table.loc[i, "overshoots"] == values["overshoots"][0]
        assert table.loc[i, "spikes K"] == values["spikes"][0]
    diverged = viz.metrics_table({"SGD": simulate("rosenbrock", "sgd", {"lr": 0.05}, steps=50)})
    assert diverged.loc[0, "diverged"].startswith("diverged at step ")
    assert diverged.loc[0, "final gap"] == np.inf


def test_figures_serialise_to_json(runs) -> None:
    fig = viz.contour_figure(get_surface("rosenbrock"), runs, animate=True, max_frames=10)
    assert fig.to_json()
