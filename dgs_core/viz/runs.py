"""Figures and tables of the Runs page: one run's standard figures, and several runs compared.

No streamlit here. A run is a :class:`~dgs_core.runs.bundle.Bundle` (a snapshot read back);
the same builders draw the figures a bundle stores when it is exported, so a redrawn run
looks exactly as it did in its lab.

>>> from dgs_core.training import TrainConfig, Trainer
>>> from dgs_core.runs import export_training, read_bundle
>>> trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam"], steps=20, eval_every=10))
>>> _ = list(trainer.run())
>>> bundle = read_bundle(export_training(trainer, figures=training_figures(trainer.results, trainer.task)))
>>> list(run_figures(bundle))
['Loss', 'Accuracy', 'Learning rate', 'Batch size', 'Importance by layer', 'Decision boundary']
>>> table = metric_table({"first": bundle, "again": bundle})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dgs_core.params import invalid
from dgs_core.runs.compare import smooth_ema
from dgs_core.surfaces.simulator import Run
from dgs_core.training.results import RunResult
from dgs_core.training.tasks import Task
from dgs_core.viz import surface as surface_viz
from dgs_core.viz import training as training_viz
from dgs_core.viz.style import OPTIMIZER_COLORS

if TYPE_CHECKING:
    from dgs_core.runs.bundle import Bundle

_RUN_COLORS = ("#1F77B4", "#D62728", "#2CA02C", "#FF7F0E", "#9467BD", "#8C564B", "#E377C2", "#17BECF")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}

# What the overlay can draw: column of RunResult.metrics (training) or "gap" (surface), and its axis.
TRAINING_CURVES = {
    "val_loss": "validation loss",
    "val_metric": "validation accuracy",
    "train_loss": "training-set loss",
    "train_metric": "training-set accuracy",
    "loss": "mini-batch loss",
    "lr": "learning rate",
    "batch_size": "batch size",
}
SURFACE_CURVES = {"gap": "f(x_t) − f*"}
_EVALUATED = ("val_loss", "val_metric", "train_loss", "train_metric")
_LOG_AXES = ("val_loss", "train_loss", "loss", "lr", "batch_size", "gap")


# ---------------------------------------------------------------------------------------------
# One run: the standard figures
# ---------------------------------------------------------------------------------------------


def training_figures(
    results: Mapping[str, RunResult], task: Task, *, step: int | None = None
) -> dict[str, go.Figure]:
    """The Training lab's figures of a run, by title: curves, the importance heatmap (when
    diagnostics were recorded) and the decision boundary (2-D tasks) at ``step`` (default: the
    last step)."""
    last = max((r.steps_done for r in results.values()), default=0)
    at = last if step is None else step
    figures = {
        "Loss": training_viz.loss_figure(results, step=step),
        "Accuracy": training_viz.accuracy_figure(results, step=step),
        "Learning rate": training_viz.lr_figure(results, step=step),
        "Batch size": training_viz.batch_size_figure(results, step=step),
    }
    if any(r.records for r in results.values()):
        figures["Importance by layer"] = training_viz.layer_heatmap_figure(results, "importance", step=step)
    if task.is_2d:
        figures["Decision boundary"] = training_viz.decision_boundary_figure(results, task, step=at)
    return figures


def surface_figures(runs: Mapping[str, Run], *, step: int | None = None) -> dict[str, go.Figure]:
    """The Surface lab's figures of a comparison, by title: the paths on the contour, the gap
    curves, the effective per-coordinate lr and (when any batch grew) the batch size."""
    if not runs:
        return {}
    surface = next(iter(runs.values())).surface
    figures = {
        "Paths": surface_viz.contour_figure(surface, runs, step=step, clickable=False),
        "Loss": surface_viz.loss_figure(runs, step=step),
        "Effective learning rate": surface_viz.scaling_figure(runs, step=step),
    }
    if any(np.any(run.batch_size != run.batch_size[:1]) for run in runs.values() if run.steps):
        figures["Batch size"] = surface_viz.batch_size_figure(runs, step=step)
    return figures


def run_figures(bundle: Bundle) -> dict[str, go.Figure]:
    """A bundle's figures redrawn from its data (the same builders as at export)."""
    if bundle.kind == "training":
        return training_figures(bundle.results, bundle.task)
    return surface_figures(dict(bundle.runs or {}))


# ---------------------------------------------------------------------------------------------
# Several runs
# ---------------------------------------------------------------------------------------------


