"""Landscapes in a training bundle: each :class:`~dgs_core.landscape.LossGrid` as optional members
under ``landscape/`` (format 3 on), read back checked like every other member.

    landscape/index.json          {"landscapes": [{"key", "title"}, …]}: present when there are any
    landscape/<key>.json          the plane (its PlaneSpec, axis titles, anchors, explained variance,
                                  max distance, extent), the grid (its GridSpec, xs, ys, the splits
                                  evaluated, complete, seconds) and the paths (label, name, status,
                                  steps)
    landscape/<key>.safetensors   "origin" (n,) and "directions" (2, n) float64: the plane itself;
                                  per path i: "path/<i>/coords" (k, 2), "path/<i>/distances" (k,),
                                  and, when evaluated, "path/<i>/losses/<split>" and
                                  "path/<i>/plane_losses/<split>" (k,), float64
    landscape/<key>.parquet       the grid, one row per point: i, j, x, y, train_loss, val_loss
                                  (row-major in y; NaN where not evaluated)

Reading checks the index, every member's keys, types, shapes (against the model of
config.json) and finiteness, that the labels are the bundle's, that the table's points are the
grid's, and that the plane's title comes out as the index says.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from dgs_core.landscape import SPLITS, GridSpec, LossGrid, Plane, PlaneSpec, ProjectedPath
from dgs_core.landscape.planes import PCA_CENTRES
from dgs_core.runs.archive import Archive, Limits, SnapshotError
from dgs_core.runs.bundle import expect
from dgs_core.runs.codec import _KEY, file_keys, json_bytes, parquet_bytes, safetensors_bytes

INDEX = "landscape/index.json"
MAX_LANDSCAPES = 16
GRID_SCHEMA = {"i": "int", "j": "int", "x": "float", "y": "float", "train_loss": "float", "val_loss": "float"}
_JSON_KEYS = {
    "plane",
    "grid",
    "splits",
    "complete",
    "seconds",
    "xs",
    "ys",
    "axis_titles",
    "anchors",
    "explained_variance",
    "max_distance",
    "extent",
    "paths",
}
_MAX_TEXT = 1000


def landscape_members(
    grids: Sequence[LossGrid], labels: Sequence[str], numel: int, limits: Limits
) -> dict[str, bytes]:
    """The members of ``grids`` (none when there are none); each must belong to this run."""
    if not grids:
        return {}
    if len(grids) > MAX_LANDSCAPES:
        raise SnapshotError(f"a bundle holds at most {MAX_LANDSCAPES} landscapes ({len(grids)} given)")
    titles = [f"{g.plane.spec.kind} {' '.join(g.plane.spec.labels)}" for g in grids]
    keys = file_keys(titles, "landscape")
    members: dict[str, bytes] = {}
    for key, grid in zip(keys, grids, strict=True):
        if not isinstance(grid, LossGrid):
            raise SnapshotError(f"cannot store a {type(grid).__name__} as a landscape (needs a LossGrid)")
        plane = grid.plane
        foreign = [label for label in (*plane.spec.labels, *grid.paths) if label not in labels]
        if foreign or tuple(plane.origin.shape) != (numel,):
            raise SnapshotError(
                f"the landscape {plane.title.partition(' · ')[0]!r} belongs to another run "
                f"({'optimizer ' + repr(foreign[0]) if foreign else 'another model'})"
            )
        tensors = {"origin": plane.origin, "directions": plane.directions}
        paths = []
        for i, (label, path) in enumerate(grid.paths.items()):
            paths.append(
                {"label": label, "name": path.name, "status": path.status, "steps": path.steps.tolist()}
            )
            tensors[f"path/{i}/coords"] = torch.from_numpy(np.asarray(path.coords, dtype=np.float64))
            tensors[f"path/{i}/distances"] = torch.from_numpy(np.asarray(path.distances, dtype=np.float64))
            for kind in ("losses", "plane_losses"):
                for split, values in getattr(path, kind).items():
                    tensors[f"path/{i}/{kind}/{split}"] = torch.from_numpy(
                        np.asarray(values, dtype=np.float64)
                    )
        meta = {
            "plane": plane.spec.to_dict(),
            "grid": grid.grid.to_dict(),
            "splits": list(grid.losses),
            "complete": grid.complete,
            "seconds": grid.seconds,
            "xs": grid.xs.tolist(),
            "ys": grid.ys.tolist(),
            "axis_titles": list(plane.axis_titles),
            "anchors": {name: list(xy) for name, xy in plane.anchors.items()},
            "explained_variance": None
            if plane.explained_variance is None
            else list(plane.explained_variance),
            "max_distance": plane.max_distance,
            "extent": plane.extent,
            "paths": paths,
        }
        members[f"landscape/{key}.json"] = json_bytes(meta)
        members[f"landscape/{key}.safetensors"] = safetensors_bytes(tensors)
        members[f"landscape/{key}.parquet"] = parquet_bytes(grid.frame(), limits)
    index = [{"key": k, "title": g.plane.title} for k, g in zip(keys, grids, strict=True)]
    return {INDEX: json_bytes({"landscapes": index}), **members}


def landscape_keys(archive: Archive) -> list[str]:
    """The landscape keys the bundle's index lists (none without an index), checked."""
    if INDEX not in archive.infos:
        return []
    index = archive.json(INDEX)
    expect(
        isinstance(index, dict) and set(index) == {"landscapes"} and isinstance(index["landscapes"], list),
        f"{INDEX} must hold a list of landscapes",
    )
    items = index["landscapes"]
    expect(0 < len(items) <= MAX_LANDSCAPES, f"{INDEX}: {len(items)} landscapes (1 to {MAX_LANDSCAPES})")
    keys: list[str] = []
    for item in items:
        expect(
            isinstance(item, dict)
            and set(item) == {"key", "title"}
            and isinstance(item["key"], str)
            and bool(_KEY.fullmatch(item["key"]))
            and item["key"] not in keys
            and isinstance(item["title"], str)
            and len(item["title"]) <= _MAX_TEXT,
            f"{INDEX}: invalid entry {item!r}"[:300],
        )
        keys.append(item["key"])
    return keys


