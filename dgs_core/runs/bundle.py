"""A bundle's common part: the manifest, the config, the figures, and the :class:`Bundle` record.

:func:`write_bundle` zips a kind's members with the manifest, config and figures;
:func:`open_bundle` reads them back checked, before a kind's reader
(:mod:`dgs_core.runs.training`, :mod:`dgs_core.runs.surface`) rebuilds the run.
"""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

import dgs_core
from dgs_core.device import resolve_device
from dgs_core.landscape import LossGrid
from dgs_core.metrics import divergence_message
from dgs_core.runs.archive import (
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    Limits,
    SnapshotError,
    figures_html,
    png_images,
    portable,
    write_zip,
)
from dgs_core.runs.codec import _KEY, created_at, file_keys, json_bytes
from dgs_core.studies.tuner import StudyResult
from dgs_core.surfaces.simulator import Run
from dgs_core.training.trainer import Trainer

if TYPE_CHECKING:
    import plotly.graph_objects as go


# Manifest fields with a known shape (a run's name is free text: printable, at most 1000 characters).
_MANIFEST_PATTERNS = {
    "device": re.compile(r"[a-z]{1,16}(:[0-9]{1,3})?"),  # cpu, cuda:0, mps
    "dgs_lab_version": re.compile(r"[0-9A-Za-z.+_-]{1,40}"),
    "torch_version": re.compile(r"[0-9A-Za-z.+_-]{1,40}"),
    "created": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{5,15}(Z|[+-][0-9]{2}:?[0-9]{2})?"),
}


def write_bundle(
    kind: str,
    *,
    name: str,
    created: datetime | None,
    device: str,
    seed: int,
    labels: Sequence[str],
    config: Mapping[str, Any],
    members: Mapping[str, bytes],
    figures: Mapping[str, go.Figure],
    png: bool,
    limits: Limits,
) -> bytes:
    """Manifest, config, figures and the kind's members, zipped."""
    when = created_at(created)
    figures = {title: portable(fig) for title, fig in figures.items()}
    figure_keys = file_keys(list(figures), "figure")
    images: dict[str, bytes] = {}
    png_note = ""
    if png and figures:
        try:
            rendered = png_images(figures)
            images = {key: rendered[title] for key, title in zip(figure_keys, figures, strict=True)}
        except (ImportError, RuntimeError) as exc:
            png_note = f"no PNG images: {exc}"
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "created": when.isoformat().replace("+00:00", "Z"),
        "dgs_lab_version": dgs_core.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "seed": seed,
        "runs": [
            {"label": label, "key": key} for label, key in zip(labels, file_keys(labels, "run"), strict=True)
        ],
        "figures": [{"title": t, "key": k} for t, k in zip(figures, figure_keys, strict=True)],
        "png": list(images),
        "png_note": png_note,
    }
    everything = {
        "manifest.json": json_bytes(manifest),
        "config.json": json_bytes(config, sort_keys=True),
        **members,
        "figures/index.html": figures_html(name, figures, figure_keys),
        **{f"figures/{key}.png": data for key, data in images.items()},
    }
    return write_zip(everything, when, limits)


