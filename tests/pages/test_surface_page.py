"""Surface lab page (AppTest): the default comparison, the URL round trip, bad input, and a timeline
that redraws from cached runs without simulating again."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_pages.parts import surface_state as state
from dgs_core import metrics, surfaces
from dgs_core.optim import registry
from dgs_core.surfaces.config import DEFAULT_OPTIMIZERS
from dgs_core.viz import surface as viz
from tests.pages.conftest import app_at, shown

PAGE = "app_pages/surface_lab.py"
ROOT = Path(__file__).resolve().parents[2]


def open_page(query: dict[str, str] | None = None) -> AppTest:
    """The app opened on the Surface lab with ``query`` in the URL.

    app_at(PAGE) switches before the first run, when the navigation is not yet registered, and
    shows Home; so run once, then switch.
    """
    at = app_at()
    at.query_params.update(query or {})
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def figure(at: AppTest, key: str) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def timeline(at: AppTest) -> dict:
    """The timeline component's payload (dgs_core.viz.surface.timeline_data)."""
    shown = [c for c in at.get("bidi_component") if c.proto.id.endswith("-surface_main")]
    assert len(shown) == 1, [c.proto.id for c in at.get("bidi_component")]
    return json.loads(shown[0].proto.json)


def values(data) -> np.ndarray:
    """A trace's array from the spec: a list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data, dtype=float)


def paths(spec: dict) -> dict[str, np.ndarray]:
    """Each optimizer's drawn path, ``(k + 1, 2)`` up to the step it opens at: from the timeline's
    payload (which holds the whole path) or a Plotly figure's spec."""
    if "paths" in spec:
        return {
            p["label"]: np.stack([p["x"], p["y"]], axis=-1)[: spec["step"] + 1].astype(float)
            for p in spec["paths"]
        }
    lines = [t for t in spec["data"] if t.get("mode") == "lines+markers" and t.get("showlegend")]
    return {t["name"]: np.stack([values(t["x"]), values(t["y"])], axis=-1) for t in lines}


def curves(data: dict, title: str) -> list[dict]:
    """The timeline's lines on the plots whose title starts with ``title``."""
    return [line for plot in data["curves"] if plot["title"].startswith(title) for line in plot["lines"]]


def starts(data: dict) -> list[tuple[float, float]]:
    """Where each path starts (the timeline) or each panel's start marker (a Plotly figure)."""
    if "paths" in data:
        return [(p["x"][0], p["y"][0]) for p in data["paths"]]
    return [
        (float(values(t["x"])[0]), float(values(t["y"])[0])) for t in data["data"] if t.get("name") == "start"
    ]


def labels(names) -> list[str]:
    return [registry.get(n).label for n in names]


def texts(elements) -> list[str]:
    return [shown(e.value) for e in elements]


@pytest.fixture
def simulations(monkeypatch) -> Counter:
    """Count the simulations the page asks for, by optimizer (cache hits never reach here)."""
    calls: Counter = Counter()
    real = surfaces.simulate

    def counted(surface, optimizer="sgd", *args, **kwargs):
        calls[optimizer] += 1
        return real(surface, optimizer, *args, **kwargs)

    monkeypatch.setattr(surfaces, "simulate", counted)
    return calls


def test_default_page_runs_every_default_optimizer_from_one_start():
    at = open_page()
    data = timeline(at)
    assert data["view"] == "panels" and data["panels"] == labels(DEFAULT_OPTIMIZERS)  # a panel each
    assert starts(data) == [(-2.0, 2.0)] * len(DEFAULT_OPTIMIZERS)  # the same start in every panel
    drawn = paths(data)
    assert list(drawn) == labels(DEFAULT_OPTIMIZERS)
    assert [p["panel"] for p in data["paths"]] == list(range(len(DEFAULT_OPTIMIZERS)))
    for path in drawn.values():
        assert tuple(path[0]) == (-2.0, 2.0) and 2 <= len(path) <= 501
    # the curves along the steps under the maps, one per optimizer (and coordinate)
    assert [line["label"] for line in curves(data, "f(x_t)")] == labels(DEFAULT_OPTIMIZERS)
    x_scaling = [line["label"] for line in curves(data, "η_t × scaling (x)") if not line["dash"]]
    assert x_scaling == labels(DEFAULT_OPTIMIZERS)
    assert [plot["title"] for plot in data["curves"]][1:] == ["η_t × scaling (x)", "η_t × scaling (y)"]
    table = at.dataframe[0].value
    assert table["optimizer"].tolist() == labels(DEFAULT_OPTIMIZERS)
    assert {"final gap", "steps to ε=0.001", "overshoots", "oscillations", "spikes K"} <= set(table.columns)
    assert any("(1-x)^2 + 100" in latex for latex in texts(at.latex))
    described = " ".join(texts(at.markdown))
    for name in DEFAULT_OPTIMIZERS:
        info = registry.get(name)
        assert info.description in described
        assert (f"**{info.label}** *(interpretation)*" in described) == info.interpretation
    assert data["step"] == data["steps"] == 500  # opens at the end of the run
    assert not at.toggle(key="surface_clip_on").value
    assert at.query_params == {"surface": "rosenbrock", "start": "-2.0,2.0"}
    assert [b.proto.label for b in at.get("download_button")] == ["Export snapshot (.zip)"]
    assert not at.error


