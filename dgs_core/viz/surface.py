"""Figures of the Surface lab: run data in (:mod:`dgs_core.surfaces`), ``go.Figure`` out.

No streamlit here; the page passes plain values and shows the figures.

Runs are given as a :class:`~dgs_core.surfaces.Run`, a sequence of runs or a mapping
``{label: Run}`` (as :func:`~dgs_core.surfaces.compare` returns; a label that is the
registry name shows the registry's display name, as do runs given without labels). A run with several rows
(many starts or lrs) draws one path per row.

Timeline: every path figure takes ``step`` (draw each path up to that step; ``None`` = the
whole run), so a page can drive all figures from one shared slider. ``animate=True`` also
adds Plotly frames with a play button and a step slider inside the figure, which animate in
the browser without a rerun; in :func:`small_multiples_figure` that one slider moves every
panel together.

Clicking a start: :func:`contour_figure` (and the basin map) can carry an invisible grid of
points over the domain, the trace named :data:`CLICK_GRID`. With
``event = st.plotly_chart(fig, on_select="rerun", selection_mode="points")`` a click on the
plot selects the nearest grid point (or path point); :func:`start_from_selection`
turns ``event.selection`` into ``(x, y)``.

>>> from dgs_core.surfaces import compare
>>> from dgs_core.viz.surface import contour_figure, small_multiples_figure, metrics_table
>>> runs = compare("rosenbrock", ["sgd", "adam"], steps=200)
>>> fig = contour_figure("rosenbrock", runs, step=50)
>>> table = metrics_table(runs)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dgs_core import metrics
from dgs_core.params import invalid
from dgs_core.surfaces.functions import Surface, get_surface
from dgs_core.surfaces.simulator import DEFAULT_TOLERANCE, Run
from dgs_core.surfaces.studies import BASIN_DIVERGED, BASIN_ELSEWHERE, BasinMap, LrSweep

Array = np.ndarray
RunsLike = Run | Sequence[Run] | Mapping[str, Run]

#: Name of the invisible scatter grid that makes a contour clickable.
CLICK_GRID = "click-grid"
COLORSCALE = "Viridis"

# One stable colour per registered optimizer, so a method looks the same in every figure.
OPTIMIZER_COLORS: dict[str, str] = {
    "sgd": "#7F7F7F",
    "momentum": "#1F77B4",
    "nesterov": "#17BECF",
    "adam": "#FF7F0E",
    "adamw": "#BCBD22",
    "adagrad": "#8C564B",
    "dgs": "#D62728",
    "adan": "#9467BD",
    "lars": "#2CA02C",
    "larc": "#98DF8A",
    "extrasgd": "#E377C2",
    "adagrad_norm": "#00A6A6",
    "adadagrad": "#C49C94",
    "adadagrad_norm": "#393B79",
}
_PALETTE = (
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD",
    "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF",
)  # fmt: skip

# Event markers (docs/algorithms.md#metrics), drawn on the paths and keyed in the legend.
_OVERSHOOT = {"symbol": "triangle-up", "size": 9, "line": {"width": 1, "color": "black"}}
_OSCILLATION = {"symbol": "diamond-open", "size": 9, "line": {"width": 2}}
_EXTRAPOLATED = {"symbol": "circle-open", "size": 6, "line": {"width": 1}}
_DIVERGED = {"symbol": "x", "size": 16, "color": "#D62728", "line": {"width": 2, "color": "white"}}
_TRACES_PER_PATH = 7  # line, head, overshoots, oscillations, extrapolation segments, points, divergence


# ---------------------------------------------------------------------------------------------
# Paths: one per row of every run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Path:
    label: str
    group: str  # the panel / legend group: the run's label
    run: Run  # one row
    color: str
    overshoot_steps: Array  # steps t (1-based) that overshot, ascending
    oscillation_steps: Array  # steps t that reversed step t − 1, ascending
    length: int  # valid points


def optimizer_label(name: str) -> str:
    """The registry's display name for ``name`` (the name itself if unknown)."""
    try:
        from dgs_core.optim import registry

        return registry.get(name).label
    except (ImportError, ValueError):
        return name


def _label(key: str, run: Run) -> str:
    """A mapping key that is the run's registry name shows as the registry's display name."""
    return optimizer_label(key) if key == run.optimizer else str(key)


def _items(runs: RunsLike) -> list[tuple[str, Run]]:
    if isinstance(runs, Run):
        runs = [runs]
    if isinstance(runs, Mapping):
        return [(_label(key, run), run) for key, run in runs.items()]
    return [(optimizer_label(run.optimizer), run) for run in runs]


