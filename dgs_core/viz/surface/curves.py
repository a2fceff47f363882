"""Along the steps and across settings: loss, per-coordinate learning rates, batch size, the lr
sensitivity and the tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dgs_core import metrics
from dgs_core.params import invalid
from dgs_core.surfaces.simulator import DEFAULT_TOLERANCE
from dgs_core.surfaces.studies import LrSweep
from dgs_core.viz.style import LEGEND_ABOVE, OPTIMIZER_COLORS, PALETTE, log_ticks
from dgs_core.viz.surface.paths import DIVERGED, Array, RunsLike, label_of, labelled, paths_of, row_name

# ---------------------------------------------------------------------------------------------
# Along the steps: loss, per-coordinate learning rates, batch size
# ---------------------------------------------------------------------------------------------


def loss_figure(
    runs: RunsLike, *, step: int | None = None, log_y: bool | None = None, height: int = 380
) -> go.Figure:
    """f(x_t) − f* against the step (log scale when every value is positive).

    Divergence is marked (✕ at the last finite value); ``step`` draws a vertical cursor.
    """
    paths = paths_of(runs)
    fig = go.Figure()
    positive = True
    gaps = []
    for path in paths:
        gap = path.run.gap[: path.length, 0]
        gaps.append(gap)
        positive &= bool(np.all(gap > 0))
        fig.add_trace(
            go.Scatter(
                x=np.arange(path.length),
                y=gap,
                mode="lines",
                name=path.label,
                line={"color": path.color},
                hovertemplate=f"{path.label}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>",
            )
        )
        diverged = int(path.run.diverged_at[0])
        if diverged >= 0:
            fig.add_trace(
                go.Scatter(
                    x=[diverged - 1],
                    y=[gap[-1]],
                    mode="markers",
                    showlegend=False,
                    marker=DIVERGED,
                    hovertemplate=f"{path.label}<br>{metrics.divergence_message(diverged)}<extra></extra>",
                )
            )
    surface = paths[0].run.surface if paths else None
    ylabel = "f(x_t)" if surface is None or surface.f_min is None else "f(x_t) − f*"
    use_log = positive if log_y is None else log_y
    fig.update_layout(
        height=height,
        xaxis_title="step t",
        yaxis={
            "title": ylabel,
            "type": "log" if use_log else "linear",
            "exponentformat": "power",
            **(log_ticks(np.concatenate(gaps)) if use_log and gaps else {}),
        },
        legend=LEGEND_ABOVE,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )
    if step is not None:
        fig.add_vline(x=step, line={"dash": "dot", "color": "#555555"})
    return fig


def scaling_figure(runs: RunsLike, *, step: int | None = None, height: int = 480) -> go.Figure:
    """η_t × scaling factor per coordinate against the step: the effective per-coordinate lr.

    docs/algorithms.md#diagnostics: scaling factor = (|Δθ| / (|g| + 1e-12)) / η_t, so
    η_t × scaling = |Δθ| / |g|,
    the step each coordinate actually took per unit of gradient (η_t itself for plain SGD).
    One panel per coordinate; DGS's own η·s_t is drawn dotted where the run has it.
    """
    paths = paths_of(runs)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=("x", "y"))
    drawn = []
    for path in paths:
        run = path.run
        steps = np.arange(1, path.length)
        effective = (run.lr[:, :, None] * run.scaling)[: path.length - 1, 0]
        own = None if run.scale is None else (run.lr[:, :, None] * run.scale)[: path.length - 1, 0]
        drawn += [effective.ravel()] + ([] if own is None else [own.ravel()])
        for c in range(2):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=effective[:, c],
                    mode="lines",
                    name=path.label,
                    legendgroup=path.label,
                    showlegend=c == 0,
                    line={"color": path.color},
                    hovertemplate=f"{path.label}<br>step %{{x}}<br>η·scaling = %{{y:.3g}}<extra></extra>",
                ),
                row=c + 1,
                col=1,
            )
            if own is not None:
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=own[:, c],
                        mode="lines",
                        name=f"{path.label}: η·s_t (own)",
                        legendgroup=path.label,
                        showlegend=c == 0,
                        line={"color": path.color, "dash": "dot"},
                        hovertemplate=f"{path.label}<br>step %{{x}}<br>η·s_t = %{{y:.3g}}<extra></extra>",
                    ),
                    row=c + 1,
                    col=1,
                )
    ticks = log_ticks(np.concatenate(drawn)) if drawn else {}
    fig.update_yaxes(type="log", exponentformat="power", title_text="η_t × scaling", **ticks)
    fig.update_xaxes(title_text="step t", row=2, col=1)
    fig.update_layout(height=height, legend=LEGEND_ABOVE, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    if step is not None:
        fig.add_vline(x=step, line={"dash": "dot", "color": "#555555"})
    return fig


def batch_size_figure(runs: RunsLike, *, step: int | None = None, height: int = 300) -> go.Figure:
    """The batch size behind each step's gradient (grows for the AdAdaGrad family)."""
    fig = go.Figure()
    sizes = []
    for path in paths_of(runs):
        sizes += path.run.batch_size[: path.length - 1, 0].tolist()
        fig.add_trace(
            go.Scatter(
                x=np.arange(path.length - 1),
                y=path.run.batch_size[: path.length - 1, 0],
                mode="lines",
                line={"color": path.color, "shape": "hv"},
                name=path.label,
            )
        )
    fig.update_layout(
        height=height,
        xaxis_title="step t",
        yaxis={"title": "batch size", "type": "log", **log_ticks(sizes, integer=True)},
        legend=LEGEND_ABOVE,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )
    if step is not None:
        fig.add_vline(x=step, line={"dash": "dot", "color": "#555555"})
    return fig


