"""Annealing lab page (AppTest): the composer's curves, refusals at the control, and both live runs."""

from __future__ import annotations

import base64
import json
import zlib

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dgs_core import jobs
from dgs_core.schedules.curves import curve
from dgs_core.studies.annealing import SCHEDULE_FREE, VARIANT_LABELS, VARIANTS, TwoPhaseSettings
from dgs_core.studies.annealing_lab import LINK_PARAM, AnnealingLabConfig, EffectiveSettings
from dgs_core.training.config import OptimizerSpec
from tests.pages.conftest import app_at, shown

PAGE = "app_pages/annealing_lab.py"


@pytest.fixture
def at() -> AppTest:
    app = app_at()
    app.run()  # the navigation registers on the first run; only then can the test switch page
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def figure(at: AppTest, key: str) -> dict:
    """The plotly spec of the chart with widget key ``key``."""
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def values(data) -> np.ndarray:
    """A trace's array from the spec: a list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data)


def names(spec: dict) -> list[str]:
    return [trace.get("name") for trace in spec["data"]]


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def run_until_finished(at: AppTest, section: str, limit: int = 40) -> str:
    """Rerun until the section's progress bar says finished; the runs train in background jobs
    (:mod:`dgs_core.jobs`), waited on between reruns as the page's fragment timer would."""
    for _ in range(limit):
        texts = [p.proto.text for p in at.get("progress")]
        mine = [t for t in texts if t.startswith("finished")]
        if mine:
            return mine[0]
        for slot in ("anneal_tp_job", "anneal_eff_job"):
            job = jobs.JOBS.get(at.session_state[slot]) if slot in at.session_state else None
            if job is not None:
                job.join(3.0)
        at.run()
        assert not at.exception, at.exception
    raise AssertionError(f"{section} did not finish: {texts}")


def test_page_loads_with_the_default_curves_and_the_plateau_demo(at):
    overlay = figure(at, "anneal_overlay")
    assert names(overlay) == ["Warmup + cosine", "Step decay", "Warmup-stable-decay"]
    warmup_cosine = overlay["data"][0]
    x, y = values(warmup_cosine["x"]), values(warmup_cosine["y"])
    np.testing.assert_array_equal(x, np.arange(300))
    assert (y[15], y[30], y[299]) == pytest.approx((0.05, 0.1, 0.1 * (1 + np.cos(np.pi * 269 / 270)) / 2))
    assert "η₀·t/W" in warmup_cosine["customdata"][0]  # the formula rides along in the hover
    plateau = figure(at, "anneal_plateau_chart")
    assert "lr reduction" in names(plateau)
    (cuts,) = [t for t in plateau["data"] if t["name"] == "lr reduction"]
    assert len(values(cuts["x"])) >= 2
    assert any("\\eta" in latex.value for latex in at.latex)  # the registry's formulas
    assert not errors(at)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("anneal_sched_warmup_cosine_min_lr", 0.5, "Invalid min_lr: 0.5 (must be <= base_lr=0.1)"),
        (
            "anneal_sched_warmup_cosine_warmup_steps",
            400,
            "Invalid warmup_steps: 400 (must be <= total_steps=300)",
        ),
        ("anneal_sched_step_decay_step_size", -5, "Invalid step_size: -5 (must be an integer in [1, 1e+09])"),
        ("anneal_prefix_step_decay", 300, "Invalid warmup_before: 300 (must be < the run length 300"),
        ("anneal_sched_wsd_decay_steps", -1, "Invalid decay_steps: -1"),
    ],
)
def test_invalid_schedule_values_are_refused_at_the_control(at, key, value, message):
    at.number_input(key=key).set_value(value).run()
    shown = errors(at)
    assert any(message in e for e in shown), shown
    label = {"warmup_cosine": "Warmup + cosine", "step_decay": "Step decay", "wsd": "Warmup-stable-decay"}
    refused = next(v for k, v in label.items() if f"_{k}_" in key + "_")
    assert refused not in names(figure(at, "anneal_overlay"))  # the others still draw


def test_run_shorter_than_a_warmup_is_refused(at):
    at.number_input(key="anneal_run_steps").set_value(20).run()
    assert any("Invalid warmup_steps: 30 (must be <= the run length 20)" in e for e in errors(at))
    at.number_input(key="anneal_run_steps").set_value(-3).run()
    assert any("Invalid run_steps: -3" in e for e in errors(at))


def test_fit_parameters_follow_the_run_length(at):
    at.number_input(key="anneal_sched_warmup_cosine_min_lr").set_value(0.01).run()
    at.number_input(key="anneal_run_steps").set_value(1000).run()
    assert at.number_input(key="anneal_sched_warmup_cosine_total_steps").value == 300  # kept as typed
    assert len(values(figure(at, "anneal_overlay")["data"][0]["x"])) == 1000
    at.button(key="anneal_fit").click().run()
    fitted = {
        p: at.number_input(key=f"anneal_sched_warmup_cosine_{p}").value
        for p in ("warmup_steps", "total_steps", "min_lr")
    }
    assert fitted == {"warmup_steps": 100, "total_steps": 1000, "min_lr": 0.0}
    assert at.number_input(key="anneal_sched_step_decay_step_size").value == 250


