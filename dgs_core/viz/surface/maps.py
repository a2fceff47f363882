"""The surface itself: contours with the paths (one panel, overlay, small multiples, animated),
the 3-D view, the clickable start grid and the basin map."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dgs_core.params import invalid
from dgs_core.surfaces.functions import Surface, get_surface
from dgs_core.surfaces.studies import BASIN_DIVERGED, BASIN_ELSEWHERE, BasinMap
from dgs_core.viz.style import PALETTE, optimizer_label
from dgs_core.viz.surface.paths import (
    TRACES_PER_PATH,
    Array,
    Path,
    RunsLike,
    clip_step,
    labelled,
    legend_keys,
    path_data,
    path_traces,
    paths_of,
)

#: Name of the invisible scatter grid that makes a contour clickable.
CLICK_GRID = "click-grid"
COLORSCALE = "Viridis"

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


def surface_colors(surface: Surface, z: Array, log_colors: bool | None) -> _Colors:
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
    colors = surface_colors(surface, z, log_colors)
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


def _start_trace(paths: Sequence[Path], axes: dict[str, str], showlegend: bool = True) -> go.Scatter:
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
    paths = paths_of(runs, events=events)
    check_surface(surf, paths)
    fig = go.Figure()
    traces, coloraxis = _surface_traces(surf, resolution, log_colors)
    if clickable:
        traces.insert(1, click_grid_trace(surf, click_density))
    fig.add_traces(traces)
    if paths:
        fig.add_trace(_start_trace(paths, {"xaxis": "x", "yaxis": "y"}))
    first = len(fig.data)
    for path in paths:
        fig.add_traces(path_traces(path, step))
    fig.add_traces(legend_keys(paths))
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
        animate_paths(
            fig,
            [(path, first + i * TRACES_PER_PATH, "x", "y") for i, path in enumerate(paths)],
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
    items = labelled(runs)
    if not items:
        raise ValueError("Invalid runs: empty (small multiples need at least one run)")
    paths = paths_of(runs, events=events)
    check_surface(surf, paths)
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
    animated: list[tuple[Path, int, str, str]] = []
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
            fig.add_traces(path_traces(path, step, compact=True, **axes))
    fig.add_traces(legend_keys(paths))
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
        animate_paths(fig, animated, step, max_frames)
    return fig


def check_surface(surface: Surface, paths: Sequence[Path]) -> None:
    for path in paths:
        if path.run.surface.name != surface.name:
            raise ValueError(
                f"Invalid runs: {path.label!r} ran on {path.run.surface.name!r} "
                f"(the figure shows {surface.name!r})"
            )


def _ever_drawn(path: Path, trace: int) -> bool:
    """Whether trace ``trace`` of :func:`path_data` has points at some step of the run."""
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
    with np.errstate(over="ignore"):  # a diverging path's last values pass float32's range: ±inf,
        data = np.ascontiguousarray(values, dtype=np.float32)  # which plotly leaves undrawn
    return {"dtype": "f4", "bdata": base64.b64encode(data.tobytes()).decode("ascii")}


def timeline_steps(total: int, max_frames: int = 60) -> list[int]:
    """At most ``max_frames`` steps 0 … total, evenly spaced (both ends included)."""
    count = int(min(total + 1, max(2, max_frames)))
    return sorted({round(float(s)) for s in np.linspace(0, total, count)})


#: Play speeds of the animated figures' buttons: label → milliseconds per frame.
SPEEDS = {"▶ play": 50, "▶ slow": 250}


def animate_paths(
    fig: go.Figure, placed: Sequence[tuple[Path, int, str, str]], step: int | None, max_frames: int
) -> None:
    """Frames that redraw every path at the steps of :func:`timeline_steps`; play buttons at
    :data:`SPEEDS`, pause and one slider (``placed``: each path with the index of its first
    trace and its axes)."""
    total = max(p.run.steps for p, *_ in placed)
    current = total if step is None else int(min(max(step, 0), total))
    steps = sorted({*timeline_steps(total, max_frames), current})  # opens on a frame
    # A frame updates only the traces it lists: leave out those that stay empty all run
    # (no extrapolation, no divergence, …). Each update is plain x/y (see path_data) as
    # plotly typed-array specs in float32: half the bytes of float64, plenty for a screen,
    # and plotly takes a spec as is where a numpy array goes through its per-array checks.
    active = [(path, [j for j in range(TRACES_PER_PATH) if _ever_drawn(path, j)]) for path, *_ in placed]
    indices = [first + j for (_, first, _, _), (_, js) in zip(placed, active, strict=True) for j in js]
    frames = []
    for k in steps:
        data = []
        for path, js in active:
            updates = path_data(path, k)
            data += [{"type": "scatter", **_typed_xy(updates[j])} for j in js]
        frames.append(go.Frame(name=str(k), data=data, traces=indices))
    # Set past plotly's setter, which validates every frame's traces a second time: for
    # 8 optimizers × 80 frames that took 2.2 s of a 6 s build (bench/page_latency.py's machine).
    fig._frame_objs = tuple(frames)
    at = steps.index(current)

    def play(ms: int) -> dict[str, Any]:
        frame = {"duration": ms, "redraw": False}
        return {"frame": frame, "transition": {"duration": 0}, "fromcurrent": True}

    buttons = [{"label": name, "method": "animate", "args": [None, play(ms)]} for name, ms in SPEEDS.items()]
    pause = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}
    buttons.append({"label": "❚❚ pause", "method": "animate", "args": [[None], pause]})
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
                "buttons": buttons,
            }
        ],
        sliders=[
            {
                "active": at,
                "x": 0.0,
                "len": 1.0,
                "y": -0.07,
                "yanchor": "top",
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
    paths = paths_of(runs)
    check_surface(surf, paths)
    xs, ys, z = surf.grid(resolution)
    colors = surface_colors(surf, z, log_colors)
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
        k = clip_step(path, step)
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
    minima_colors = [c for c in PALETTE if c not in ("#D62728", "#7F7F7F")]  # red, grey: reserved
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