def test_timeline_opens_at_the_linked_step_and_redraws_from_cached_runs(simulations):
    # a seed no other test uses: these three runs are not cached yet
    at = open_page({"opt": "sgd,adam,dgs", "seed": "987001", "steps": "200", "t": "20"})
    assert not at.exception, at.exception
    assert simulations == {"sgd": 1, "adam": 1, "dgs": 1}
    data = timeline(at)
    assert data["step"] == 20 and {len(p) for p in paths(data).values()} == {21}  # every panel at 20
    assert at.query_params["t"] == "20"

    at.radio(key="surface_view").set_value("overlay").run()
    data = timeline(at)
    assert data["view"] == "overlay" and data["panels"] == ["Rosenbrock"]  # one map for all
    assert {p["panel"] for p in data["paths"]} == {0} and data["step"] == 20
    assert simulations == {"sgd": 1, "adam": 1, "dgs": 1}

    at.number_input(key="surface_hp_adam_lr").set_value(0.02).run()  # only Adam changed
    assert simulations == {"sgd": 1, "adam": 2, "dgs": 1}
    assert at.query_params["adam.lr"] == "0.02"


def test_a_copied_link_restores_the_same_picture():
    query = {
        "surface": "quadratic",
        "kappa": "10.0",
        "opt": "sgd,adam",
        "adam.lr": "0.05",
        "start": "-1.5,1.0",
        "steps": "200",
        "clip": "5.0",
        "view": "overlay",
        "t": "50",
    }
    at = open_page(query)
    assert at.selectbox(key="surface_surface").value == "quadratic"
    assert at.number_input(key="surface_param_kappa").value == 10.0
    assert (at.number_input(key="surface_x").value, at.number_input(key="surface_y").value) == (-1.5, 1.0)
    assert at.multiselect(key="surface_optimizers").value == ["sgd", "adam"]
    assert at.number_input(key="surface_hp_adam_lr").value == 0.05
    assert at.toggle(key="surface_clip_on").value and at.number_input(key="surface_clip").value == 5.0
    assert at.radio(key="surface_view").value == "overlay"
    spec = timeline(at)
    assert spec["step"] == 50
    assert starts(spec) == [(-1.5, 1.0)] * 2
    expected = surfaces.simulate(
        surfaces.get_surface("quadratic", kappa=10.0),
        "adam",
        {"lr": 0.05},
        start=(-1.5, 1.0),
        steps=200,
        clip_norm=5.0,
    )
    np.testing.assert_allclose(paths(spec)["Adam"], expected.points[:51, 0], rtol=1e-6)  # 7 digits
    assert at.query_params == query  # and the page writes the same link back


def test_a_malformed_link_falls_back_to_defaults_with_a_notice():
    at = open_page(
        {
            "surface": "nope",
            "steps": "-5",
            "start": "abc",
            "opt": "foo,adam",
            "adam.lr": "-1",
            "t": "zz",
            "junk": "1",
        }
    )
    (warning,) = [w for w in texts(at.warning) if "could not be used" in w]
    for fragment in (
        "surface='nope'",
        "steps='-5'",
        "start='abc'",
        "'foo'",
        "adam.lr='-1'",
        "t='zz'",
        "junk='1'",
    ):
        assert fragment in warning
    assert at.selectbox(key="surface_surface").value == "rosenbrock"
    assert at.multiselect(key="surface_optimizers").value == ["adam"]
    assert at.number_input(key="surface_hp_adam_lr").value == registry.get("adam").surface_defaults["lr"]
    assert at.query_params == {"surface": "rosenbrock", "opt": "adam", "start": "-2.0,2.0"}
    assert paths(timeline(at))["Adam"].shape == (501, 2)