def curve_choices(bundles: Mapping[str, Bundle]) -> dict[str, str]:
    """The curves :func:`overlay_figure` can draw for these runs: ``{metric: axis title}``."""
    kinds = {b.kind for b in bundles.values()}
    return {
        **(TRAINING_CURVES if "training" in kinds else {}),
        **(SURFACE_CURVES if "surface" in kinds else {}),
    }


def overlay_figure(
    bundles: Mapping[str, Bundle],
    metric: str = "val_loss",
    *,
    smoothing: float = 0.0,
    log_y: bool | None = None,
    height: int = 460,
) -> go.Figure:
    """Every run's curves on shared axes: colour = optimizer (as in every other chart), line
    style = run; one hover box lists every run's value at the step under the cursor.

    ``metric``: a key of :data:`TRAINING_CURVES` (drawn for training runs; evaluation
    columns at their evaluation steps) or "gap" (surface runs: f − f* of every row).
    ``smoothing``: TensorBoard's EMA weight in [0, 1) (:func:`dgs_core.runs.compare.smooth_ema`);
    above 0 the raw curves stay behind the smoothed ones, faint and out of the hover box.
    """
    choices = {**TRAINING_CURVES, **SURFACE_CURVES}
    if metric not in choices:
        raise invalid("metric", metric, f"one of {', '.join(choices)}")
    fig = go.Figure()
    positive = True
    colors: dict[str, str] = {}
    for i, (run_name, bundle) in enumerate(bundles.items()):
        dash = _DASHES[i % len(_DASHES)]
        for label, optimizer, x, y in _curves(bundle, metric):
            positive &= bool(np.all(np.asarray(y)[np.isfinite(y)] > 0))
            color = colors.setdefault(optimizer, _optimizer_color(optimizer, colors))
            name = f"{label} · {run_name}"
            mode = "lines+markers" if metric in _EVALUATED and smoothing == 0 else "lines"
            if smoothing > 0:
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=y,
                        mode="lines",
                        legendgroup=name,
                        showlegend=False,
                        hoverinfo="skip",
                        line={"color": color, "dash": dash, "width": 1},
                        opacity=0.25,
                    )
                )
                y = smooth_ema(y, smoothing)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode=mode,
                    name=name,
                    legendgroup=name,
                    line={"color": color, "dash": dash, "width": 2},
                    marker={"size": 4},
                    hovertemplate="%{y:.4g}",
                )
            )
    use_log = (metric in _LOG_AXES and positive) if log_y is None else log_y
    fig.update_layout(
        height=height,
        margin=_MARGIN,
        hovermode="x unified",
        xaxis_title="step",
        yaxis={"title": choices[metric], "type": "log" if use_log else "linear", "exponentformat": "power"},
        legend={"orientation": "h", "y": -0.18},
    )
    return fig


def _optimizer_color(optimizer: str, taken: Mapping[str, str]) -> str:
    """The optimizer's own colour (as in the labs); a free palette colour for one without."""
    preferred = OPTIMIZER_COLORS.get(optimizer)
    if preferred is not None:
        return preferred
    used = set(taken.values()) | set(OPTIMIZER_COLORS.values())
    return next((c for c in _RUN_COLORS if c not in used), _RUN_COLORS[len(taken) % len(_RUN_COLORS)])


def _curves(bundle: Bundle, metric: str) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(label, optimizer, steps, values) of every curve of ``metric`` in the run."""
    out = []
    if bundle.kind == "training" and metric in TRAINING_CURVES:
        for label, result in bundle.results.items():
            frame = result.evaluations if metric in _EVALUATED else result.metrics
            out.append((label, result.name, frame["step"].to_numpy(), frame[metric].to_numpy(dtype=float)))
    elif bundle.kind == "surface" and metric in SURFACE_CURVES:
        for label, run in (bundle.runs or {}).items():
            for r in range(run.rows):
                name = label if run.rows == 1 else f"{label} · row {r}"
                length = int(run.length[r])
                out.append((name, run.optimizer, np.arange(length), run.gap[:length, r]))
    return out


def metric_table(bundles: Mapping[str, Bundle]) -> pd.DataFrame:
    """Where each run ended, one row per run and optimizer (surface: per row), ``run`` first."""
    frames = [bundle.summary().assign(run=name) for name, bundle in bundles.items()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["run"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[["run", *[c for c in frame.columns if c != "run"]]]