def _paths(runs: RunsLike, *, events: bool = True) -> list[_Path]:
    """One path per row of every run; ``events=False`` leaves the event markers out."""
    paths: list[_Path] = []
    none = np.empty(0, dtype=np.int64)
    used: set[str] = set()
    for label, run in _items(runs):
        preferred = OPTIMIZER_COLORS.get(run.optimizer)
        for r in range(run.rows):
            row = run.row(r) if run.rows > 1 else run
            color = preferred if r == 0 and preferred not in used else None
            color = color or next(
                (c for c in _PALETTE if c not in used), _PALETTE[len(paths) % len(_PALETTE)]
            )
            used.add(color)
            pts = row.points[:, 0]
            overshoots = metrics.overshoot_mask(pts, row.surface.grad(pts))
            oscillations = metrics.oscillation_mask(pts)
            paths.append(
                _Path(
                    label=label if run.rows == 1 else f"{label} · {_row_name(run, r)}",
                    group=label,
                    run=row,
                    color=color,
                    overshoot_steps=np.flatnonzero(overshoots) + 1 if events else none,
                    oscillation_steps=np.flatnonzero(oscillations) + 1 if events else none,
                    length=int(row.length[0]),
                )
            )
    return paths


def _row_name(run: Run, r: int) -> str:
    if len(np.unique(run.lrs)) > 1 and len(np.unique(run.starts, axis=0)) == 1:
        return f"lr {run.lrs[r]:.3g}"
    x, y = run.starts[r]
    name = f"start ({x:.2f}, {y:.2f})"
    return name if len(np.unique(run.lrs)) == 1 else f"{name}, lr {run.lrs[r]:.3g}"


def _clip_step(path: _Path, step: int | None) -> int:
    last = path.length - 1
    return last if step is None else int(min(max(step, 0), last))


def _path_data(path: _Path, step: int | None) -> list[dict[str, Any]]:
    """What changes with the step: x/y (and a few labels) of the path's traces up to ``step``.

    One dict per trace, always the same count and order. Animation frames carry only these:
    Plotly merges a frame into the trace, so styles and the full-length ``customdata`` (step
    numbers, gaps: every prefix indexes it correctly) stay in the figure once.
    """
    k = _clip_step(path, step)
    run = path.run
    pts = run.points[: k + 1, 0]
    # step t (1-based) is entry t − 1 of the event masks; it is visible once t <= k
    over = path.overshoot_steps[path.overshoot_steps <= k]  # where the overshooting step landed
    osc = path.oscillation_steps[path.oscillation_steps <= k] - 1  # the turning point x_{t−1}
    seg_x, seg_y, ex = _extrapolation(run, k)
    diverged = int(run.diverged_at[0])
    shown = diverged >= 0 and k >= diverged - 1
    last = run.points[diverged - 1, 0] if shown else np.empty(0)
    return [
        {"x": pts[:, 0], "y": pts[:, 1]},
        {"x": pts[-1:, 0], "y": pts[-1:, 1], "customdata": [k]},
        {"x": pts[over, 0], "y": pts[over, 1]},
        {"x": pts[osc, 0], "y": pts[osc, 1]},
        {"x": seg_x, "y": seg_y},
        {"x": ex[:, 0], "y": ex[:, 1]},
        {"x": last[:1], "y": last[1:2], "text": [metrics.divergence_message(diverged)] if shown else []},
    ]


def _path_traces(path: _Path, step: int | None, *, xaxis: str = "x", yaxis: str = "y") -> list[go.Scatter]:
    """The path's traces up to ``step`` (see :func:`_path_data`), styled and with hover text."""
    line, head, over, osc, segments, extrapolated, divergence = _path_data(path, step)
    run, label, color = path.run, path.label, path.color
    common = {"legendgroup": label, "xaxis": xaxis, "yaxis": yaxis, "showlegend": False}
    keep = {"unselected": {"marker": {"opacity": 1}}}  # a click elsewhere must not dim the path
    diverged = metrics.divergence_message(int(run.diverged_at[0]))
    gap_name = "f" if run.surface.f_min is None else "f − f*"
    return [
        go.Scatter(
            **line,
            mode="lines+markers",
            line={"color": color, "width": 2},
            marker={"color": color, "size": 3},
            customdata=np.stack([np.arange(path.length), run.gap[: path.length, 0]], axis=-1),
            hovertemplate=f"{label}<br>step %{{customdata[0]}}<br>(%{{x:.4f}}, %{{y:.4f}})"
            f"<br>{gap_name} = %{{customdata[1]:.4g}}<extra></extra>",
            **{**common, "showlegend": True, "name": label},
            **keep,
        ),
        go.Scatter(
            **head,
            mode="markers",
            marker={"color": color, "size": 12, "line": {"width": 2, "color": "white"}},
            hovertemplate=f"{label}<br>step %{{customdata}}<br>(%{{x:.4f}}, %{{y:.4f}})<extra></extra>",
            **common,
            **keep,
        ),
        go.Scatter(
            **over,
            mode="markers",
            marker={**_OVERSHOOT, "color": color},
            customdata=path.overshoot_steps,
            hovertemplate=f"{label}<br>overshoot at step %{{customdata}}<extra></extra>",
            **common,
            **keep,
        ),
        go.Scatter(
            **osc,
            mode="markers",
            marker={**_OSCILLATION, "color": color},
            customdata=path.oscillation_steps,
            hovertemplate=f"{label}<br>direction reversed at step %{{customdata}}<extra></extra>",
            **common,
            **keep,
        ),
        go.Scatter(
            **segments,
            mode="lines",
            hoverinfo="skip",
            line={"color": color, "width": 1, "dash": "dot"},
            **common,
        ),
        go.Scatter(
            **extrapolated,
            mode="markers",
            marker={**_EXTRAPOLATED, "color": color},
            hovertemplate=f"{label}<br>extrapolated point x_t + δ<extra></extra>",
            **common,
            **keep,
        ),
        go.Scatter(
            **divergence,
            mode="markers+text",
            marker=_DIVERGED,
            textposition="top center",
            textfont={"color": _DIVERGED["color"]},
            hovertemplate=f"{label}<br>{diverged}<extra></extra>",
            **common,
        ),
    ]


