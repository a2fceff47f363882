"""Landscapes in a training bundle: an exact round trip, what older bundles fall back to, and
tampered members refused with one message naming the problem."""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

from dgs_core.landscape import GridSpec, Landscape, LossGrid, PlaneSpec, build_plane, evaluate_grid
from dgs_core.params import ParamError
from dgs_core.runs.archive import SnapshotError
from dgs_core.runs.read import read_bundle
from dgs_core.runs.training import export_training
from dgs_core.training.trainer import Trainer
from dgs_core.viz.landscape import landscape_figures
from tests.landscape.conftest import moons_config
from tests.landscape.test_trajectory import as_format_2
from tests.runs.test_bundles import CREATED, member, refused, rewrite


@pytest.fixture(scope="module")
def grids(moons: Landscape) -> list[LossGrid]:
    exact = evaluate_grid(moons, build_plane(moons, PlaneSpec.exact("sgd", "adam")), GridSpec(resolution=5))
    pca = evaluate_grid(
        moons, build_plane(moons, PlaneSpec.pca(centre="dgs")), GridSpec(resolution=4), splits=("val",)
    )
    stopped = evaluate_grid(
        moons, build_plane(moons, PlaneSpec.random("dgs", seed=2)), GridSpec(resolution=3), stop=lambda: True
    )
    return [exact, pca, stopped]


@pytest.fixture(scope="module")
def data(moons_trainer: Trainer, grids: list[LossGrid]) -> bytes:
    return export_training(
        moons_trainer, figures=landscape_figures(grids[:1]), created=CREATED, landscapes=grids
    )


def _same_grid(a: LossGrid, b: LossGrid) -> None:
    assert a.plane.spec == b.plane.spec and a.plane.title == b.plane.title and a.grid == b.grid
    assert torch.equal(a.plane.origin, b.plane.origin) and torch.equal(a.plane.directions, b.plane.directions)
    assert dict(a.plane.anchors) == dict(b.plane.anchors) and a.plane.axis_titles == b.plane.axis_titles
    assert a.plane.explained_variance == b.plane.explained_variance
    assert (a.plane.max_distance, a.plane.extent, a.complete, a.seconds) == (
        b.plane.max_distance,
        b.plane.extent,
        b.complete,
        b.seconds,
    )
    np.testing.assert_array_equal(a.xs, b.xs)
    np.testing.assert_array_equal(a.ys, b.ys)
    assert list(a.losses) == list(b.losses)
    for split in a.losses:
        np.testing.assert_array_equal(a.losses[split], b.losses[split])  # NaN where not evaluated, too
    assert list(a.paths) == list(b.paths)
    for label, path in a.paths.items():
        other = b.paths[label]
        assert (path.name, path.status) == (other.name, other.status)
        for field in ("steps", "coords", "distances"):
            np.testing.assert_array_equal(getattr(path, field), getattr(other, field))
        for kind in ("losses", "plane_losses"):
            assert list(getattr(path, kind)) == list(getattr(other, kind))
            for split, values in getattr(path, kind).items():
                np.testing.assert_array_equal(values, getattr(other, kind)[split])
    pd.testing.assert_frame_equal(a.frame(), b.frame())


def test_landscapes_round_trip_through_a_bundle(data: bytes, grids: list[LossGrid]) -> None:
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    index = json.loads(member(data, "landscape/index.json"))["landscapes"]
    assert [item["key"] for item in index] == ["exact_sgd_adam", "pca", "random_dgs"]
    assert [item["title"] for item in index] == [g.title for g in grids]
    for item in index:
        for ext in ("json", "safetensors", "parquet"):
            assert f"landscape/{item['key']}.{ext}" in names
    bundle = read_bundle(data)
    assert len(bundle.landscapes) == 3
    for original, restored in zip(grids, bundle.landscapes, strict=True):
        _same_grid(original, restored)
    frame = pd.read_parquet(io.BytesIO(member(data, "landscape/exact_sgd_adam.parquet")))
    assert list(frame.columns) == ["i", "j", "x", "y", "train_loss", "val_loss"] and len(frame) == 25
    # the figures redraw from what was read back
    assert landscape_figures(bundle.landscapes[:1]).keys() == landscape_figures(grids[:1]).keys()


