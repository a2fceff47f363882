"""Figures of the Annealing lab: schedules, plateau cuts, effective lr and the two-phase demo.

No streamlit here. Inputs are the plain outputs of :mod:`dgs_core.schedules.curves`,
:mod:`dgs_core.studies.annealing` (sampled
curves, a :class:`~dgs_core.schedules.plateau.PlateauDemo`, the trainer's ``RunResult`` s);
outputs are ``go.Figure`` s and ``pandas`` tables.

>>> from dgs_core.schedules.curves import curve, schedule_curves
>>> curves = [curve("warmup_cosine", base_lr=0.1, warmup_steps=20, total_steps=200)]
>>> fig = schedule_overlay_figure(schedule_curves(curves, 200), curves)
>>> fig.data[0].name
'Warmup + cosine'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dgs_core.optim import registry
from dgs_core.schedules import ReductionEvent
from dgs_core.schedules.annealing import BUDGET
from dgs_core.schedules.curves import CurveSpec
from dgs_core.schedules.plateau import PlateauDemo
from dgs_core.studies.annealing import SCHEDULE_FREE, VARIANT_LABELS, VARIANTS, TwoPhaseSettings
from dgs_core.training.results import DONE, RUNNING, STOPPED, RunResult
from dgs_core.viz.style import OPTIMIZER_COLORS, PALETTE, vertical_lines
from dgs_core.viz.training import lr_figure

_MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}
_CUT = {"symbol": "triangle-down", "size": 11, "color": "#D62728", "line": {"width": 1, "color": "black"}}
_BOUNDARY = {"dash": "dash", "color": "#333333", "width": 2}
_CUT_HOVER = "validation after step %{x}: lr %{customdata[0]:.3g} → %{customdata[1]:.3g}<extra></extra>"
PHASE_BOUNDARY = "phase boundary"
REDUCTION = "lr reduction"

VARIANT_COLORS: Mapping[str, str] = MappingProxyType(
    {
        "none": "#7F7F7F",
        "anneal_main": "#1F77B4",
        "anneal_hq": "#2CA02C",
        "plateau_hq": "#D62728",
        SCHEDULE_FREE: OPTIMIZER_COLORS[SCHEDULE_FREE],  # the optimizer's own colour
    }
)

# Plain-text formulas for legends and hovers (Plotly draws no LaTeX without MathJax; the page
# renders the registry's LaTeX next to the figure). One per schedule of the registry.
SCHEDULE_FORMULAS: Mapping[str, str] = MappingProxyType(
    {
        "constant": "η_t = η₀",
        "step_decay": "η_t = η₀ · γ^⌊t / s⌋",
        "multistep": "η_t = η₀ · γ^(milestones ≤ t)",
        "exponential": "η_t = η₀ · γ^t",
        "linear": "η_t = η₀ · (f_s + (f_e − f_s) · min(t, T)/T)",
        "cosine": "η_t = η_min + ½(η₀ − η_min)(1 + cos(π·min(t, T)/T))",
        "warmup_cosine": "η_t = η₀·t/W (t < W); η_min + ½(η₀ − η_min)(1 + cos(π(t − W)/(T − W))) (W ≤ t < T)",
        "cosine_restarts": "η_t = η_min + ½(η₀ − η_min)(1 + cos(π·T_cur/T_i)), T_i = T₀·m^i",
        "one_cycle": "cosine η₀/d → η₀ for t ≤ pT − 1, then cosine η₀ → η₀/(d·d_f) at t = T − 1",
        "polynomial": "η_t = (η₀ − η_end)(1 − min(t, T)/T)^p + η_end",
        "warmup": "η_t = η_start + (η₀ − η_start) · min(t, W)/W",
        "wsd": "η_t = η₀·t/W (t < W); η₀ (t < W + S); η_min + (η₀ − η_min)·c((t − W − S)/D) (decay)",
    }
)


def optimizer_title(name: str) -> str:
    """The registry's label, marked "(interpretation)" where docs/algorithms.md supplies the math (DGS …)."""
    info = registry.get(name)
    return f"{info.label} (interpretation)" if info.interpretation else info.label