def _extrapolation(run: Run, k: int) -> tuple[Array, Array, Array]:
    """Dotted segments x_t → x_t + δ and the extrapolated points of steps 1 … k."""
    if run.extrapolated is None or k == 0:
        return np.empty(0), np.empty(0), np.empty((0, 2))
    ex = run.extrapolated[:k, 0]
    ok = np.isfinite(ex).all(axis=-1)
    ex, origin = ex[ok], run.points[:k, 0][ok]
    gaps = np.full(len(ex), np.nan)
    seg_x = np.stack([origin[:, 0], ex[:, 0], gaps], axis=-1).reshape(-1)
    seg_y = np.stack([origin[:, 1], ex[:, 1], gaps], axis=-1).reshape(-1)
    return seg_x, seg_y, ex


def _legend_keys(paths: Sequence[_Path]) -> list[go.Scatter]:
    """Grey legend-only entries that name the event markers present."""
    keys = []
    grey = "#555555"
    if any(len(p.overshoot_steps) for p in paths):
        keys.append(("overshoot ⟨∇f(x⁺), Δ⟩ > 0", {**_OVERSHOOT, "color": grey}))
    if any(len(p.oscillation_steps) for p in paths):
        keys.append(("oscillation cos(Δₜ, Δₜ₋₁) < 0", {**_OSCILLATION, "color": grey}))
    if any(p.run.extrapolated is not None for p in paths):
        keys.append(("extrapolated point (ExtraSGD)", {**_EXTRAPOLATED, "color": grey}))
    if any(p.run.diverged_at[0] >= 0 for p in paths):
        keys.append(("diverged", _DIVERGED))
    return [
        go.Scatter(x=[None], y=[None], mode="markers", name=name, marker=marker, legendgroup=f"key-{name}")
        for name, marker in keys
    ]


# ---------------------------------------------------------------------------------------------
# The surface itself
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Colors:
    """How surface values become colours: log10(f − f* + offset) or f itself."""

    log: bool
    shift: float  # f* (or the grid minimum) subtracted before the log
    offset: float
    title: str

    def __call__(self, values: Array) -> Array:
        values = np.asarray(values, dtype=float)
        if not self.log:
            return values
        with np.errstate(all="ignore"):
            return np.log10(np.maximum(values - self.shift, 0.0) + self.offset)


def _colors_for(surface: Surface, z: Array, log_colors: bool | None) -> _Colors:
    log = surface.log_colors if log_colors is None else log_colors
    if not log:
        return _Colors(False, 0.0, 0.0, "f")
    shift = surface.f_min if surface.f_min is not None else float(np.nanmin(z))
    top = float(np.nanmax(z)) - shift
    # five decades below the largest value: the valley floor saturates, the walls stay readable
    offset = 10.0 ** (math.floor(math.log10(top)) - 5) if top > 0 else 1e-6
    title = "f − f*" if surface.f_min is not None else "f − min f"
    return _Colors(True, shift, offset, title)


def _coloraxis(colors: _Colors, values: Array) -> dict[str, Any]:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    axis: dict[str, Any] = {
        "colorscale": COLORSCALE,
        "cmin": lo,
        "cmax": hi,
        "colorbar": {"title": colors.title},
    }
    if colors.log:
        decades = np.arange(math.ceil(lo), math.floor(hi) + 1)
        axis["colorbar"].update(
            tickvals=decades.tolist(),
            ticktext=[f"1e{int(d)}" for d in decades],
            title=f"{colors.title} (log)",
        )
    return axis


def _surface_traces(
    surface: Surface, resolution: int, log_colors: bool | None, *, xaxis: str = "x", yaxis: str = "y"
) -> tuple[list[go.BaseTraceType], dict[str, Any]]:
    """Contour (on the shared colour axis) and the minima markers; and the colour axis."""
    xs, ys, z = surface.grid(resolution)
    colors = _colors_for(surface, z, log_colors)
    values = colors(z)
    axes = {"xaxis": xaxis, "yaxis": yaxis}
    traces: list[go.BaseTraceType] = [
        go.Contour(
            x=xs,
            y=ys,
            z=values.astype(np.float32),  # float32: half the bytes, plenty for colours
            customdata=z.astype(np.float32),
            coloraxis="coloraxis",
            ncontours=30,
            line={"width": 0.5, "color": "rgba(255,255,255,0.35)"},
            hovertemplate="(%{x:.3f}, %{y:.3f})<br>f = %{customdata:.4g}<extra></extra>",
            name=surface.label,
            showlegend=False,
            **axes,
        )
    ]
    if surface.minima:
        traces.append(_minima_trace(surface.minima, "global minimum", "star", 15, axes))
    if surface.local_minima:
        traces.append(_minima_trace(surface.local_minima, "local minimum", "star-open", 12, axes))
    return traces, _coloraxis(colors, values)


