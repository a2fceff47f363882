"""Runs page (AppTest): import a bundle and see the same curves, refuse a bad file without
losing anything, keep sessions apart, save, rename, delete, resume and compare."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_pages.parts.run_list import Offer
from dgs_core.runs.store import RUNS_DIR_ENV, RunStore, new_session_id
from tests.pages.conftest import shown
from tests.runs.test_bundles import small_training_bundle

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "app_pages/runs.py"
EMPTY = "No runs yet: run something in a lab, or import a bundle above."
PANELS = ("loss", "lr", "accuracy", "batch", "importance", "scaling", "histogram", "weights", "boundary")


@pytest.fixture(scope="module")
def run() -> tuple:
    return small_training_bundle(steps=20)


@pytest.fixture(scope="module")
def other_run() -> tuple:
    return small_training_bundle(steps=20, optimizers=[("sgd", {"lr": 0.3}), ("adam", {"lr": 0.01})])


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    return tmp_path / "runs"


def open_page(session: str | None = None) -> AppTest:
    app = AppTest.from_file(str(PAGE), default_timeout=180)
    if session is not None:  # the same browser again (its cookie names the session)
        app.session_state["runs_session"] = session
    app.run()
    assert not app.exception, app.exception
    return app


def upload(app: AppTest, data: bytes, name: str = "run.zip") -> AppTest:
    app.file_uploader(key="runs_upload").set_value((name, data, "application/zip"))
    app.run()
    assert not app.exception, app.exception
    return app


def click(app: AppTest, key: str) -> AppTest:
    app.button(key=key).click()
    app.run()
    assert not app.exception, app.exception
    return app


def chart(app: AppTest, key: str) -> dict:
    charts = [c for c in app.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, [c.proto.id for c in app.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)


def values(data) -> np.ndarray:
    """A trace's array: a list, or plotly's typed array {"dtype", "bdata"}."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data, dtype=float)


def table(app: AppTest, *columns: str):
    """The one dataframe on the page whose first columns are ``columns``."""
    found = [d.value for d in app.dataframe if list(d.value.columns[: len(columns)]) == list(columns)]
    assert len(found) == 1, [list(d.value.columns) for d in app.dataframe]
    return found[0]


def texts(elements) -> list[str]:
    return [shown(e.value) for e in elements]


def test_an_empty_store_invites_an_import(runs_dir: Path) -> None:
    app = open_page()
    assert texts(app.info) == [EMPTY]
    assert len(app.session_state["runs_session"]) >= 16
    assert "session" not in app.query_params  # the secret is never in a link


def test_an_imported_run_redraws_the_same_curves(runs_dir: Path, run: tuple) -> None:
    trainer, data = run
    app = upload(open_page(), data)
    assert "Imported “moons: sgd, adam · 20 steps”" in texts(app.success)[0]
    assert "unsaved" in texts(app.success)[0]
    spec = chart(app, "runs_loss_chart")
    batch = [t for t in spec["data"] if t["name"] == "batch loss"]
    assert len(batch) == 2
    for trace, (label, result) in zip(batch, trainer.results.items(), strict=True):
        np.testing.assert_array_equal(values(trace["y"]), result.metrics["loss"].to_numpy(), err_msg=label)
    keys = [c.proto.id.rsplit("-", 1)[-1] for c in app.get("plotly_chart")]
    assert keys == [f"runs_{name}_chart" for name in PANELS]  # the Training lab's panels
    summary = table(app, "label", "optimizer", "status")
    assert list(summary["label"]) == ["sgd", "adam"] and list(summary["steps"]) == [20, 20]


def test_a_bad_file_is_refused_and_nothing_stored_is_lost(runs_dir: Path, run: tuple) -> None:
    app = upload(open_page(), run[1])
    store = RunStore(runs_dir)
    session = app.session_state["runs_session"]
    before = store.list(session)
    upload(app, run[1][:5000], name="broken.zip")
    message = texts(app.error)[0]
    assert message.startswith("Could not import broken.zip: not a DGS Lab bundle: not a readable zip archive")
    assert store.list(session) == before
    assert not any((runs_dir / "tmp").iterdir())


def test_sessions_never_see_each_others_unsaved_runs(runs_dir: Path, run: tuple) -> None:
    alice, bob = new_session_id(), new_session_id()
    a = upload(open_page(alice), run[1])
    b = open_page(bob)
    assert texts(b.info) == [EMPTY]
    # a refresh (same URL, a new script session) finds alice's unsaved run again
    again = open_page(alice)
    assert again.selectbox(key="runs_selected").options == ["moons: sgd, adam · 20 steps · unsaved"]
    click(a, "runs_save")
    assert "every session lists it" in texts(a.success)[0]
    b.run()
    assert len(b.selectbox(key="runs_selected").options) == 1
    assert b.get("plotly_chart")


