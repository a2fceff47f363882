"""Run snapshots: exact round trips, resuming, determinism, and hostile files refused.

A training run is stopped halfway, exported and read back: its metrics, diagnostics,
weights, optimizer state and checkpoints must come back bit for bit, its figures must redraw
identically, and resuming it must give the uninterrupted run. Every malformed bundle
(traversal names, oversized members, a pickle payload, truncated zips, wrong schemas,
mismatched shapes, …) must be refused with one SnapshotError naming the problem.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pickle
import re
import stat
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import safetensors.torch
import torch

from dgs_core.diagnostics import DiagnosticRecord
from dgs_core.runs.archive import FORMAT_VERSION, Limits, SnapshotError
from dgs_core.runs.read import read_bundle
from dgs_core.runs.surface import export_surface
from dgs_core.runs.training import export_training, resume_trainer
from dgs_core.schedules import ScheduleSpec
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz.runs import run_figures, surface_figures, training_figures

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def export_with_figures(trainer: Trainer | dict, **kwargs: Any) -> bytes:
    """A training bundle with the lab's standard figures, as the pages and the CLI export it."""
    if isinstance(trainer, dict):
        trainer = Trainer.from_state_dict(trainer)
    return export_training(trainer, figures=training_figures(trainer.results, trainer.task), **kwargs)


# -- shared helpers (the page and CLI tests import them) ------------------------------------


