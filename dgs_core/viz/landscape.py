"""Figures of the Landscape lab: a :class:`~dgs_core.landscape.LossGrid` (or an interpolation, or
a sharpness table) in, ``go.Figure`` out. No streamlit here.

Every figure of a plane has the plane's title: which plane it is and how faithful (exact at its
three points; the PCA's explained variance; how far the recorded weights lie from the plane).
Each optimizer's path is drawn in its lab colour (:func:`dgs_core.viz.training.colors`), its
start marked with an open circle and its end with a star; hovering a point shows its step, its
distance from the plane and, when the grid evaluated them, the loss at the recorded weights
beside the loss at their projection (the one the contours show).

>>> from dgs_core.training import TrainConfig, Trainer
>>> from dgs_core.landscape import GridSpec, Landscape, PlaneSpec, build_plane, evaluate_grid
>>> trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam"], steps=20, eval_every=10,
...                               task_params={"n_samples": 200}, device="cpu"))
>>> _ = list(trainer.run())
>>> landscape = Landscape.from_trainer(trainer)
>>> plane = build_plane(landscape, PlaneSpec.exact("sgd", "adam"))
>>> grid = evaluate_grid(landscape, plane, GridSpec(resolution=9))
>>> fig = landscape_contour_figure(grid)
>>> fig = landscape_surface_figure(grid, split="train")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dgs_core.landscape import Interpolation, LossGrid, ProjectedPath
from dgs_core.params import invalid
from dgs_core.viz.style import OPTIMIZER_COLORS, optimizer_label
from dgs_core.viz.training import colors

_SPLIT_NAMES = {"train": "training loss", "val": "validation loss"}
_CURVE_COLORS = ("#1F77B4", "#D62728", "#2CA02C", "#FF7F0E", "#9467BD", "#8C564B", "#E377C2", "#17BECF")
_MARGIN = {"l": 60, "r": 20, "t": 90, "b": 50}
_START = {"symbol": "circle-open", "size": 13, "line": {"width": 3}}
_END = {"symbol": "star", "size": 15, "line": {"width": 1, "color": "black"}}
_START_3D = {"symbol": "circle-open", "size": 8}  # 3-D markers have no star
_END_3D = {"symbol": "diamond", "size": 7}


def _title(text: str, complete: bool = True) -> dict:
    """A plane's title on two lines (what · how faithful), and a note when it is partial."""
    what, _, faithful = text.partition(" · ")
    lines = [f"<b>{what}</b>", faithful] if faithful else [f"<b>{what}</b>"]
    if not complete:
        lines.append("stopped before the end: blank where not evaluated")
    return {"text": "<br>".join(lines), "font": {"size": 13}, "x": 0.01, "xanchor": "left"}


def _values(grid: LossGrid, split: str) -> np.ndarray:
    if split not in grid.losses:
        raise invalid("split", split, f"one of the evaluated splits: {', '.join(grid.losses)}")
    return grid.losses[split]


def _scaled(values: np.ndarray, log_scale: bool) -> np.ndarray:
    return np.log10(np.maximum(values, 1e-12)) if log_scale else values


def _hover(path: ProjectedPath, split: str) -> tuple[np.ndarray, str]:
    """customdata and hovertemplate for a path's points."""
    nan = np.full(len(path.steps), np.nan)
    data = np.stack(
        [path.steps, path.distances, path.losses.get(split, nan), path.plane_losses.get(split, nan)], axis=1
    )
    loss = _SPLIT_NAMES[split]
    template = (
        f"<b>{path.label}</b> step %{{customdata[0]}}<br>off the plane: %{{customdata[1]:.3g}}"
        + (
            f"<br>{loss} at these weights: %{{customdata[2]:.4g}}<br>on the plane: %{{customdata[3]:.4g}}"
            if split in path.losses
            else ""
        )
        + "<extra></extra>"
    )
    return data, template


