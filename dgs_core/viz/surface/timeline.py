"""The Surface lab's timeline: everything the browser needs to play the runs, in one payload.

The page's timeline component (``app_pages/parts/surface_timeline.js``) draws the paths (one
panel per optimizer, or all on one contour) and the curves along the steps under them on a
canvas, and plays, steps and scrubs them without asking the server for anything. This module
turns the runs into the plain, JSON-ready values it draws: no drawing here, and no Plotly.

What the payload holds (all numbers finite or ``None``):

* ``field``: the surface's colour level over a ``resolution × resolution`` grid, 0 … 254 from
  the lowest to the highest value (``255``: no value), one byte per cell, row-major from the
  bottom row, base64. The browser splits the levels into ``len(palette)`` bands, one colour
  each, with a contour line between bands. The levels follow the other contour figures:
  log10(f − f* + c) on ill-scaled surfaces.
* ``paths``: per path its points, f − f* along them, the steps that overshot or reversed, the
  extrapolated points (ExtraSGD) and the step it diverged at, in the panel of its optimizer.
* ``curves``: the plots under the maps (f − f*, η × scaling per coordinate, the batch size when
  a run grows it), each with its axis range and ticks, every line drawn whole.

>>> from dgs_core.surfaces import compare
>>> runs = compare("rosenbrock", ["sgd", "adam"], steps=200)
>>> data = timeline_data("rosenbrock", runs, view="overlay", step=40)
>>> data["step"], [p["label"] for p in data["paths"]]
(40, ['SGD', 'Adam'])
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import numpy as np
from plotly.colors import sample_colorscale, unlabel_rgb

from dgs_core import metrics
from dgs_core.params import invalid
from dgs_core.surfaces.functions import Surface, get_surface
from dgs_core.viz.style import log_ticks
from dgs_core.viz.surface.maps import COLORSCALE, check_surface, surface_colors
from dgs_core.viz.surface.paths import EVENT_NAMES, Array, Path, RunsLike, events_present, labelled, paths_of

TIMELINE_VIEWS = ("panels", "overlay")
OPENING_LABEL = "▶ first steps, slow"  # the button that replays the opening steps slowly
BANDS = 30  # colour bands of the surface (the other contour figures draw 30 contours)
NO_VALUE = 255  # the level of a cell where f is not finite
CURVE_CEILING = 1e4  # the f − f* plot ends this many times above the highest start


def timeline_data(
    surface: Surface | str,
    runs: RunsLike,
    *,
    view: str = "panels",
    step: int | None = None,
    opening: int = 25,
    resolution: int = 120,
) -> dict[str, Any]:
    """The timeline's payload (see the module docstring).

    Args:
        surface: the surface the runs ran on.
        runs: as for :func:`~dgs_core.viz.surface.contour_figure`.
        view: ``"panels"`` (one contour per optimizer) or ``"overlay"`` (all on one contour).
        step: the step the timeline opens at (``None``: the end of the run).
        opening: the first steps the "first steps, slow" button replays one by one.
        resolution: the colour grid per axis.
    """
    if view not in TIMELINE_VIEWS:
        raise invalid("view", view, f"one of {', '.join(TIMELINE_VIEWS)}")
    surf = get_surface(surface)
    paths = paths_of(runs)
    if not paths:
        raise ValueError("Invalid runs: empty (the timeline needs at least one run)")
    check_surface(surf, paths)
    total = max(p.length - 1 for p in paths)
    groups = [label for label, _ in labelled(runs)] if view == "panels" else [surf.label]
    (x0, x1), (y0, y1) = surf.domain
    data: dict[str, Any] = {
        "view": view,
        "steps": total,
        "step": total if step is None else int(min(max(step, 0), total)),
        "opening": int(min(opening, total)),
        "domain": [x0, x1, y0, y1],
        "xticks": linear_ticks(x0, x1),
        "yticks": linear_ticks(y0, y1),
        **_field(surf, resolution),
        "minima": [list(p) for p in surf.minima],
        "local_minima": [list(p) for p in surf.local_minima],
        "panels": groups,
        "gap_name": "f" if surf.f_min is None else "f − f*",
        "paths": [_path(p, groups.index(p.group) if view == "panels" else 0) for p in paths],
        "keys": [[kind, EVENT_NAMES[kind]] for kind in events_present(paths)],
        "curves": _curves(paths, total),
    }
    # a digest of the content: the browser keeps its place when a rerun sends the same runs
    data["id"] = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return data


# ---------------------------------------------------------------------------------------------
# The surface: colour bands
# ---------------------------------------------------------------------------------------------


def _field(surf: Surface, resolution: int) -> dict[str, Any]:
    _, _, z = surf.grid(resolution)
    colors = surface_colors(surf, z, None)
    values = colors(z)
    finite = np.isfinite(values)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    with np.errstate(invalid="ignore"):
        levels = np.clip(np.round((values - lo) / span * 254), 0, 254)
    levels = np.where(finite, levels, NO_VALUE).astype(np.uint8)
    centres = [(i + 0.5) / BANDS for i in range(BANDS)]
    palette = [
        "#" + "".join(f"{round(c):02x}" for c in unlabel_rgb(rgb))
        for rgb in sample_colorscale(COLORSCALE, centres)
    ]
    if colors.log:  # decades, as the other contour figures' colour bars
        ticks = [[float(d), f"1e{int(d)}"] for d in range(math.ceil(lo), math.floor(hi) + 1)]
        title = f"{colors.title} (log)"
    else:
        ticks, title = linear_ticks(lo, hi), colors.title
    return {
        "field": {"size": resolution, "levels": base64.b64encode(levels.tobytes()).decode("ascii")},
        "palette": palette,
        "colorbar": {"title": title, "lo": lo, "hi": hi, "ticks": ticks},
    }


# ---------------------------------------------------------------------------------------------
# Paths and their events
# ---------------------------------------------------------------------------------------------


def _path(path: Path, panel: int) -> dict[str, Any]:
    run, n = path.run, path.length
    points = run.points[:n, 0]
    diverged = int(run.diverged_at[0])
    extrapolated = None
    if run.extrapolated is not None:  # the point step t's gradient was taken at (t = 1 … n − 1)
        extrapolated = [numbers(p) if np.isfinite(p).all() else None for p in run.extrapolated[: n - 1, 0]]
    return {
        "label": path.label,
        "panel": panel,
        "color": path.color,
        "x": numbers(points[:, 0]),
        "y": numbers(points[:, 1]),
        "gap": numbers(run.gap[:n, 0]),
        "overshoot": path.overshoot_steps.tolist(),  # the step t landed past the valley: point t
        "oscillation": path.oscillation_steps.tolist(),  # step t reversed step t − 1: point t − 1
        "extrapolated": extrapolated,
        "diverged": diverged,
        "message": metrics.divergence_message(diverged) if diverged >= 0 else "",
    }


# ---------------------------------------------------------------------------------------------
# Curves along the steps
# ---------------------------------------------------------------------------------------------


def _curves(paths: list[Path], total: int) -> list[dict[str, Any]]:
    """f − f*, η × scaling per coordinate and (when a run grows it) the batch size."""
    surface = paths[0].run.surface
    gap_lines = [_line(p, p.run.gap[: p.length, 0], first=0) for p in paths]
    gaps = np.concatenate([p.run.gap[: p.length, 0] for p in paths])
    log = bool(np.all(gaps[np.isfinite(gaps)] > 0))
    if log:  # a diverging run's last values (1e150 …) would flatten every other curve: cut them off
        starts = [float(p.run.gap[0, 0]) for p in paths if np.isfinite(p.run.gap[0, 0])]
        gaps = np.minimum(gaps, CURVE_CEILING * max(starts, default=1.0))
    curves = [
        _plot(
            "f(x_t)" if surface.f_min is None else "f(x_t) − f*",
            gap_lines,
            gaps,
            total,
            log=log,
            marks=[_diverged_mark(p) for p in paths if p.run.diverged_at[0] >= 0],
        )
    ]
    for c, coordinate in enumerate("xy"):
        lines, drawn = [], []
        for p in paths:
            run, n = p.run, p.length
            effective = (run.lr[:, :, None] * run.scaling)[: n - 1, 0, c]
            lines.append(_line(p, effective, first=1))
            drawn.append(effective)
            if run.scale is not None:  # DGS's own η·s_t, dotted
                own = (run.lr[:, :, None] * run.scale)[: n - 1, 0, c]
                lines.append({**_line(p, own, first=1), "dash": True, "label": f"{p.label}: η·s_t (own)"})
                drawn.append(own)
        curves.append(_plot(f"η_t × scaling ({coordinate})", lines, np.concatenate(drawn), total, log=True))
    if any(np.ptp(p.run.batch_size[: p.length - 1, 0]) > 0 for p in paths if p.length > 1):
        sizes = [p.run.batch_size[: p.length - 1, 0] for p in paths]
        # batch_size[t] is behind step t + 1's gradient, as lr[t]: drawn from step 1, step-shaped
        lines = [{**_line(p, s, first=1), "stepped": True} for p, s in zip(paths, sizes, strict=True)]
        curves.append(_plot("batch size", lines, np.concatenate(sizes), total, log=True, integer=True))
    return curves


def _line(path: Path, values: Array, *, first: int) -> dict[str, Any]:
    """One curve: ``values[i]`` at step ``first + i``."""
    return {"label": path.label, "color": path.color, "dash": False, "first": first, "y": numbers(values)}


def _diverged_mark(path: Path) -> list[float | None]:
    """Where the ✕ goes: the last finite value (drawn at the plot's edge when cut off)."""
    gap = path.run.gap[: path.length, 0]
    return [path.length - 1, *numbers(gap[-1:])]


def _plot(
    title: str,
    lines: list[dict[str, Any]],
    values: Array,
    total: int,
    *,
    log: bool,
    integer: bool = False,
    marks: list[list[float]] | None = None,
) -> dict[str, Any]:
    """A plot's lines, its y range (log10 of it on a log axis) and ticks; x is the step 0 … total."""
    values = np.asarray(values, dtype=float)
    shown = values[np.isfinite(values) & (values > 0)] if log else values[np.isfinite(values)]
    if shown.size == 0:
        shown = np.array([1.0])
    lo, hi = float(shown.min()), float(shown.max())
    if log:
        found = log_ticks(shown, integer=integer)
        ticks = [[math.log10(v), text] for v, text in zip(found["tickvals"], found["ticktext"], strict=True)]
        lo, hi = math.log10(lo), math.log10(hi)
    else:
        ticks = linear_ticks(lo, hi)
    if hi - lo < 1e-12:  # a flat curve: a band around it
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    return {
        "title": title,
        "log": log,
        "range": [lo - pad, hi + pad],
        "ticks": ticks,
        "xticks": linear_ticks(0, total),
        "lines": lines,
        "marks": marks or [],
    }


# ---------------------------------------------------------------------------------------------
# Numbers for the wire
# ---------------------------------------------------------------------------------------------


def numbers(values: Any) -> list[float | None]:
    """Floats with 7 significant digits (what float32 holds), ``None`` where not finite."""
    flat = np.asarray(values, dtype=float).ravel().tolist()
    return [float(f"{v:.7g}") if math.isfinite(v) else None for v in flat]


def linear_ticks(lo: float, hi: float, count: int = 5) -> list[list[Any]]:
    """About ``count`` round ticks in [lo, hi] (1, 2 or 5 × 10ᵏ apart), as ``[value, label]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [[lo, f"{lo:g}"]] if math.isfinite(lo) else []
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    spacing = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / spacing - 1e-9)
    ticks = []
    for k in range(first, first + count + 3):
        value = float(f"{k * spacing:.12g}")
        if value > hi + 1e-9 * spacing:
            break
        ticks.append([value, f"{value:g}"])
    return ticks
