"""Figure specs of the chart fixes (issue 15): legends, log and batch-size ticks, clipped lr
sensitivity, one meaning for ▲, readable small multiples, and the browser-played timeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dgs_core import surfaces
from dgs_core.surfaces.studies import LrSweep
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz import style
from dgs_core.viz import surface as sviz
from dgs_core.viz import training as tviz


@pytest.fixture(scope="module")
def moons() -> Trainer:
    config = TrainConfig(
        task="moons",
        task_params={"n_samples": 100},
        optimizers=["sgd", "adam"],
        steps=6,
        eval_every=3,
        device="cpu",
    )
    trainer = Trainer(config)
    list(trainer.run())
    return trainer


@pytest.fixture(scope="module")
def runs() -> dict[str, surfaces.Run]:
    return surfaces.compare("rosenbrock", ["sgd", "momentum", "adam"], steps=120)


def _triangles(fig: go.Figure) -> list:
    return [t for t in fig.data if getattr(t, "marker", None) and t.marker.symbol == "triangle-up"]


def _legend_traces(fig: go.Figure) -> list:
    """Traces plotly would list in the legend (contours and scatters show unless told not to)."""
    return [t for t in fig.data if t.type != "heatmap" and t.showlegend is not False]


def test_decision_boundary_legend_names_only_the_classes(moons) -> None:
    fig = tviz.decision_boundary_figure(moons.results, moons.task, step=6)
    contours = [t for t in fig.data if t.type == "contour"]
    assert len(contours) == 2 and all(c.showlegend is False for c in contours)  # no "trace 1/5"
    assert [t.name for t in _legend_traces(fig)] == ["class 0", "class 1"]


def test_log_ticks_label_more_than_one_decade_mark() -> None:
    within = style.log_ticks([0.05, 0.3])  # under a decade: plotly labels only "10⁻¹"
    assert within["ticktext"] == ["0.05", "0.1", "0.2"]
    assert style.log_ticks([0.55, 0.69])["ticktext"] == ["0.55", "0.6", "0.69"]
    wide = style.log_ticks([1e-12, 1e3])
    assert wide["ticktext"][0] == "10⁻¹²" and len(wide["tickvals"]) <= 9
    assert all(a < b for a, b in zip(wide["tickvals"], wide["tickvals"][1:], strict=False))
    assert style.log_ticks([np.nan, -1.0]) == {}


def test_batch_size_axis_has_ascending_whole_number_ticks() -> None:
    sizes = style.log_ticks([2, 3, 40, 100], integer=True)
    assert sizes["ticktext"] == ["2", "5", "10", "20", "50", "100"]  # not "2, 100, 5, 2, 10, 5"
    run = surfaces.simulate("rosenbrock", "adadagrad", steps=40, noise_std=2.0, batch_size=2)
    fig = sviz.batch_size_figure(run)
    ticks = list(fig.layout.yaxis.tickvals)
    assert ticks == sorted(ticks) and all(float(v).is_integer() for v in ticks)
    assert list(fig.layout.yaxis.ticktext) == [str(int(v)) for v in ticks]


def test_loss_axes_carry_explicit_ticks_and_the_legend_sits_above(runs, moons) -> None:
    fig = sviz.loss_figure(runs)
    assert fig.layout.yaxis.type == "log" and len(fig.layout.yaxis.tickvals) >= 3
    assert fig.layout.legend.y > 1 and fig.layout.legend.yanchor == "bottom"  # never over the x labels
    training = tviz.loss_figure(moons.results)
    assert len(training.layout.yaxis.tickvals) >= 2
    assert training.layout.legend.y > 1 and training.layout.legend.yanchor == "bottom"
    assert tviz.batch_size_figure(moons.results).layout.legend.y > 1


class _BlownUp(LrSweep):
    """A real sweep whose last finite learning rate ended at ~1e168 (as seen in the lab)."""

    @property
    def final_gap(self) -> np.ndarray:
        gap = super().final_gap.copy()
        gap[self.blown] = 1e168
        return gap

    @property
    def blown(self) -> int:
        return int(np.flatnonzero(self.run.diverged_at < 0)[-1])


def test_lr_sensitivity_clips_blown_up_values_onto_the_diverged_row() -> None:
    sweep = surfaces.lr_sweep("quadratic", "sgd", steps=60)
    blown = _BlownUp(sweep.run, sweep.default_lr, sweep.tolerance)
    fig = sviz.lr_sensitivity_figure({"SGD": blown})
    curve = next(t for t in fig.data if t.name == "SGD")
    shown = np.asarray(curve.y, dtype=float)
    assert np.isnan(shown[blown.blown]) and np.nanmax(shown) < 1e6  # off the curve: nothing flattened
    marks = [t for t in fig.data if t.marker.symbol == "x"]
    assert len(marks) == 1 and blown.lrs[blown.blown] in list(marks[0].x)
    assert any("blew up" in text for text in marks[0].text)
    assert float(marks[0].y[0]) == pytest.approx(10 * np.nanmax(shown[np.isfinite(shown) & (shown > 0)]))


def test_triangle_means_overshoot_and_spikes_have_their_own_key(runs, moons, monkeypatch) -> None:
    surface_fig = sviz.contour_figure("rosenbrock", runs)
    triangles = {t.name for t in _triangles(surface_fig)}
    assert triangles == {None, "overshoot ⟨∇f(x⁺), Δ⟩ > 0"}  # the paths' markers and their key
    spikes = pd.DataFrame({"step": [2], "loss": [3.0]})
    monkeypatch.setattr(tviz, "largest_spikes", lambda frame: spikes)
    fig = tviz.loss_figure(moons.results)
    assert not _triangles(fig)
    assert [t.name for t in fig.data if t.showlegend is not False and t.name == style.SPIKE_NAME]
    assert {t.marker.symbol for t in fig.data if t.legendgroup == "spike"} == {style.SPIKE_MARKER["symbol"]}


def test_small_multiples_events_do_not_bury_the_paths(runs) -> None:
    panels = sviz.small_multiples_figure("rosenbrock", runs)
    overlay = sviz.contour_figure("rosenbrock", runs)

    def overshoots(fig: go.Figure) -> list:
        return [t for t in _triangles(fig) if t.name is None]

    assert all(t.marker.size == 6 and t.marker.opacity < 1 for t in overshoots(panels))
    assert all(t.marker.size == 9 for t in overshoots(overlay))


def test_tables_show_a_dash_and_display_names_never_none_or_keys(moons) -> None:
    short = surfaces.compare("rosenbrock", ["sgd", "adam"], steps=5)  # ε not reached in 5 steps
    table = sviz.metrics_table(short)
    assert table["steps to ε=0.001"].tolist() == ["—", "—"]
    assert table["optimizer"].tolist() == ["SGD", "Adam"]
    reached = sviz.metrics_table({"Adam": surfaces.simulate("booth", "adam", steps=2000)})
    assert reached.loc[0, "steps to ε=0.001"].isdigit()
    lanes = tviz.lanes_table(moons.results)
    assert lanes["optimizer"].tolist() == ["SGD", "Adam"]
    assert not lanes.isna().any().any() and "None" not in lanes.astype(str).to_numpy()
