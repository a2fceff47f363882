"""Study bundles: a fair comparison's spec, every trial, and the seed runs' curves.

Members besides the common ones: ``trials.csv`` / ``trials.parquet`` (one row per trial:
phase, optimizer, trial, seed, hyperparameters as JSON, score, status, divergence step, steps,
seconds) and ``curves.csv`` / ``curves.parquet`` (the seed runs' curves: optimizer, seed, step,
value). ``config.json`` is the :class:`~dgs_core.studies.sweep.StudySpec`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from dgs_core.optim import registry
from dgs_core.runs.archive import LIMITS, Archive, Limits, SnapshotError
from dgs_core.runs.bundle import Bundle, config_error, expect, write_bundle
from dgs_core.runs.codec import csv_bytes, parquet_bytes
from dgs_core.studies.sweep import SEEDS, TUNE, StudySpec
from dgs_core.studies.tuner import CURVE_COLUMNS, TRIAL_COLUMNS, StudyResult, with_hparam_columns

if TYPE_CHECKING:
    import plotly.graph_objects as go

TRIAL_SCHEMA = {
    "phase": "str",
    "optimizer": "str",
    "trial": "int",
    "seed": "int",
    "hparams": "str",
    "score": "float",
    "status": "str",
    "diverged_at": "int",
    "step": "int",
    "seconds": "float",
}
CURVE_SCHEMA = {"optimizer": "str", "seed": "int", "step": "int", "value": "float"}
MEMBERS = ("trials.csv", "trials.parquet", "curves.csv", "curves.parquet")
_MAX_HPARAMS_TEXT = 10_000


def members(keys: Sequence[str]) -> list[str]:
    """A study bundle's own members (none per optimizer)."""
    return list(MEMBERS)


def export_study(
    result: StudyResult,
    *,
    figures: Mapping[str, go.Figure] | None = None,
    name: str | None = None,
    created: datetime | None = None,
    png: bool = False,
    limits: Limits = LIMITS,
) -> bytes:
    """The bundle of a finished (or stopped) study; ``figures`` as for the other kinds (the
    Studies' are :func:`dgs_core.viz.studies.study_figures`)."""
    spec = result.spec
    trials = result.trials[list(TRIAL_COLUMNS)].astype(
        {"trial": "int64", "seed": "int64", "diverged_at": "int64"}
    )
    curves = result.curves[list(CURVE_COLUMNS)].astype({"seed": "int64", "step": "int64"})
    members = {
        "trials.csv": csv_bytes(trials),
        "trials.parquet": parquet_bytes(trials, limits),
        "curves.csv": csv_bytes(curves),
        "curves.parquet": parquet_bytes(curves, limits),
    }
    problem = spec.task if spec.kind == "training" else spec.surface
    return write_bundle(
        "study",
        name=name
        or f"study on {problem}: {', '.join(spec.optimizers)} · {spec.trials} trials × {spec.seeds} seeds",
        created=created,
        device="cpu",
        seed=spec.seed,
        labels=list(spec.optimizers),
        config=spec.to_dict(),
        members=members,
        figures=figures or {},
        png=png,
        limits=limits,
    )


def read_study(archive: Archive, common: dict[str, Any], keys: Sequence[str], device: str | None) -> Bundle:
    try:
        spec = StudySpec.from_dict(common["config"])
    except (ValueError, TypeError) as exc:
        raise config_error(exc) from None
    expect(
        list(common["labels"]) == list(spec.optimizers),
        f"manifest.json: runs {list(common['labels'])} differ from config.json's optimizers "
        f"{list(spec.optimizers)}",
    )
    most = spec.trials_total
    trials = archive.table("trials.parquet", TRIAL_SCHEMA, max_rows=most)
    frame = pd.DataFrame(trials, columns=list(TRIAL_SCHEMA))
    expect(archive.read("trials.csv") == csv_bytes(frame), "trials.csv does not match trials.parquet")
    for row in frame.itertuples(index=False):
        expect(row.phase in (TUNE, SEEDS), f"trials.parquet: unknown phase {row.phase!r}")
        expect(row.optimizer in spec.optimizers, f"trials.parquet: {row.optimizer!r} is not in the study")
        expect(len(row.hparams) <= _MAX_HPARAMS_TEXT, "trials.parquet: hyperparameters too long")
        try:
            hparams = json.loads(row.hparams)
            registry.get(row.optimizer).resolve(hparams, surface=spec.kind == "surface")
        except (ValueError, TypeError) as exc:
            raise SnapshotError(
                f"trials.parquet: invalid hyperparameters of {row.optimizer}: {exc}"
            ) from None
        expect(not math.isnan(row.score), f"trials.parquet: a trial of {row.optimizer} has no score")
    curves = archive.table("curves.parquet", CURVE_SCHEMA, max_rows=most * (spec.steps + 1))
    curve_frame = pd.DataFrame(curves, columns=list(CURVE_SCHEMA))
    expect(archive.read("curves.csv") == csv_bytes(curve_frame), "curves.csv does not match curves.parquet")
    expect(
        set(curve_frame["optimizer"]) <= set(spec.optimizers), "curves.parquet: an optimizer not in the study"
    )
    result = StudyResult(spec, with_hparam_columns(frame, spec), curve_frame, address="")
    return Bundle(**common, study=result)
