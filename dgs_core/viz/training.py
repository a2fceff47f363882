"""Figures of the Training lab: :class:`~dgs_core.training.RunResult` in, ``go.Figure`` out.

No streamlit here. Every figure takes ``results`` — the trainer's ``{label: RunResult}``,
which may still be growing — and a ``step`` for the page's scrubber: curves draw a cursor
at that step; snapshots (histogram, per-weight heatmap, decision boundary) show the latest
record at or before it, so one slider moves every panel to the same step.

>>> from dgs_core.training import TrainConfig, Trainer
>>> trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam"], steps=20, eval_every=10))
>>> _ = list(trainer.run())
>>> fig = loss_figure(trainer.results, step=10)
>>> fig = decision_boundary_figure(trainer.results, trainer.task, step=20)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dgs_core import metrics
from dgs_core.params import invalid
from dgs_core.training.results import RunResult
from dgs_core.training.tasks import Task
from dgs_core.viz.style import (
    LEGEND_ABOVE,
    OPTIMIZER_COLORS,
    PALETTE,
    SPIKE_MARKER,
    SPIKE_NAME,
    log_ticks,
    optimizer_label,
    rgba,
)

Results = Mapping[str, RunResult]

_CURSOR = {"dash": "dot", "color": "#555555"}
_MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}
_MARGIN_LEGEND = {**_MARGIN, "t": 70}  # room for the legend above the plot (LEGEND_ABOVE)
MAX_LINE_POINTS = 1000  # per-step lines are thinned to this many points (see thin)
MAX_SPIKE_MARKERS = 100  # per panel: the largest spikes (a noisy run has thousands)
_CLASS_COLORS = ("#1F77B4", "#D62728", "#2CA02C", "#FF7F0E", "#9467BD", "#8C564B", "#E377C2", "#17BECF")
QUANTITIES = {
    "importance": "importance Î",
    "scaling_factor": "scaling factor η_eff/η",
    "lr_eff": "effective lr η_eff",
    "scale": "DGS scale s_t",
}


def muon_split_note(model: torch.nn.Module) -> str:
    """What Muon does with each of ``model``'s tensors, in one sentence for the page."""
    from dgs_core.optim.muon import split_tensors

    matrices, others = split_tensors(model.named_parameters())

    def listed(tensors: list[tuple[str, torch.Size]]) -> str:
        return ", ".join(f"{name} ({'×'.join(map(str, shape)) or 'scalar'})" for name, shape in tensors)

    text = f"**Muon** orthogonalizes the steps of the {len(matrices)} weight matrices: {listed(matrices)}."
    if others:
        text += (
            f" The {len(others)} other tensors take its AdamW fallback (lr η × adamw_lr_ratio): "
            f"{listed(others)}."
        )
    return text


def colors(results: Results) -> dict[str, str]:
    """One colour per label: the optimizer's own colour (as in the Surface lab) when free."""
    out: dict[str, str] = {}
    for label, result in results.items():
        preferred = OPTIMIZER_COLORS.get(result.name)
        if preferred is None or preferred in out.values():
            preferred = next((c for c in PALETTE if c not in out.values()), PALETTE[len(out) % len(PALETTE)])
        out[label] = preferred
    return out


def lanes_table(results: Results) -> pd.DataFrame:
    """One row per optimizer, its latest numbers (:meth:`RunResult.progress`): optimizer (its
    display name), status, step, batch loss, val loss, val accuracy, lr, batch size. Safe while
    the run grows. Numbers are text to 4 significant digits, "—" where there is none yet (before
    the first evaluation: a number column would show Python's "None")."""
    rows = []
    for label, result in results.items():
        lane = result.progress()
        rows.append(
            {
                "optimizer": _display_name(label, result),
                "status": lane.status,
                "step": lane.step,
                "batch loss": _number(lane.loss),
                "val loss": _number(lane.val_loss),
                "val accuracy": _number(lane.val_metric),
                "lr": _number(lane.lr),
                "batch size": _number(lane.batch_size),
            }
        )
    return pd.DataFrame(rows)