def _minima_trace(points, name: str, symbol: str, size: int, axes: dict[str, str]) -> go.Scatter:
    pts = np.asarray(points)
    return go.Scatter(
        x=pts[:, 0],
        y=pts[:, 1],
        mode="markers",
        name=name,
        legendgroup=name,
        marker={"symbol": symbol, "size": size, "color": "white", "line": {"width": 1.5, "color": "black"}},
        hovertemplate=f"{name}<br>(%{{x:.4f}}, %{{y:.4f}})<extra></extra>",
        unselected={"marker": {"opacity": 1}},
        **axes,
    )


def _start_trace(paths: Sequence[_Path], axes: dict[str, str], showlegend: bool = True) -> go.Scatter:
    starts = np.unique(np.array([p.run.starts[0] for p in paths]).reshape(-1, 2), axis=0)
    return go.Scatter(
        x=starts[:, 0],
        y=starts[:, 1],
        mode="markers",
        name="start",
        legendgroup="start",
        showlegend=showlegend,
        marker={"symbol": "circle-open", "size": 13, "color": "black", "line": {"width": 2.5}},
        hovertemplate="start (%{x:.3f}, %{y:.3f})<extra></extra>",
        unselected={"marker": {"opacity": 1}},
        **axes,
    )


def click_grid_trace(
    surface: Surface | str, density: int = 41, *, xaxis: str = "x", yaxis: str = "y"
) -> go.Scatter:
    """An invisible ``density × density`` grid of selectable points over the domain.

    Named :data:`CLICK_GRID`. Transparent markers still receive hover and click events, so
    with ``st.plotly_chart(fig, on_select="rerun", selection_mode="points")`` a click anywhere
    on the plot selects the nearest grid point; :func:`start_from_selection` reads it.
    """
    surf = get_surface(surface)
    (x0, x1), (y0, y1) = surf.domain
    gx, gy = np.meshgrid(np.linspace(x0, x1, density), np.linspace(y0, y1, density))
    return go.Scatter(
        x=gx.reshape(-1),
        y=gy.reshape(-1),
        mode="markers",
        name=CLICK_GRID,
        showlegend=False,
        marker={"size": 10, "color": "rgba(0,0,0,0)"},
        selected={"marker": {"color": "rgba(0,0,0,0)"}},
        unselected={"marker": {"opacity": 0}},
        hovertemplate="click to start here<br>(%{x:.2f}, %{y:.2f})<extra></extra>",
        xaxis=xaxis,
        yaxis=yaxis,
    )


