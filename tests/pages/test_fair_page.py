"""The Training lab's fair comparison (AppTest): the mode from the URL, bad settings marked
under their widgets, a study on the embedded Ray stopped midway (the finished trials kept and
drawn), the tuned run opened live with the tuned learning rates, and a new tab of the study's
URL showing its settings."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from dgs_core import jobs
from dgs_core.studies import engine
from dgs_core.studies.sweep import TUNE
from dgs_core.studies.tuner import SweepStudy
from tests.pages.conftest import shown
from tests.pages.test_training_page import open_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _ray_stopped_at_the_end() -> Iterator[None]:
    yield
    engine.shutdown()  # the embedded Ray the study started in this process


def fair_page(query: dict[str, str] | None = None) -> AppTest:
    return open_page({"train_mode": "fair", **(query or {})})


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def test_the_url_chooses_the_mode() -> None:
    assert "Study settings" in [h.value for h in fair_page().header]
    live = open_page()
    assert "Run settings" in [h.value for h in live.header]
    assert live.radio(key="train_mode").value == "live"
    live.radio(key="train_mode").set_value("fair").run()
    assert live.query_params["train_mode"] == "fair"
    assert "Study settings" in [h.value for h in live.header]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train_fair_trials", 0, "Invalid trials: 0 (must be an integer in [1, 1000])"),
        ("train_fair_seeds", 0, "Invalid seeds: 0 (must be an integer in [1, 100])"),
        ("train_fair_steps", 0, "Invalid steps: 0"),
        ("train_fair_eval_every", 0, "Invalid eval_every: 0"),
    ],
)
def test_a_bad_setting_is_shown_under_its_widget_and_blocks_start(key: str, value: int, message: str) -> None:
    at = fair_page()
    assert not at.button(key="train_fair_start").disabled
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    shown = errors(at)
    assert any(m.startswith(message) for m in shown), shown
    assert any(m.startswith("Cannot start: " + message) for m in shown), shown
    assert at.button(key="train_fair_start").disabled


def test_a_study_link_fills_in_the_settings_and_a_bad_one_is_said() -> None:
    from dgs_core.studies.sweep import StudySpec

    spec = StudySpec(task="moons", optimizers=("sgd", "adan"), trials=5, seeds=2, steps=120, search="grid")
    at = open_page({"study": spec.to_link()})  # no train_mode: the link chooses the fair mode
    assert not at.exception
    assert at.radio(key="train_mode").value == "fair"
    assert at.multiselect(key="train_fair_optimizers").value == ["sgd", "adan"]
    assert at.number_input(key="train_fair_trials").value == 5
    assert at.number_input(key="train_fair_seeds").value == 2
    assert at.number_input(key="train_fair_steps").value == 120
    bad = fair_page({"study": "not-a-link"})
    assert not bad.exception
    assert any(m.startswith("This link's study settings were not used: Invalid study:") for m in errors(bad))
    assert bad.number_input(key="train_fair_trials").value != 5  # the defaults stay


def test_no_optimizer_is_refused() -> None:
    at = fair_page()
    at.multiselect(key="train_fair_optimizers").set_value([]).run()
    assert "Pick at least one optimizer." in errors(at)
    assert at.button(key="train_fair_start").disabled


def test_a_study_stopped_midway_keeps_its_trials_and_opens_the_tuned_run() -> None:
    at = fair_page()
    at.multiselect(key="train_fair_optimizers").set_value(["sgd", "adam"]).run()
    for key, value in {
        "train_fair_trials": 6,
        "train_fair_seeds": 2,
        "train_fair_steps": 80,
        "train_fair_eval_every": 20,
        "train_task_moons_n_samples": 200,
    }.items():
        at.number_input(key=key).set_value(value).run()
    assert not errors(at)
    at.button(key="train_fair_start").click().run()
    job = jobs.JOBS.get(at.session_state["train_fair_job"])
    assert at.query_params["train_fair_job"] == job.id
    study = job.payload
    assert isinstance(study, SweepStudy) and study.spec.trials_total == 2 * (6 + 2)
    deadline = time.monotonic() + 600
    # a tuning trial of each optimizer finished (the tuned run then has a tuned lr for each)
    while {row["optimizer"] for row in list(study.rows)} != {"sgd", "adam"} and time.monotonic() < deadline:
        assert job.state != jobs.FAILED, job.error
        time.sleep(0.2)
    at.run()
    assert not at.button(key="train_fair_stop").disabled
    at.button(key="train_fair_stop").click().run()
    assert job.join(240), job.state
    assert job.state == jobs.STOPPED
    at.run()
    assert not at.exception, at.exception
    result = study.result
    kept = len(result.trials)
    assert 2 <= kept < study.spec.trials_total  # the finished ones, not the cancelled ones
    assert set(result.trials["phase"]) == {TUNE}
    assert f"Stopped: the {kept} trials that finished are kept below." in [w.value for w in at.warning]
    assert "train_fair_sensitivity_chart" in str([c.proto.id for c in at.get("plotly_chart")])
    assert f"study:{job.id}" in at.session_state["runs_pending"]  # on the Runs page at once, unsaved
    assert at.query_params["train_mode"] in ("fair", ["fair"])

    # the tuned run: the live mode, the tuned learning rates in its widgets, a run that trains them
    best = {name: result.best_hparams(name) for name in ("sgd", "adam")}
    at.button(key="train_fair_open").click().run()
    assert not at.exception, at.exception
    assert at.radio(key="train_mode").value == "live"
    assert at.query_params["train_mode"] == "live"
    run = jobs.JOBS.get(at.session_state["train_job"])
    assert run is not None and at.query_params["train_job"] == run.id
    assert run.join(240), run.state
    config = run.payload.config
    assert [s.name for s in config.optimizers] == ["sgd", "adam"]
    for spec in config.optimizers:
        tuned = best[spec.name]
        assert "lr" in tuned and dict(spec.hparams) == tuned
        assert at.number_input(key=f"train_hp_{spec.name}_lr").value == pytest.approx(tuned["lr"])
    assert (config.steps, config.batch_size, config.seed) == (80, 32, 0)
    assert at.number_input(key="train_steps").value == 80

    # another tab of the study's URL: the fair mode with the study's settings and results
    other = open_page({"train_fair_job": job.id})
    assert other.radio(key="train_mode").value == "fair"
    assert other.number_input(key="train_fair_trials").value == 6
    assert other.multiselect(key="train_fair_optimizers").value == ["sgd", "adam"]
    assert f"Stopped: the {kept} trials that finished are kept below." in [w.value for w in other.warning]
