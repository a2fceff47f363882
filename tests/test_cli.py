"""``python -m dgs_core``: a headless run writes the same bundle the page would, ``show``
summarises a bundle, and bad inputs end with one "error: …" line and status 2."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dgs_core.cli import main
from dgs_core.runs.read import read_bundle
from dgs_core.runs.surface import export_surface
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz.runs import surface_figures
from tests.runs.test_bundles import CREATED, assert_identical, export_with_figures

ROOT = Path(__file__).resolve().parents[1]
EPOCH = str(int(CREATED.timestamp()))
CONFIG = {
    "task": "moons",
    "task_params": {"n_samples": 200},
    "optimizers": [{"name": "sgd", "hparams": {"lr": 0.1}}, {"name": "dgs", "label": "DGS (default)"}],
    "schedule": {"name": "cosine", "params": {"base_lr": 0.1, "total_steps": 30}},
    "steps": 30,
    "eval_every": 10,
    "diag_every": 5,
    "device": "cpu",
}


def _ui_bundle(config: dict) -> bytes:
    """What the Training lab's download button gives for ``config`` (a page trains the same way)."""
    trainer = Trainer(TrainConfig.from_dict(config))
    list(trainer.run())
    return export_with_figures(trainer, created=CREATED)


@pytest.fixture(scope="module")
def ui_bundle() -> bytes:
    return _ui_bundle(CONFIG)


@pytest.fixture
def epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


def assert_same_bundle(a: bytes, b: bytes) -> None:
    """Byte-identical bundles; on a difference, name the members that differ."""
    if a != b:
        first, second = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
        assert first.namelist() == second.namelist()
        differ = [n for n in first.namelist() if first.read(n) != second.read(n)]
        raise AssertionError(f"the bundles differ in {differ}")


def _write(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_cli_bundle_equals_the_ui_bundle_byte_for_byte(
    tmp_path: Path, ui_bundle: bytes, epoch, capsys
) -> None:
    out = tmp_path / "run.zip"
    assert main(["run", str(_write(tmp_path / "config.json", CONFIG)), "--out", str(out)]) == 0
    progress = capsys.readouterr().err
    assert "step 10/30" in progress and "step 30/30" in progress and "wrote" in progress
    assert_same_bundle(out.read_bytes(), ui_bundle)
    assert not list(tmp_path.glob(".*partial"))


def test_a_bundles_config_reruns_to_the_same_bundle(tmp_path: Path, ui_bundle: bytes, epoch) -> None:
    config = json.loads(zipfile.ZipFile(io.BytesIO(ui_bundle)).read("config.json"))
    out = tmp_path / "again.zip"
    assert main(["run", str(_write(tmp_path / "c.json", config)), "--out", str(out), "--quiet"]) == 0
    assert_same_bundle(out.read_bytes(), ui_bundle)


def test_the_app_plotly_theme_does_not_leak_into_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing streamlit makes its plotly template the default; page and CLI bundles must agree."""
    import plotly.io as pio
    from streamlit.elements.lib.streamlit_plotly_theme import configure_streamlit_plotly_theme

    configure_streamlit_plotly_theme()
    monkeypatch.setattr(pio.templates, "default", "plotly")
    cli = _ui_bundle(CONFIG)
    monkeypatch.setattr(pio.templates, "default", "streamlit")
    assert_same_bundle(_ui_bundle(CONFIG), cli)


def test_surface_configs_run_headless_too(tmp_path: Path, epoch) -> None:
    config = SurfaceConfig(
        surface="banana",
        optimizers=("sgd", "adam"),
        hparams={"sgd": {"lr": 1e-3}},
        start=(-1.2, 0.8),
        steps=50,
    )
    runs = config.simulate()
    ui = export_surface(runs, config, figures=surface_figures(runs), created=CREATED)
    out = tmp_path / "surface.zip"
    assert (
        main(["run", str(_write(tmp_path / "s.json", config.to_dict())), "--out", str(out), "--quiet"]) == 0
    )
    assert_same_bundle(out.read_bytes(), ui)
    assert read_bundle(out).runs["adam"].rows == 1


def test_show_prints_the_summary(tmp_path: Path, ui_bundle: bytes, capsys) -> None:
    path = tmp_path / "run.zip"
    path.write_bytes(ui_bundle)
    assert main(["show", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("moons: sgd, DGS (default) · 30 steps\n")
    assert "training run · created 2026-01-02T03:04:05Z" in text and "task moons" in text
    assert "30/30 steps" in text and "cosine" in text
    summary = read_bundle(ui_bundle).summary()
    for label, status, steps in zip(summary["label"], summary["status"], summary["steps"], strict=True):
        assert label in text and status == "done" and steps == 30


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["run"], {**CONFIG, "optimizers": ["nope"]}, "error: Invalid optimizer"),
        (["run"], {**CONFIG, "steps": 0}, "error: Invalid steps: 0"),
        (["run"], [1, 2], "must hold a JSON object"),
        (["run"], {"surface": "nowhere", "optimizers": ["sgd"]}, "error: Invalid surface: 'nowhere'"),
        (["show"], None, "error: not a DGS Lab bundle"),
        (
            ["run"],
            {
                "surface": "rosenbrock",
                "optimizers": ["sgd"],
                "steps": 5000,
                "view": "basin",
                "basin_resolution": 100,
            },
            "$DGS_LAB_MAX_SURFACE_WORK",
        ),
    ],
)
def test_bad_inputs_end_with_one_error_line(tmp_path: Path, capsys, args, config, message) -> None:
    path = tmp_path / "input.json"
    path.write_text("{not json" if config is None else json.dumps(config))
    extra = ["--out", str(tmp_path / "out.zip")] if args == ["run"] else []
    assert main([*args, str(path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]
    assert not (tmp_path / "out.zip").exists()


@pytest.mark.slow  # two fresh interpreters importing torch
def test_python_dash_m_entry_point(tmp_path: Path, ui_bundle: bytes) -> None:
    config = _write(tmp_path / "config.json", CONFIG)
    out = tmp_path / "run.zip"
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "dgs_core"]
    done = subprocess.run(
        [*command, "run", str(config), "--out", str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert_same_bundle(out.read_bytes(), ui_bundle)
    shown = subprocess.run([*command, "show", str(out)], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "DGS (default)" in shown.stdout
    assert_identical(read_bundle(out).trainer.state_dict(), read_bundle(ui_bundle).trainer.state_dict())


def test_out_of_memory_ends_with_one_error_line(tmp_path: Path, capsys, monkeypatch) -> None:
    def too_big(self):
        raise MemoryError("Unable to allocate 745. GiB")  # numpy's _ArrayMemoryError is a MemoryError

    monkeypatch.setattr(SurfaceConfig, "simulate", too_big)
    path = _write(tmp_path / "s.json", SurfaceConfig(optimizers=("sgd",), steps=50).to_dict())
    assert main(["run", str(path), "--out", str(tmp_path / "out.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: not enough memory") and "GiB" not in err[-1]
    assert not (tmp_path / "out.zip").exists()