def start_from_selection(selection: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """``(x, y)`` of the first selected point of a Streamlit plotly selection, else None.

    ``selection`` is ``event.selection`` (or the whole ``event``) of
    ``st.plotly_chart(..., on_select="rerun", selection_mode="points")``: a mapping whose
    ``"points"`` list holds dicts with ``"x"`` and ``"y"``.
    """
    if not selection:
        return None
    if "selection" in selection:
        selection = selection["selection"]
    points = selection.get("points") or []
    for point in points:
        x, y = point.get("x"), point.get("y")
        if (
            isinstance(x, int | float)
            and isinstance(y, int | float)
            and math.isfinite(x)
            and math.isfinite(y)
        ):
            return float(x), float(y)
    return None


# ---------------------------------------------------------------------------------------------
# Contours: one panel, overlay, small multiples
# ---------------------------------------------------------------------------------------------


def contour_figure(
    surface: Surface | str,
    runs: RunsLike = (),
    *,
    step: int | None = None,
    animate: bool = False,
    max_frames: int = 60,
    resolution: int = 150,
    log_colors: bool | None = None,
    clickable: bool = True,
    click_density: int = 41,
    events: bool = True,
    title: str | None = None,
    height: int = 600,
) -> go.Figure:
    """The surface's contour with every run's path overlaid (the overlay view).

    Marks the global (★) and local (☆) minima, each start (○), the position at ``step``
    (filled dot), overshoot events (▲ where the overshooting step landed), oscillations (◇ at
    the turning point), ExtraSGD's extrapolated points (dotted x_t → x_t + δ) and divergence
    (✕ at the last finite point, "diverged at step t"). Colours are log10(f − f*) on
    ill-scaled surfaces (``surface.log_colors``; ``log_colors`` overrides).

    Args:
        surface: the surface (or name); runs must be on it.
        runs: a Run, runs, or ``{label: Run}``.
        step: draw each path up to this step (``None``: all of it).
        animate: add frames, a play button and a step slider (client-side timeline).
        max_frames: at most this many animation frames (evenly spaced steps).
        resolution: contour grid per axis.
        clickable: add the invisible :data:`CLICK_GRID` trace; see
            :func:`click_grid_trace` and :func:`start_from_selection`.
        click_density: grid points per axis of the click grid.
        events: mark overshoots and oscillations (off: paths only).
    """
    surf = get_surface(surface)
    paths = _paths(runs, events=events)
    _check_surface(surf, paths)
    fig = go.Figure()
    traces, coloraxis = _surface_traces(surf, resolution, log_colors)
    if clickable:
        traces.insert(1, click_grid_trace(surf, click_density))
    fig.add_traces(traces)
    if paths:
        fig.add_trace(_start_trace(paths, {"xaxis": "x", "yaxis": "y"}))
    first = len(fig.data)
    for path in paths:
        fig.add_traces(_path_traces(path, step))
    fig.add_traces(_legend_keys(paths))
    (x0, x1), (y0, y1) = surf.domain
    fig.update_layout(
        coloraxis=coloraxis,
        height=height,
        title=title or surf.label,
        xaxis={"range": [x0, x1], "title": "x", "constrain": "domain"},
        yaxis={"range": [y0, y1], "title": "y", "scaleanchor": "x", "constrain": "domain"},
        legend={"orientation": "h", "y": -0.12},
        hovermode="closest",
        clickmode="event+select",
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    if animate and paths:
        _animate(
            fig,
            [(path, first + i * _TRACES_PER_PATH, "x", "y") for i, path in enumerate(paths)],
            step,
            max_frames,
        )
    return fig


def small_multiples_figure(
    surface: Surface | str,
    runs: RunsLike,
    *,
    step: int | None = None,
    animate: bool = False,
    max_frames: int = 60,
    cols: int | None = None,
    resolution: int = 100,
    log_colors: bool | None = None,
    clickable: bool = False,
    events: bool = True,
    panel_height: int = 320,
) -> go.Figure:
    """One panel per run (optimizer), same axes and one shared colour scale.

    Same marks and arguments as :func:`contour_figure`; a run with several rows draws them
    all in its panel. With ``animate=True`` a single slider and play button move every panel.
    """
    surf = get_surface(surface)
    items = _items(runs)
    if not items:
        raise ValueError("Invalid runs: empty (small multiples need at least one run)")
    paths = _paths(runs, events=events)
    _check_surface(surf, paths)
    n = len(items)
    cols = cols or min(n, 4)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[label for label, _ in items],
        shared_xaxes=True,
        shared_yaxes=True,
        horizontal_spacing=0.03,
        vertical_spacing=0.08 if rows > 1 else 0.0,
    )
    (x0, x1), (y0, y1) = surf.domain
    animated: list[tuple[_Path, int, str, str]] = []
    coloraxis: dict[str, Any] = {}
    for i, (label, _) in enumerate(items):
        xaxis, yaxis = ("x", "y") if i == 0 else (f"x{i + 1}", f"y{i + 1}")
        axes = {"xaxis": xaxis, "yaxis": yaxis}
        traces, coloraxis = _surface_traces(surf, resolution, log_colors, **axes)
        for trace in traces[1:]:
            trace.showlegend = i == 0  # one legend entry for the minima
        if clickable:
            traces.insert(1, click_grid_trace(surf, 31, **axes))
        fig.add_traces(traces)
        mine = [p for p in paths if p.group == label]
        fig.add_trace(_start_trace(mine, axes, showlegend=i == 0))
        for path in mine:
            animated.append((path, len(fig.data), xaxis, yaxis))
            fig.add_traces(_path_traces(path, step, **axes))
    fig.add_traces(_legend_keys(paths))
    fig.update_xaxes(range=[x0, x1])
    fig.update_yaxes(range=[y0, y1])
    fig.update_layout(
        coloraxis=coloraxis,
        height=panel_height * rows + 80,
        title=f"{surf.label}: one panel per optimizer",
        legend={"orientation": "h", "y": -0.08},
        hovermode="closest",
        clickmode="event+select",
        margin={"l": 40, "r": 20, "t": 70, "b": 40},
    )
    if animate:
        _animate(fig, animated, step, max_frames)
    return fig


def _check_surface(surface: Surface, paths: Sequence[_Path]) -> None:
    for path in paths:
        if path.run.surface.name != surface.name:
            raise ValueError(
                f"Invalid runs: {path.label!r} ran on {path.run.surface.name!r} "
                f"(the figure shows {surface.name!r})"
            )


def _ever_drawn(path: _Path, trace: int) -> bool:
    """Whether trace ``trace`` of :func:`_path_data` has points at some step of the run."""
    line_or_head = trace < 2
    events = (len(path.overshoot_steps), len(path.oscillation_steps))
    return (
        line_or_head
        or (trace in (2, 3) and events[trace - 2] > 0)
        or (trace in (4, 5) and path.run.extrapolated is not None)
        or (trace == 6 and path.run.diverged_at[0] >= 0)
    )


def _typed_xy(update: dict[str, Any]) -> dict[str, Any]:
    """x and y as plotly typed-array specs ``{"dtype": "f4", "bdata": base64}``."""
    return {key: _typed_array(v) if key in ("x", "y") else v for key, v in update.items()}


def _typed_array(values: Any) -> dict[str, str]:
    data = np.ascontiguousarray(values, dtype=np.float32)
    return {"dtype": "f4", "bdata": base64.b64encode(data.tobytes()).decode("ascii")}


def timeline_steps(total: int, max_frames: int = 60) -> list[int]:
    """At most ``max_frames`` evenly spaced steps 0 … total (both ends included)."""
    count = int(min(total + 1, max(2, max_frames)))
    return sorted({round(float(s)) for s in np.linspace(0, total, count)})


def _animate(
    fig: go.Figure, placed: Sequence[tuple[_Path, int, str, str]], step: int | None, max_frames: int
) -> None:
    """Frames that redraw every path at evenly spaced steps; play/pause and one slider."""
    total = max(p.run.steps for p, *_ in placed)
    steps = timeline_steps(total, max_frames)
    # A frame updates only the traces it lists: leave out those that stay empty all run
    # (no extrapolation, no divergence, …). Each update is plain x/y (see _path_data) as
    # plotly typed-array specs in float32: half the bytes of float64, plenty for a screen,
    # and plotly takes a spec as is where a numpy array goes through its per-array checks.
    active = [(path, [j for j in range(_TRACES_PER_PATH) if _ever_drawn(path, j)]) for path, *_ in placed]
    indices = [first + j for (_, first, _, _), (_, js) in zip(placed, active, strict=True) for j in js]
    frames = []
    for k in steps:
        data = []
        for path, js in active:
            updates = _path_data(path, k)
            data += [{"type": "scatter", **_typed_xy(updates[j])} for j in js]
        frames.append(go.Frame(name=str(k), data=data, traces=indices))
    fig.frames = frames
    current = total if step is None else int(min(max(step, 0), total))
    active = int(np.argmin([abs(k - current) for k in steps]))
    play = {"frame": {"duration": 60, "redraw": False}, "transition": {"duration": 0}, "fromcurrent": True}
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "x": 0.0,
                "y": -0.02,
                "xanchor": "left",
                "yanchor": "top",
                "showactive": False,
                "buttons": [
                    {"label": "▶ play", "method": "animate", "args": [None, play]},
                    {
                        "label": "❚❚ pause",
                        "method": "animate",
                        "args": [[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}],
                    },
                ],
            }
        ],
        sliders=[
            {
                "active": active,
                "x": 0.15,
                "len": 0.85,
                "y": -0.02,
                "currentvalue": {"prefix": "step "},
                "steps": [
                    {
                        "label": str(k),
                        "method": "animate",
                        "args": [[str(k)], {"mode": "immediate", "frame": {"duration": 0, "redraw": False}}],
                    }
                    for k in steps
                ],
            }
        ],
    )


