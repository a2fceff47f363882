"""The compare chart: colour by optimizer, line style by run, EMA smoothing, one hover box."""

from __future__ import annotations

import numpy as np
import pytest

from dgs_core.runs import read_bundle
from dgs_core.runs.compare import smooth_ema
from dgs_core.viz.runs import overlay_figure
from dgs_core.viz.style import OPTIMIZER_COLORS
from tests.runs.test_bundles import small_training_bundle


@pytest.fixture(scope="module")
def bundles() -> dict:
    _, first = small_training_bundle(steps=20)
    _, second = small_training_bundle(steps=20, optimizers=[("sgd", {"lr": 0.3}), ("adam", {"lr": 0.01})])
    return {"first": read_bundle(first), "second": read_bundle(second)}


def test_colour_is_the_optimizers_and_line_style_the_runs(bundles: dict) -> None:
    fig = overlay_figure(bundles, "loss")
    assert [t.name for t in fig.data] == ["sgd · first", "adam · first", "sgd · second", "adam · second"]
    colors = {t.name: t.line.color for t in fig.data}
    assert colors["sgd · first"] == colors["sgd · second"] == OPTIMIZER_COLORS["sgd"]
    assert colors["adam · first"] == colors["adam · second"] != colors["sgd · first"]
    dashes = {t.name: t.line.dash for t in fig.data}
    assert dashes["sgd · first"] == dashes["adam · first"] != dashes["sgd · second"]
    assert fig.layout.hovermode == "x unified"


def test_smoothing_draws_the_ema_over_the_faint_raw_curve(bundles: dict) -> None:
    fig = overlay_figure(bundles, "loss", smoothing=0.8)
    assert len(fig.data) == 8
    raw, smooth = fig.data[0], fig.data[1]
    assert raw.hoverinfo == "skip" and raw.showlegend is False and raw.opacity < 1
    losses = bundles["first"].results["sgd"].metrics["loss"].to_numpy()
    np.testing.assert_array_equal(raw.y, losses)
    np.testing.assert_allclose(smooth.y, smooth_ema(losses, 0.8))
    assert np.std(np.diff(smooth.y)) < np.std(np.diff(raw.y))


def test_an_unknown_curve_is_named(bundles: dict) -> None:
    with pytest.raises(ValueError, match="metric"):
        overlay_figure(bundles, "nonsense")