def test_a_start_outside_the_domain_is_clamped_with_a_message():
    at = open_page({"opt": "sgd", "steps": "50"})
    at.number_input(key="surface_x").set_value(5.0).run()
    assert "The start (5, 2) lies outside x ∈ [-2, 2], y ∈ [-1, 3]: clamped to (2, 2)." in texts(at.warning)
    assert starts(timeline(at)) == [(2.0, 2.0)]
    assert at.query_params["start"] == "2.0,2.0"


def test_a_diverging_lr_stops_only_that_path():
    at = open_page({"opt": "sgd,adam", "sgd.lr": "0.01", "steps": "100"})
    expected = surfaces.simulate("rosenbrock", "sgd", {"lr": 0.01}, steps=100)
    step = int(expected.diverged_at[0])
    assert step > 0  # SGD at lr 0.01 leaves Rosenbrock's valley from (−2, 2)
    message = metrics.divergence_message(step)
    assert any(w.startswith(f"SGD (lr 0.01) {message}") for w in texts(at.warning))
    spec = timeline(at)
    assert [(p["diverged"], p["message"]) for p in spec["paths"]] == [(step, message), (-1, "")]  # ✕
    drawn = paths(spec)
    assert list(drawn) == [f"SGD · {message}", "Adam"]  # its panel says so: the ✕ may lie off the plot
    assert spec["panels"] == list(drawn)
    assert ["diverged", "diverged"] in spec["keys"]  # the ✕ in the legend
    assert len(drawn[f"SGD · {message}"]) == step and len(drawn["Adam"]) == 101  # Adam goes on
    table = at.dataframe[0].value.set_index("optimizer")
    assert table.loc["SGD", "diverged"] == message and table.loc["Adam", "diverged"] == ""
    assert np.isfinite(table.loc["Adam", "final gap"])


def test_an_invalid_hyperparameter_is_refused_at_its_control():
    at = open_page({"opt": "sgd,adam", "steps": "50"})
    at.number_input(key="surface_hp_adam_lr").set_value(-1.0).run()
    shown = texts(at.error)
    assert "Invalid lr: -1.0 (must be in [0, 1000])" in shown
    assert "Adam is left out: Invalid lr: -1.0 (must be in [0, 1000])" in shown
    assert list(paths(timeline(at))) == ["SGD"]  # the other optimizer still runs


def test_the_timeline_plays_in_the_browser_from_one_payload():
    at = open_page({"opt": "sgd,adam", "steps": "200"})
    (element,) = [c for c in at.get("bidi_component") if c.proto.id.endswith("-surface_main")]
    data = json.loads(element.proto.json)
    # the whole runs go to the browser once: every step of every path, the curves drawn whole
    assert [len(p["x"]) for p in data["paths"]] == [201, 201] and data["opening"] == state.OPENING_STEPS
    assert all(len(line["y"]) in (200, 201) for plot in data["curves"] for line in plot["lines"])
    # the component draws and plays them: its controls and its script, from the files beside the page
    for control in ("first", "back", "play", "forward", "last", "opening"):
        assert f'data-act="{control}"' in element.proto.html_content
    assert viz.OPENING_LABEL in element.proto.html_content
    assert element.proto.js_content == (ROOT / "app_pages/parts/surface_timeline.js").read_text()
    assert not [w for w in at.get("slider") if w.key == "surface_step"]  # no server-side timeline


def test_gradient_clipping_only_when_turned_on():
    at = open_page({"opt": "sgd", "steps": "50"})
    unclipped = paths(timeline(at))["SGD"]
    assert "clip" not in at.query_params
    at.toggle(key="surface_clip_on").set_value(True).run()
    at.number_input(key="surface_clip").set_value(1.0).run()
    assert at.query_params["clip"] == "1.0"
    clipped = paths(timeline(at))["SGD"]
    lr = registry.get("sgd").surface_defaults["lr"]
    steps = np.linalg.norm(np.diff(clipped, axis=0), axis=-1)
    assert steps.max() <= lr * 1.0 + 2e-6  # |Δx| = η‖clip(g)‖ ≤ η·1 (points sent with 7 digits)
    assert np.linalg.norm(unclipped[1] - unclipped[0]) > 10 * lr  # without clipping: a large first step