def lr_sensitivity_figure(
    sweeps: LrSweep | Mapping[str, LrSweep],
    *,
    metric: str = "final_gap",
    criterion: str = "steps_to_tolerance",
    height: int = 420,
) -> go.Figure:
    """Final gap (or steps to ε) against the learning rate, log-x, one curve per optimizer.

    Diverged learning rates, and those whose final gap blew up past :data:`BLOWN_UP` × the
    start's, sit on a "diverged" row of ✕ markers at the top (clipped: off the curve); each curve's
    default lr is ringed (○) and its tuned lr (best by ``criterion``) starred (★).
    """
    if metric not in ("final_gap", "steps_to_tolerance"):
        raise invalid("metric", metric, "final_gap or steps_to_tolerance")
    if isinstance(sweeps, LrSweep):
        sweeps = {sweeps.run.optimizer: sweeps}
    items = {label_of(key, sweep.run): sweep for key, sweep in sweeps.items()}
    fig = go.Figure()
    finite_values: list[float] = []
    curves = []
    for i, (label, sweep) in enumerate(items.items()):
        color = OPTIMIZER_COLORS.get(sweep.run.optimizer, PALETTE[i % len(PALETTE)])
        off_scale = _off_scale(sweep)
        if metric == "final_gap":
            y = np.where(off_scale, np.nan, sweep.final_gap).astype(float)
        else:
            y = np.where(sweep.steps_to_tolerance >= 0, sweep.steps_to_tolerance, np.nan).astype(float)
            y[off_scale] = np.nan
        finite_values += [v for v in y if np.isfinite(v) and v > 0]
        curves.append((label, sweep, color, y, off_scale))
    top = 10 * max(finite_values) if finite_values else 1.0
    for label, sweep, color, y, off_scale in curves:
        fig.add_trace(
            go.Scatter(
                x=sweep.lrs,
                y=y,
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line={"color": color},
                customdata=np.stack([sweep.final_gap, sweep.steps_to_tolerance], axis=-1),
                hovertemplate=f"{label}<br>lr %{{x:.3g}}<br>final gap %{{customdata[0]:.3g}}"
                "<br>steps to ε %{customdata[1]}<extra></extra>",
            )
        )
        if off_scale.any():
            why = [
                metrics.divergence_message(int(d)) if d >= 0 else f"blew up: final gap {g:.3g}"
                for d, g in zip(sweep.diverged_at[off_scale], sweep.final_gap[off_scale], strict=True)
            ]
            fig.add_trace(
                go.Scatter(
                    x=sweep.lrs[off_scale],
                    y=np.full(int(off_scale.sum()), top),
                    mode="markers",
                    legendgroup=label,
                    showlegend=False,
                    marker={**DIVERGED, "color": color, "size": 11},
                    text=why,
                    hovertemplate=f"{label}<br>lr %{{x:.3g}}<br>%{{text}}<extra></extra>",
                )
            )
        default = sweep.default_index
        if default is not None:
            fig.add_trace(_lr_marker(sweep, default, y, top, label, color, "circle-open", 16, "default lr"))
        best = sweep.best_index(criterion)
        if best is not None:
            fig.add_trace(_lr_marker(sweep, best, y, top, label, color, "star", 15, "tuned lr"))
    ytitle = "final f − f*" if metric == "final_gap" else "steps to ε"
    fig.update_layout(
        height=height,
        xaxis={"title": "learning rate η", "type": "log", "exponentformat": "power"},
        yaxis={"title": ytitle, "type": "log", "exponentformat": "power", **log_ticks([*finite_values, top])},
        legend=LEGEND_ABOVE,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )
    if any(off_scale.any() for *_, off_scale in curves):
        fig.add_annotation(
            x=1, xref="paper", y=math.log10(top), text="diverged", showarrow=False, xanchor="right"
        )
    return fig


