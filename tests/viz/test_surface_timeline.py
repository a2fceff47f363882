"""The Surface lab timeline's payload (dgs_core.viz.surface.timeline_data): what the browser draws
and plays is the runs themselves, their events and their curves, as plain JSON."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from dgs_core import metrics, surfaces
from dgs_core.viz.surface.timeline import linear_ticks, timeline_data


@pytest.fixture(scope="module")
def runs() -> dict[str, surfaces.Run]:
    return surfaces.compare("rosenbrock", ["sgd", "adam", "extrasgd"], steps=120)


def test_paths_and_events_are_the_runs_own(runs) -> None:
    data = timeline_data("rosenbrock", runs, view="panels", step=30, opening=10)
    json.dumps(data, allow_nan=False)  # plain JSON: no NaN or infinity on the wire
    assert (data["step"], data["steps"], data["opening"]) == (30, 120, 10)
    assert data["panels"] == ["SGD", "Adam", "ExtraSGD"]
    for path, (name, run) in zip(data["paths"], runs.items(), strict=True):
        points = run.points[:, 0]
        np.testing.assert_allclose(np.stack([path["x"], path["y"]], axis=-1), points, rtol=1e-6)
        np.testing.assert_allclose(path["gap"], run.gap[:, 0], rtol=1e-6)
        overshoots = metrics.overshoot_mask(points, run.surface.grad(points))
        assert path["overshoot"] == (np.flatnonzero(overshoots) + 1).tolist()
        assert path["oscillation"] == (np.flatnonzero(metrics.oscillation_mask(points)) + 1).tolist()
        assert (path["extrapolated"] is not None) == (name == "extrasgd")
        assert path["diverged"] == -1 and path["message"] == ""
    extrapolated = data["paths"][2]["extrapolated"]
    assert len(extrapolated) == 120
    np.testing.assert_allclose(extrapolated[0], runs["extrasgd"].extrapolated[0, 0], rtol=1e-6)
    assert [kind for kind, _ in data["keys"]] == ["overshoot", "oscillation", "extrapolated"]
    with pytest.raises(ValueError, match="Invalid view: '3d'"):
        timeline_data("rosenbrock", runs, view="3d")


def test_the_overlay_puts_every_path_on_one_map(runs) -> None:
    data = timeline_data("rosenbrock", runs, view="overlay")
    assert data["panels"] == ["Rosenbrock"] and {p["panel"] for p in data["paths"]} == {0}
    assert data["step"] == 120  # no step: the end of the run


def test_the_surface_levels_rise_from_the_minimum_bottom_row_first(runs) -> None:
    data = timeline_data("rosenbrock", runs, resolution=41)
    size = data["field"]["size"]
    levels = np.frombuffer(base64.b64decode(data["field"]["levels"]), dtype=np.uint8).reshape(size, size)
    # Rosenbrock's domain [−2, 2] × [−1, 3]: its minimum (1, 1) is column 30, row 20 from the bottom
    assert levels[20, 30] == levels.min() and levels.max() == 254
    assert levels[0, 0] > levels[20, 30] and len(data["palette"]) == 30
    bar = data["colorbar"]
    decades = [value for value, _ in bar["ticks"]]
    assert bar["title"] == "f − f* (log)" and decades == list(range(int(decades[0]), int(decades[-1]) + 1))
    assert (
        bar["lo"] <= decades[0] and decades[-1] <= bar["hi"] and bar["ticks"][0][1] == f"1e{int(decades[0])}"
    )


def test_curves_are_drawn_whole_on_log_axes_with_their_ticks(runs) -> None:
    data = timeline_data("rosenbrock", runs, step=10)
    titles = [plot["title"] for plot in data["curves"]]
    assert titles == ["f(x_t) − f*", "η_t × scaling (x)", "η_t × scaling (y)"]
    gap = data["curves"][0]
    assert gap["log"] and [len(line["y"]) for line in gap["lines"]] == [121] * 3
    lo, hi = gap["range"]
    assert all(lo <= value <= hi for value, _ in gap["ticks"])  # ticks in log10 units, inside
    assert len(gap["ticks"]) >= 3 and [v for v, _ in gap["xticks"]] == [0, 50, 100]
    scaling = data["curves"][1]
    assert [line["first"] for line in scaling["lines"]] == [1, 1, 1]  # η·scaling of steps 1 … T
    assert all(len(line["y"]) == 120 for line in scaling["lines"])


def test_a_grown_batch_gets_its_plot_and_a_diverged_run_its_cross() -> None:
    grown = surfaces.compare("quadratic", ["adadagrad"], steps=60, noise_std=1.0)
    titles = [plot["title"] for plot in timeline_data("quadratic", grown)["curves"]]
    assert titles[-1] == "batch size"
    diverged = {"sgd": surfaces.simulate("rosenbrock", "sgd", {"lr": 0.01}, steps=100)}
    data = timeline_data("rosenbrock", diverged)
    step = int(diverged["sgd"].diverged_at[0])
    (path,) = data["paths"]
    assert path["diverged"] == step and path["message"] == metrics.divergence_message(step)
    assert len(path["x"]) == step and data["curves"][0]["marks"] == [[step - 1, path["gap"][-1]]]
    top = data["curves"][0]["range"][1]  # the blown-up values cut off 10⁴ above the start's gap
    assert top < np.log10(1e4 * path["gap"][0]) + 1 < np.log10(path["gap"][-1])
    assert ["diverged", "diverged"] in data["keys"]
    json.dumps(data, allow_nan=False)


def test_the_same_runs_give_the_same_id_and_a_new_start_a_new_one(runs) -> None:
    again = surfaces.compare("rosenbrock", ["sgd", "adam", "extrasgd"], steps=120)
    moved = surfaces.compare("rosenbrock", ["sgd", "adam", "extrasgd"], steps=120, start=(0.5, 2.0))
    assert timeline_data("rosenbrock", runs)["id"] == timeline_data("rosenbrock", again)["id"]
    assert timeline_data("rosenbrock", runs)["id"] != timeline_data("rosenbrock", moved)["id"]


def test_linear_ticks_are_round_and_inside() -> None:
    assert linear_ticks(-2, 2) == [[-2.0, "-2"], [-1.0, "-1"], [0.0, "0"], [1.0, "1"], [2.0, "2"]]
    assert [v for v, _ in linear_ticks(0, 500)] == [0, 100, 200, 300, 400, 500]
    assert [v for v, _ in linear_ticks(0.13, 0.91)] == [0.2, 0.4, 0.6, 0.8]
    assert linear_ticks(3.0, 3.0) == [[3.0, "3"]]