# ---------------------------------------------------------------------------------------------
# Along the steps: loss, per-coordinate learning rates, batch size
# ---------------------------------------------------------------------------------------------


def loss_figure(
    runs: RunsLike, *, step: int | None = None, log_y: bool | None = None, height: int = 380
) -> go.Figure:
    """f(x_t) − f* against the step (log scale when every value is positive).

    Divergence is marked (✕ at the last finite value); ``step`` draws a vertical cursor.
    """
    paths = _paths(runs)
    fig = go.Figure()
    positive = True
    for path in paths:
        gap = path.run.gap[: path.length, 0]
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
                    marker=_DIVERGED,
                    hovertemplate=f"{path.label}<br>{metrics.divergence_message(diverged)}<extra></extra>",
                )
            )
    surface = paths[0].run.surface if paths else None
    ylabel = "f(x_t)" if surface is None or surface.f_min is None else "f(x_t) − f*"
    use_log = positive if log_y is None else log_y
    fig.update_layout(
        height=height,
        xaxis_title="step t",
        yaxis={"title": ylabel, "type": "log" if use_log else "linear", "exponentformat": "power"},
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
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
    paths = _paths(runs)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, subplot_titles=("x", "y"))
    for path in paths:
        run = path.run
        steps = np.arange(1, path.length)
        effective = (run.lr[:, :, None] * run.scaling)[: path.length - 1, 0]
        own = None if run.scale is None else (run.lr[:, :, None] * run.scale)[: path.length - 1, 0]
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
    fig.update_yaxes(type="log", exponentformat="power", title_text="η_t × scaling")
    fig.update_xaxes(title_text="step t", row=2, col=1)
    fig.update_layout(
        height=height, legend={"orientation": "h", "y": -0.15}, margin={"l": 60, "r": 20, "t": 40, "b": 40}
    )
    if step is not None:
        fig.add_vline(x=step, line={"dash": "dot", "color": "#555555"})
    return fig


def batch_size_figure(runs: RunsLike, *, step: int | None = None, height: int = 300) -> go.Figure:
    """The batch size behind each step's gradient (grows for the AdAdaGrad family)."""
    fig = go.Figure()
    for path in _paths(runs):
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
        yaxis={"title": "batch size", "type": "log"},
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
    )
    if step is not None:
        fig.add_vline(x=step, line={"dash": "dot", "color": "#555555"})
    return fig


# ---------------------------------------------------------------------------------------------
# 3-D view
# ---------------------------------------------------------------------------------------------


