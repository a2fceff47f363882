"""Training lab page (AppTest): controls and their refusals, a run drawn side by side, the step
scrubber, divergence of one optimizer, Stop / Continue, reattaching after a reload, session
isolation, and the large-batch question.

Runs happen in background threads (:mod:`dgs_core.jobs`); the tests wait on the job itself and
then rerun the script, as the page's fragment timer would.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dgs_core import jobs
from dgs_core.training.config import TrainConfig
from tests.pages.conftest import app_at, shown

PAGE = "app_pages/training_lab.py"
SMALL = {"train_task_moons_n_samples": 200}


def open_page(query: dict[str, str] | None = None) -> AppTest:
    """A new browser session on the page (``query``: the URL's query parameters)."""
    app = app_at()
    app.run()  # the navigation registers on the first run; only then can the test switch page
    for key, value in (query or {}).items():
        app.query_params[key] = value
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


@pytest.fixture
def at() -> AppTest:
    return open_page()


@pytest.fixture(autouse=True)
def _no_run_left_running():
    """Stop what a test left training (a paced run lasts 20 s; a thread still in torch when the
    interpreter exits can abort it)."""
    yield
    for job in list(jobs.JOBS._jobs.values()):  # the registry lists no jobs publicly
        job.stop(wait=5.0)


def figure(at: AppTest, key: str) -> dict:
    """The plotly spec of the chart ``train_<key>_chart``."""
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-train_{key}_chart")]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def values(data) -> np.ndarray:
    """A trace's array: a list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data)


def table(at: AppTest, column: str):
    """The one dataframe with ``column``."""
    frames = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(frames) == 1, [list(d.value.columns) for d in at.dataframe]
    return frames[0]


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def progress(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def configure(at: AppTest, *, steps: int, optimizers: list[str], pace: str = "fast", **numbers) -> AppTest:
    at.radio(key="train_pace").set_value(pace)  # as fast as possible unless a test watches the pace
    at.multiselect(key="train_optimizers").set_value(optimizers).run()  # creates their controls
    for key, value in {**SMALL, **numbers}.items():
        at.number_input(key=key).set_value(value)
    at.number_input(key="train_steps").set_value(steps)
    return at.run()


def start(at: AppTest, slot: str = "train_job", button: str = "train_start") -> jobs.Job:
    at.button(key=button).click().run()
    assert not at.exception, at.exception
    job = jobs.JOBS.get(at.session_state[slot])
    assert job is not None
    return job


def finish(at: AppTest, job: jobs.Job) -> AppTest:
    assert job.join(120.0), job.state
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_loads_with_defaults_ready_to_start(at):
    assert at.title[0].value == "Training lab"
    assert at.selectbox(key="train_task").value == "moons"
    assert at.multiselect(key="train_optimizers").value == ["sgd", "adam", "dgs"]
    assert at.number_input(key="train_steps").value == 300
    assert not at.button(key="train_start").disabled
    assert any("press **Start**" in i.value for i in at.info)
    assert not errors(at)
    # one empty chart, so the browser has loaded its charting code before Start
    assert [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")] == ["train_waiting_chart"]
    assert "appear here within a second of Start" in figure(at, "waiting")["layout"]["annotations"][0]["text"]


def test_the_live_help_names_the_redraw_periods_the_page_uses(at):
    from app_pages.parts.training_panels import LIVE_PERIODS, TICK_SECONDS

    note = next(c.value for c in at.caption if "optimizer(s) ×" in c.value)
    others = [p for name, p in LIVE_PERIODS.items() if name != "loss"]
    assert f"latest numbers redraw every {TICK_SECONDS:g} s" in note, note
    assert f"the loss curves every {LIVE_PERIODS['loss']:g} s" in note, note
    assert f"the other panels every {min(others):g} to {max(others):g} s" in note, note


def test_invalid_hyperparameter_is_named_at_its_control_and_blocks_start(at):
    at.number_input(key="train_hp_sgd_lr").set_value(-1.0).run()
    assert "Invalid lr: -1.0 (must be in [0, 1000])" in errors(at)
    assert at.button(key="train_start").disabled
    assert any(e.startswith("Cannot start: SGD: Invalid lr: -1.0") for e in errors(at))
    at.number_input(key="train_hp_sgd_lr").set_value(0.1).run()
    assert not errors(at) and not at.button(key="train_start").disabled


def test_run_longer_than_the_cap_is_refused_with_the_cap_named(at, monkeypatch):
    at.number_input(key="train_steps").set_value(20_001).run()
    message = "Invalid steps: 20001 (must be an integer in [1, 20000]; the cap is max_steps=20000)"
    assert message in errors(at)
    assert at.button(key="train_start").disabled
    monkeypatch.setenv("DGS_LAB_MAX_STEPS", "500")  # the cap is configurable per server
    at.number_input(key="train_steps").set_value(600).run()
    assert any("the cap is max_steps=500" in e for e in errors(at)), errors(at)
    at.number_input(key="train_steps").set_value(500).run()
    assert not errors(at)


def test_invalid_task_parameter_and_schedule_are_refused(at):
    at.number_input(key="train_task_moons_noise").set_value(5.0).run()
    assert "Invalid noise: 5.0 (must be in [0, 2])" in errors(at)
    assert at.button(key="train_start").disabled
    at.number_input(key="train_task_moons_noise").set_value(0.2).run()
    at.selectbox(key="train_schedule").set_value("warmup_cosine").run()
    assert not errors(at)
    assert at.number_input(key="train_sched_warmup_cosine_total_steps").value == 300  # follows the run
    at.number_input(key="train_sched_warmup_cosine_warmup_steps").set_value(400).run()
    assert "Invalid warmup_steps: 400 (must be <= total_steps=300)" in errors(at)
    assert at.button(key="train_start").disabled
    at.number_input(key="train_steps").set_value(100).run()  # a new length rescales the schedule
    assert at.number_input(key="train_sched_warmup_cosine_total_steps").value == 100
    assert not errors(at)


def test_a_run_draws_every_panel_side_by_side_and_the_scrubber_moves_them(at):
    configure(at, steps=60, optimizers=["sgd", "dgs"])
    job = start(at)
    assert at.query_params["train_job"] in (job.id, [job.id])  # in the URL: a reload finds the run
    finish(at, job)
    assert progress(at)[0].startswith("done · step 60 / 60")
    lanes = table(at, "batch loss")
    assert list(lanes["optimizer"]) == ["SGD", "DGS"] and set(lanes["status"]) == {"done"}

    loss = figure(at, "loss")
    batch_lines = [t for t in loss["data"] if t.get("name") == "batch loss"]
    assert [t["xaxis"] if "xaxis" in t else "x" for t in batch_lines] == ["x", "x2"]  # side by side
    assert all(len(values(t["x"])) == 60 for t in batch_lines)
    titles = [a["text"] for a in loss["layout"]["annotations"]]
    assert titles[:2] == ["SGD", "DGS"]
    for key in ("lr", "accuracy", "batch", "importance", "scaling", "histogram", "weights", "boundary"):
        assert figure(at, key)["data"], key
    band = [t["name"] for t in figure(at, "lr")["data"] if t.get("showlegend") is not False]
    assert "schedule lr η_t" in band and "η_eff 25–75 %" in band

    # the scrubber: every panel moves to step 30
    assert at.slider(key="train_step").value == 60
    at.slider(key="train_step").set_value(30).run()
    assert not at.exception, at.exception
    cursor = [s for s in figure(at, "loss")["layout"]["shapes"] if s["type"] == "line"]
    assert cursor and {s["x0"] for s in cursor} == {30}
    histogram = [t["name"] for t in figure(at, "histogram")["data"]]
    assert histogram == ["SGD (step 30)", "DGS (step 30)"]
    boundary_titles = [a["text"] for a in figure(at, "boundary")["layout"]["annotations"]]
    assert all(t.endswith("· step 30") for t in boundary_titles[:2]), boundary_titles
    assert any(h.value == "Per parameter at step 30" for h in at.subheader)
    assert at.get("download_button")  # Export snapshot (.zip)


def test_a_diverging_optimizer_stops_alone(at):
    lars = {"train_hp_lars_lr": 1000.0, "train_hp_lars_trust_coefficient": 10.0}  # measured: NaN by step 10
    configure(at, steps=40, optimizers=["sgd", "lars"], **lars)
    finish(at, start(at))
    lanes = table(at, "batch loss").set_index("optimizer")
    assert lanes.loc["LARS", "status"].startswith("diverged at step")
    assert lanes.loc["SGD", "status"] == "done" and lanes.loc["SGD", "step"] == 40
    warnings = [w.value for w in at.warning]
    assert any("lars: diverged at step" in w and "The other optimizers go on" in w for w in warnings)
    titles = [a["text"] for a in figure(at, "loss")["layout"]["annotations"]]
    assert titles[1].startswith("LARS — diverged at step")


def test_stop_then_continue(at):
    configure(at, steps=20_000, optimizers=["sgd", "adam"])
    job = start(at)
    while job.events < 2:
        job.join(0.01)
    at.run()
    assert progress(at)[0].startswith("running")
    assert not at.button(key="train_stop").disabled
    at.button(key="train_stop").click().run()
    assert job.state == "stopped" and job.stop_reason == "user"
    assert progress(at)[0].startswith("stopped · step ")
    trainer = job.payload
    stopped_at = trainer.step
    assert 0 < stopped_at < 20_000
    assert at.slider(key="train_step").value == stopped_at
    assert not at.button(key="train_continue").disabled
    at.button(key="train_continue").click().run()
    resumed = jobs.JOBS.get(at.session_state["train_job"])
    assert resumed is not job and resumed.payload is trainer
    while trainer.step <= stopped_at + 10:
        resumed.join(0.01)
    resumed.stop(wait=5.0)
    at.run()
    assert progress(at)[0].startswith("stopped")
    assert trainer.step > stopped_at


def test_reload_reattaches_and_sessions_are_isolated(at):
    configure(at, steps=30, optimizers=["sgd"])
    job = start(at)
    finish(at, job)
    reloaded = open_page({"train_job": job.id})  # a reloaded tab keeps its URL
    assert reloaded.session_state["train_job"] == job.id
    assert progress(reloaded)[0].startswith("done · step 30 / 30")
    other = open_page()  # another browser: sees no run
    assert not other.get("progress") and "train_job" not in other.session_state
    gone = open_page({"train_job": "no-such-run"})
    assert any("no longer on the server" in i.value for i in gone.info)


def test_large_batch_question_shows_each_optimizers_gap(at):
    at.number_input(key="train_task_moons_n_samples").set_value(200).run()
    at.number_input(key="train_lb_large").set_value(128)
    at.number_input(key="train_lb_epochs").set_value(2.0).run()
    captions = [c.value for c in at.caption]
    assert any("batch 16: 19 steps, batch 128: 3 steps" in c for c in captions), captions
    job = start(at, "train_lb_job", "train_lb_start")
    finish(at, job)
    gaps = table(at, "gap (train − val)")
    assert list(gaps["optimizer"]) == ["sgd", "sgd", "lars", "lars", "extrasgd", "extrasgd"]
    assert list(gaps["batch"]) == [16, 128] * 3
    np.testing.assert_allclose(gaps["gap (train − val)"], gaps["train accuracy"] - gaps["val accuracy"])
    gap = figure(at, "lb_gap")
    assert {t["name"] for t in gap["data"] if t.get("showlegend") is not False} >= {"batch 16", "batch 128"}
    links = [link.proto for link in at.get("page_link")]
    assert any(
        p.label == "Open the loss landscape" and "landscape_from=large_batch" in p.query_string for p in links
    )


def test_large_batch_question_refuses_a_run_over_the_cap(at, monkeypatch):
    monkeypatch.setenv("DGS_LAB_MAX_STEPS", "100")
    at.number_input(key="train_lb_epochs").set_value(10.0).run()
    assert any("the cap is max_steps=100" in e for e in errors(at)), errors(at)
    assert at.button(key="train_lb_start").disabled


def test_large_batch_setting_refused_under_its_widget(at):
    at.number_input(key="train_lb_large").set_value(8).run()  # not above the small batch
    (error,) = [e for e in errors(at) if "Invalid large_batch" in e]
    assert error == "Invalid large_batch: 8 (must be > small_batch = 16)"
    assert at.button(key="train_lb_start").disabled


def test_diagnostics_over_the_servers_record_budget_are_refused_under_their_widget(at):
    at.number_input(key="train_steps").set_value(20_000).run()
    at.number_input(key="train_diag_every").set_value(1).run()  # 20,000 records per optimizer
    assert any(
        e.startswith("Invalid diag_every: 1 (must be >= 20 for 20000 steps") and "$DGS_LAB_MAX_RECORDS" in e
        for e in errors(at)
    ), errors(at)
    assert at.button(key="train_start").disabled


def test_a_started_run_is_in_the_link_and_the_link_retrains_it_on_a_server_without_its_job(at):
    configure(at, steps=30, optimizers=["sgd", "adan"], train_hp_sgd_lr=0.05, train_seed=7)
    job = start(at)
    finish(at, job)
    link = at.query_params["cfg"]
    link = link[0] if isinstance(link, list) else link
    config = TrainConfig.from_link(link)
    assert config == job.payload.config and config.seed == 7
    assert config.optimizers[0].hparams["lr"] == 0.05

    # a new browser on another server (no such job): the sidebar shows the link's settings and
    # the same run trains again, to the same numbers
    again = open_page({"cfg": link, "train_job": "gone-after-a-restart"})
    assert again.multiselect(key="train_optimizers").value == ["sgd", "adan"]
    assert again.number_input(key="train_hp_sgd_lr").value == 0.05
    assert again.number_input(key="train_seed").value == 7
    rerun_job = jobs.JOBS.get(again.session_state["train_job"])
    assert rerun_job is not None and rerun_job.id != job.id
    finish(again, rerun_job)
    for label in config.labels:
        before = job.payload.results[label].metrics["loss"].to_numpy()
        after = rerun_job.payload.results[label].metrics["loss"].to_numpy()
        assert np.array_equal(before, after)


@pytest.mark.parametrize(
    ("link", "field"),
    [
        ("not-a-config", "Invalid cfg"),
        (TrainConfig(optimizers=["sgd"], steps=50, seed=3).to_link()[:-6], "Invalid cfg"),
        (
            TrainConfig(optimizers=["sgd"], steps=20_000, diag_every=1, max_steps=20_000).to_link(),
            "diag_every",
        ),
    ],
)
def test_a_bad_link_says_why_and_keeps_the_defaults(link: str, field: str):
    at = open_page({"cfg": link})
    warnings = [shown(w.value) for w in at.warning]
    assert any("could not be used" in w and field in w for w in warnings), warnings
    assert at.multiselect(key="train_optimizers").value == ["sgd", "adam", "dgs"]
    assert "train_job" not in at.session_state


def query(at: AppTest, key: str) -> str | None:
    value = at.query_params.get(key)
    return value[0] if isinstance(value, list) else value


def test_the_default_run_is_paced_to_be_watched_and_its_first_curve_comes_with_start(at):
    note = next(c.value for c in at.caption if "optimizer(s) ×" in c.value)
    assert "3 optimizer(s) × 300 steps" in note and "spread over about 20 s" in note, note
    at.number_input(key="train_task_moons_n_samples").set_value(200).run()
    job = start(at)
    # the rerun that started the run waited for its first step and drew the loss curves
    assert [t for t in figure(at, "loss")["data"] if t.get("name") == "batch loss"]
    assert query(at, "pace") == "20" and TrainConfig.from_link(query(at, "cfg")).steps == 300
    job.join(1.5)
    step = job.payload.step
    assert job.running and 0 < step < 100, step  # ~15 steps/s: the curves grow from the first second
    at.button(key="train_stop").click().run()
    assert job.state == "stopped"


def test_the_link_keeps_the_tab_the_scrubber_step_and_the_pace():
    config = TrainConfig(optimizers=["sgd"], steps=40, seed=2, task_params={"n_samples": 200})
    link = {"cfg": config.to_link(), "tab": "large-batch", "step": "12", "pace": "0"}
    at = open_page(link)
    assert not at.warning
    assert at.session_state["train_tab"] == "Large-batch question"
    assert at.radio(key="train_pace").value == "fast"
    job = jobs.JOBS.get(at.session_state["train_job"])
    finish(at, job)
    assert at.slider(key="train_step").value == 12  # the link's step, not the last one
    assert query(at, "step") == "12" and query(at, "tab") == "large-batch"
    at.slider(key="train_step").set_value(30).run()
    assert query(at, "step") == "30"  # a moved scrubber is in the link
    # a new run drops the old step from the link and shows its own last step
    at.radio(key="train_pace").set_value("paced").run()
    at.number_input(key="train_pace_s").set_value(1.0).run()
    job = start(at)
    assert query(at, "step") is None and query(at, "pace") == "1"
    finish(at, job)
    assert at.slider(key="train_step").value == 40


@pytest.mark.parametrize(
    ("link", "messages"),
    [
        ({"tab": "plots"}, ["Invalid tab: 'plots' (must be one of 'train', 'large-batch')"]),
        (
            {"step": "ten", "pace": "-5"},
            ["Invalid step: 'ten' (must be a number)", "Invalid pace: -5 (must be in [0, 3600])"],
        ),
        (
            {"step": "999", "cfg": TrainConfig(optimizers=["sgd"], steps=40).to_link()},
            ["Invalid step: 999 (must be an integer in [1, 40])"],
        ),
        ({"pace": "nan"}, ["Invalid pace: nan"]),
    ],
)
def test_a_bad_tab_step_or_pace_in_the_link_is_named_and_its_default_applies(link, messages):
    at = open_page(link)
    warnings = [shown(w.value) for w in at.warning]
    for message in messages:
        assert any("could not be used" in w and message in w for w in warnings), (message, warnings)
    assert "train_tab" not in at.session_state or at.session_state["train_tab"] == "Train"
    assert at.radio(key="train_pace").value == "paced"
    assert at.number_input(key="train_pace_s").value == 20.0


def test_a_bad_pace_in_the_sidebar_blocks_start_naming_it(at):
    at.number_input(key="train_pace_s").set_value(-3.0).run()
    assert "Invalid pace: -3.0 (must be in [0, 3600])" in errors(at)
    assert at.button(key="train_start").disabled