def curve_formula(c: CurveSpec) -> str:
    """The curve's rule in plain text, the warmup prefix included."""
    formula = SCHEDULE_FORMULAS[c.schedule.name]
    if not c.warmup_before:
        return formula
    w = c.warmup_before
    return f"η_t = η₀·t/{w} for t < {w}, then (t → t − {w}) {formula}"


def _parameters(c: CurveSpec) -> str:
    items = c.schedule.params.items()
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


# ---------------------------------------------------------------------------------------------
# The schedule composer
# ---------------------------------------------------------------------------------------------


def schedule_overlay_figure(
    frame: pd.DataFrame, curves: Sequence[CurveSpec], *, log_y: bool = False, height: int = 380
) -> go.Figure:
    """Every composed curve over the run, overlaid; hover shows the formula and parameters.

    ``frame`` is :func:`~dgs_core.schedules.curves.schedule_curves`' long table (curve, step, lr).
    A curve with a warmup marks the end of its warmup with a dotted line.
    """
    fig = go.Figure()
    for i, c in enumerate(curves):
        rows = frame[frame["curve"] == c.label]
        color = PALETTE[i % len(PALETTE)]
        formula = curve_formula(c)
        fig.add_trace(
            go.Scatter(
                x=rows["step"],
                y=rows["lr"],
                mode="lines",
                name=c.label,
                line={"color": color, "width": 2},
                customdata=np.full(len(rows), formula, dtype=object),
                hovertemplate=(
                    f"<b>{c.label}</b><br>step %{{x}}<br>lr %{{y:.4g}}<br>%{{customdata}}<br>"
                    f"<i>{_parameters(c)}</i><extra></extra>"
                ),
                meta={"formula": formula, "schedule": c.schedule.name},
            )
        )
        if c.warmup_before:
            fig.add_vline(x=c.warmup_before, line={"dash": "dot", "color": color, "width": 1})
    fig.update_layout(
        height=height,
        margin=_MARGIN,
        xaxis_title="step t",
        yaxis={"title": "learning rate η_t", "type": "log" if log_y else "linear", "exponentformat": "power"},
        legend={"orientation": "h", "y": -0.2},
        hovermode="closest",
    )
    return fig