def resume_config(**changes: Any) -> TrainConfig:
    """Optimizers with state of every kind: momentum, DGS's importance and loss history,
    ExtraSGD's noise generator, AdAdaGrad-Norm's growing batch, Adam's step; a schedule."""
    base = {
        "task": "moons",
        "task_params": {"n_samples": 200},
        "optimizers": [
            "momentum",
            "dgs",
            ("extrasgd", {"variant": "noise"}),
            ("adadagrad_norm", {"lr": 0.5}),
            ("adam", {"lr": 0.01}),
        ],
        "schedule": ScheduleSpec("cosine", {"base_lr": 0.1, "total_steps": 40}),
        "batch_policy": "adaptive",
        "batch_size": 8,
        "max_batch_size": 64,
        "steps": 40,
        "eval_every": 10,
        "diag_every": 5,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


def small_training_bundle(steps: int = 20, **changes: Any) -> tuple[Trainer, bytes]:
    """A short two-optimizer moons run and its bundle (standard figures)."""
    config = {
        "task": "moons",
        "task_params": {"n_samples": 200},
        "optimizers": [("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01})],
        "steps": steps,
        "eval_every": 10,
        "diag_every": 5,
        "device": "cpu",
        **changes,
    }
    trainer = Trainer(TrainConfig(**config))
    list(trainer.run())
    return trainer, export_with_figures(trainer, created=CREATED)


def rewrite(data: bytes, changes: dict[str, bytes | None] | None = None, extra: list | None = None) -> bytes:
    """A copy of a zip with members replaced (``None``: removed) and ``extra`` members appended
    (``(name or ZipInfo, bytes)``)."""
    changes = changes or {}
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename in changes:
                if changes[info.filename] is not None:
                    target.writestr(info.filename, changes[info.filename])
            else:
                target.writestr(info, source.read(info))
        for name, content in extra or []:
            target.writestr(name, content)
    return out.getvalue()


def member(data: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(data)).read(name)


def assert_identical(a: Any, b: Any, where: str = "state") -> None:
    """Recursive equality with tensors and arrays compared bit for bit (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert a.cpu().numpy().tobytes() == b.cpu().numpy().tobytes(), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, DiagnosticRecord):
        assert type(a) is type(b), where
        for name in ("step", "lr", "batch_size", "tensors", "elements"):
            assert_identical(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            assert_identical(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def refused(data: bytes, match: str, **kwargs: Any) -> str:
    """Reading ``data`` raises one SnapshotError matching ``match``; returns its message."""
    with pytest.raises(SnapshotError, match=match) as info:
        read_bundle(data, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped() -> Trainer:
    trainer = Trainer(resume_config())
    list(trainer.run(stop=lambda: trainer.step >= 20))
    assert trainer.step == 20
    return trainer


@pytest.fixture(scope="module")
def data(stopped: Trainer) -> bytes:
    return export_with_figures(stopped, created=CREATED)


@pytest.fixture(scope="module")
def bundle(data: bytes):
    return read_bundle(data)


@pytest.fixture(scope="module")
def reference() -> Trainer:
    trainer = Trainer(resume_config())
    list(trainer.run())
    return trainer


@pytest.fixture(scope="module")
def surface_run() -> tuple[dict, dict, bytes]:
    config = SurfaceConfig(
        surface="quadratic",
        surface_params={"kappa": 10.0},
        optimizers=("adadagrad_norm", "dgs", "extrasgd"),
        hparams={"dgs": {"lr": 1e-3}},
        start=(-1.8, 1.2),
        steps=60,
        noise_std=0.5,
    )
    runs = config.simulate()
    return config, runs, export_surface(runs, config, figures=surface_figures(runs), created=CREATED)


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_gives_identical_metrics_weights_and_optimizer_state(stopped: Trainer, bundle) -> None:
    assert bundle.kind == "training" and bundle.labels == tuple(stopped.config.labels)
    assert bundle.steps == 20 and bundle.notes == ()
    for label, result in stopped.results.items():
        restored = bundle.results[label]
        pd.testing.assert_frame_equal(restored.metrics, result.metrics, check_exact=True)
        pd.testing.assert_frame_equal(restored.diagnostics, result.diagnostics, check_exact=True)
        assert (restored.status, restored.reason, restored.hparams) == (
            result.status,
            result.reason,
            result.hparams,
        )
    # everything the trainer would save: weights, optimizer state (tensors bit for bit, step
    # counters, param groups, generator states), data order, records, checkpoints
    assert_identical(bundle.trainer.state_dict(), stopped.state_dict())


def test_the_bundle_holds_the_documented_members(data: bytes, stopped: Trainer) -> None:
    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    assert names[:2] == ["manifest.json", "config.json"]
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["format_version"] == FORMAT_VERSION and manifest["kind"] == "training"
    assert manifest["torch_version"] == torch.__version__ and manifest["device"] == "cpu"
    assert manifest["seed"] == 0 and manifest["created"] == "2026-01-02T03:04:05Z"
    assert [r["label"] for r in manifest["runs"]] == stopped.config.labels
    assert TrainConfig.from_dict(json.loads(archive.read("config.json"))) == stopped.config
    for key in ("momentum", "dgs", "extrasgd", "adadagrad_norm", "adam"):
        for name in ("metrics/{}.csv", "metrics/{}.parquet", "weights/{}.safetensors", "optimizer/{}.json"):
            assert name.format(key) in names
    assert all(not n.endswith((".pt", ".pkl", ".pickle")) for n in names)
    csv = pd.read_csv(io.BytesIO(archive.read("metrics/dgs.csv")))
    assert list(csv.columns[:6]) == ["step", "epoch", "data_source", "lr", "batch_size", "loss"]
    np.testing.assert_array_equal(csv["loss"], stopped.results["dgs"].metrics["loss"])
    # ExtraSGD's generator state is a tensor in safetensors, referenced from the JSON
    optimizer_json = json.loads(archive.read("optimizer/extrasgd.json"))
    assert optimizer_json["noise_generators"] == {"cpu": {"$tensor": "optimizer/noise_generators/cpu"}}


def test_figures_are_self_contained_and_redraw_identically(stopped: Trainer, bundle, data: bytes) -> None:
    original = training_figures(stopped.results, stopped.task)
    redrawn = run_figures(bundle)
    assert list(redrawn) == list(original) == [t["title"] for t in bundle.manifest["figures"]]
    for title in original:
        assert redrawn[title].to_json() == original[title].to_json(), title
    page = bundle.figures_html.decode()
    assert page.count('<script type="text/javascript">') >= 1 and "Plotly.newPlot" in page
    assert re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", page) is None  # nothing to fetch
    assert page.count('id="figure-') == len(original)


def test_export_is_deterministic_and_a_state_dict_exports_the_same(stopped: Trainer, data: bytes) -> None:
    assert export_with_figures(stopped, created=CREATED) == data
    assert export_with_figures(stopped.state_dict(), created=CREATED) == data


def test_resuming_a_saved_run_equals_the_uninterrupted_run(bundle, reference: Trainer) -> None:
    resumed = resume_trainer(bundle)
    assert resumed.step == 20 and resumed is not bundle.trainer
    list(resumed.run())
    assert resumed.step == 40
    for label, result in reference.results.items():
        pd.testing.assert_frame_equal(resumed.results[label].metrics, result.metrics, check_exact=True)
        assert_identical(resumed.lanes[label].model.state_dict(), result.model.state_dict(), label)
        assert_identical(resumed.lanes[label].optimizer.state_dict(), result.optimizer.state_dict(), label)
    assert bundle.trainer.step == 20 and bundle.results["dgs"].steps_done == 20  # the bundle is untouched


def test_a_resumed_run_exported_again_round_trips(bundle) -> None:
    resumed = resume_trainer(bundle)
    list(resumed.run())
    again = read_bundle(export_training(resumed, created=CREATED, figures={}))
    assert_identical(again.trainer.state_dict(), resumed.state_dict())


def test_extra_steps_extend_a_finished_run_like_a_longer_run() -> None:
    short, data = small_training_bundle(steps=20)
    assert all(r.status == "done" for r in short.results.values())
    extended = resume_trainer(read_bundle(data), extra_steps=20)
    list(extended.run())
    longer = Trainer(short.config.replace(steps=40))
    list(longer.run())
    assert extended.config == longer.config
    for label, result in longer.results.items():
        pd.testing.assert_frame_equal(extended.results[label].metrics, result.metrics, check_exact=True)
        assert_identical(extended.lanes[label].model.state_dict(), result.model.state_dict(), label)


def test_resume_refuses_surface_runs_and_bad_step_counts(bundle, surface_run) -> None:
    with pytest.raises(SnapshotError, match="only training runs"):
        resume_trainer(read_bundle(surface_run[2]))
    with pytest.raises(SnapshotError, match="Invalid extra_steps: -1"):
        resume_trainer(bundle, extra_steps=-1)
    with pytest.raises(SnapshotError, match="exceeds max_steps=20000"):
        resume_trainer(bundle, extra_steps=20_000)


def test_surface_round_trip_and_figures(surface_run) -> None:
    config, runs, data = surface_run
    bundle = read_bundle(data)
    assert bundle.kind == "surface" and bundle.labels == ("dgs", "extrasgd", "adadagrad_norm")
    assert bundle.config == config.to_dict() and SurfaceConfig.from_dict(bundle.config) == config
    for label, run in runs.items():
        restored = bundle.runs[label]
        assert restored.rows == run.rows and restored.surface == run.surface
        for f in dataclasses.fields(run):
            if f.name not in ("surface", "seconds"):  # timing is not part of the result
                assert_identical(getattr(restored, f.name), getattr(run, f.name), f"{label}.{f.name}")
    assert runs["adadagrad_norm"].rows == 1 and runs["extrasgd"].extrapolated is not None
    original = surface_figures(runs)
    redrawn = run_figures(bundle)
    assert list(redrawn) == list(original)
    for title in original:
        assert redrawn[title].to_json() == original[title].to_json(), title
    summary = bundle.summary()
    assert list(summary["label"]) == ["dgs", "extrasgd", "adadagrad_norm"]


def _as_version_1(data: bytes, config: dict) -> bytes:
    """A format-2 surface bundle rewritten as format 1 wrote it (manifest version, config schema)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            member = source.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(member)
                manifest["format_version"] = 1
                member = json.dumps(manifest).encode()
            elif info.filename == "config.json":
                member = json.dumps(config).encode()
            target.writestr(info, member)
    return out.getvalue()


def _version_1_config(config: SurfaceConfig, **entry: Any) -> dict:
    return {
        "surface": config.surface,
        "surface_params": {"kappa": 10.0},
        "optimizers": [
            {"name": n, "hparams": config.hparams_for(n), "label": n, "lrs": None, **entry}
            for n in config.optimizers
        ],
        "start": [list(config.start)],
        "steps": config.steps,
        "seed": config.seed,
        "noise_std": config.noise_std,
        "batch_size": config.batch_size,
        "clip_norm": config.clip_norm,
    }


def test_a_format_1_surface_bundle_is_read_as_format_2(surface_run) -> None:
    config, runs, data = surface_run
    bundle = read_bundle(_as_version_1(data, _version_1_config(config)))
    assert SurfaceConfig.from_dict(bundle.config) == config
    assert bundle.notes == ("a format-1 bundle, read as format 2",)
    assert_identical(bundle.runs["dgs"].points, runs["dgs"].points, "dgs.points")
    with pytest.raises(SnapshotError, match=r"config\.json: Invalid lrs"):
        read_bundle(_as_version_1(data, _version_1_config(config, lrs=[0.1, 0.2])))


def test_export_surface_refuses_runs_that_do_not_match_the_config(surface_run) -> None:
    config, runs, _ = surface_run
    with pytest.raises(SnapshotError, match="do not match the config"):
        export_surface({"dgs": runs["dgs"]}, config)
    other = dataclasses.replace(config, steps=30)
    with pytest.raises(SnapshotError, match="does not match its config"):
        export_surface(runs, other)


def test_a_run_too_large_for_the_caps_is_refused_at_export(stopped: Trainer) -> None:
    with pytest.raises(SnapshotError, match="too large for a bundle"):
        export_training(stopped, figures={}, limits=Limits(max_member=1000))


def test_a_device_missing_here_loads_on_the_cpu(data: bytes) -> None:
    config = json.loads(member(data, "config.json"))
    config["device"] = "cuda:7"
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    bundle = read_bundle(rewrite(data, {"config.json": json.dumps(config).encode()}))
    assert bundle.trainer.config.device == "cpu" and "cuda:7" in bundle.notes[0]


@pytest.mark.slow
def test_png_figures_when_a_chromium_is_available(tmp_path: Path) -> None:
    import shutil

    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium: PNG figures are optional")
    trainer = Trainer(
        TrainConfig(
            task="moons",
            task_params={"n_samples": 100},
            optimizers=["sgd"],
            steps=5,
            eval_every=5,
            device="cpu",
        )
    )
    list(trainer.run())
    figures = {"Loss": go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))}
    bundle = read_bundle(export_training(trainer, figures=figures, png=True, created=CREATED))
    assert bundle.manifest["png_note"] == "" and list(bundle.png) == ["loss"]
    assert bundle.png["loss"].startswith(b"\x89PNG\r\n\x1a\n") and len(bundle.png["loss"]) > 1000


# -- hostile files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../evil.txt", "/etc/evil", "weights/../../evil", "figures\\evil.html", "./manifest.json", "a//b"],
)
def test_member_paths_outside_the_bundle_are_refused(data: bytes, name: str) -> None:
    refused(rewrite(data, extra=[(name, b"x")]), "must stay inside the bundle")


