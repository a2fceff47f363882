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

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dgs_core.params import invalid
from dgs_core.surfaces.simulator import Run
from dgs_core.training.results import RunResult
from dgs_core.training.tasks import Task
from dgs_core.viz import surface as surface_viz
from dgs_core.viz import training as training_viz

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
    bundles: Mapping[str, Bundle], metric: str = "val_loss", *, log_y: bool | None = None, height: int = 420
) -> go.Figure:
    """One curve per run and optimizer on shared axes: colour = run, dash = optimizer.

    ``metric``: a key of :data:`TRAINING_CURVES` (drawn for training runs; evaluation
    columns at their evaluation steps) or "gap" (surface runs: f − f* of every row).
    """
    choices = {**TRAINING_CURVES, **SURFACE_CURVES}
    if metric not in choices:
        raise invalid("metric", metric, f"one of {', '.join(choices)}")
    fig = go.Figure()
    positive = True
    for i, (run_name, bundle) in enumerate(bundles.items()):
        color = _RUN_COLORS[i % len(_RUN_COLORS)]
        for j, (label, x, y) in enumerate(_curves(bundle, metric)):
            positive &= bool(np.all(np.asarray(y)[np.isfinite(y)] > 0))
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines+markers" if metric in _EVALUATED else "lines",
                    name=f"{run_name} · {label}",
                    legendgroup=run_name,
                    line={"color": color, "dash": _DASHES[j % len(_DASHES)]},
                    marker={"size": 4},
                )
            )
    use_log = (metric in _LOG_AXES and positive) if log_y is None else log_y
    fig.update_layout(
        height=height,
        margin=_MARGIN,
        xaxis_title="step",
        yaxis={"title": choices[metric], "type": "log" if use_log else "linear", "exponentformat": "power"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _curves(bundle: Bundle, metric: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    if bundle.kind == "training" and metric in TRAINING_CURVES:
        for label, result in bundle.results.items():
            frame = result.evaluations if metric in _EVALUATED else result.metrics
            out.append((label, frame["step"].to_numpy(), frame[metric].to_numpy(dtype=float)))
    elif bundle.kind == "surface" and metric in SURFACE_CURVES:
        for label, run in (bundle.runs or {}).items():
            for r in range(run.rows):
                name = label if run.rows == 1 else f"{label} · row {r}"
                length = int(run.length[r])
                out.append((name, np.arange(length), run.gap[:length, r]))
    return out


def metric_table(bundles: Mapping[str, Bundle]) -> pd.DataFrame:
    """Where each run ended, one row per run and optimizer (surface: per row), ``run`` first."""
    frames = [bundle.summary().assign(run=name) for name, bundle in bundles.items()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["run"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[["run", *[c for c in frame.columns if c != "run"]]]


def config_diff(bundles: Mapping[str, Bundle], *, all_settings: bool = False) -> pd.DataFrame:
    """Settings that differ between runs: one row per setting, one column per run.

    Optimizers are matched by label ("optimizers.adam.hparams.lr"); a setting a run does not
    have shows "—". ``all_settings`` keeps the equal ones too.
    """
    flat = {name: _flatten_config(bundle) for name, bundle in bundles.items()}
    settings = list(dict.fromkeys(k for values in flat.values() for k in values))
    rows = []
    for setting in settings:
        values = [flat[name].get(setting, "—") for name in flat]
        if all_settings or len(set(values)) > 1:
            rows.append([setting, *values])
    return pd.DataFrame(rows, columns=["setting", *flat])


def _flatten_config(bundle: Bundle) -> dict[str, str]:
    config = dict(bundle.config)
    optimizers = config.pop("optimizers", [])
    out: dict[str, str] = {"kind": bundle.kind}
    _flatten(config, "", out)
    for label, entry in zip(bundle.labels, optimizers, strict=False):
        entry = {k: v for k, v in dict(entry).items() if k != "label"}
        _flatten(entry, f"optimizers.{label}.", out)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}{key}.", out)
    else:
        out[prefix.rstrip(".")] = _show(value)


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)
