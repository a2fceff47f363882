"""The Surface lab's timeline as one figure that plays in the browser.

The paths (small multiples or the overlay) on top and the curves along the steps under them
(f − f*, η × scaling per coordinate, the batch size where a run grows it), all driven by one
in-figure slider and play buttons through Plotly animation frames: playing, moving the slider
and the speed buttons never ask the server for anything. Each curve is drawn whole; a dotted
cursor per curve moves with the frames to the step the paths show.

>>> from dgs_core.surfaces import compare
>>> runs = compare("rosenbrock", ["sgd", "adam"], steps=200)
>>> fig = timeline_figure("rosenbrock", runs, view="overlay", step=40)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dgs_core.params import invalid
from dgs_core.surfaces.functions import Surface, get_surface
from dgs_core.viz.surface.curves import batch_size_figure, loss_figure, scaling_figure
from dgs_core.viz.surface.maps import animate_paths, contour_figure, small_multiples_figure
from dgs_core.viz.surface.paths import Path, RunsLike, paths_of

TIMELINE_VIEWS = ("panels", "overlay")
CURSOR = {"dash": "dot", "color": "#555555", "width": 1.5}
CURVES_HEIGHT = 260  # pixels of the curves' row under the paths
LEGEND_ROW = 28  # pixels of one legend row (four entries a row on a laptop screen)
CONTROLS = 110  # pixels of the play buttons and the slider under the curves
GAP = 70  # pixels between the paths and the curves (the panels' x labels, the curves' titles)


def timeline_figure(
    surface: Surface | str,
    runs: RunsLike,
    *,
    view: str = "panels",
    step: int | None = None,
    max_frames: int = 80,
    opening: int = 25,
    cols: int | None = None,
    resolution: int = 80,
    panel_height: int = 300,
    map_height: int = 620,
) -> go.Figure:
    """Paths and curves in one figure, animated client-side (see the module docstring).

    Args:
        surface, runs: as for :func:`~dgs_core.viz.surface.contour_figure`.
        view: ``"panels"`` (one contour per optimizer) or ``"overlay"`` (all on one contour).
        step: the step the figure opens at (``None``: the end of the run).
        max_frames: at most this many frames; ``opening`` of them are the first steps one by
            one (slow motion where overshoot happens), the rest evenly spaced to the end.
        cols: panels per row (``view="panels"``).
        resolution: contour grid per axis.
        panel_height, map_height: pixels of one panel row / of the overlay.
    """
    if view not in TIMELINE_VIEWS:
        raise invalid("view", view, f"one of {', '.join(TIMELINE_VIEWS)}")
    surf = get_surface(surface)
    if view == "panels":
        fig = small_multiples_figure(
            surf, runs, step=step, clickable=True, resolution=resolution, cols=cols, panel_height=panel_height
        )
    else:
        fig = contour_figure(surf, runs, step=step, resolution=resolution, height=map_height)
    paths = paths_of(runs)
    placed = _placed_paths(fig, paths)
    curves = [loss_figure(runs), scaling_figure(runs)]
    if any(p.run.batch_size is not None and np.ptp(p.run.batch_size[: p.length - 1, 0]) > 0 for p in paths):
        curves.append(batch_size_figure(runs))
    legend = sum(1 for t in fig.data if t.showlegend is not False and t.type == "scatter")
    top = 40 + LEGEND_ROW * math.ceil(legend / 4)  # the legend's rows in the top margin
    map_px = int(fig.layout.height) - 80 if view == "panels" else int(fig.layout.height) - 90
    paper = map_px + GAP + CURVES_HEIGHT + CONTROLS  # the plotting area, margins aside
    bottom = CONTROLS / paper  # the buttons and the slider under the curves
    curves_top = bottom + CURVES_HEIGHT / paper
    maps_low = curves_top + GAP / paper
    _squeeze_maps(fig, low=maps_low)
    fig.layout.meta = {"map_traces": len(fig.data)}  # a click on a trace from here on is no start
    cursors = _add_curves(fig, curves, low=bottom, high=curves_top)
    fig.update_layout(  # the legend in the top margin: over no plot or label, whatever the width
        height=paper + top + 20,
        title=None,  # the page's header names the surface
        margin={"l": 50, "r": 20, "t": top, "b": 20},
        legend={"orientation": "h", "x": 0, "y": 1.0, "yref": "container", "yanchor": "top"},
    )
    fig.layout.coloraxis.colorbar.update(y=maps_low, yanchor="bottom", len=1 - maps_low)
    animate_paths(fig, placed, step, max_frames, opening=opening, cursors=cursors)
    return fig


def _placed_paths(fig: go.Figure, paths: list[Path]) -> list[tuple[Path, int, str, str]]:
    """Each path with the index of its first trace (its line: the one with a legend entry)."""
    lines = [
        i
        for i, t in enumerate(fig.data)
        if t.type == "scatter" and t.mode == "lines+markers" and t.showlegend
    ]
    return [
        (path, i, fig.data[i].xaxis or "x", fig.data[i].yaxis or "y")
        for path, i in zip(paths, lines, strict=True)
    ]


def _squeeze_maps(fig: go.Figure, *, low: float) -> None:
    """Move every map axis into the vertical band [low, 1] (the curves go under it)."""
    for name in fig.layout:
        if name.startswith("yaxis"):
            axis = fig.layout[name]
            a, b = axis.domain or (0.0, 1.0)
            axis.domain = (low + a * (1 - low), low + b * (1 - low))
    for note in fig.layout.annotations:  # the panels' titles sit on their axes' tops
        if note.yref == "paper" and note.y is not None:
            note.y = low + note.y * (1 - low)


def _add_curves(fig: go.Figure, curves: list[go.Figure], *, low: float, high: float) -> list[dict[str, Any]]:
    """Each curve figure's axes as one column of the band [low, high]; returns the cursors."""
    used = [int(n[5:] or 1) for n in fig.layout if n.startswith("xaxis")]
    index = max(used, default=1) + 1
    columns = sum(_axis_count(c) for c in curves)
    width = 1.0 / columns
    cursors = []
    column = 0
    for curve in curves:
        names = {}
        for k in range(_axis_count(curve)):
            source = "" if k == 0 else str(k + 1)
            x, y = f"x{index}", f"y{index}"
            names[f"x{source}"], names[f"y{source}"] = x, y
            src_x, src_y = curve.layout[f"xaxis{source}"], curve.layout[f"yaxis{source}"]
            title = None
            if curve.layout.annotations and len(curve.layout.annotations) > k:
                title = curve.layout.annotations[k].text  # a subplot's title: the coordinate
            ytitle = src_y.title.text or curve.layout.yaxis.title.text
            fig.layout[f"xaxis{index}"] = {
                "domain": (column * width + 0.09, (column + 1) * width - 0.01),
                "anchor": y,
                "title": {"text": "step t"},
            }
            fig.layout[f"yaxis{index}"] = {
                "domain": (low, high),
                "anchor": x,
                "type": src_y.type,
                "exponentformat": src_y.exponentformat,
                "title": {"text": f"{ytitle} ({title})" if title else ytitle},
            }
            if src_x.type:
                fig.layout[f"xaxis{index}"].type = src_x.type
            column += 1
            index += 1
        for trace in curve.data:
            trace.update(xaxis=names[trace.xaxis or "x"], yaxis=names[trace.yaxis or "y"], showlegend=False)
            trace.legendgroup = trace.legendgroup or trace.name
            fig.add_trace(trace)
        for source_y, target_y in ((k, v) for k, v in names.items() if k.startswith("y")):
            target_x = names["x" + source_y[1:]]
            values = [
                v
                for t in curve.data
                if (t.yaxis or "y") == source_y and t.y is not None
                for v in np.asarray(t.y, dtype=float)
                if np.isfinite(v) and (fig.layout[f"yaxis{target_y[1:]}"].type != "log" or v > 0)
            ]
            lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
            cursors.append({"index": len(fig.data), "y": [lo, hi]})
            cursor = go.Scatter(
                x=[None, None],
                y=[lo, hi],
                mode="lines",
                line=CURSOR,
                hoverinfo="skip",
                showlegend=False,
                xaxis=target_x,
                yaxis=target_y,
                name="step",
            )
            fig.add_trace(cursor)
    return cursors


def _axis_count(fig: go.Figure) -> int:
    return sum(1 for name in fig.layout if name.startswith("yaxis"))