def test_symlinks_duplicates_encrypted_and_unknown_members_are_refused(data: bytes) -> None:
    link = zipfile.ZipInfo("figures/link.html")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    refused(rewrite(data, extra=[(link, b"/etc/passwd")]), "symbolic link")
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = rewrite(data, extra=[("config.json", b"{}")])
    refused(twice, "appears twice")
    refused(
        _encrypted(rewrite(data, extra=[("figures/locked.html", b"x")]), "figures/locked.html"), "encrypted"
    )
    refused(rewrite(data, extra=[("notes.txt", b"hello")]), "'notes.txt': not part of a training bundle")
    refused(rewrite(data, {"weights/dgs.safetensors": None}), "weights/dgs.safetensors is missing")


def _encrypted(data: bytes, name: str) -> bytes:
    """``data`` with the "encrypted" flag set on ``name``'s central-directory record."""
    at = 0
    patched = bytearray(data)
    entry = name.encode()
    while True:
        at = data.index(b"PK\x01\x02", at)
        if data[at + 46 : at + 46 + len(entry)] == entry:
            patched[at + 8] |= 0x1  # general-purpose flag bit 0
            return bytes(patched)
        at += 4


def test_oversized_files_and_members_are_refused(data: bytes) -> None:
    # a real zip bomb: 129 MB of zeros deflate to ~130 kB, over the 128 MB per-member cap
    bomb = rewrite(data, extra=[("figures/bomb.html", bytes(129 * 2**20))])
    assert len(bomb) < len(data) + 2**20
    refused(bomb, "'figures/bomb.html': 129 MB uncompressed")
    refused(data, "the file is .* MB; bundles are limited to 1 MB", limits=Limits(max_bytes=2**20))
    refused(data, "uncompressed \\(at most 2 MB\\)", limits=Limits(max_uncompressed=2 * 2**20))
    refused(data, "members \\(at most 10\\)", limits=Limits(max_members=10))
    refused(data, "rows \\(at most 10\\)", limits=Limits(max_rows=10))  # Parquet declares its rows