def _bilinear(grid: LossGrid, values: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``values`` (the grid's [j, i]) at ``coords`` (k, 2) by bilinear interpolation; NaN outside."""
    xs, ys = grid.xs, grid.ys
    out = np.full(len(coords), np.nan)
    for k, (x, y) in enumerate(coords):
        if not (xs[0] <= x <= xs[-1] and ys[0] <= y <= ys[-1]):
            continue
        i = min(int(np.searchsorted(xs, x, side="right")) - 1, len(xs) - 2)
        j = min(int(np.searchsorted(ys, y, side="right")) - 1, len(ys) - 2)
        tx = (x - xs[i]) / (xs[i + 1] - xs[i])
        ty = (y - ys[j]) / (ys[j + 1] - ys[j])
        top = (1 - tx) * values[j + 1, i] + tx * values[j + 1, i + 1]
        bottom = (1 - tx) * values[j, i] + tx * values[j, i + 1]
        out[k] = (1 - ty) * bottom + ty * top
    return out


def landscape_contour_figure(
    grid: LossGrid, *, split: str = "val", log_scale: bool = True, height: int = 600
) -> go.Figure:
    """The loss of ``split`` ("train" or "val") as filled contours over the plane, with every
    optimizer's projected path. ``log_scale`` colours by log₁₀ of the loss (hover shows the loss)."""
    values = _values(grid, split)
    palette = colors(grid.paths)  # type: ignore[arg-type]  # needs only each path's .name
    loss = _SPLIT_NAMES[split]
    fig = go.Figure(
        go.Contour(
            x=grid.xs,
            y=grid.ys,
            z=_scaled(values, log_scale),
            customdata=values,
            colorscale="Viridis",
            ncontours=30,
            contours={"coloring": "heatmap"},
            colorbar={"title": {"text": f"log₁₀ {loss}" if log_scale else loss}},
            hovertemplate=f"x %{{x:.3g}}, y %{{y:.3g}}<br>{loss} %{{customdata:.4g}}<extra></extra>",
            name=loss,
        )
    )
    for label, path in grid.paths.items():
        color = palette[label]
        data, template = _hover(path, split)
        x, y = path.coords[:, 0], path.coords[:, 1]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                line={"color": color, "width": 2},
                marker={"size": 5, "color": color},
                customdata=data,
                hovertemplate=template,
                name=label,
                legendgroup=label,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x[:1],
                y=y[:1],
                mode="markers",
                marker={**_START, "color": color},
                customdata=data[:1],
                hovertemplate=template,
                showlegend=False,
                legendgroup=label,
                name=f"{label}: start",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x[-1:],
                y=y[-1:],
                mode="markers",
                marker={**_END, "color": color},
                customdata=data[-1:],
                hovertemplate=template,
                showlegend=False,
                legendgroup=label,
                name=f"{label}: end",
            )
        )
    plane = grid.plane
    fig.update_layout(
        title=_title(grid.title, grid.complete),
        height=height,
        margin=_MARGIN,
        legend={"orientation": "h", "y": -0.12},
        xaxis={"title": {"text": plane.axis_titles[0]}, "range": [grid.xs[0], grid.xs[-1]]},
        yaxis={"title": {"text": plane.axis_titles[1]}, "range": [grid.ys[0], grid.ys[-1]]},
    )
    if plane.spec.kind != "random":  # orthonormal axes: one unit is the same distance on both
        fig.update_xaxes(constrain="domain")
        fig.update_yaxes(scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def landscape_surface_figure(
    grid: LossGrid, *, split: str = "val", log_scale: bool = False, height: int = 650
) -> go.Figure:
    """The loss of ``split`` as a 3-D surface over the plane, every path drawn on it: at the
    loss of its projections (evaluated when the grid was asked for path losses, else
    interpolated from the grid)."""
    values = _values(grid, split)
    palette = colors(grid.paths)  # type: ignore[arg-type]  # needs only each path's .name
    loss = _SPLIT_NAMES[split]
    fig = go.Figure(
        go.Surface(
            x=grid.xs,
            y=grid.ys,
            z=_scaled(values, log_scale),
            colorscale="Viridis",
            opacity=0.9,
            colorbar={"title": {"text": f"log₁₀ {loss}" if log_scale else loss}},
            name=loss,
            showscale=True,
        )
    )
    for label, path in grid.paths.items():
        color = palette[label]
        data, template = _hover(path, split)
        on_plane = path.plane_losses.get(split)
        z = _scaled(on_plane if on_plane is not None else _bilinear(grid, values, path.coords), log_scale)
        x, y = path.coords[:, 0], path.coords[:, 1]
        parts = (
            ("path", slice(None), {"size": 3}),
            ("start", slice(0, 1), _START_3D),
            ("end", slice(-1, None), _END_3D),
        )
        for part, rows, marker in parts:
            fig.add_trace(
                go.Scatter3d(
                    x=x[rows],
                    y=y[rows],
                    z=z[rows],
                    mode="lines+markers" if part == "path" else "markers",
                    line={"color": color, "width": 5},
                    marker={**marker, "color": color},
                    customdata=data[rows],
                    hovertemplate=template,
                    name=label if part == "path" else f"{label}: {part}",
                    legendgroup=label,
                    showlegend=part == "path",
                )
            )
    plane = grid.plane
    fig.update_layout(
        title=_title(grid.title, grid.complete),
        height=height,
        margin={**_MARGIN, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.05},
        scene={
            "xaxis": {"title": {"text": plane.axis_titles[0]}},
            "yaxis": {"title": {"text": plane.axis_titles[1]}},
            "zaxis": {"title": {"text": f"log₁₀ {loss}" if log_scale else loss}},
        },
    )
    return fig


def interpolation_figure(
    curves: Interpolation | Sequence[Interpolation], *, log_y: bool = False, height: int = 420
) -> go.Figure:
    """Training (dashed) and validation (solid) loss along each linear interpolation; the two
    solutions at α = 0 and α = 1 marked by dotted lines."""
    curves = [curves] if isinstance(curves, Interpolation) else list(curves)
    fig = go.Figure()
    for n, curve in enumerate(curves):
        color = _CURVE_COLORS[n % len(_CURVE_COLORS)]
        name = f"{curve.start} → {curve.end}"
        for split, dash in (("train", "dash"), ("val", "solid")):
            if split not in curve.losses:
                continue
            what = _SPLIT_NAMES[split]
            fig.add_trace(
                go.Scatter(
                    x=curve.alphas,
                    y=curve.losses[split],
                    mode="lines+markers",
                    marker={"size": 4},
                    line={"color": color, "dash": dash},
                    name=f"{name}: {what}",
                    legendgroup=name,
                    hovertemplate=f"{name}<br>α %{{x:.3g}}<br>{what} %{{y:.4g}}<extra></extra>",
                )
            )
    for alpha in (0.0, 1.0):
        fig.add_vline(x=alpha, line={"dash": "dot", "color": "#555555"})
    distances = ", ".join(f"{c.start} → {c.end}: ‖Δθ‖ = {c.distance:.3g}" for c in curves)
    fig.update_layout(
        title={
            "text": f"<b>Linear interpolation between final weights</b><br>{distances}",
            "font": {"size": 13},
        },
        height=height,
        margin=_MARGIN,
        xaxis={"title": {"text": "α   (θ = (1 − α) θ_start + α θ_end)"}},
        yaxis={"title": {"text": "loss"}, "type": "log" if log_y else "linear"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def sharpness_figure(table: pd.DataFrame, *, height: int | None = None) -> go.Figure:
    """:func:`dgs_core.landscape.sharpness_table` as a table figure, each optimizer's cell in its
    colour: top Hessian eigenvalue beside the losses, the validation gap and accuracies."""
    missing = [c for c in ("label", "optimizer", "top_eigenvalue") if c not in table.columns]
    if missing:
        raise invalid("table", list(table.columns), "a sharpness_table (label, optimizer, top_eigenvalue, …)")
    fills = [OPTIMIZER_COLORS.get(name, "#DDDDDD") for name in table["optimizer"]]

    def number(column: str, digits: str = ".4g") -> list[str]:
        return [format(v, digits) for v in table[column]] if column in table.columns else [""] * len(table)

    converged = [
        f"{int(k)}{'' if ok else ' (not converged)'}"
        for k, ok in zip(table.get("iterations", []), table.get("converged", []), strict=False)
    ]
    header = [
        "optimizer",
        "top Hessian eigenvalue",
        "power iterations",
        "train loss",
        "val loss",
        "val − train",
        "train accuracy",
        "val accuracy",
    ]
    cells = [
        [
            f"{label} ({optimizer_label(name)})"
            for label, name in zip(table["label"], table["optimizer"], strict=True)
        ],
        number("top_eigenvalue"),
        converged,
        number("train_loss"),
        number("val_loss"),
        number("loss_gap", "+.3g"),
        number("train_metric", ".1%"),
        number("val_metric", ".1%"),
    ]
    fig = go.Figure(
        go.Table(
            header={"values": header, "fill_color": "#EEEEEE", "align": "left"},
            cells={"values": cells, "fill_color": [fills] + [["white"] * len(table)] * 7, "align": "left"},
        )
    )
    fig.update_layout(
        title={
            "text": "<b>Sharpness</b>: top eigenvalue of the training loss's Hessian at each solution",
            "font": {"size": 13},
        },
        height=height or 120 + 30 * len(table),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def landscape_figures(
    grids: Sequence[LossGrid] = (),
    curves: Sequence[Interpolation] = (),
    sharpness: pd.DataFrame | None = None,
    *,
    split: str = "val",
) -> dict[str, go.Figure]:
    """``{title: figure}`` for a bundle's figures: each grid's contour and surface, the
    interpolations, the sharpness table."""
    out: dict[str, go.Figure] = {}
    for grid in grids:
        name = grid.plane.title.partition(" · ")[0]
        out[f"{name}: contours"] = landscape_contour_figure(grid, split=split)
        out[f"{name}: surface"] = landscape_surface_figure(grid, split=split)
    if curves:
        out["Linear interpolation"] = interpolation_figure(curves)
    if sharpness is not None and len(sharpness):
        out["Sharpness"] = sharpness_figure(sharpness)
    return out