def members(keys: Sequence[str]) -> list[str]:
    """The members of the landscapes ``keys`` (with the index when there are any)."""
    if not keys:
        return []
    return [INDEX] + [f"landscape/{key}.{ext}" for key in keys for ext in ("json", "safetensors", "parquet")]


def _number(value: Any, where: str, low: float = -math.inf) -> float:
    expect(
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= low,
        f"{where}: invalid number {value!r}"[:300],
    )
    return float(value)


def _text(value: Any, where: str) -> str:
    expect(isinstance(value, str) and len(value) <= _MAX_TEXT, f"{where}: invalid text")
    return value


def read_landscapes(archive: Archive, labels: Sequence[str], numel: int) -> tuple[LossGrid, ...]:
    """The bundle's landscapes, every member checked (see the module docstring)."""
    index = (
        {item["key"]: item["title"] for item in archive.json(INDEX)["landscapes"]}
        if INDEX in archive.infos
        else {}
    )
    return tuple(_read_one(archive, key, title, labels, numel) for key, title in index.items())


def _read_one(archive: Archive, key: str, title: str, labels: Sequence[str], numel: int) -> LossGrid:
    name = f"landscape/{key}.json"
    meta = archive.json(name)
    expect(isinstance(meta, dict) and set(meta) == _JSON_KEYS, f"{name}: keys must be {sorted(_JSON_KEYS)}")
    try:
        spec = PlaneSpec.from_dict(meta["plane"])
        grid = GridSpec.from_dict(meta["grid"])
    except (ValueError, TypeError) as exc:
        raise SnapshotError(f"{name}: {exc}") from None
    named = [*spec.labels, *([spec.centre] if spec.kind == "pca" and spec.centre not in PCA_CENTRES else [])]
    for label in named:
        expect(label in labels, f"{name}: the plane names {label!r}, which is not an optimizer of this run")
    splits = meta["splits"]
    expect(
        isinstance(splits, list) and 0 < len(splits) == len(set(splits)) and all(s in SPLITS for s in splits),
        f"{name}: invalid splits {splits!r}"[:300],
    )
    resolution = grid.resolution
    axes = []
    for axis in ("xs", "ys"):
        ticks = meta[axis]
        expect(
            isinstance(ticks, list) and len(ticks) == resolution,
            f"{name}: {axis} must have {resolution} values",
        )
        values = np.array([_number(v, f"{name}: {axis}") for v in ticks])
        expect(bool(np.all(np.diff(values) > 0)), f"{name}: {axis} must increase")
        axes.append(values)
    xs, ys = axes
    titles = meta["axis_titles"]
    expect(isinstance(titles, list) and len(titles) == 2, f"{name}: axis_titles must be two texts")
    anchors_raw = meta["anchors"]
    expect(isinstance(anchors_raw, dict) and len(anchors_raw) <= 8, f"{name}: invalid anchors")
    anchors = {}
    for anchor, xy in anchors_raw.items():
        expect(isinstance(xy, list) and len(xy) == 2, f"{name}: invalid anchor {anchor!r}"[:300])
        anchors[_text(anchor, name)] = (_number(xy[0], name), _number(xy[1], name))
    variance = meta["explained_variance"]
    if variance is not None:
        expect(isinstance(variance, list) and len(variance) == 2, f"{name}: invalid explained_variance")
        variance = tuple(_number(v, f"{name}: explained_variance", 0.0) for v in variance)
        expect(sum(variance) <= 1 + 1e-9, f"{name}: the explained variance exceeds 1")
    complete = meta["complete"]
    expect(isinstance(complete, bool), f"{name}: complete must be true or false")

    tensors_name = f"landscape/{key}.safetensors"
    tensors = archive.tensors(tensors_name)

    def tensor(entry: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = tensors.get(entry)
        expect(value is not None, f"{tensors_name}: {entry} is missing")
        expect(
            tuple(value.shape) == shape and value.dtype == torch.float64,
            f"{tensors_name}: {entry} has shape {tuple(value.shape)} {value.dtype} "
            f"(expected {shape} float64)",
        )
        return value

    used = {"origin", "directions"}
    origin, directions = tensor("origin", (numel,)), tensor("directions", (2, numel))
    expect(
        bool(origin.isfinite().all() and directions.isfinite().all()),
        f"{tensors_name}: the plane is not finite",
    )
    plane = Plane(
        spec,
        origin,
        directions,
        (_text(titles[0], name), _text(titles[1], name)),
        MappingProxyType(anchors),
        variance,
        _number(meta["max_distance"], f"{name}: max_distance", 0.0),
        _number(meta["extent"], f"{name}: extent", 0.0),
    )
    expect(plane.title == title, f"landscape/index.json: the title of {key!r} does not match {name}")

    raw_paths = meta["paths"]
    expect(isinstance(raw_paths, list) and len(raw_paths) <= len(labels), f"{name}: invalid paths")
    paths = {}
    for i, item in enumerate(raw_paths):
        expect(
            isinstance(item, dict) and set(item) == {"label", "name", "status", "steps"},
            f"{name}: invalid path {i}",
        )
        label = item["label"]
        expect(
            label in labels and label not in paths,
            f"{name}: path {i} is of an unknown optimizer {label!r}"[:300],
        )
        steps = item["steps"]
        expect(
            isinstance(steps, list)
            and 0 < len(steps) <= 10_000
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps)
            and all(a < b for a, b in itertools.pairwise(steps)),
            f"{name}: path {label!r}: steps must be increasing integers >= 0"[:300],
        )
        k = len(steps)
        found: dict[str, dict[str, np.ndarray]] = {"losses": {}, "plane_losses": {}}
        for kind in found:
            for split in splits:
                entry = f"path/{i}/{kind}/{split}"
                if entry in tensors:
                    found[kind][split] = tensor(entry, (k,)).numpy()
                    used.add(entry)
        expect(
            all(len(found[kind]) in (0, len(splits)) for kind in found)
            and len(found["losses"]) == len(found["plane_losses"]),
            f"{tensors_name}: path {label!r} has losses for some splits only",
        )
        coords, distances = tensor(f"path/{i}/coords", (k, 2)), tensor(f"path/{i}/distances", (k,))
        used.update({f"path/{i}/coords", f"path/{i}/distances"})
        expect(
            bool(coords.isfinite().all() and (distances >= 0).all()),
            f"{tensors_name}: path {label!r} is not finite",
        )
        paths[label] = ProjectedPath(
            label,
            _text(item["name"], name),
            _text(item["status"], name),
            np.asarray(steps, dtype=np.int64),
            coords.numpy(),
            distances.numpy(),
            MappingProxyType(found["losses"]),
            MappingProxyType(found["plane_losses"]),
        )
    unused = sorted(set(tensors) - used)
    expect(not unused, f"{tensors_name}: tensor {unused[0] if unused else ''!r} that nothing refers to"[:300])

    table_name = f"landscape/{key}.parquet"
    table = archive.table(table_name, GRID_SCHEMA, max_rows=resolution * resolution)
    j, i = np.divmod(np.arange(resolution * resolution), resolution)
    expect(
        table["i"] == i.tolist() and table["j"] == j.tolist(),
        f"{table_name}: the rows must be the grid's {resolution}×{resolution} points, row-major in y",
    )
    expect(
        table["x"] == xs[i].tolist() and table["y"] == ys[j].tolist(),
        f"{table_name}: x and y differ from {name}'s xs and ys",
    )
    losses = {}
    for split in SPLITS:
        values = np.asarray(table[f"{split}_loss"], dtype=np.float64)
        if split in splits:
            losses[split] = values.reshape(resolution, resolution)
        else:
            expect(
                bool(np.isnan(values).all()),
                f"{table_name}: {split}_loss holds values it was not evaluated for",
            )
    seconds = _number(meta["seconds"], f"{name}: seconds", 0.0)
    return LossGrid(plane, grid, xs, ys, MappingProxyType(losses), MappingProxyType(paths), complete, seconds)