# ---------------------------------------------------------------------------------------------
# Reading: bundles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle read back and checked. Treat it as read-only (pages cache it).

    Attributes:
        kind: "training" or "surface".
        manifest: manifest.json as read.
        config: config.json as read (plain JSON).
        labels: the optimizers' labels, in order.
        figures_html: figures/index.html, the figures as they were exported.
        png: ``{figure key: PNG bytes}`` (may be empty).
        notes: what changed on loading (e.g. "recorded on cuda, loaded on cpu").
        trainer: training: the run rebuilt as recorded (use :func:`resume_trainer` to train on).
        runs: surface: ``{label: Run}``.
        study: study: the :class:`~dgs_core.studies.tuner.StudyResult`.
        landscapes: training: the loss grids stored with the run (format 3 on; often none).
    """

    kind: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    labels: tuple[str, ...]
    figures_html: bytes
    png: Mapping[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    trainer: Trainer | None = None
    runs: Mapping[str, Run] | None = None
    study: StudyResult | None = None
    landscapes: tuple[LossGrid, ...] = ()

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def results(self) -> dict[str, Any]:
        """Training: ``{label: RunResult}`` as recorded."""
        if self.trainer is None:
            raise SnapshotError(f"a {self.kind} bundle has no training results")
        return self.trainer.results

    @property
    def task(self) -> Any:
        """Training: the task (rebuilt from the config; deterministic)."""
        if self.trainer is None:
            raise SnapshotError(f"a {self.kind} bundle has no task")
        return self.trainer.task

    @property
    def steps(self) -> int:
        """Training: lockstep steps done; surface: steps simulated; study: steps per trial."""
        return self.trainer.step if self.trainer is not None else int(self.config["steps"])

    def summary(self) -> pd.DataFrame:
        """One row per optimizer (per row of a surface run): where the run ended."""
        if self.kind == "study":
            return self.study.best  # type: ignore[union-attr]  # a study bundle always has one
        return training_summary(self.results) if self.kind == "training" else surface_summary(self.runs or {})


def training_summary(results: Mapping[str, Any]) -> pd.DataFrame:
    """label, optimizer, status, steps, last batch loss, the last evaluation, best validation
    accuracy and loss spikes, per optimizer."""
    rows = []
    for label, r in results.items():
        evals = r.evaluations
        last = evals.iloc[-1] if len(evals) else None
        rows.append(
            {
                "label": label,
                "optimizer": r.name,
                "status": r.status + (f" ({r.reason})" if r.reason else ""),
                "steps": r.steps_done,
                "loss": float(r.columns["loss"][-1]) if r.steps_done else math.nan,
                **{
                    c: math.nan if last is None else float(last[c])
                    for c in ("train_loss", "train_metric", "val_loss", "val_metric")
                },
                "best_val_metric": float(evals["val_metric"].max()) if len(evals) else math.nan,
                "spikes": r.spikes,
            }
        )
    return pd.DataFrame(rows)


def surface_summary(runs: Mapping[str, Run]) -> pd.DataFrame:
    """label, optimizer, row, lr, final gap, steps to ε, overshoots, spikes, divergence."""
    rows = []
    for label, run in runs.items():
        values = run.metrics()
        for r in range(run.rows):
            reached = int(values["steps_to_tolerance"][r])
            rows.append(
                {
                    "label": label,
                    "optimizer": run.optimizer,
                    "row": r,
                    "lr": float(run.lrs[r]),
                    "final_gap": float(values["final_gap"][r]),
                    "steps_to_tolerance": reached if reached >= 0 else None,
                    "overshoots": int(values["overshoots"][r]),
                    "spikes": int(values["spikes"][r]),
                    "diverged": divergence_message(int(values["diverged_at"][r])),
                }
            )
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["steps_to_tolerance"] = frame["steps_to_tolerance"].astype("Int64")
    return frame


def keys_of(value: Any) -> str:
    """The keys of a decoded mapping for a message (or what it is instead)."""
    return str(sorted(map(str, value))) if isinstance(value, dict) else f"none (a {type(value).__name__})"


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SnapshotError(message)


def _check_manifest(manifest: Any) -> tuple[str, list[str], list[str], list[str]]:
    """kind, labels, run keys and PNG figure keys from a manifest, checked."""
    expect(isinstance(manifest, dict), "manifest.json must be a JSON object")
    expect(
        manifest.get("format") == FORMAT, f"not a DGS Lab bundle (manifest format {manifest.get('format')!r})"
    )
    version = manifest.get("format_version")
    expect(
        isinstance(version, int) and not isinstance(version, bool) and version >= 1,
        f"manifest.json: invalid format_version {version!r}",
    )
    expect(
        version <= FORMAT_VERSION,
        f"the bundle has format version {version}, made by a newer DGS Lab "
        f"({manifest.get('dgs_lab_version')}); this one ({dgs_core.__version__}) "
        f"reads up to {FORMAT_VERSION}",
    )
    kind = manifest.get("kind")
    expect(kind in KINDS, f"manifest.json: kind {kind!r} (must be one of {', '.join(KINDS)})")
    for key in ("name", "created", "dgs_lab_version", "torch_version", "device", "png_note"):
        text = manifest.get(key)
        expect(isinstance(text, str) and len(text) <= 1000, f"manifest.json: invalid {key}")
        expect(text.isprintable(), f"manifest.json: {key} holds control characters")
    for key, pattern in _MANIFEST_PATTERNS.items():  # shown to everyone who opens a saved run
        expect(
            pattern.fullmatch(manifest[key]) is not None,
            f"manifest.json: invalid {key} {manifest[key][:40]!r}",
        )
    seed = manifest.get("seed")
    expect(isinstance(seed, int) and not isinstance(seed, bool), f"manifest.json: invalid seed {seed!r}")
    runs, figures, png = manifest.get("runs"), manifest.get("figures"), manifest.get("png")
    expect(isinstance(runs, list) and runs, "manifest.json: runs must be a non-empty list")
    expect(
        isinstance(figures, list) and isinstance(png, list), "manifest.json: figures and png must be lists"
    )
    labels, keys = [], []
    for item in runs:
        expect(
            isinstance(item, dict) and set(item) == {"label", "key"},
            f"manifest.json: invalid run entry {item!r}",
        )
        expect(
            isinstance(item["label"], str) and item["label"] not in labels,
            f"manifest.json: invalid label {item['label']!r}",
        )
        expect(
            isinstance(item["key"], str) and bool(_KEY.fullmatch(item["key"])) and item["key"] not in keys,
            f"manifest.json: invalid file key {item['key']!r}",
        )
        labels.append(item["label"])
        keys.append(item["key"])
    figure_keys = []
    for item in figures:
        expect(
            isinstance(item, dict) and set(item) == {"title", "key"} and isinstance(item["title"], str),
            f"manifest.json: invalid figure entry {item!r}",
        )
        expect(
            isinstance(item["key"], str)
            and bool(_KEY.fullmatch(item["key"]))
            and item["key"] not in figure_keys,
            f"manifest.json: invalid figure key {item['key']!r}",
        )
        figure_keys.append(item["key"])
    expect(
        all(k in figure_keys for k in png) and len(set(png)) == len(png),
        "manifest.json: png lists unknown figures",
    )
    return kind, labels, keys, png


def device_available(name: Any) -> bool:
    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError, TypeError):
        return False  # TrainConfig names the bad value
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return device.type == "cpu"


def config_error(exc: Exception) -> SnapshotError:
    return SnapshotError(f"config.json: {exc}")