def plateau_demo_figure(demo: PlateauDemo, *, height: int = 460) -> go.Figure:
    """The toy validation curve (top) and the annealer's lr (bottom, log), cuts marked.

    A cut at evaluation k is drawn as a triangle on the metric that triggered it and a dotted
    line at k; the lr drops from evaluation k + 1.
    """
    frame = demo.frame
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.6, 0.4],
        subplot_titles=("validation metric", "learning rate"),
    )
    fig.add_trace(
        go.Scatter(
            x=frame["evaluation"],
            y=frame["metric"],
            mode="lines+markers",
            name="metric",
            line={"color": "#1F77B4", "width": 1},
            marker={"size": 4},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=frame["evaluation"],
            y=frame["best"],
            mode="lines",
            name="best so far",
            line={"color": "#1F77B4", "dash": "dot"},
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=frame["evaluation"],
            y=frame["lr"],
            mode="lines",
            name="lr",
            line={"color": "black", "shape": "hv"},
        ),
        row=2,
        col=1,
    )
    cuts = [e.step for e in demo.events]
    metric_at = frame.set_index("evaluation")["metric"]
    fig.add_trace(
        go.Scatter(
            x=cuts,
            y=[metric_at[k] for k in cuts],
            mode="markers",
            name=REDUCTION,
            marker=_CUT,
            customdata=[[e.old_lr, e.new_lr] for e in demo.events],
            hovertemplate="evaluation %{x}: lr %{customdata[0]:.3g} → %{customdata[1]:.3g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    vertical_lines(fig, cuts, {"dash": "dot", "color": "#D62728", "width": 1}, panels=2)
    fig.update_yaxes(type="log", exponentformat="power", row=2, col=1)
    fig.update_xaxes(title_text="evaluation", row=2, col=1)
    fig.update_layout(height=height, margin=_MARGIN, legend={"orientation": "h", "y": -0.15})
    return fig


def plateau_events_table(events: Sequence[ReductionEvent]) -> pd.DataFrame:
    """One row per cut: evaluation, old lr, new lr."""
    return pd.DataFrame(
        [(e.step, e.old_lr, e.new_lr) for e in events], columns=["evaluation", "old lr", "new lr"]
    )


# ---------------------------------------------------------------------------------------------
# Schedule lr against the effective lr
# ---------------------------------------------------------------------------------------------


def effective_lr_figure(results: Mapping[str, RunResult], *, height: int = 360) -> go.Figure:
    """Per optimizer, side by side: the lr the schedule set (black) and the band of the
    per-parameter effective lr |Δθ|/|g| the optimizer applied (5–95 %, 25–75 %, median).

    The Training lab's figure (:func:`dgs_core.viz.training.lr_figure`), titled with the
    registry's labels so interpretations are marked as such.
    """
    fig = lr_figure(results, height=height)
    titles = iter(
        optimizer_title(r.name) if label == r.name else f"{label} ({optimizer_title(r.name)})"
        for label, r in results.items()
    )
    for annotation in fig.layout.annotations:  # subplot titles, in panel order
        annotation.text = next(titles, annotation.text)
    return fig


def effective_lr_table(results: Mapping[str, RunResult]) -> pd.DataFrame:
    """Per optimizer, over the recorded steps: the median of η_eff's median divided by the
    schedule's η_t (1 for plain SGD, where Δθ = η g), and the band's spread at the last record.

    Columns: optimizer, schedule lr, η_eff median, η_eff 5 % and 95 % (all at the last
    recorded step), median η_eff / η_t (over the run), records.
    """
    rows = []
    for label, result in results.items():
        band = result.quantile_band("lr_eff")
        lr_by_step = result.metrics.set_index("step")["lr"]
        if len(band):
            lrs = lr_by_step.reindex(band["step"]).to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = band["q50"].to_numpy() / lrs
            ratio = ratio[np.isfinite(ratio)]
            last = band.iloc[-1]
            rows.append(
                {
                    "optimizer": f"{label} ({optimizer_title(result.name)})"
                    if label != result.name
                    else optimizer_title(result.name),
                    "schedule lr (last)": float(lrs[-1]),
                    "η_eff median (last)": float(last["q50"]),
                    "η_eff 5 % (last)": float(last["q05"]),
                    "η_eff 95 % (last)": float(last["q95"]),
                    "median η_eff / η_t": float(np.median(ratio)) if len(ratio) else math.nan,
                    "records": len(band),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# The two-phase demo
# ---------------------------------------------------------------------------------------------

_METRIC_COLUMNS = {
    "val_loss": ("val_loss", "validation loss"),
    "val_accuracy": ("val_metric", "validation accuracy"),
}


def _ended_early(result: RunResult, total_steps: int) -> bool:
    """The plan stopped it (or it diverged) before the budget; not merely paused."""
    return result.status not in (RUNNING, STOPPED) and 0 < result.steps_done < total_steps


def _end_reason(result: RunResult, total_steps: int, *, live: bool = False) -> str:
    if result.reason:
        return result.reason
    if result.status == DONE and result.steps_done >= total_steps:
        return BUDGET
    if live and result.status == STOPPED:  # paused between two slices of a live run
        return RUNNING
    return result.status


def two_phase_figure(
    results: Mapping[str, RunResult],
    settings: TwoPhaseSettings,
    *,
    reductions: Mapping[str, Sequence[ReductionEvent]] | None = None,
    height: int = 560,
) -> go.Figure:
    """Validation metric (top) and lr (bottom, log) of every variant against the step.

    The main phase (noisy data) and the annealing phase are shaded, with a dashed line at the
    phase boundary (after step ``main_steps``). Plateau cuts are triangles on the lr curve; a
    variant whose plan stopped early ends with a cross (hover: why).
    """
    column, title = _METRIC_COLUMNS[settings.metric]
    boundary, total = settings.boundary, settings.total_steps
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.62, 0.38],
        subplot_titles=(title, "learning rate"),
    )
    # a legend entry for the boundary (shapes have none) that also carries its step
    fig.add_trace(
        go.Scatter(
            x=[boundary, boundary],
            y=[None, None],
            mode="lines",
            name=f"{PHASE_BOUNDARY} (step {boundary})",
            line=_BOUNDARY,
            meta={"boundary": boundary},
        ),
        row=1,
        col=1,
    )
    for name, result in results.items():
        frame = result.metrics
        evals = frame[frame["val_loss"].notna()]
        color = VARIANT_COLORS.get(name, "#000000")
        label = VARIANT_LABELS.get(name, name)
        fig.add_trace(
            go.Scatter(
                x=evals["step"],
                y=evals[column],
                mode="lines+markers",
                name=label,
                legendgroup=name,
                line={"color": color},
                marker={"size": 4},
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=frame["step"],
                y=frame["lr"],
                mode="lines",
                name=f"{label}: lr",
                legendgroup=name,
                showlegend=False,
                line={"color": color, "shape": "hv"},
            ),
            row=2,
            col=1,
        )
        cuts = list((reductions or {}).get(name, ()))
        if cuts:
            # at the validation of row s + 1 (0-based step s), where the cut is decided; the new lr
            # trains from row s + 2, if the plan has not stopped at that same validation
            fig.add_trace(
                go.Scatter(
                    x=[e.step + 1 for e in cuts],
                    y=[e.new_lr for e in cuts],
                    mode="markers",
                    name=REDUCTION,
                    legendgroup=REDUCTION,
                    marker={**_CUT, "color": color},
                    customdata=[[e.old_lr, e.new_lr] for e in cuts],
                    hovertemplate=_CUT_HOVER,
                ),
                row=2,
                col=1,
            )
        reason = _end_reason(result, total)
        if _ended_early(result, total) and len(evals):
            last = evals.iloc[-1]
            fig.add_trace(
                go.Scatter(
                    x=[last["step"]],
                    y=[last[column]],
                    mode="markers",
                    name=f"{label}: stopped",
                    legendgroup=name,
                    showlegend=False,
                    marker={"symbol": "x", "size": 12, "color": color, "line": {"width": 1}},
                    hovertemplate=f"{label} stopped at step %{{x}}: {reason}<extra></extra>",
                ),
                row=1,
                col=1,
            )
    # shapes last: add_vrect skips subplots that have no traces yet
    label_noise = float(settings.task_params.get("label_noise", 0.0))
    phases = (
        (0, boundary, "#FFB74D", f"main phase: {label_noise:.0%} label noise", "top left"),
        (boundary, total, "#4FC3F7", "annealing phase", "top right"),
    )
    for x0, x1, fill, text, position in phases:
        for row in (1, 2):  # the phase's name on the top panel only
            named = {"annotation_text": text, "annotation_position": position} if row == 1 else {}
            fig.add_vrect(x0=x0, x1=x1, fillcolor=fill, opacity=0.15, line_width=0, row=row, col=1, **named)
    vertical_lines(fig, [boundary], _BOUNDARY, panels=2)
    fig.update_yaxes(type="log", exponentformat="power", row=2, col=1)
    if column == "val_metric":
        fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(range=[0, total * 1.01])  # the whole budget, so live curves grow into it
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(height=height, margin=_MARGIN, legend={"orientation": "h", "y": -0.12})
    return fig


def two_phase_table(
    results: Mapping[str, RunResult], settings: TwoPhaseSettings, *, live: bool = False
) -> pd.DataFrame:
    """The final validation table: one row per variant, from its last evaluation.

    Columns: variant, steps, end (budget / min_lr reached / validation stopped improving /
    status; "running" for a ``live`` run paused between slices), final lr, val loss, val
    accuracy, best val accuracy, train accuracy (on the noisy training labels), Δ val
    accuracy against "No annealing".
    """
    rows = []
    for name, result in results.items():
        evals = result.evaluations
        last = evals.iloc[-1] if len(evals) else None
        value = lambda c, last=last: float(last[c]) if last is not None else math.nan  # noqa: E731
        rows.append(
            {
                "variant": VARIANT_LABELS.get(name, name),
                "steps": result.steps_done,
                "end": _end_reason(result, settings.total_steps, live=live),
                "final lr": float(result.columns["lr"][-1]) if result.steps_done else math.nan,
                "val loss": value("val_loss"),
                "val accuracy": value("val_metric"),
                "best val accuracy": float(evals["val_metric"].max()) if len(evals) else math.nan,
                "train accuracy (noisy labels)": value("train_metric"),
            }
        )
    table = pd.DataFrame(rows)
    if len(table):
        baseline = table.loc[table["variant"] == VARIANTS["none"], "val accuracy"]
        reference = float(baseline.iloc[0]) if len(baseline) else math.nan
        table["Δ val accuracy"] = table["val accuracy"] - reference
    return table
