"""Surface bundles: a Surface-lab comparison, its :class:`~dgs_core.surfaces.config.SurfaceConfig`
and every optimizer's :class:`~dgs_core.surfaces.simulator.Run`.

``config.json`` is ``SurfaceConfig.to_dict()`` (format 2), the same schema as the lab's URL and
the CLI's input. Format 1 bundles stored another schema (``noise_std``/``batch_size``/``clip_norm``
with per-optimizer labels, lr sweeps and several starts); :func:`config_from_version_1` reads
the ones the lab made (one start, each optimizer once, no sweep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from dgs_core.optim import registry
from dgs_core.params import check_keys
from dgs_core.runs.archive import LIMITS, Archive, Limits, SnapshotError
from dgs_core.runs.bundle import Bundle, config_error, expect, write_bundle
from dgs_core.runs.codec import (
    Decoder,
    csv_bytes,
    encode,
    file_keys,
    json_bytes,
    parquet_bytes,
    safetensors_bytes,
)
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.surfaces.simulator import Run

if TYPE_CHECKING:
    import plotly.graph_objects as go

_NUMPY = {torch.float64: np.float64, torch.int64: np.int64}
TRAJECTORY_ARRAYS = {  # name → (dtype, shape in terms of T steps, N rows)
    "points": (torch.float64, ("T+1", "N", 2)),
    "loss": (torch.float64, ("T+1", "N")),
    "grad": (torch.float64, ("T", "N", 2)),
    "lr": (torch.float64, ("T", "N")),
    "scaling": (torch.float64, ("T", "N", 2)),
    "batch_size": (torch.int64, ("T", "N")),
    "diverged_at": (torch.int64, ("N",)),
    "starts": (torch.float64, ("N", 2)),
    "lrs": (torch.float64, ("N",)),
    "scale": (torch.float64, ("T", "N", 2)),
    "extrapolated": (torch.float64, ("T", "N", 2)),
}
_OPTIONAL_ARRAYS = ("scale", "extrapolated")
SURFACE_METRICS = {"step": "int", "row": "int", "x": "float", "y": "float", "loss": "float", "gap": "float"}


_VERSION_1_KEYS = (
    "surface",
    "surface_params",
    "optimizers",
    "start",
    "steps",
    "seed",
    "noise_std",
    "batch_size",
    "clip_norm",
)
_VERSION_1_OPTIMIZER_KEYS = ("name", "hparams", "label", "lrs")
_SIMULATION_KEYS = {"hparams", "notes", "noise_std", "batch", "clip_norm", "seed"}


def config_from_version_1(data: Any) -> SurfaceConfig:
    """A format-1 ``config.json`` as a :class:`SurfaceConfig` (the lab's runs: one start, each
    optimizer once, no lr sweep); ``ValueError`` naming what format 2 cannot hold."""
    if not isinstance(data, Mapping):
        raise ValueError(f"Invalid config: {data!r} (must be a JSON object)")
    check_keys(data, _VERSION_1_KEYS, "surface config")
    entries = data.get("optimizers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"Invalid optimizers: {entries!r} (must be a non-empty list)")
    names, hparams = [], {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(f"Invalid optimizer: {entry!r} (needs a name)")
        check_keys(entry, _VERSION_1_OPTIMIZER_KEYS, "optimizer")
        if entry.get("lrs") is not None:
            raise ValueError(
                "Invalid lrs: a learning-rate sweep (format 1) has no place in a format-2 bundle"
            )
        if entry.get("label") not in (None, entry["name"]) or entry["name"] in names:
            raise ValueError(
                f"Invalid label: {entry.get('label')!r} (format 2 keys each optimizer by its name, once)"
            )
        names.append(entry["name"])
        if entry.get("hparams"):
            hparams[entry["name"]] = dict(entry["hparams"])
    starts = data.get("start")
    if starts is not None and (not isinstance(starts, list) or len(starts) != 1):
        raise ValueError(f"Invalid start: {starts!r} (format 2 holds one start)")
    return SurfaceConfig(
        surface=data.get("surface"),
        surface_params=dict(data.get("surface_params") or {}),
        optimizers=tuple(names),
        hparams=hparams,
        start=None if starts is None else tuple(starts[0]),
        steps=data.get("steps", 500),
        seed=data.get("seed", 0),
        noise_std=data.get("noise_std", 0.0),
        batch_size=data.get("batch_size", 1),
        clip_norm=data.get("clip_norm"),
    )


def _surface_metrics(run: Run) -> pd.DataFrame:
    steps, rows = run.points.shape[0], run.rows
    return pd.DataFrame(
        {
            "step": np.repeat(np.arange(steps, dtype=np.int64), rows),
            "row": np.tile(np.arange(rows, dtype=np.int64), steps),
            "x": run.points[..., 0].reshape(-1),
            "y": run.points[..., 1].reshape(-1),
            "loss": run.loss.reshape(-1),
            "gap": run.gap.reshape(-1),
        }
    )


def export_surface(
    runs: Mapping[str, Run],
    config: SurfaceConfig,
    *,
    figures: Mapping[str, go.Figure] | None = None,
    name: str | None = None,
    created: datetime | None = None,
    png: bool = False,
    limits: Limits = LIMITS,
) -> bytes:
    """The bundle of a Surface-lab comparison: ``config.simulate()``'s ``{name: Run}`` and the
    config (its optimizers, surface and steps must agree with the runs).

    ``figures``: ``{title: figure}`` stored as HTML (the lab's are
    :func:`dgs_core.viz.runs.surface_figures`); ``name``, ``created``, ``png``: as
    :func:`dgs_core.runs.training.export_training`.
    """
    if not isinstance(config, SurfaceConfig):
        raise SnapshotError(f"cannot export with a {type(config).__name__} (needs a SurfaceConfig)")
    names = list(config.optimizers)
    if list(runs) != names:
        raise SnapshotError(f"the runs {list(runs)} do not match the config's optimizers {names}")
    members: dict[str, bytes] = {}
    simulation = {}
    for label, key in zip(names, file_keys(names, "run"), strict=True):
        run = runs[label]
        expected = (config.surface, label, config.steps, 1)
        if (run.surface.name, run.optimizer, run.steps, run.rows) != expected:
            raise SnapshotError(
                f"run {label!r} ({run.surface.name}, {run.optimizer}, {run.steps} steps, "
                f"{run.rows} rows) does not match its config {expected}"
            )
        arrays = {
            k: torch.from_numpy(np.ascontiguousarray(getattr(run, k), dtype=_NUMPY[dtype]))
            for k, (dtype, _) in TRAJECTORY_ARRAYS.items()
            if getattr(run, k) is not None
        }
        members[f"trajectories/{key}.safetensors"] = safetensors_bytes(arrays)
        frame = _surface_metrics(run)
        members[f"metrics/{key}.csv"] = csv_bytes(frame)
        members[f"metrics/{key}.parquet"] = parquet_bytes(frame, limits)
        simulation[label] = encode(
            {
                "hparams": dict(run.hparams),
                "notes": list(run.notes),
                "noise_std": run.noise_std,
                "batch": run.batch,
                "clip_norm": run.clip_norm,
                "seed": run.seed,
            },
            {},
            label,
        )
    members["simulation.json"] = json_bytes(simulation)
    return write_bundle(
        "surface",
        name=name or f"{config.surface}: {', '.join(names)} · {config.steps} steps",
        created=created,
        device="cpu",
        seed=config.seed,
        labels=names,
        config=config.to_dict(),
        members=members,
        figures=figures or {},
        png=png,
        limits=limits,
    )


def _read_surface(archive: Archive, common: dict[str, Any], keys: Sequence[str]) -> Bundle:
    version = common["manifest"]["format_version"]
    try:
        if version == 1:
            config = config_from_version_1(common["config"])
        else:
            config = SurfaceConfig.from_dict(common["config"])
    except (ValueError, TypeError) as exc:
        raise config_error(exc) from None
    labels = list(config.optimizers)
    expect(
        list(common["labels"]) == labels,
        f"manifest.json: runs {list(common['labels'])} differ from config.json's optimizers {labels}",
    )
    surf = config.get_surface()
    simulation = archive.json("simulation.json")
    expect(isinstance(simulation, dict) and list(simulation) == labels, f"simulation.json must hold {labels}")
    decoder = Decoder("simulation.json", {})
    runs = {}
    for label, key in zip(labels, keys, strict=True):
        meta = decoder(simulation[label])
        expect(
            isinstance(meta, dict) and set(meta) == _SIMULATION_KEYS,
            f"simulation.json: invalid entry for {label!r}",
        )
        try:
            registry.get(label).resolve(meta["hparams"], surface=True)
        except (ValueError, TypeError) as exc:
            raise SnapshotError(f"simulation.json: {label}: {exc}") from None
        expect(
            isinstance(meta["notes"], list) and all(isinstance(n, str) for n in meta["notes"]),
            f"simulation.json: invalid notes for {label!r}",
        )
        name = f"trajectories/{key}.safetensors"
        arrays = archive.tensors(name)
        sizes = {"T": config.steps, "T+1": config.steps + 1, "N": 1}
        for array, (dtype, dims) in TRAJECTORY_ARRAYS.items():
            if array not in arrays:
                expect(array in _OPTIONAL_ARRAYS, f"{name}: {array} is missing")
                continue
            shape = tuple(sizes.get(d, d) for d in dims)
            got = arrays[array]
            expect(
                tuple(got.shape) == shape and got.dtype == dtype,
                f"{name}: {array} has shape {tuple(got.shape)} {got.dtype} (expected {shape} {dtype})",
            )
        extra = sorted(set(arrays) - set(TRAJECTORY_ARRAYS))
        expect(not extra, f"{name}: unexpected array {extra[0] if extra else ''!r}")
        numpy = {k: v.numpy() for k, v in arrays.items()}
        run = Run(
            surface=surf,
            optimizer=label,
            hparams=MappingProxyType(dict(meta["hparams"])),
            **{k: numpy.get(k) for k in TRAJECTORY_ARRAYS},
            noise_std=float(meta["noise_std"]),
            batch=int(meta["batch"]),
            clip_norm=None if meta["clip_norm"] is None else float(meta["clip_norm"]),
            seed=int(meta["seed"]),
            notes=tuple(meta["notes"]),
        )
        frame = _surface_metrics(run)
        stored = archive.table(f"metrics/{key}.parquet", SURFACE_METRICS)
        expect(
            stored["step"] == frame["step"].tolist() and stored["row"] == frame["row"].tolist(),
            f"metrics/{key}.parquet does not match {name}",
        )
        expect(
            archive.read(f"metrics/{key}.csv") == csv_bytes(frame), f"metrics/{key}.csv does not match {name}"
        )
        runs[label] = run
    notes = (*common.get("notes", ()), *(("a format-1 bundle, read as format 2",) if version == 1 else ()))
    common = {**common, "config": config.to_dict(), "notes": tuple(notes)}
    return Bundle(**common, runs=MappingProxyType(runs))
