"""Figures of a study: how wide each optimizer's basin of good learning rates is, and its seeds.

No streamlit here. :func:`sensitivity_figure` draws the tuning metric against the learning rate
over every tuning trial (diverged trials as crosses at the top of the axis), one colour per
optimizer; :func:`seed_bands_figure` draws each optimizer's best configuration as the mean over
seeds with a ±1 standard-deviation band.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dgs_core.studies.sweep import SEEDS, TUNE, StudySpec
from dgs_core.studies.tuner import StudyResult
from dgs_core.viz.style import OPTIMIZER_COLORS, optimizer_label, rgba

_MARGIN = {"l": 60, "r": 20, "t": 50, "b": 50}
METRIC_LABELS = {
    "best_val_loss": "best validation loss",
    "final_val_loss": "final validation loss",
    "best_val_accuracy": "best validation accuracy",
    "final_val_accuracy": "final validation accuracy",
    "final_gap": "final gap f − f*",
    "steps_to_tolerance": "steps to ε",
}


def _color(name: str) -> str:
    return OPTIMIZER_COLORS.get(name, "#444444")


def sensitivity_figure(result: StudyResult, *, hparam: str = "lr", height: int = 420) -> go.Figure:
    """The metric of every tuning trial against ``hparam``: the sensitivity curves."""
    spec, trials = result.spec, result.trials
    tuned = trials[trials["phase"] == TUNE]
    fig = go.Figure()
    finite = tuned["score"][np.isfinite(tuned["score"].to_numpy(dtype=float))]
    top = (
        float(finite.max())
        if len(finite) and spec.mode == "min"
        else float(finite.min())
        if len(finite)
        else 1.0
    )
    for name in spec.optimizers:
        rows = tuned[tuned["optimizer"] == name]
        if not len(rows) or f"hp.{hparam}" not in rows:
            continue
        x = rows[f"hp.{hparam}"].to_numpy(dtype=float)
        y = rows["score"].to_numpy(dtype=float)
        order = np.argsort(x)
        x, y = x[order], y[order]
        ok = np.isfinite(y)
        fig.add_trace(
            go.Scatter(
                x=x[ok],
                y=y[ok],
                mode="lines+markers",
                name=optimizer_label(name),
                line={"color": _color(name), "width": 2},
                marker={"size": 7},
                hovertemplate=f"{optimizer_label(name)}<br>{hparam}=%{{x:.3g}}<br>score=%{{y:.4g}}<extra></extra>",
            )
        )
        if (~ok).any():
            fig.add_trace(
                go.Scatter(
                    x=x[~ok],
                    y=[top] * int((~ok).sum()),
                    mode="markers",
                    showlegend=False,
                    name=f"{optimizer_label(name)} diverged",
                    marker={"symbol": "x", "size": 10, "color": _color(name)},
                    hovertemplate=f"{optimizer_label(name)}<br>{hparam}=%{{x:.3g}}<br>diverged<extra></extra>",
                )
            )
    log_y = spec.mode == "min" and len(finite) and float(finite.min()) > 0
    fig.update_layout(
        title=f"Sensitivity: {METRIC_LABELS.get(spec.metric, spec.metric)} against {hparam} (× diverged)",
        height=height,
        margin=_MARGIN,
        legend={"orientation": "h", "y": -0.2},
        xaxis={"title": hparam, "type": "log"},
        yaxis={"title": METRIC_LABELS.get(spec.metric, spec.metric), "type": "log" if log_y else "linear"},
    )
    return fig


def seed_bands_figure(result: StudyResult, *, height: int = 420) -> go.Figure:
    """Each optimizer's tuned configuration over the seeds: mean and ±1 std band per step."""
    spec, curves = result.spec, result.curves
    fig = go.Figure()
    for name in spec.optimizers:
        rows = curves[curves["optimizer"] == name]
        if not len(rows):
            continue
        table = rows.pivot_table(index="step", columns="seed", values="value", sort=True)
        mean = table.mean(axis=1)
        std = table.std(axis=1, ddof=1).fillna(0.0) if table.shape[1] > 1 else mean * 0.0
        steps = table.index.to_numpy()
        color = _color(name)
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([steps, steps[::-1]]),
                y=np.concatenate([(mean + std).to_numpy(), (mean - std).to_numpy()[::-1]]),
                mode="lines",
                fill="toself",
                fillcolor=rgba(color, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                name=f"{optimizer_label(name)} ±1 std",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=mean,
                mode="lines",
                name=f"{optimizer_label(name)} ({table.shape[1]} seeds)",
                line={"color": color, "width": 2},
                hovertemplate=f"{optimizer_label(name)}<br>step %{{x}}<br>mean %{{y:.4g}}<extra></extra>",
            )
        )
    what = "validation loss" if spec.kind == "training" else "f − f*"
    fig.update_layout(
        title=f"Tuned configurations over seeds: {what}, mean ± 1 std",
        height=height,
        margin=_MARGIN,
        legend={"orientation": "h", "y": -0.2},
        xaxis={"title": "step"},
        yaxis={"title": what, "type": "log"},
    )
    return fig


def best_table(result: StudyResult) -> pd.DataFrame:
    """The tuned hyperparameters and scores per optimizer, for a page or a terminal."""
    best = result.best
    rows = []
    for row in best.itertuples(index=False):
        hparams = json.loads(row.hparams) if row.hparams else {}
        rows.append(
            {
                "optimizer": optimizer_label(row.optimizer),
                "tuned hyperparameters": _hparams_text(hparams) or "(defaults)",
                "tuning score": row.tuned_score,
                "seeds mean": row.seed_mean,
                "seeds std": row.seed_std,
                "diverged trials": f"{row.diverged} / {row.trials}",
            }
        )
    return pd.DataFrame(rows)


def _hparams_text(hparams: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hparams.items())


def progress_table(spec: StudySpec, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """While a study runs: per optimizer, its trials done, its best score so far and where.

    ``rows``: the finished trials (:attr:`~dgs_core.studies.tuner.SweepStudy.rows`: dicts with
    phase, optimizer, hparams as JSON, score, diverged_at).
    """
    rows = list(rows)
    sign = 1.0 if spec.mode == "min" else -1.0
    metric = METRIC_LABELS.get(spec.metric, spec.metric)
    out = []
    for name in spec.optimizers:
        tuned = [r for r in rows if r["phase"] == TUNE and r["optimizer"] == name]
        seeds = [r for r in rows if r["phase"] == SEEDS and r["optimizer"] == name]
        finite = [r for r in tuned if math.isfinite(r["score"])]
        best = min(finite, key=lambda r: sign * r["score"]) if finite else None
        out.append(
            {
                "optimizer": optimizer_label(name),
                "tuning trials": f"{len(tuned)} / {spec.trials}",
                f"best so far ({metric})": best["score"] if best else math.nan,
                "at": _hparams_text(json.loads(best["hparams"])) if best else "–",
                "diverged": sum(int(r["diverged_at"]) >= 0 for r in tuned),
                "seed runs": f"{len(seeds)} / {spec.seeds}",
            }
        )
    return pd.DataFrame(out)


def study_figures(result: StudyResult) -> dict[str, go.Figure]:
    """The figures a study bundle stores."""
    figures = {"Sensitivity": sensitivity_figure(result)}
    if (result.trials["phase"] == SEEDS).any():
        figures["Seed bands"] = seed_bands_figure(result)
    return figures
