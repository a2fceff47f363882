"""Figures of the Claims lab, built from a claim's stored tables (no run needed).

No streamlit here. :func:`claim_figure` draws what the claim's ``FigureSpec`` asks for:

* ``curves`` — a quantity of ``curves.csv`` against the step: per arm the mean over seeds and
  its 95 % band (Student's t, as the verdicts), one panel per group (task);
* ``bars`` — a quantity of ``runs.csv`` per arm with its 95 % interval as error bars (a
  diverged run counting as chance level, as in the numbers);
* ``overshoot`` — per surface, each tuned optimizer's overshoot fraction with its interval
  (and, hollow, at the untuned 2-D default), and the loss spikes on the training task.

:func:`verdict_table` is the verdicts of several results as a table (the CLI prints it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

import dgs_core.claims.common as common
from dgs_core.claims.base import Claim
from dgs_core.viz.style import OPTIMIZER_COLORS, optimizer_label, rgba

_MARGIN = {"l": 60, "r": 20, "t": 60, "b": 60}
QUANTITY_LABELS = {
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "train_loss": "training loss",
    "final_val_accuracy": "final validation accuracy",
    "final_val_loss": "final validation loss",
    "overshoot_fraction": "overshoot fraction",
    "spikes": "loss spikes K",
}
# One panel of several arms of one optimizer: a colour per arm (Plotly's "D3" palette).
ARM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
# Arms of one optimizer in one panel (the same optimizer at two batch sizes) get these dashes.
_DASHES = ("solid", "dash", "dot", "dashdot")


def _color(optimizer: str) -> str:
    return OPTIMIZER_COLORS.get(optimizer, "#444444")


def _half_width(values: np.ndarray) -> float:
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def _optimizer_of(arm: str, runs: pd.DataFrame | None) -> str:
    if runs is not None and "optimizer" in runs and (runs["arm"] == arm).any():
        return str(runs.loc[runs["arm"] == arm, "optimizer"].iloc[0])
    return arm.split(" · ")[-1]


def curves_figure(
    curves: pd.DataFrame,
    quantity: str,
    *,
    runs: pd.DataFrame | None = None,
    title: str = "",
    log_y: bool = False,
    one_panel: bool = False,
    height: int = 420,
) -> go.Figure:
    """Mean over seeds and 95 % band per arm, one panel per group (``one_panel``: all arms in
    one panel, each in a colour of its own, for arms of one optimizer such as schedules)."""
    groups = [""] if one_panel else list(dict.fromkeys(curves["group"].astype(str)))
    fig = make_subplots(rows=1, cols=max(1, len(groups)), subplot_titles=groups, horizontal_spacing=0.08)
    for col, group in enumerate(groups, start=1):
        rows = curves if one_panel else curves[curves["group"].astype(str) == group]
        used: dict[str, int] = {}
        for position, arm in enumerate(dict.fromkeys(rows["arm"])):
            optimizer = _optimizer_of(arm, runs)
            dash = _DASHES[used.get(optimizer, 0) % len(_DASHES)]
            used[optimizer] = used.get(optimizer, 0) + 1
            table = rows[rows["arm"] == arm].pivot_table(
                index="step", columns="seed", values=quantity, sort=True
            )
            steps = table.index.to_numpy()
            mean = table.mean(axis=1).to_numpy()
            half = np.array([_half_width(r[np.isfinite(r)]) for r in table.to_numpy()])
            color = ARM_COLORS[position % len(ARM_COLORS)] if one_panel else _color(optimizer)
            ok = np.isfinite(half)
            if ok.any():
                fig.add_trace(
                    go.Scatter(
                        x=np.concatenate([steps[ok], steps[ok][::-1]]),
                        y=np.concatenate([(mean + half)[ok], (mean - half)[ok][::-1]]),
                        fill="toself",
                        fillcolor=rgba(color, 0.15),
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        name=f"{arm} 95 % band",
                    ),
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=mean,
                    mode="lines",
                    name=f"{arm} ({table.shape[1]} seeds)",
                    line={"color": color, "width": 2, "dash": dash},
                    legendgroup=arm,
                    hovertemplate=f"{arm}<br>step %{{x}}<br>mean %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="step", row=1, col=col)
        fig.update_yaxes(type="log" if log_y else "linear", row=1, col=col)
    fig.update_yaxes(title_text=QUANTITY_LABELS.get(quantity, quantity), row=1, col=1)
    fig.update_layout(
        title=title or f"{QUANTITY_LABELS.get(quantity, quantity)}: mean and 95 % band over seeds",
        height=height,
        margin=_MARGIN,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def bars_figure(runs: pd.DataFrame, quantity: str, *, title: str = "", height: int = 420) -> go.Figure:
    """The per-seed ``quantity`` of every arm: mean with its 95 % interval, seeds as dots."""
    fig = go.Figure()
    for arm in dict.fromkeys(runs["arm"]):
        if quantity == "final_val_accuracy":
            values = common.final_accuracy(runs, arm)
        elif quantity == "final_val_loss":
            values = common.final_loss(runs, arm)
        else:
            values = common.arm_runs(runs, arm)[quantity].to_numpy(dtype=float)
        optimizer = _optimizer_of(arm, runs)
        color = _color(optimizer)
        fig.add_trace(
            go.Bar(
                x=[arm],
                y=[float(np.mean(values))],
                name=arm,
                marker={"color": rgba(color, 0.7)},
                error_y={"type": "data", "array": [_half_width(values) if len(values) > 1 else 0.0]},
                hovertemplate=f"{arm}<br>mean %{{y:.4g}}<extra></extra>",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[arm] * len(values),
                y=values,
                mode="markers",
                marker={"color": color, "size": 6},
                showlegend=False,
                hovertemplate=f"{arm}<br>one seed: %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or f"{QUANTITY_LABELS.get(quantity, quantity)} per arm (95 % interval; dots: seeds)",
        height=height,
        margin={**_MARGIN, "b": 140},
        yaxis={"title": QUANTITY_LABELS.get(quantity, quantity)},
        xaxis={"tickangle": -25},
    )
    return fig


def overshoot_figure(
    starts: pd.DataFrame, runs: pd.DataFrame, *, title: str = "", height: int = 640
) -> go.Figure:
    """Per surface, each optimizer's overshoot fraction (tuned: filled, with its 95 % interval;
    at the 2-D default: hollow), and the loss spikes on the training task: a 2 × 2 grid."""
    surfaces = list(dict.fromkeys(starts["surface"]))
    fig = make_subplots(
        rows=2,
        cols=2,
        subplot_titles=[*surfaces, "loss spikes (training task)"],
        vertical_spacing=0.2,
        horizontal_spacing=0.06,
    )
    for col, surface in enumerate(surfaces, start=1):
        rows = starts[starts["surface"] == surface]
        for optimizer in dict.fromkeys(rows["optimizer"]):
            mine = rows[rows["optimizer"] == optimizer]
            tuned = mine["overshoot_fraction"].to_numpy(dtype=float)
            tuned = tuned[np.isfinite(tuned)]
            default = mine["overshoot_at_default"].to_numpy(dtype=float)
            default = default[np.isfinite(default)]
            label, color = optimizer_label(optimizer), _color(optimizer)
            fig.add_trace(
                go.Scatter(
                    x=[label],
                    y=[float(tuned.mean()) if len(tuned) else math.nan],
                    mode="markers",
                    marker={"color": color, "size": 11},
                    error_y={"type": "data", "array": [_half_width(tuned)]},
                    showlegend=False,
                    hovertemplate=f"{label}, tuned lr<br>%{{y:.3f}}<extra></extra>",
                ),
                row=(col - 1) // 2 + 1,
                col=(col - 1) % 2 + 1,
            )
            fig.add_trace(
                go.Scatter(
                    x=[label],
                    y=[float(default.mean()) if len(default) else math.nan],
                    mode="markers",
                    marker={"color": color, "size": 11, "symbol": "circle-open"},
                    showlegend=False,
                    hovertemplate=f"{label}, 2-D default lr<br>%{{y:.3f}}<extra></extra>",
                ),
                row=(col - 1) // 2 + 1,
                col=(col - 1) % 2 + 1,
            )
        fig.update_yaxes(range=[0, 1], row=(col - 1) // 2 + 1, col=(col - 1) % 2 + 1)
    fig.update_yaxes(title_text="overshoot fraction (● tuned, ○ default lr)", row=1, col=1)
    fig.update_yaxes(title_text="overshoot fraction", row=2, col=1)
    spikes = len(surfaces) + 1
    for arm in dict.fromkeys(runs["arm"]):
        optimizer = _optimizer_of(arm, runs)
        values = common.arm_runs(runs, arm)["spikes"].to_numpy(dtype=float)
        fig.add_trace(
            go.Scatter(
                x=[optimizer_label(optimizer)],
                y=[float(values.mean())],
                mode="markers",
                marker={"color": _color(optimizer), "size": 11},
                showlegend=False,
                error_y={"type": "data", "array": [_half_width(values)]},
                hovertemplate=f"{arm}<br>mean K %{{y:.3g}}<extra></extra>",
            ),
            row=(spikes - 1) // 2 + 1,
            col=(spikes - 1) % 2 + 1,
        )
    fig.update_yaxes(title_text="K", rangemode="tozero", row=(spikes - 1) // 2 + 1, col=(spikes - 1) % 2 + 1)
    fig.update_layout(title=title or "Overshoot with tuned learning rates", height=height, margin=_MARGIN)
    return fig


def claim_figure(claim: Claim, tables: Mapping[str, pd.DataFrame], *, height: int = 420) -> go.Figure:
    """The card's figure, from its stored tables."""
    spec = claim.figure
    if spec.kind == "curves":
        return curves_figure(
            tables["curves"],
            spec.quantity,
            runs=tables.get("runs"),
            title=spec.title,
            log_y=spec.log_y,
            one_panel=spec.one_panel,
            height=height,
        )
    if spec.kind == "bars":
        return bars_figure(tables["runs"], spec.quantity, title=spec.title, height=height)
    if spec.kind == "overshoot":
        return overshoot_figure(tables["starts"], tables["runs"], title=spec.title, height=int(height * 1.5))
    raise ValueError(f"Invalid figure kind: {spec.kind!r} (must be curves, bars or overshoot)")


def verdict_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per claim record: number, name, verdict, budget, when and in how long."""
    rows = []
    for record in records:
        rows.append(
            {
                "#": record["number"],
                "claim": record["name"],
                "verdict": record["verdict"]["outcome"],
                "budget": record["budget"],
                "created": record["created"],
                "seconds": record["seconds"],
                "config": record["config_hash"],
            }
        )
    return pd.DataFrame(rows)