def test_rename_and_delete(runs_dir: Path, run: tuple) -> None:
    app = upload(open_page(), run[1])
    run_id = app.selectbox(key="runs_selected").value
    app.text_input(key=f"runs_name_{run_id}").input("Lecture 3: SGD vs Adam")
    app.button[[b.label for b in app.button].index("Rename")].click()
    app.run()
    session = app.session_state["runs_session"]
    assert RunStore(runs_dir).get(run_id, session).name == "Lecture 3: SGD vs Adam"
    assert app.button(key="runs_delete").disabled
    app.checkbox(key=f"runs_delete_confirm_{run_id}").check()
    app.run()
    click(app, "runs_delete")
    assert texts(app.info) == [EMPTY]
    assert RunStore(runs_dir).list(session) == []


def test_resume_trains_on_into_a_new_run(runs_dir: Path, run: tuple) -> None:
    app = upload(open_page(), run[1])
    app.number_input(key="runs_resume_steps").set_value(10)
    app.run()
    click(app, "runs_resume")
    assert "Resumed to step 30" in texts(app.success)[0]
    assert list(table(app, "label", "optimizer", "status")["steps"]) == [30, 30]
    infos = RunStore(runs_dir).list(app.session_state["runs_session"])
    assert [i.name for i in infos] == [
        "moons: sgd, adam · 20 steps (to step 30)",
        "moons: sgd, adam · 20 steps",
    ]


def test_compare_overlays_curves_and_diffs_the_configs(runs_dir: Path, run: tuple, other_run: tuple) -> None:
    app = upload(open_page(), run[1])
    upload(app, other_run[1], name="other.zip")
    ids = [info.id for info in RunStore(runs_dir).list(app.session_state["runs_session"])]
    app.multiselect(key="runs_compare").set_value(ids)
    app.run()
    assert not app.exception, app.exception
    spec = chart(app, "runs_compare_overlay")
    assert len(spec["data"]) == 8  # two runs × two optimizers, smoothed over their faint raw curves
    assert spec["layout"]["hovermode"] == "x unified"
    app.slider(key="runs_compare_smoothing").set_value(0.0)
    app.run()
    assert len(chart(app, "runs_compare_overlay")["data"]) == 4
    metrics = table(app, "run", "label")
    assert len(metrics) == 4
    diff = app.table[0].value
    assert list(diff.index) == ["optimizers.sgd.lr"]  # the one real difference, nothing else
    assert sorted(diff.iloc[0]) == ["0.1", "0.3"]


def test_a_labs_run_is_listed_at_once_and_a_new_setting_replaces_it(
    runs_dir: Path, run: tuple, other_run
) -> None:
    def offer(data: bytes, slot: str | None) -> Offer:
        return Offer(lambda: data, slot=slot)

    session = new_session_id()
    app = AppTest.from_file(str(PAGE), default_timeout=180)
    app.session_state["runs_session"] = session
    app.session_state["runs_pending"] = {"surface:a": offer(run[1], "surface")}
    app.run()
    assert not app.exception, app.exception
    first = RunStore(runs_dir).list(session)
    assert [i.saved for i in first] == [False] and app.get("plotly_chart")
    # the lab's settings changed: the new comparison replaces the unsaved one in its slot
    app.session_state["runs_pending"] = {"surface:b": offer(other_run[1], "surface")}
    app.run()
    second = RunStore(runs_dir).list(session)
    assert len(second) == 1 and second[0].id != first[0].id
    # a saved one stays when the slot moves on
    click(app, "runs_save")
    app.session_state["runs_pending"] = {
        "surface:c": offer(run[1], "surface"),
        "surface:b": offer(run[1], None),
    }
    app.run()
    infos = RunStore(runs_dir).list(session)
    assert [i.saved for i in infos] == [False, True]  # "surface:b" was made already: not again
    other = open_page()  # another browser: the saved run only, selected by its link
    saved = infos[1].id
    assert len(other.selectbox(key="runs_selected").options) == 1
    assert other.selectbox(key="runs_selected").value == saved
    linked = AppTest.from_file(str(PAGE), default_timeout=180)
    linked.session_state["runs_session"] = session
    linked.query_params["run"] = saved
    linked.run()
    assert linked.selectbox(key="runs_selected").value == saved
    assert f"?run={saved}" in linked.code[0].value