def test_multistep_milestones_are_parsed_and_checked(at):
    at.multiselect(key="anneal_curves").set_value(["multistep"]).run()
    assert names(figure(at, "anneal_overlay")) == ["Multi-step decay"]
    y = values(figure(at, "anneal_overlay")["data"][0]["y"])
    assert (y[149], y[150], y[225]) == pytest.approx((0.1, 0.01, 0.001))
    at.text_input(key="anneal_sched_multistep_milestones").set_value("200, 100").run()
    assert any("Invalid milestones: [200, 100]" in e for e in errors(at))
    at.text_input(key="anneal_sched_multistep_milestones").set_value("10, ten").run()
    assert any("Invalid milestones: '10, ten'" in e for e in errors(at))


def test_plateau_settings_are_validated(at):
    at.number_input(key="anneal_plateau_plateau_factor").set_value(1.5).run()
    assert any("Invalid factor: 1.5" in e for e in errors(at))
    assert not [c for c in at.get("plotly_chart") if c.proto.id.endswith("-anneal_plateau_chart")]


@pytest.mark.slow  # about 10 s: the first training slice imports torch's compiler stack
def test_two_phase_demo_runs_live_and_marks_the_boundary(at):
    at.number_input(key="anneal_tp_main_steps").set_value(20)
    at.number_input(key="anneal_tp_anneal_steps").set_value(15)
    at.slider(key="anneal_tp_noise").set_value(0.4)
    at.button(key="anneal_tp_run").click().run()
    assert not at.exception, at.exception
    assert run_until_finished(at, "two-phase") == "finished: 140 / 140 steps"
    spec = figure(at, "anneal_tp_chart")
    boundary = [s for s in spec["layout"]["shapes"] if s["type"] == "line"]
    assert [s["x0"] for s in boundary] == [20, 20]
    assert "phase boundary (step 20)" in names(spec)
    assert set(VARIANTS.values()) <= set(names(spec))
    texts = [a["text"] for a in spec["layout"]["annotations"]]
    assert "main phase: 40% label noise" in texts
    table = at.dataframe[-1].value
    assert table["variant"].tolist() == list(VARIANTS.values())
    assert (table["steps"] <= 35).all()
    record = at.json[-1].value
    record = json.loads(record) if isinstance(record, str) else record
    assert record["variants"]["anneal_hq"]["planned_boundaries"] == [20]
    assert record["settings"]["task_params"]["label_noise"] == 0.4
    labels = [b.label for b in at.get("download_button")]
    assert "Download the run record (JSON)" in str(labels) or len(labels) >= 2
    assert at.selectbox(key="anneal_tp_export_variant").options == list(VARIANTS.values())


def test_invalid_two_phase_settings_disable_the_run(at):
    at.number_input(key="anneal_tp_main_steps").set_value(0).run()
    assert any("Invalid main_steps: 0" in e for e in errors(at))
    assert at.button(key="anneal_tp_run").disabled
    at.number_input(key="anneal_tp_main_steps").set_value(4000)
    at.number_input(key="anneal_tp_anneal_steps").set_value(2000).run()
    assert any("main_steps + anneal_steps must be <= 5000" in e for e in errors(at))


def test_effective_lr_runs_every_optimizer_side_by_side(at):
    at.number_input(key="anneal_run_steps").set_value(30).run()
    at.button(key="anneal_eff_run").click().run()
    assert not at.exception, at.exception
    assert run_until_finished(at, "effective lr") == "finished: 30 / 30 steps"
    spec = figure(at, "anneal_eff_chart")
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert titles == ["SGD", "Adam", "DGS (interpretation)"]
    assert "schedule lr η_t" in names(spec)
    table = at.dataframe[-1].value.set_index("optimizer")
    assert table.loc["SGD", "median η_eff / η_t"] == pytest.approx(1.0, rel=1e-3)


def open_page(query: dict[str, str]) -> AppTest:
    """A new browser session on the page with ``query`` in its URL (a reloaded tab keeps it)."""
    app = app_at()
    app.run()
    for key, value in query.items():
        app.query_params[key] = value
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def test_a_run_is_a_background_job_that_survives_a_reload(at):
    at.number_input(key="anneal_tp_main_steps").set_value(10)
    at.number_input(key="anneal_tp_anneal_steps").set_value(5)
    at.button(key="anneal_tp_run").click().run()
    job = jobs.JOBS.get(at.session_state["anneal_tp_job"])
    assert job is not None and at.query_params["anneal_tp_job"] in (job.id, [job.id])  # in the URL
    assert job.join(120.0) and job.state == "done"
    reloaded = open_page({"anneal_tp_job": job.id})
    assert reloaded.session_state["anneal_tp_job"] == job.id
    assert "finished: 60 / 60 steps" in [p.proto.text for p in reloaded.get("progress")]
    assert set(VARIANTS.values()) <= set(names(figure(reloaded, "anneal_tp_chart")))
    gone = open_page({"anneal_tp_job": "no-such-run"})
    assert any("no longer on the server" in i.value for i in gone.info)