#: A final gap this many times the start's counts as blown up: drawn on the "diverged" row,
#: not on the curve (one such point at ~1e168 flattened every other curve to the floor).
BLOWN_UP = 1e3


def _off_scale(sweep: LrSweep) -> Array:
    """The learning rates that diverged, or ended over :data:`BLOWN_UP` × the start's gap."""
    start_gap = np.abs(sweep.run.gap[0]).astype(float)
    with np.errstate(all="ignore"):
        blown = ~np.isfinite(sweep.final_gap) | (sweep.final_gap > BLOWN_UP * np.maximum(start_gap, 1e-12))
    return (sweep.diverged_at >= 0) | blown


def _lr_marker(
    sweep: LrSweep,
    index: int,
    y: Array,
    top: float,
    label: str,
    color: str,
    symbol: str,
    size: int,
    what: str,
):
    value = y[index] if np.isfinite(y[index]) else top
    return go.Scatter(
        x=[sweep.lrs[index]],
        y=[value],
        mode="markers",
        legendgroup=label,
        showlegend=False,
        marker={"symbol": symbol, "size": size, "color": color, "line": {"width": 1.5, "color": "black"}},
        hovertemplate=f"{label}: {what} %{{x:.3g}}<extra></extra>",
    )


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def metrics_table(
    runs: RunsLike,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    window: int = metrics.SPIKE_WINDOW,
    tau: float = metrics.SPIKE_TAU,
) -> pd.DataFrame:
    """docs/algorithms.md#metrics metrics, one row per path: final gap, steps to ε ("—": never),
    overshoots, oscillations, spikes K and divergence ("diverged at step t", empty if it did not)."""
    rows = []
    for label, run in labelled(runs):
        values = run.metrics(tolerance=tolerance, window=window, tau=tau)
        for r in range(run.rows):
            reached = int(values["steps_to_tolerance"][r])
            rows.append(
                {
                    "optimizer": label if run.rows == 1 else f"{label} · {row_name(run, r)}",
                    "lr": float(run.lrs[r]),
                    "final gap": float(values["final_gap"][r]),
                    f"steps to ε={tolerance:g}": reached if reached >= 0 else None,
                    "overshoots": int(values["overshoots"][r]),
                    "overshoot %": 100 * float(values["overshoot_fraction"][r]),
                    "oscillations": int(values["oscillations"][r]),
                    "oscillation %": 100 * float(values["oscillation_fraction"][r]),
                    "spikes K": int(values["spikes"][r]),
                    "diverged": metrics.divergence_message(int(values["diverged_at"][r])),
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame[f"steps to ε={tolerance:g}"] = _steps_text(frame[f"steps to ε={tolerance:g}"])
    return frame


#: A table cell with no value (a table showed Python's "None" there).
MISSING = "—"


def _steps_text(column: pd.Series) -> pd.Series:
    """Steps as text, "—" where ε was never reached (a number column shows "None" there)."""
    return column.map(lambda v: MISSING if v is None or pd.isna(v) else str(int(v))).astype(object)


def tuning_table(sweeps: Mapping[str, LrSweep], *, criterion: str = "steps_to_tolerance") -> pd.DataFrame:
    """Tuned against default, one row per optimizer: each lr, final gap and steps to ε."""
    rows = []
    for label, sweep in sweeps.items():
        default, best = sweep.default_index, sweep.best_index(criterion)
        row: dict[str, Any] = {"optimizer": label, "lrs tried": len(sweep.lrs)}
        for prefix, index in (("default", default), ("tuned", best)):
            reached = None if index is None else int(sweep.steps_to_tolerance[index])
            row[f"{prefix} lr"] = None if index is None else float(sweep.lrs[index])
            row[f"{prefix} final gap"] = None if index is None else float(sweep.final_gap[index])
            row[f"{prefix} steps to ε"] = reached if reached is not None and reached >= 0 else None
            row[f"{prefix} diverged"] = (
                "" if index is None else metrics.divergence_message(int(sweep.diverged_at[index]))
            )
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in ("default steps to ε", "tuned steps to ε"):
        if column in frame:
            frame[column] = _steps_text(frame[column])
    return frame
