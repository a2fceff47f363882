"""Landscape page (AppTest): no run yet, a finished Training-lab run's landscape computed in the
background (contours and surface with every path, the interpolation, the sharpness table),
switching planes, a bad grid size marked under its widget, and a bundle from the Runs page
opened with the grids it was stored with.

The computation runs in a background thread (:mod:`dgs_core.jobs`); the tests wait on the job
and then rerun the script, as the page's fragment timer would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dgs_core import jobs
from dgs_core.landscape import GridSpec, Landscape, PlaneSpec, build_plane, evaluate_grid
from dgs_core.runs.store import RUNS_DIR_ENV, RunStore, new_session_id
from dgs_core.runs.training import export_training
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from tests.pages.conftest import app_at, shown

PAGE = "app_pages/landscape.py"


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    optimizers = [("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01}), "dgs"]
    config = TrainConfig(
        task="moons",
        task_params={"n_samples": 200},
        optimizers=optimizers,
        steps=30,
        eval_every=10,
        diag_every=10,
        device="cpu",
    )
    trainer = Trainer(config)
    list(trainer.run())
    return trainer


def finished_job(trainer: Trainer) -> jobs.Job:
    """A Training-lab job that has ended (as the Training lab keeps it)."""
    job = jobs.Job(lambda: trainer, lambda t, stop: iter(()), name="train")
    jobs.JOBS.add(job)
    job.start()
    assert job.join(30)
    return job


def open_page(state: dict | None = None, query: dict | None = None) -> AppTest:
    app = app_at()
    app.run()  # the navigation registers on the first run; only then can the test switch page
    for key, value in (state or {}).items():
        app.session_state[key] = value
    for key, value in (query or {}).items():
        app.query_params[key] = value
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def rerun(app: AppTest) -> AppTest:
    app.run()
    assert not app.exception, app.exception
    return app


def compute(app: AppTest) -> AppTest:
    """Press Compute, wait for the job, redraw."""
    app.button(key="landscape_compute").click()
    rerun(app)
    job = jobs.JOBS.get(app.session_state["landscape_job"])
    assert job is not None and job.join(300), job
    assert job.state == jobs.DONE, (job.state, job.error)
    return rerun(app)


def figure(app: AppTest, name: str) -> dict:
    charts = [c for c in app.get("plotly_chart") if c.proto.id.endswith(f"-landscape_{name}_chart")]
    assert len(charts) == 1, [c.proto.id for c in app.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def texts(app: AppTest) -> str:
    groups = (app.info, app.error, app.markdown, app.warning)
    return " ".join(shown(e.value) for group in groups for e in group)


def test_without_a_run_the_page_says_where_to_train() -> None:
    app = open_page()
    assert "Train two or more optimizers in the Training lab" in texts(app)
    assert not app.get("plotly_chart")


def test_a_finished_run_gets_contours_surface_paths_interpolation_and_sharpness(trainer: Trainer) -> None:
    app = open_page({"train_job": finished_job(trainer).id})
    assert "Training lab: moons · sgd, adam, dgs · 30 steps (done)" in texts(app)
    app.number_input(key="landscape_resolution").set_value(9)
    rerun(app)
    assert "Press **Compute**" in texts(app)
    compute(app)

    assert "**Exact plane through the initial weights, sgd and adam** · exact at those three" in texts(app)
    contour = figure(app, "contour")
    assert contour["layout"]["xaxis"]["title"]["text"] == "towards sgd (distance)"
    names = [t.get("name") for t in contour["data"]]
    assert {"sgd", "adam", "dgs"} <= set(names) and "sgd: end" in names
    surface = figure(app, "surface")
    assert {t["type"] for t in surface["data"]} == {"surface", "scatter3d"}
    curve = figure(app, "interpolation")
    assert [t["name"] for t in curve["data"]] == ["sgd → adam: training loss", "sgd → adam: validation loss"]
    table = figure(app, "sharpness")["data"][0]["cells"]["values"]
    assert [row.split(" ")[0] for row in table[0]] == ["sgd", "adam", "dgs"]
    assert all(float(v) > 0 for v in table[1])  # positive top eigenvalues near a minimum
    assert app.get("download_button")  # the export

    # Another plane: PCA of every path, computed on demand; the first plane stays cached.
    app.radio(key="landscape_kind").set_value("pca")
    rerun(app)
    assert "Press **Compute**" in texts(app)
    compute(app)
    assert "**PCA plane of every path (centre: mean)** · explained variance" in texts(app)
    assert figure(app, "contour")["layout"]["xaxis"]["title"]["text"].startswith("PC 1 (")
    app.radio(key="landscape_kind").set_value("exact")
    rerun(app)
    assert figure(app, "contour")["layout"]["xaxis"]["title"]["text"] == "towards sgd (distance)"  # cached


def test_bad_values_are_marked_and_never_crash(trainer: Trainer) -> None:
    app = open_page({"train_job": finished_job(trainer).id})
    app.number_input(key="landscape_resolution").set_value(1)
    rerun(app)
    assert any("Invalid resolution: 1" in shown(e.value) for e in app.error)
    assert app.button(key="landscape_compute").disabled
    app.number_input(key="landscape_resolution").set_value(9)
    app.selectbox(key="landscape_exact_second").set_value("sgd")
    rerun(app)
    assert any("Invalid labels" in shown(e.value) for e in app.error)
    assert app.button(key="landscape_compute").disabled


def test_a_bundle_from_the_runs_page_opens_with_its_stored_grids(
    trainer: Trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    landscape = Landscape.from_trainer(trainer)
    plane = build_plane(landscape, PlaneSpec.exact("sgd", "adam"))
    stored = evaluate_grid(landscape, plane, GridSpec(resolution=9))
    pca = build_plane(landscape, PlaneSpec.pca())
    val_only = evaluate_grid(landscape, pca, GridSpec(resolution=9), splits=("val",), path_losses=False)
    session = new_session_id()
    info = RunStore().add(export_training(trainer, landscapes=[stored, val_only]), session=session)
    app = open_page(
        state={"runs_session": session},  # this browser's run-store session, never one from the link
        query={"landscape_from": "bundle", "landscape_run": info.id},
    )
    assert f"Runs page: {info.name}" in texts(app)
    app.number_input(key="landscape_resolution").set_value(9)
    rerun(app)  # the stored grid is shown without computing it again
    assert "**Exact plane through the initial weights, sgd and adam** · exact at those three" in texts(app)
    contour = figure(app, "contour")
    assert contour["layout"]["xaxis"]["title"]["text"] == "towards sgd (distance)"
    assert "landscape_job" not in app.session_state

    # The stored PCA grid holds the validation loss only: asked for the training loss, it says so.
    app.radio(key="landscape_split").set_value("train")
    app.radio(key="landscape_kind").set_value("pca")
    rerun(app)
    assert "This grid holds the validation loss only (as stored in the bundle)." in texts(app)
    assert figure(app, "contour")["layout"]["xaxis"]["title"]["text"].startswith("PC 1 (")
    assert "landscape_job" not in app.session_state


def test_the_runs_page_links_a_training_bundle_to_its_landscape(
    trainer: Trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    session = new_session_id()
    info = RunStore().add(export_training(trainer), session=session)
    app = app_at()
    app.run()
    app.session_state["runs_session"] = session  # this browser's run-store session
    app.switch_page("app_pages/runs.py").run()
    assert not app.exception, app.exception
    (link,) = [e for e in app.get("page_link") if e.proto.label == "Open the loss landscape"]
    assert link.proto.page == "landscape"
    assert link.proto.query_string == f"landscape_from=bundle&landscape_run={info.id}"  # no session


def test_stop_keeps_what_was_evaluated_and_marks_it(trainer: Trainer) -> None:
    app = open_page({"train_job": finished_job(trainer).id})
    app.number_input(key="landscape_resolution").set_value(201)  # 40,401 points: time to stop it
    rerun(app)
    app.button(key="landscape_compute").click()
    rerun(app)
    job = jobs.JOBS.get(app.session_state["landscape_job"])
    app.button(key="landscape_stop").click()
    rerun(app)
    assert job.join(60) and job.state == jobs.STOPPED, job.state
    rerun(app)
    bars = [p.proto.text for p in app.get("progress")]
    assert len(bars) == 1 and bars[0].startswith("stopped · point "), bars
    assert "Stopped before the end: blank where not evaluated." in " ".join(c.value for c in app.caption)
    assert figure(app, "contour")["data"][0]["type"] == "contour"  # what was evaluated is drawn
    assert app.get("download_button")[0].proto.disabled  # a stopped grid is not exported


def test_a_link_cannot_open_another_sessions_unsaved_run(
    trainer: Trainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    info = RunStore().add(export_training(trainer), session=new_session_id())
    app = open_page(query={"landscape_from": "bundle", "landscape_run": info.id, "session": "x" * 32})
    assert f"Runs page: {info.name}" not in texts(app) and "cannot be read" in texts(app)


def test_a_large_batch_study_interpolates_from_the_small_to_the_large_batch_solution() -> None:
    from app_pages.parts.large_batch import STUDY
    from dgs_core.studies.large_batch import LargeBatchStudy, large_batch_base

    base = large_batch_base("moons", task_params={"n_samples": 200}, optimizers=["sgd", "lars"])
    study = LargeBatchStudy(base, small_batch=16, large_batch=128, epochs=1)
    list(study.run())
    job = jobs.Job(lambda: study, lambda s, stop: iter(()), name="large-batch")
    jobs.JOBS.add(job)
    job.start()
    assert job.join(30)
    app = open_page({STUDY.key: job.id}, {"landscape_from": "large_batch"})
    assert "Large-batch study: moons · sgd, lars · batch 16 and 128 (done)" in texts(app)
    assert app.selectbox(key="landscape_line_start").value == "sgd · batch 16"
    assert app.selectbox(key="landscape_line_end").value == "sgd · batch 128"  # its large-batch twin
    app.number_input(key="landscape_resolution").set_value(5)
    compute(app)
    curve = figure(app, "interpolation")
    assert [t["name"] for t in curve["data"]] == [
        "sgd · batch 16 → sgd · batch 128: training loss",
        "sgd · batch 16 → sgd · batch 128: validation loss",
    ]
    table = figure(app, "sharpness")["data"][0]["cells"]["values"]
    assert len(table[0]) == 4  # both optimizers at both batch sizes
    assert "is not exported" in " ".join(c.value for c in app.caption)