# ---------------------------------------------------------------------------------------------
# The lab's state in its link (?anneal=)
# ---------------------------------------------------------------------------------------------


def linked(at: AppTest) -> AnnealingLabConfig:
    link = at.query_params[LINK_PARAM]
    return AnnealingLabConfig.from_link(link[0] if isinstance(link, list) else link)


LINKED = AnnealingLabConfig(
    tab="two_phase",
    run_steps=400,
    curves=(
        curve("step_decay", base_lr=0.1, step_size=100, gamma=0.3),
        curve("wsd", warmup_before=40, base_lr=0.1, warmup_steps=0, stable_steps=260, decay_steps=100),
    ),
    log_y=True,
    plateau={"factor": 0.25, "noise": 0.1},
    effective=EffectiveSettings("wsd", "moons", (OptimizerSpec("adam", {"lr": 0.004}), OptimizerSpec("sgd"))),
    two_phase=TwoPhaseSettings(main_steps=70, anneal_steps=30, anneal_shape="linear", schedule_free=True),
)


def test_a_link_opens_its_tab_schedules_and_settings_in_a_new_session():
    at = open_page({LINK_PARAM: LINKED.to_link()})
    assert at.session_state["anneal_tab"] == "Two-phase annealing"
    assert at.number_input(key="anneal_run_steps").value == 400
    assert at.multiselect(key="anneal_curves").value == ["step_decay", "wsd"]
    assert at.checkbox(key="anneal_log_y").value is True
    assert at.number_input(key="anneal_sched_step_decay_step_size").value == 100
    assert at.number_input(key="anneal_prefix_wsd").value == 40  # a warmup the link gives wsd
    assert names(figure(at, "anneal_overlay")) == ["Step decay", "Warmup 40 → Warmup-stable-decay"]
    assert at.number_input(key="anneal_plateau_plateau_factor").value == 0.25
    assert at.selectbox(key="anneal_eff_curve").value == "Warmup 40 → Warmup-stable-decay"
    assert at.multiselect(key="anneal_eff_optimizers").value == ["sgd", "adam"]  # the picker's order
    assert at.number_input(key="anneal_eff_adam_lr").value == 0.004
    assert at.number_input(key="anneal_tp_main_steps").value == 70
    assert at.selectbox(key="anneal_tp_shape").value == "linear"
    assert at.checkbox(key="anneal_tp_sf").value is True
    assert linked(at) == LINKED  # and the URL still holds exactly the link
    assert not errors(at)


def test_changing_a_widget_updates_the_link(at):
    assert linked(at).run_steps == 300 and linked(at).tab == "schedules"
    at.number_input(key="anneal_run_steps").set_value(600).run()
    at.number_input(key="anneal_tp_main_steps").set_value(90).run()
    at.checkbox(key="anneal_tp_sf").check().run()
    at.multiselect(key="anneal_eff_optimizers").set_value(["sgd"]).run()
    config = linked(at)
    assert config.run_steps == 600 and config.two_phase.main_steps == 90 and config.two_phase.schedule_free
    assert [o.name for o in config.effective.optimizers] == ["sgd"]
    # an invalid value keeps the last valid one in the link
    at.number_input(key="anneal_tp_main_steps").set_value(-3).run()
    assert linked(at).two_phase.main_steps == 90


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("garbage!", "Invalid anneal"),
        (AnnealingLabConfig().to_link()[:30], "Invalid anneal"),
        ("two_phase", "Invalid tab"),  # replaced below by a link with a bad tab
    ],
)
def test_a_bad_link_says_which_field_and_the_lab_starts_from_its_defaults(text, named):
    if text == "two_phase":
        data = AnnealingLabConfig().to_dict() | {"tab": "nowhere"}
        text = base64.urlsafe_b64encode(zlib.compress(json.dumps(data).encode())).decode()
    at = open_page({LINK_PARAM: text})
    assert any(named in e and "could not be used" in e for e in errors(at)), errors(at)
    assert at.number_input(key="anneal_run_steps").value == 300
    assert linked(at) == AnnealingLabConfig()  # the URL now holds the lab's start


def test_schedule_free_runs_beside_the_annealed_variants_at_a_constant_lr(at):
    at.number_input(key="anneal_tp_main_steps").set_value(20).run()
    at.number_input(key="anneal_tp_anneal_steps").set_value(10).run()
    at.checkbox(key="anneal_tp_sf").check().run()
    at.number_input(key="anneal_tp_sf_lr").set_value(0.01).run()
    at.button(key="anneal_tp_run").click().run()
    run_until_finished(at, "anneal_tp")
    spec = figure(at, "anneal_tp_chart")
    label = VARIANT_LABELS[SCHEDULE_FREE]
    assert label in names(spec)
    (lr,) = [t for t in spec["data"] if t.get("name") == f"{label}: lr"]
    assert set(values(lr["y"]).tolist()) == {0.01}
    (table,) = [d.value for d in at.dataframe if "variant" in d.value.columns]
    assert table["variant"].tolist() == [*VARIANTS.values(), label]
    assert table["final lr"].iloc[-1] == pytest.approx(0.01)