def test_a_pickle_payload_is_never_unpickled(data: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    payload = pickle.dumps({"0.weight": Payload()})
    refused(
        rewrite(data, {"weights/dgs.safetensors": payload}),
        "weights/dgs.safetensors is not a valid safetensors",
    )
    buffer = io.BytesIO()
    torch.save({"weights": Payload()}, buffer)
    refused(rewrite(data, {"optimizer/dgs.safetensors": buffer.getvalue()}), "not a valid safetensors file")
    refused(
        rewrite(data, extra=[("weights/dgs.pt", payload)]), "'weights/dgs.pt': not part of a training bundle"
    )
    refused(rewrite(data, {"metrics/dgs.parquet": payload}), "metrics/dgs.parquet is not a readable Parquet")
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_and_damaged_zips_are_refused(data: bytes, cut: float) -> None:
    refused(data[: int(len(data) * cut)], "not a readable zip archive")


def test_not_a_zip_and_damaged_members_are_refused(data: bytes) -> None:
    refused(b"", "not a readable zip archive")
    refused(b'{"format": "dgs-lab-run"}', "not a readable zip archive")
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo("config.json")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    damaged = bytearray(data)
    damaged[start + 5] ^= 0xFF
    refused(bytes(damaged), "config.json is damaged|config.json is not")


def test_wrong_schemas_are_refused(data: bytes) -> None:
    manifest = json.loads(member(data, "manifest.json"))
    newer = {**manifest, "format_version": FORMAT_VERSION + 1}
    refused(
        rewrite(data, {"manifest.json": json.dumps(newer).encode()}),
        f"format version {FORMAT_VERSION + 1}, made by a newer",
    )
    other = {**manifest, "format": "something-else"}
    refused(rewrite(data, {"manifest.json": json.dumps(other).encode()}), "not a DGS Lab bundle")
    refused(rewrite(data, {"manifest.json": b"[1, 2"}), "manifest.json is not valid JSON")
    refused(rewrite(data, {"manifest.json": None}), "manifest.json is missing")

    config = json.loads(member(data, "config.json"))
    unknown = {**config, "steps_per_epoch": 3}
    refused(rewrite(data, {"config.json": json.dumps(unknown).encode()}), "config.json: Invalid config field")
    bad_lr = json.loads(json.dumps(config))
    bad_lr["optimizers"][0]["hparams"] = {"lr": -1.0}
    refused(rewrite(data, {"config.json": json.dumps(bad_lr).encode()}), "config.json: Invalid lr: -1.0")

    frame = pd.read_parquet(io.BytesIO(member(data, "metrics/dgs.parquet"))).rename(columns={"loss": "cost"})
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    refused(rewrite(data, {"metrics/dgs.parquet": buffer.getvalue()}), "metrics/dgs.parquet: columns")
    refused(rewrite(data, {"metrics/dgs.csv": b"step,loss\n1,0.5\n"}), "metrics/dgs.csv does not match")

    trainer_json = json.loads(member(data, "trainer.json"))
    trainer_json["step"] = 41
    refused(rewrite(data, {"trainer.json": json.dumps(trainer_json).encode()}), "trainer.json: step 41")

    optimizer = json.loads(member(data, "optimizer/dgs.json"))
    optimizer["param_groups"][0]["momentum"] = 0.5
    refused(rewrite(data, {"optimizer/dgs.json": json.dumps(optimizer).encode()}), "momentum = 0.5 differs")
    optimizer = json.loads(member(data, "optimizer/adam.json"))
    optimizer["state"] = {"$eval": "__import__('os')"}
    refused(rewrite(data, {"optimizer/adam.json": json.dumps(optimizer).encode()}), "unknown tagged value")


def _tensors(data: bytes, name: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(member(data, name))


def test_mismatched_shapes_are_refused(data: bytes, surface_run) -> None:
    weights = _tensors(data, "weights/dgs.safetensors")
    weights["0.weight"] = torch.zeros(16, 2)
    message = refused(
        rewrite(data, {"weights/dgs.safetensors": safetensors.torch.save(weights)}),
        "0.weight has shape \\(16, 2\\)",
    )
    assert "needs (32, 2)" in message
    weights = _tensors(data, "weights/dgs.safetensors")
    weights["extra.weight"] = torch.zeros(3)
    refused(rewrite(data, {"weights/dgs.safetensors": safetensors.torch.save(weights)}), "unexpected tensor")

    state = _tensors(data, "optimizer/adam.safetensors")
    first = next(k for k in state if k.endswith("exp_avg"))
    state[first] = torch.zeros(5, 5)
    refused(
        rewrite(data, {"optimizer/adam.safetensors": safetensors.torch.save(state)}), "has shape \\(5, 5\\)"
    )

    checkpoints = _tensors(data, "checkpoints/adam.safetensors")
    key = next(iter(checkpoints))
    checkpoints[key] = torch.zeros(1)
    refused(
        rewrite(data, {"checkpoints/adam.safetensors": safetensors.torch.save(checkpoints)}),
        "has shape \\(1,\\)",
    )

    elements = _tensors(data, "diagnostics/dgs.safetensors")
    key = next(iter(elements))
    elements[key] = torch.zeros(2, 2)
    refused(
        rewrite(data, {"diagnostics/dgs.safetensors": safetensors.torch.save(elements)}),
        "has shape \\(2, 2\\)",
    )

    surface = surface_run[2]
    arrays = _tensors(surface, "trajectories/dgs.safetensors")
    arrays["points"] = arrays["points"][:10]
    refused(
        rewrite(surface, {"trajectories/dgs.safetensors": safetensors.torch.save(arrays)}), "points has shape"
    )


def test_a_hostile_file_on_disk_is_read_with_the_same_checks(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "run.zip"
    path.write_bytes(data[:100])
    with pytest.raises(SnapshotError, match="not a readable zip"):
        read_bundle(path)
    path.write_bytes(data)
    assert read_bundle(path).labels == read_bundle(data).labels
    with pytest.raises(SnapshotError, match="cannot read"):
        read_bundle(tmp_path / "missing.zip")


def test_optimizer_state_saved_before_the_contract_change_still_loads(data: bytes, bundle) -> None:
    """Groups saved when the optimizers had an ``independent_rows`` switch and no ``maximize``."""
    changes = {}
    for key in [r["key"] for r in json.loads(member(data, "manifest.json"))["runs"]]:
        name = f"optimizer/{key}.json"
        state = json.loads(member(data, name))
        for group in state["param_groups"]:
            if "differentiable" not in group:  # one of DGS Lab's own optimizers, not torch's
                group.pop("maximize", None)
                group["independent_rows"] = False
        changes[name] = json.dumps(state).encode()
    old = read_bundle(rewrite(data, changes))
    for label, result in bundle.results.items():
        assert_identical(old.results[label].optimizer.state_dict(), result.optimizer.state_dict(), label)


def test_a_run_without_diagnostics_round_trips() -> None:
    trainer = Trainer(resume_config(diag_every=0, steps=10))
    list(trainer.run())
    bundle = read_bundle(export_training(trainer))
    assert all(len(r.diagnostics) == 0 for r in bundle.results.values())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("device", "![x](http://evil.example/i.png)", "invalid device"),
        ("torch_version", "2.13 [click](http://evil.example)", "invalid torch_version"),
        ("created", "yesterday", "invalid created"),
        ("name", "run\x1b[31m\u202e", "name holds control characters"),
    ],
)
def test_manifest_text_fields_are_checked_before_anyone_sees_them(data: bytes, key, value, message) -> None:
    manifest = {**json.loads(member(data, "manifest.json")), key: value}
    refused(rewrite(data, {"manifest.json": json.dumps(manifest).encode()}), message)