def test_a_new_surface_starts_from_its_own_default():
    at = open_page({"opt": "sgd", "steps": "50", "t": "20"})
    at.selectbox(key="surface_surface").set_value("himmelblau").run()
    assert starts(timeline(at)) == [(0.0, 0.0)]
    assert timeline(at)["step"] == 50  # the timeline back at the end
    assert at.query_params == {"surface": "himmelblau", "opt": "sgd", "start": "0.0,0.0", "steps": "50"}
    at.selectbox(key="surface_surface").set_value("quadratic").run()
    assert at.number_input(key="surface_param_kappa").value == 100.0 and not at.error
    assert starts(timeline(at)) == [(-1.8, 1.2)]
    at.number_input(key="surface_param_kappa").set_value(-3.0).run()
    assert "Invalid kappa: -3.0 (must be in [1, 1e+06])" in texts(at.error)
    assert "kappa" not in at.query_params  # refused: the default κ applies
    at.number_input(key="surface_param_kappa").set_value(10.0).run()
    assert at.query_params["kappa"] == "10.0"


def test_basin_sensitivity_and_fair_comparison_views():
    at = open_page({"opt": "sgd,adam", "steps": "60", "view": "basin", "bres": "40"})
    basin = figure(at, "surface_basin")
    assert basin["data"][0]["type"] == "heatmap" and len(values(basin["data"][0]["x"])) == 40
    assert at.selectbox(key="surface_basin_opt").value == "sgd"
    assert paths(figure(at, "surface_basin_path")).keys() == {"SGD"}
    at.selectbox(key="surface_basin_opt").set_value("adam").run()
    assert at.query_params["basin"] == "adam" and at.query_params["bres"] == "40"

    at.radio(key="surface_view").set_value("sensitivity").run()
    assert not at.exception, at.exception
    curves = [t["name"] for t in figure(at, "surface_sensitivity")["data"] if t.get("showlegend", True)]
    assert curves == ["SGD", "Adam"]

    at.radio(key="surface_view").set_value("tuning").run()
    table = at.dataframe[0].value
    assert table["optimizer"].tolist() == ["SGD", "Adam"]
    assert (table["lrs tried"] == len(surfaces.lr_grid(1.0))).all()
    assert table["default lr"].tolist() == [registry.get(n).surface_defaults["lr"] for n in ("sgd", "adam")]
    assert set(paths(figure(at, "surface_tuned"))) <= {"SGD", "Adam"}
    assert at.query_params["view"] == "tuning"


def test_reset_restores_the_defaults():
    at = open_page({"opt": "sgd", "steps": "50", "seed": "3"})
    at.button(key="surface_reset").click().run()
    assert not at.exception, at.exception
    assert at.query_params == {"surface": "rosenbrock", "start": "-2.0,2.0"}
    assert at.multiselect(key="surface_optimizers").value == list(DEFAULT_OPTIMIZERS)


def test_leaving_and_returning_keeps_the_settings_and_the_link():
    query = {
        "surface": "beale",
        "opt": "sgd,adam",
        "adam.lr": "0.05",
        "start": "1.0,1.0",
        "steps": "80",
        "t": "30",
    }
    at = open_page(query)
    at.switch_page("app_pages/home.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.number_input(key="surface_hp_adam_lr").value == 0.05
    assert timeline(at)["step"] == 30
    assert at.query_params == query


def test_a_link_over_the_work_budget_is_refused_with_the_field_and_nothing_runs(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the basin map ran despite the budget")

    monkeypatch.setattr(surfaces, "basin_map", never)
    at = open_page({"view": "basin", "bres": "100", "steps": "5000", "opt": "adam"})
    assert any("basin_resolution" in e and "DGS_LAB_MAX_SURFACE_WORK" in e for e in texts(at.error))


def test_a_links_values_are_shown_as_text_never_as_markdown():
    at = open_page({"start": "![x](http://evil.example/i.png)", "seed": "[a](http://evil.example)"})
    (warning,) = [w.value for w in at.warning if "could not be used" in w.value]
    assert "![x](http" not in warning and "\\!\\[x\\]\\(http" in warning
    assert "[a](http" not in warning


def test_the_step_a_paused_timeline_wrote_into_the_address_bar_is_kept():
    at = open_page({"opt": "sgd", "steps": "80", "t": "30"})
    assert timeline(at)["step"] == 30
    at.query_params["t"] = "37"  # paused at 37: the browser rewrote the address bar, then a rerun
    at.number_input(key="surface_seed").set_value(5).run()
    assert timeline(at)["step"] == 37 and at.query_params["t"] == "37"
    del at.query_params["t"]  # played to the end: no t
    at.run()
    assert timeline(at)["step"] == 80 and "t" not in at.query_params
    at.query_params["t"] = "zz"  # not a step: the page's own stands
    at.run()
    assert timeline(at)["step"] == 80 and "t" not in at.query_params
