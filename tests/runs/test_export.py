"""Bundles exported to TensorBoard and MLflow, read back with those tools' own readers, and the
CLI's Unix manners (a closed pipe, --json, exit codes)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgs_core.cli import main
from dgs_core.runs.export import scalars, tensorboard_zip, to_mlflow, to_tensorboard
from dgs_core.runs.read import read_bundle
from dgs_core.runs.surface import export_surface
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.viz.runs import surface_figures
from tests.runs.test_bundles import small_training_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def training() -> bytes:
    return small_training_bundle(steps=20)[1]


@pytest.fixture(scope="module")
def surface() -> bytes:
    config = SurfaceConfig(optimizers=("sgd", "adam"), steps=30)
    runs = config.simulate()
    return export_surface(runs, config, figures=surface_figures(runs))


def _accumulator(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_gets_every_curve_and_the_scaling_histograms(training: bytes, tmp_path: Path) -> None:
    bundle = read_bundle(training)
    folders = to_tensorboard(bundle, tmp_path)
    assert [f.name for f in folders] == list(bundle.labels)
    label = bundle.labels[0]
    result = bundle.results[label]
    events = _accumulator(tmp_path / label)
    tags = events.Tags()
    for tag in ("loss/batch", "loss/val", "accuracy/val", "lr", "batch_size", "lr_eff/q50"):
        assert tag in tags["scalars"], tag
    assert "scaling_factor" in tags["histograms"]
    batch = events.Scalars("loss/batch")
    assert [e.step for e in batch] == result.metrics["step"].tolist()
    assert [e.value for e in batch] == pytest.approx(result.metrics["loss"].tolist(), rel=1e-6)
    val = events.Scalars("loss/val")
    assert [e.step for e in val] == result.evaluations["step"].tolist()
    assert [h.step for h in events.Histograms("scaling_factor")] == [r.step for r in result.records]


def test_a_surface_bundle_goes_to_tensorboard_too(surface: bytes, tmp_path: Path) -> None:
    bundle = read_bundle(surface)
    to_tensorboard(bundle, tmp_path)
    gap = _accumulator(tmp_path / "adam").Scalars("gap")
    assert len(gap) == 31 and gap[-1].value == pytest.approx(float(bundle.runs["adam"].gap[-1, 0]), rel=1e-6)


def test_the_tensorboard_zip_holds_the_same_event_files(training: bytes, tmp_path: Path) -> None:
    bundle = read_bundle(training)
    with zipfile.ZipFile(io.BytesIO(tensorboard_zip(bundle))) as archive:
        names = archive.namelist()
        assert {name.split("/")[0] for name in names} == set(bundle.labels)
        archive.extractall(tmp_path)
    batch = _accumulator(tmp_path / "adam").Scalars("loss/batch")
    losses = bundle.results["adam"].metrics["loss"].tolist()
    assert [e.value for e in batch] == pytest.approx(losses, rel=1e-6)


def test_mlflow_gets_a_parent_run_and_one_child_per_optimizer(
    training: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # a database store keeps its artifacts in ./mlruns, as MLflow does
    bundle = read_bundle(training)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = to_mlflow(bundle, uri, experiment="test")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("test")
    runs = client.search_runs([experiment.experiment_id])
    children = {r.data.tags["optimizer"]: r for r in runs if r.info.run_id != parent}
    assert set(children) == set(bundle.labels)
    label = bundle.labels[0]
    child = children[label]
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.params["optimizer"] == bundle.results[label].name
    history = client.get_metric_history(child.info.run_id, "loss/batch")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == bundle.results[label].metrics[
        "step"
    ].tolist()
    parent_run = client.get_run(parent)
    assert parent_run.data.params["task"] == json.dumps(bundle.config["task"])
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"figures.html", "manifest.json"} <= artifacts


def test_every_scalar_is_finite(training: bytes, surface: bytes) -> None:
    for data in (training, surface):
        for _, _, _, value in scalars(read_bundle(data)):
            assert math.isfinite(value)


def test_the_cli_exports_and_says_what_is_missing(training: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.zip"
    path.write_bytes(training)
    assert main(["export", str(path), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "tensorboard:" in capsys.readouterr().out
    assert main(["export", str(path)]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_show_json_is_one_object(training: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.zip"
    path.write_bytes(training)
    assert main(["show", str(path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["manifest"]["kind"] == "training"
    assert [row["label"] for row in payload["summary"]] == list(read_bundle(training).labels)


def test_show_into_a_closed_pipe_stops_quietly(training: bytes, tmp_path: Path) -> None:
    path = tmp_path / "run.zip"
    path.write_bytes(training)
    # the reader closes its end before the command prints anything (it takes seconds to start)
    shown = subprocess.Popen(
        [sys.executable, "-m", "dgs_core", "show", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    shown.stdout.close()
    stderr = shown.communicate(timeout=120)[1].decode()
    assert shown.returncode == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, (
        stderr
    )