def surface_3d_figure(
    surface: Surface | str,
    runs: RunsLike = (),
    *,
    step: int | None = None,
    resolution: int = 80,
    log_colors: bool | None = None,
    height: int = 600,
) -> go.Figure:
    """The surface in 3-D with the paths lying on it.

    Height and colour share one transform: log10(f − f* + c) on ill-scaled surfaces (else the
    valley floor is invisible under the walls), f elsewhere.
    """
    surf = get_surface(surface)
    paths = _paths(runs)
    _check_surface(surf, paths)
    xs, ys, z = surf.grid(resolution)
    colors = _colors_for(surf, z, log_colors)
    values = colors(z)
    lift = 0.01 * float(np.nanmax(values) - np.nanmin(values))  # keep paths visible above the mesh
    fig = go.Figure(
        go.Surface(
            x=xs,
            y=ys,
            z=values,
            customdata=z,
            coloraxis="coloraxis",
            opacity=0.9,
            hovertemplate="(%{x:.3f}, %{y:.3f})<br>f = %{customdata:.4g}<extra></extra>",
        )
    )
    for path in paths:
        k = _clip_step(path, step)
        pts = path.run.points[: k + 1, 0]
        fig.add_trace(
            go.Scatter3d(
                x=pts[:, 0],
                y=pts[:, 1],
                z=colors(path.run.loss[: k + 1, 0]) + lift,
                mode="lines+markers",
                name=path.label,
                line={"color": path.color, "width": 5},
                marker={"size": 2, "color": path.color},
            )
        )
    for minima, name in ((surf.minima, "global minimum"), (surf.local_minima, "local minimum")):
        if minima:
            pts = np.asarray(minima)
            fig.add_trace(
                go.Scatter3d(
                    x=pts[:, 0],
                    y=pts[:, 1],
                    z=colors(surf.value(pts)) + lift,
                    mode="markers",
                    name=name,
                    marker={
                        "size": 6,
                        "color": "white",
                        "symbol": "diamond",
                        "line": {"width": 1, "color": "black"},
                    },
                )
            )
    ztitle = f"log10({colors.title})" if colors.log else "f"
    fig.update_layout(
        coloraxis=_coloraxis(colors, values),
        height=height,
        title=surf.label,
        scene={"xaxis_title": "x", "yaxis_title": "y", "zaxis_title": ztitle},
        legend={"orientation": "h", "y": -0.05},
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    return fig


# ---------------------------------------------------------------------------------------------
# Instant views: basin map and lr sensitivity
# ---------------------------------------------------------------------------------------------

_BASIN_KINDS = ("basin", "steps", "gap")


def basin_map_figure(
    basin: BasinMap,
    *,
    kind: str = "basin",
    clickable: bool = True,
    click_density: int = 41,
    height: int = 560,
) -> go.Figure:
    """Heatmap over the grid of starts.

    ``kind``: ``"basin"`` — which minimum each start ends at (categorical: each listed
    minimum, "elsewhere", "diverged"); ``"steps"`` — steps to ε (blank: never reached);
    ``"gap"`` — final f − f* (log colours; blank: diverged). Minima are starred; the click
    grid (see :func:`click_grid_trace`) lets the page start a run from a clicked pixel.
    """
    if kind not in _BASIN_KINDS:
        raise invalid("kind", kind, f"one of {', '.join(_BASIN_KINDS)}")
    surf = basin.surface
    label = optimizer_label(basin.optimizer)
    if kind == "basin":
        heat, title = _basin_heatmap(basin)
    elif kind == "steps":
        steps = np.where(basin.steps_to_tolerance >= 0, basin.steps_to_tolerance, np.nan).astype(float)
        heat = go.Heatmap(
            x=basin.xs,
            y=basin.ys,
            z=steps,
            colorscale="Viridis_r",
            zmin=0,
            zmax=basin.steps,
            colorbar={"title": f"steps to ε={basin.tolerance:g}"},
            hovertemplate="start (%{x:.2f}, %{y:.2f})<br>%{z} steps<extra></extra>",
        )
        title = f"steps to f − f* < {basin.tolerance:g} (blank: not within {basin.steps} steps)"
    else:
        with np.errstate(all="ignore"):
            gap = np.where(np.isfinite(basin.final_gap), np.log10(np.maximum(basin.final_gap, 1e-16)), np.nan)
        heat = go.Heatmap(
            x=basin.xs,
            y=basin.ys,
            z=gap,
            customdata=basin.final_gap,
            colorscale="Viridis",
            colorbar={"title": "log10 final gap"},
            hovertemplate="start (%{x:.2f}, %{y:.2f})<br>final gap %{customdata:.3g}<extra></extra>",
        )
        title = f"final f − f* after {basin.steps} steps (blank: diverged)"
    fig = go.Figure(heat)
    if clickable:
        fig.add_trace(click_grid_trace(surf, click_density))
    axes = {"xaxis": "x", "yaxis": "y"}
    if surf.minima:
        fig.add_trace(_minima_trace(surf.minima, "global minimum", "star", 15, axes))
    if surf.local_minima:
        fig.add_trace(_minima_trace(surf.local_minima, "local minimum", "star-open", 12, axes))
    (x0, x1), (y0, y1) = surf.domain
    fig.update_layout(
        height=height,
        title=f"{label} on {surf.label}: {title}",
        xaxis={"range": [x0, x1], "title": "start x", "constrain": "domain"},
        yaxis={"range": [y0, y1], "title": "start y", "scaleanchor": "x", "constrain": "domain"},
        legend={"orientation": "h", "y": -0.12},
        clickmode="event+select",
        margin={"l": 50, "r": 20, "t": 60, "b": 40},
    )
    return fig


def basin_names(surface: Surface) -> dict[int, str]:
    """Category → name for the basin map (minima by position; elsewhere; diverged)."""
    names = {BASIN_DIVERGED: "diverged", BASIN_ELSEWHERE: "elsewhere"}
    for i, (x, y) in enumerate(surface.all_minima):
        kind = "global" if i < len(surface.minima) else "local"
        names[i] = f"{kind} min ({x:.2f}, {y:.2f})"
    return names


def _basin_heatmap(basin: BasinMap) -> tuple[go.Heatmap, str]:
    names = basin_names(basin.surface)
    codes = sorted(names)  # −2, −1, 0, 1, …
    index = {code: i for i, code in enumerate(codes)}
    z = np.vectorize(index.get)(basin.basin).astype(float)
    minima_colors = [c for c in _PALETTE if c not in ("#D62728", "#7F7F7F")]  # red, grey: reserved
    palette = ["#D62728", "#DDDDDD", *[minima_colors[i % len(minima_colors)] for i in range(len(codes) - 2)]]
    n = len(codes)
    scale = []
    for i, color in enumerate(palette):  # one flat band per category
        scale += [[i / n, color], [(i + 1) / n, color]]
    text = np.vectorize(names.get)(basin.basin)
    heat = go.Heatmap(
        x=basin.xs,
        y=basin.ys,
        z=z,
        zmin=-0.5,
        zmax=n - 0.5,
        colorscale=scale,
        text=text,
        colorbar={"tickvals": list(range(n)), "ticktext": [names[c] for c in codes], "title": "ends at"},
        hovertemplate="start (%{x:.2f}, %{y:.2f})<br>%{text}<extra></extra>",
    )
    return heat, f"where each start ends after {basin.steps} steps"


def lr_sensitivity_figure(
    sweeps: LrSweep | Mapping[str, LrSweep],
    *,
    metric: str = "final_gap",
    criterion: str = "steps_to_tolerance",
    height: int = 420,
) -> go.Figure:
    """Final gap (or steps to ε) against the learning rate, log-x, one curve per optimizer.

    Diverged learning rates sit on a "diverged" row of ✕ markers at the top; each curve's
    default lr is ringed (○) and its tuned lr (best by ``criterion``) starred (★).
    """
    if metric not in ("final_gap", "steps_to_tolerance"):
        raise invalid("metric", metric, "final_gap or steps_to_tolerance")
    if isinstance(sweeps, LrSweep):
        sweeps = {sweeps.run.optimizer: sweeps}
    items = {_label(key, sweep.run): sweep for key, sweep in sweeps.items()}
    fig = go.Figure()
    finite_values: list[float] = []
    curves = []
    for i, (label, sweep) in enumerate(items.items()):
        color = OPTIMIZER_COLORS.get(sweep.run.optimizer, _PALETTE[i % len(_PALETTE)])
        if metric == "final_gap":
            y = np.where(sweep.diverged_at >= 0, np.nan, sweep.final_gap).astype(float)
        else:
            y = np.where(sweep.steps_to_tolerance >= 0, sweep.steps_to_tolerance, np.nan).astype(float)
        finite_values += [v for v in y if np.isfinite(v) and v > 0]
        curves.append((label, sweep, color, y))
    top = 10 * max(finite_values) if finite_values else 1.0
    for label, sweep, color, y in curves:
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
        diverged = sweep.diverged_at >= 0
        if diverged.any():
            fig.add_trace(
                go.Scatter(
                    x=sweep.lrs[diverged],
                    y=np.full(int(diverged.sum()), top),
                    mode="markers",
                    legendgroup=label,
                    showlegend=False,
                    marker={**_DIVERGED, "color": color, "size": 11},
                    customdata=sweep.diverged_at[diverged],
                    hovertemplate=f"{label}<br>lr %{{x:.3g}}<br>diverged at step %{{customdata}}"
                    "<extra></extra>",
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
        yaxis={"title": ytitle, "type": "log", "exponentformat": "power"},
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
    )
    if any((s.diverged_at >= 0).any() for _, s, _, _ in curves):
        fig.add_annotation(
            x=1, xref="paper", y=math.log10(top), text="diverged", showarrow=False, xanchor="right"
        )
    return fig


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
    """docs/algorithms.md#metrics metrics, one row per path: final gap, steps to ε, overshoots, oscillations,
    spikes K and divergence ("diverged at step t", empty if it did not)."""
    rows = []
    for label, run in _items(runs):
        values = run.metrics(tolerance=tolerance, window=window, tau=tau)
        for r in range(run.rows):
            reached = int(values["steps_to_tolerance"][r])
            rows.append(
                {
                    "optimizer": label if run.rows == 1 else f"{label} · {_row_name(run, r)}",
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
        frame[f"steps to ε={tolerance:g}"] = frame[f"steps to ε={tolerance:g}"].astype("Int64")
    return frame


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
            frame[column] = frame[column].astype("Int64")
    return frame