def _number(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _display_name(label: str, result: RunResult) -> str:
    """A label that is the registry key ("sgd") shows as the optimizer's name ("SGD")."""
    return optimizer_label(result.name) if label == result.name else label


def _title(label: str, result: RunResult) -> str:
    name = optimizer_label(result.name)
    title = name if label == result.name else f"{label} ({name})"
    return title if result.status in ("running", "done") else f"{title} — {result.status}"


def _panels(results: Results, *, titles: Sequence[str] | None = None, **kwargs) -> go.Figure:
    """One panel per optimizer, side by side."""
    labels = list(results)
    return make_subplots(
        rows=1,
        cols=max(1, len(labels)),
        subplot_titles=titles if titles is not None else [_title(k, results[k]) for k in labels],
        **kwargs,
    )


def _cursor(fig: go.Figure, step: int | None) -> go.Figure:
    if step is not None:
        fig.add_vline(x=step, line=_CURSOR, row="all", col="all")
    return fig


def thin(
    x: Sequence[float], y: Sequence[float], max_points: int = MAX_LINE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """A per-step line cut to at most ``max_points`` points for drawing: the steps are split into
    ``max_points // 2`` equal buckets and each keeps its lowest and highest point, in step order,
    so spikes and dips stay visible. Shorter lines come back unchanged.

    >>> thin([1, 2, 3, 4, 5, 6], [5.0, 9.0, 1.0, 4.0, 4.0, 2.0], max_points=4)
    (array([2, 3, 4, 6]), array([9., 1., 4., 2.]))
    """
    xs, ys = np.asarray(x), np.asarray(y, dtype=float)
    if len(xs) <= max_points:
        return xs, ys
    edges = np.linspace(0, len(xs), max_points // 2 + 1).astype(int)
    low, high = np.where(np.isnan(ys), np.inf, ys), np.where(np.isnan(ys), -np.inf, ys)
    keep = []
    for start, stop in itertools.pairwise(edges):
        pair = sorted({start + int(np.argmin(low[start:stop])), start + int(np.argmax(high[start:stop]))})
        keep += pair
    return xs[keep], ys[keep]


def largest_spikes(frame: pd.DataFrame, limit: int = MAX_SPIKE_MARKERS) -> pd.DataFrame:
    """The rows of ``frame`` (a :attr:`RunResult.metrics` table) that are spikes, at most ``limit``
    of them: those whose loss jumps most above the median of the previous ``SPIKE_WINDOW``
    losses (the spike rule's own ratio, docs/algorithms.md#metrics), in step order."""
    spikes = frame[frame["spike"]]
    if len(spikes) <= limit:
        return spikes
    previous = frame["loss"].shift(1).rolling(metrics.SPIKE_WINDOW, min_periods=1).median()
    ratio = (frame["loss"] / previous)[spikes.index]
    return spikes.loc[ratio.nlargest(limit).index].sort_values("step")


# ---------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------


def loss_figure(
    results: Results, *, step: int | None = None, overlay: bool = False, log_y: bool = True, height: int = 360
) -> go.Figure:
    """Mini-batch loss (thin), training-set and validation loss (markers at evaluations).

    Side by side per optimizer, or ``overlay`` in one panel (validation dashed). A divergence
    shows in the panel's title; spikes (docs/algorithms.md#metrics) are marked with a triangle — the
    ``MAX_SPIKE_MARKERS`` largest of each run (a noisy run has thousands). Lines longer than
    ``MAX_LINE_POINTS`` are thinned for drawing (:func:`thin`).
    """
    palette = colors(results)
    fig = go.Figure() if overlay else _panels(results, shared_yaxes=True)
    drawn: list[float] = []
    any_spikes = False
    for i, (label, result) in enumerate(results.items()):
        frame = result.metrics
        evals = frame[frame["val_loss"].notna()]
        spikes = largest_spikes(frame)
        color = palette[label]
        where = {} if overlay else {"row": 1, "col": i + 1}
        show = overlay or i == 0  # side by side: one legend entry per kind of line

        def named(what: str, label: str = label, shown: str = _display_name(label, result)) -> dict:
            return {
                "name": f"{shown}: {what}" if overlay else what,
                "legendgroup": label if overlay else what,
            }

        batch_x, batch_y = thin(frame["step"], frame["loss"])
        drawn += [*batch_y, *evals["train_loss"], *evals["val_loss"]]
        any_spikes |= len(spikes) > 0
        traces = [
            go.Scatter(
                x=batch_x,
                y=batch_y,
                mode="lines",
                line={"color": color, "width": 1},
                opacity=0.35 if overlay else 0.5,
                showlegend=show,
                **named("batch loss"),
            ),
            go.Scatter(
                x=evals["step"],
                y=evals["train_loss"],
                mode="lines+markers",
                line={"color": color},
                marker={"size": 5},
                showlegend=show,
                **named("train"),
            ),
            go.Scatter(
                x=evals["step"],
                y=evals["val_loss"],
                mode="lines+markers",
                line={"color": color, "dash": "dash"},
                marker={"size": 5, "symbol": "diamond"},
                showlegend=show,
                **named("validation"),
            ),
            go.Scatter(
                x=spikes["step"],
                y=spikes["loss"],
                mode="markers",
                marker={**SPIKE_MARKER, "color": color},
                showlegend=False,
                hovertemplate="spike at step %{x}<br>loss %{y:.4g}<extra></extra>",
                **named("spike"),
            ),
        ]
        for trace in traces:
            fig.add_trace(trace, **where)
    if any_spikes:  # one grey legend entry says what ✦ means
        key = go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=SPIKE_NAME,
            legendgroup="spike",
            marker={**SPIKE_MARKER, "color": "#555555"},
        )
        fig.add_trace(key, **({} if overlay else {"row": 1, "col": 1}))
    ticks = log_ticks(drawn) if log_y else {}
    fig.update_yaxes(type="log" if log_y else "linear", exponentformat="power", **ticks)
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, margin=_MARGIN_LEGEND, legend=LEGEND_ABOVE, yaxis_title="loss")
    return _cursor(fig, step)


def waiting_figure(message: str, *, height: int = 160) -> go.Figure:
    """An empty chart that says ``message``: drawn before a run, so the browser has loaded its
    charting code by the time the first curve comes."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(height=height, xaxis={"visible": False}, yaxis={"visible": False})
    fig.update_layout(margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def accuracy_figure(results: Results, *, step: int | None = None, height: int = 320) -> go.Figure:
    """Training-set (solid) and validation (dashed) accuracy of every optimizer, overlaid."""
    palette = colors(results)
    fig = go.Figure()
    for label, result in results.items():
        evals = result.evaluations
        for column, dash, what in (("train_metric", None, "train"), ("val_metric", "dash", "validation")):
            fig.add_trace(
                go.Scatter(
                    x=evals["step"],
                    y=evals[column],
                    mode="lines+markers",
                    name=f"{_display_name(label, result)}: {what}",
                    legendgroup=label,
                    line={"color": palette[label], "dash": dash},
                    marker={"size": 4},
                )
            )
    fig.update_layout(
        height=height,
        margin=_MARGIN_LEGEND,
        xaxis_title="step",
        yaxis={"title": "accuracy", "range": [0, 1.02]},
        legend=LEGEND_ABOVE,
    )
    return _cursor(fig, step)


def lr_figure(results: Results, *, step: int | None = None, height: int = 340) -> go.Figure:
    """The schedule's lr (line) and the effective-lr band per optimizer, side by side.

    Band: 5–95 % (light) and 25–75 % (darker) quantiles and the median of the per-parameter
    effective lr |Δθ|/|g| (docs/algorithms.md#diagnostics) over the whole model, on the recorded steps.
    """
    palette = colors(results)
    fig = _panels(results, shared_yaxes=True)
    for i, (label, result) in enumerate(results.items()):
        color, col = palette[label], i + 1
        band = result.quantile_band("lr_eff")
        frame = result.metrics
        first = i == 0
        if len(band):
            for low, high, alpha, name in (
                ("q05", "q95", 0.15, "η_eff 5–95 %"),
                ("q25", "q75", 0.35, "η_eff 25–75 %"),
            ):
                fig.add_trace(
                    go.Scatter(
                        x=band["step"],
                        y=band[low],
                        mode="lines",
                        line={"width": 0},
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=1,
                    col=col,
                )
                fig.add_trace(
                    go.Scatter(
                        x=band["step"],
                        y=band[high],
                        mode="lines",
                        line={"width": 0},
                        fill="tonexty",
                        fillcolor=rgba(color, alpha),
                        name=name,
                        legendgroup=name,
                        showlegend=first,
                    ),
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=band["step"],
                    y=band["q50"],
                    mode="lines",
                    line={"color": color, "dash": "dot"},
                    name="η_eff median",
                    legendgroup="median",
                    showlegend=first,
                ),
                row=1,
                col=col,
            )
        lr_x, lr_y = thin(frame["step"], frame["lr"])
        fig.add_trace(
            go.Scatter(
                x=lr_x,
                y=lr_y,
                mode="lines",
                line={"color": "black", "width": 1.5},
                name="schedule lr η_t",
                legendgroup="lr",
                showlegend=first,
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_xaxes(title_text="step")
    fig.update_layout(height=height, margin=_MARGIN_LEGEND, legend=LEGEND_ABOVE, yaxis_title="lr")
    return _cursor(fig, step)


def batch_size_figure(results: Results, *, step: int | None = None, height: int = 280) -> go.Figure:
    """Batch size against the step (grows for the AdAdaGrad family with adaptive batches)."""
    palette = colors(results)
    fig = go.Figure()
    sizes: list[float] = []
    for label, result in results.items():
        frame = result.metrics
        x, y = thin(frame["step"], frame["batch_size"])
        sizes += list(y)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=_display_name(label, result),
                line={"color": palette[label], "shape": "hv"},
            )
        )
    fig.update_layout(
        height=height,
        margin=_MARGIN_LEGEND,
        xaxis_title="step",
        yaxis={"title": "batch size", "type": "log", **log_ticks(sizes, integer=True)},
        legend=LEGEND_ABOVE,
    )
    return _cursor(fig, step)


# ---------------------------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------------------------


def layer_heatmap_figure(
    results: Results,
    quantity: str = "importance",
    *,
    statistic: str = "mean",
    step: int | None = None,
    height: int | None = None,
) -> go.Figure:
    """Layer × time heatmap of a per-tensor diagnostic (log10 colour), side by side.

    ``quantity``: "importance", "scaling_factor", "lr_eff" or "scale" (DGS only), or any
    optimizer-specific per-tensor value such as "trust_ratio" (``statistic="value"``).
    """
    tables = {label: r.layer_table(quantity, statistic) for label, r in results.items()}
    values = np.concatenate([t.to_numpy().ravel() for t in tables.values()] or [np.zeros(0)])
    positive = values[np.isfinite(values) & (values > 0)]
    zmin, zmax = (np.log10(positive.min()), np.log10(positive.max())) if positive.size else (None, None)
    layers = max((len(t) for t in tables.values()), default=1)
    fig = _panels(results, shared_yaxes=True, horizontal_spacing=0.03)
    for i, (label, table) in enumerate(tables.items()):
        if table.empty:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(table.to_numpy() > 0, np.log10(table.to_numpy()), np.nan)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(table.columns),
                y=list(table.index),
                zmin=zmin,
                zmax=zmax,
                coloraxis="coloraxis",
                customdata=table.to_numpy(),
                hovertemplate=f"{_display_name(label, results[label])}<br>%{{y}}<br>step %{{x}}<br>"
                f"{quantity} = %{{customdata:.3g}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="step")
    fig.update_layout(
        height=height or max(260, 60 + 22 * layers),
        margin={**_MARGIN, "l": 120},
        coloraxis={
            "colorscale": "Viridis",
            "colorbar": {"title": f"log10 {QUANTITIES.get(quantity, quantity)}"},
        },
    )
    return _cursor(fig, step)


def scaling_histogram_figure(
    results: Results, *, step: int, quantity: str = "scaling_factor", bins: int = 60, height: int = 320
) -> go.Figure:
    """Distribution of the per-parameter ``quantity`` (log10) at the record at or before ``step``.

    Pools the kept per-element values of every tensor of each model
    (docs/algorithms.md#diagnostics); overlaid per
    optimizer. The legend names the record's step.
    """
    palette = colors(results)
    samples, shown = {}, {}
    for label, result in results.items():
        record = result.record_at(step)
        kept = result.elements_at(step, quantity)
        if record is None or not kept:
            continue
        values = np.concatenate([v.reshape(-1).numpy() for v in kept.values()])
        samples[label] = (record.step, np.log10(values[np.isfinite(values) & (values > 0)]))
        shown[label] = _display_name(label, result)
    pooled = np.concatenate([v for _, v in samples.values()] or [np.zeros(1)])
    low, high = (float(pooled.min()), float(pooled.max())) if pooled.size else (0.0, 1.0)
    if high - low < 1e-6:  # plain SGD: every factor is 1
        low, high = low - 0.5, high + 0.5
    xbins = {"start": low, "end": high, "size": (high - low) / bins}
    fig = go.Figure()
    for label, (record_step, values) in samples.items():
        fig.add_trace(
            go.Histogram(
                x=values,
                xbins=xbins,
                name=f"{shown[label]} (step {record_step})",
                marker_color=palette[label],
                opacity=0.55,
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=height,
        margin=_MARGIN,
        xaxis_title=f"log10 {QUANTITIES.get(quantity, quantity)}",
        yaxis_title="parameters",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def weight_heatmap_figure(
    results: Results, tensor: str, *, step: int, quantity: str = "importance", height: int = 360
) -> go.Figure:
    """Per-weight view of one tensor (its 2-D view: first dimension × the rest), side by side.

    Shows the kept grid of ``quantity`` (log10 colour) at the record at or before ``step``;
    for large tensors the grid is a regular subsample whose row and column indices label
    the axes.
    """
    fig = _panels(results, shared_yaxes=True, horizontal_spacing=0.04)
    grids = {}
    for label, result in results.items():
        record = result.record_at(step)
        grid = result.elements_at(step, quantity).get(tensor)
        if record is not None and grid is not None:
            grids[label] = (record.step, grid.numpy(), result.element_index)
    values = np.concatenate([g.ravel() for _, g, _ in grids.values()] or [np.zeros(0)])
    positive = values[np.isfinite(values) & (values > 0)]
    zmin, zmax = (np.log10(positive.min()), np.log10(positive.max())) if positive.size else (None, None)
    for i, label in enumerate(results):
        if label not in grids:
            continue
        record_step, grid, index = grids[label]
        rows = index.get(f"{tensor}/rows")
        cols = index.get(f"{tensor}/cols")
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(grid > 0, np.log10(grid), np.nan)
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=None if cols is None else cols.tolist(),
                y=None if rows is None else rows.tolist(),
                zmin=zmin,
                zmax=zmax,
                coloraxis="coloraxis",
                customdata=grid,
                hovertemplate=f"{_display_name(label, results[label])} (step {record_step})<br>"
                "row %{y}, col %{x}<br>"
                f"{quantity} = %{{customdata:.3g}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
    fig.update_yaxes(autorange="reversed", title_text="row", col=1)
    fig.update_xaxes(title_text="column")
    fig.update_layout(
        height=height,
        margin=_MARGIN,
        title={"text": f"{tensor}: {QUANTITIES.get(quantity, quantity)}", "x": 0.5, "y": 0.99},
        coloraxis={"colorscale": "Viridis", "colorbar": {"title": "log10"}},
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Decision boundary
# ---------------------------------------------------------------------------------------------


def decision_boundary_figure(
    results: Results, task: Task, *, step: int, points: str = "val", resolution: int = 60, height: int = 360
) -> go.Figure:
    """Predicted class over the plane at the evaluation at or before ``step``, side by side.

    Colour: the predicted class, faded where the model is unsure (two classes: the
    probability of class 1 on a red-blue scale with the 0.5 contour), on a grid of
    ``resolution``² points. ``points``: "val", "train" or "none".
    """
    if not task.is_2d:
        raise ValueError(f"Invalid task for a decision boundary: {task.name!r} (not a 2-D task)")
    if points not in ("val", "train", "none"):
        raise invalid("points", points, "one of val, train, none")
    xs, ys, _ = task.grid(resolution)
    titles = []
    snapshots = {}
    for label, result in results.items():
        snapshot = result.boundary_at(task, step, resolution)
        snapshots[label] = snapshot
        suffix = "" if snapshot is None else f" · step {snapshot[0]}"
        titles.append(_title(label, result) + suffix)
    fig = _panels(results, titles=titles, shared_yaxes=True, horizontal_spacing=0.03)
    x, y = (task.x_val, task.y_val) if points == "val" else (task.x_train, task.y_train)
    x, y = x.cpu().numpy(), y.cpu().numpy()
    for i, snapshot in enumerate(snapshots.values()):
        col = i + 1
        if snapshot is not None:
            probs = snapshot[1]
            for trace in _boundary_traces(probs, xs, ys, task.num_classes):
                fig.add_trace(trace, row=1, col=col)
        if points != "none":
            for c in range(task.num_classes):
                mask = y == c
                fig.add_trace(
                    go.Scatter(
                        x=x[mask, 0],
                        y=x[mask, 1],
                        mode="markers",
                        name=f"class {c}",
                        legendgroup=f"class {c}",
                        showlegend=i == 0,
                        marker={
                            "size": 4,
                            "color": _CLASS_COLORS[c % len(_CLASS_COLORS)],
                            "line": {"width": 0.5, "color": "white"},
                        },
                    ),
                    row=1,
                    col=col,
                )
    x0, x1, y0, y1 = task.bounds  # type: ignore[misc]  # task.is_2d checked above: bounds are set
    fig.update_xaxes(range=[x0, x1], constrain="domain")
    fig.update_yaxes(range=[y0, y1], scaleanchor="x", scaleratio=1)
    fig.update_layout(height=height, margin=_MARGIN, legend={"orientation": "h", "y": -0.15})
    return fig


def _boundary_traces(
    probs: np.ndarray, xs: np.ndarray, ys: np.ndarray, num_classes: int
) -> list[go.BaseTraceType]:
    if num_classes == 2:
        p1 = probs[..., 1]
        return [
            go.Heatmap(
                z=p1,
                x=xs,
                y=ys,
                zmin=0,
                zmax=1,
                colorscale="RdBu_r",
                opacity=0.55,
                showscale=False,
                showlegend=False,
                name="P(class 1)",
                hovertemplate="P(class 1) = %{z:.2f}<extra></extra>",
            ),
            go.Contour(
                z=p1,
                x=xs,
                y=ys,
                contours={"start": 0.5, "end": 0.5, "size": 1, "coloring": "none"},
                line={"color": "black", "width": 2},
                showscale=False,
                showlegend=False,
                name="decision boundary",
                hoverinfo="skip",
            ),
        ]
    predicted = probs.argmax(axis=-1)
    confidence = probs.max(axis=-1)
    # one colour per class; the alpha channel fades the low-confidence regions
    shade = (confidence - 1 / num_classes) / (1 - 1 / num_classes)
    z = predicted + np.clip(shade, 0, 0.999)
    scale = []
    for c in range(num_classes):
        color = _CLASS_COLORS[c % len(_CLASS_COLORS)]
        lo, hi = c / num_classes, (c + 1) / num_classes
        scale += [[lo, rgba(color, 0.08)], [hi - 1e-9, rgba(color, 0.6)]]
    scale[-1][0] = 1.0
    return [
        go.Heatmap(
            z=z,
            x=xs,
            y=ys,
            zmin=0,
            zmax=num_classes,
            colorscale=scale,
            showscale=False,
            showlegend=False,
            name="predicted class",
            customdata=np.stack([predicted, confidence], axis=-1),
            hovertemplate="class %{customdata[0]}, p = %{customdata[1]:.2f}<extra></extra>",
        ),
    ]