def test_a_bundle_without_landscapes_has_none(moons_trainer: Trainer) -> None:
    data = export_training(moons_trainer, figures={}, created=CREATED)
    assert not any(n.startswith("landscape/") for n in zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert read_bundle(data).landscapes == ()


def test_landscapes_of_another_run_are_refused_at_export(
    moons_trainer: Trainer, grids: list[LossGrid]
) -> None:
    other = Trainer(moons_config(optimizers=[("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01})], steps=10))
    list(other.run())
    with pytest.raises(SnapshotError, match="belongs to another run \\(optimizer 'dgs'\\)"):
        export_training(other, figures={}, landscapes=[grids[1]])
    with pytest.raises(SnapshotError, match="at most 16 landscapes"):
        export_training(moons_trainer, figures={}, landscapes=[grids[0]] * 17)


def test_a_format_2_bundle_falls_back_to_what_it_has(data: bytes, moons_trainer: Trainer) -> None:
    plain = export_training(moons_trainer, figures={}, created=CREATED)
    bundle = read_bundle(as_format_2(plain))
    landscape = Landscape.from_bundle(bundle)
    # moons is 2-D: its checkpoints (evaluations) and the final weights are the path; no step 0
    assert landscape.paths["sgd"].steps == (10, 20, 30, 40, 50, 55)
    assert landscape.paths["sgd"].source == "checkpoints" and landscape.initial is None
    assert any("format-2 bundle" in n for n in landscape.notes)
    assert any("sgd: no recorded trajectory" in n for n in landscape.notes)
    with pytest.raises(ParamError, match="format 3") as info:
        build_plane(landscape, PlaneSpec.exact("sgd", "adam"))
    assert info.value.field == "plane"
    assert build_plane(landscape, PlaneSpec.random("adam")).max_distance > 0
    assert build_plane(landscape, PlaneSpec.pca()).explained_variance is not None
    # a format-2 bundle with landscape members is refused: they did not exist then
    names = [n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if n.startswith("landscape/")]
    extra = [(n, member(data, n)) for n in names]
    refused(rewrite(as_format_2(plain), extra=extra), "refused member 'landscape/")


def test_a_task_without_checkpoints_falls_back_to_the_final_weights() -> None:
    trainer = Trainer(moons_config(task="digits", task_params={}, model={"size": "tiny"}, steps=10))
    list(trainer.run())
    landscape = Landscape.from_bundle(
        read_bundle(as_format_2(export_training(trainer, figures={}, created=CREATED)))
    )
    path = landscape.paths["sgd"]
    assert path.steps == (10,) and path.source == "final"
    assert torch.equal(
        path.final, torch.cat([p.detach().reshape(-1) for p in trainer.results["sgd"].model.parameters()])
    )


# -- hostile members -----------------------------------------------------------------------------


def _json(data: bytes, key: str) -> dict:
    return json.loads(member(data, f"landscape/{key}.json"))


def _with_json(data: bytes, key: str, **changes) -> bytes:
    return rewrite(data, {f"landscape/{key}.json": json.dumps({**_json(data, key), **changes}).encode()})


def _tensors(data: bytes, key: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(member(data, f"landscape/{key}.safetensors"))


def _with_tensors(data: bytes, key: str, tensors: dict[str, torch.Tensor]) -> bytes:
    saved = safetensors.torch.save({k: t.clone() for k, t in tensors.items()})
    return rewrite(data, {f"landscape/{key}.safetensors": saved})


def test_tampered_landscape_members_are_refused(data: bytes) -> None:
    key = "exact_sgd_adam"
    index = json.loads(member(data, "landscape/index.json"))
    # the index and the members must agree
    refused(rewrite(data, {f"landscape/{key}.parquet": None}), f"landscape/{key}.parquet is missing")
    refused(rewrite(data, extra=[("landscape/other.json", b"{}")]), "refused member 'landscape/other.json'")
    refused(rewrite(data, {"landscape/index.json": b"[]"}), "must hold a list of landscapes")
    twice = {"landscapes": index["landscapes"] + index["landscapes"][:1]}
    refused(rewrite(data, {"landscape/index.json": json.dumps(twice).encode()}), "invalid entry")
    renamed = {"landscapes": [{**index["landscapes"][0], "title": "A flat plane"}, *index["landscapes"][1:]]}
    refused(rewrite(data, {"landscape/index.json": json.dumps(renamed).encode()}), "does not match")
    # the JSON
    refused(_with_json(data, key, plane={"kind": "hessian"}), f"landscape/{key}.json: Invalid kind")
    refused(_with_json(data, key, plane=PlaneSpec.exact("sgd", "lion").to_dict()), "names 'lion'")
    refused(_with_json(data, key, grid={"resolution": 5000}), "Invalid resolution")
    refused(_with_json(data, key, splits=["test"]), "invalid splits")
    refused(_with_json(data, key, xs=[0, 1, 2, 3]), "xs must have 5 values")
    refused(_with_json(data, key, ys=[0, 1, 1, 3, 4]), "ys must increase")
    refused(_with_json(data, key, max_distance=-1), "max_distance: invalid number")
    refused(_with_json(data, key, extent=math.inf), "not valid JSON|extent: invalid number")
    paths = _json(data, key)["paths"]
    refused(
        _with_json(data, key, paths=[{**paths[0], "label": "lion"}, *paths[1:]]), "unknown optimizer 'lion'"
    )
    refused(
        _with_json(data, key, paths=[{**paths[0], "steps": [0, 20, 10]}, *paths[1:]]), "must be increasing"
    )
    refused(_with_json(data, key, extra=1), "keys must be")
    # the tensors
    tensors = _tensors(data, key)
    refused(
        _with_tensors(data, key, {**tensors, "origin": tensors["origin"][:-1]}), r"origin has shape \(\d+,\)"
    )
    refused(_with_tensors(data, key, {**tensors, "origin": tensors["origin"].float()}), "float32")
    bad = tensors["directions"].clone()
    bad[0, 0] = math.nan
    refused(_with_tensors(data, key, {**tensors, "directions": bad}), "the plane is not finite")
    refused(
        _with_tensors(data, key, {**tensors, "extra": torch.zeros(1, dtype=torch.float64)}),
        "'extra' that nothing",
    )
    without = {k: t for k, t in tensors.items() if k != "path/0/coords"}
    refused(_with_tensors(data, key, without), "path/0/coords is missing")
    partial = {k: t for k, t in tensors.items() if k != "path/1/losses/train"}
    refused(_with_tensors(data, key, partial), "losses for some splits only")
    # the table
    frame = pd.read_parquet(io.BytesIO(member(data, f"landscape/{key}.parquet")))

    def with_frame(changed: pd.DataFrame) -> bytes:
        buffer = io.BytesIO()
        changed.to_parquet(buffer, index=False)
        return rewrite(data, {f"landscape/{key}.parquet": buffer.getvalue()})

    refused(with_frame(frame.iloc[:-1]), "must be the grid's 5×5 points")
    refused(with_frame(pd.concat([frame, frame.iloc[:1]])), "26 rows")
    refused(with_frame(frame.assign(x=frame["x"] + 1)), "x and y differ")
    refused(with_frame(frame.drop(columns=["val_loss"])), "columns")
    pca = "pca"
    pca_frame = pd.read_parquet(io.BytesIO(member(data, f"landscape/{pca}.parquet")))
    buffer = io.BytesIO()
    pca_frame.assign(train_loss=1.0).to_parquet(buffer, index=False)
    refused(rewrite(data, {f"landscape/{pca}.parquet": buffer.getvalue()}), "train_loss holds values")
