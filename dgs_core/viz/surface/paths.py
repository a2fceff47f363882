"""Paths of the Surface lab's figures: one per row of every run, with its event markers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dgs_core import metrics
from dgs_core.surfaces.simulator import Run
from dgs_core.viz.style import OPTIMIZER_COLORS, PALETTE, optimizer_label

Array = np.ndarray
RunsLike = Run | Sequence[Run] | Mapping[str, Run]


# Event markers (docs/algorithms.md#metrics), drawn on the paths and keyed in the legend.
_OVERSHOOT = {"symbol": "triangle-up", "size": 9, "line": {"width": 1, "color": "black"}}
_OSCILLATION = {"symbol": "diamond-open", "size": 9, "line": {"width": 2}}
_EXTRAPOLATED = {"symbol": "circle-open", "size": 6, "line": {"width": 1}}
DIVERGED = {"symbol": "x", "size": 16, "color": "#D62728", "line": {"width": 2, "color": "white"}}
TRACES_PER_PATH = 7  # line, head, overshoots, oscillations, extrapolation segments, points, divergence

# ---------------------------------------------------------------------------------------------
# Paths: one per row of every run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Path:
    label: str
    group: str  # the panel / legend group: the run's label
    run: Run  # one row
    color: str
    overshoot_steps: Array  # steps t (1-based) that overshot, ascending
    oscillation_steps: Array  # steps t that reversed step t − 1, ascending
    length: int  # valid points


def label_of(key: str, run: Run) -> str:
    """A mapping key that is the run's registry name shows as the registry's display name."""
    return optimizer_label(key) if key == run.optimizer else str(key)


def labelled(runs: RunsLike) -> list[tuple[str, Run]]:
    if isinstance(runs, Run):
        runs = [runs]
    if isinstance(runs, Mapping):
        return [(label_of(key, run), run) for key, run in runs.items()]
    return [(optimizer_label(run.optimizer), run) for run in runs]


def paths_of(runs: RunsLike, *, events: bool = True) -> list[Path]:
    """One path per row of every run; ``events=False`` leaves the event markers out."""
    paths: list[Path] = []
    none = np.empty(0, dtype=np.int64)
    used: set[str] = set()
    for label, run in labelled(runs):
        preferred = OPTIMIZER_COLORS.get(run.optimizer)
        for r in range(run.rows):
            row = run.row(r) if run.rows > 1 else run
            color = preferred if r == 0 and preferred not in used else None
            color = color or next((c for c in PALETTE if c not in used), PALETTE[len(paths) % len(PALETTE)])
            used.add(color)
            pts = row.points[:, 0]
            overshoots = metrics.overshoot_mask(pts, row.surface.grad(pts))
            oscillations = metrics.oscillation_mask(pts)
            paths.append(
                Path(
                    label=label if run.rows == 1 else f"{label} · {row_name(run, r)}",
                    group=label,
                    run=row,
                    color=color,
                    overshoot_steps=np.flatnonzero(overshoots) + 1 if events else none,
                    oscillation_steps=np.flatnonzero(oscillations) + 1 if events else none,
                    length=int(row.length[0]),
                )
            )
    return paths


def row_name(run: Run, r: int) -> str:
    if len(np.unique(run.lrs)) > 1 and len(np.unique(run.starts, axis=0)) == 1:
        return f"lr {run.lrs[r]:.3g}"
    x, y = run.starts[r]
    name = f"start ({x:.2f}, {y:.2f})"
    return name if len(np.unique(run.lrs)) == 1 else f"{name}, lr {run.lrs[r]:.3g}"


def clip_step(path: Path, step: int | None) -> int:
    last = path.length - 1
    return last if step is None else int(min(max(step, 0), last))


def path_data(path: Path, step: int | None) -> list[dict[str, Any]]:
    """What changes with the step: x/y (and a few labels) of the path's traces up to ``step``.

    One dict per trace, always the same count and order. Animation frames carry only these:
    Plotly merges a frame into the trace, so styles and the full-length ``customdata`` (step
    numbers, gaps: every prefix indexes it correctly) stay in the figure once.
    """
    k = clip_step(path, step)
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


def path_traces(
    path: Path, step: int | None, *, xaxis: str = "x", yaxis: str = "y", compact: bool = False
) -> list[go.Scatter]:
    """The path's traces up to ``step`` (see :func:`path_data`), styled and with hover text.

    ``compact``: smaller, translucent event markers (small panels: full-size ones bury the path).
    """
    line, head, over, osc, segments, extrapolated, divergence = path_data(path, step)
    events = {"size": 6, "opacity": 0.6} if compact else {}
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
            marker={**_OVERSHOOT, "color": color, **events},
            customdata=path.overshoot_steps,
            hovertemplate=f"{label}<br>overshoot at step %{{customdata}}<extra></extra>",
            **common,
            **keep,
        ),
        go.Scatter(
            **osc,
            mode="markers",
            marker={**_OSCILLATION, "color": color, **events},
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
            marker=DIVERGED,
            textposition="top center",
            textfont={"color": DIVERGED["color"]},
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


#: What each event marker means (docs/algorithms.md#metrics): the legend's words in every figure.
EVENT_NAMES = {
    "overshoot": "overshoot ⟨∇f(x⁺), Δ⟩ > 0",
    "oscillation": "oscillation cos(Δₜ, Δₜ₋₁) < 0",
    "extrapolated": "extrapolated point (ExtraSGD)",
    "diverged": "diverged",
}


def events_present(paths: Sequence[Path]) -> list[str]:
    """The kinds of event marker (keys of :data:`EVENT_NAMES`) the paths draw, in that order."""
    present = {
        "overshoot": any(len(p.overshoot_steps) for p in paths),
        "oscillation": any(len(p.oscillation_steps) for p in paths),
        "extrapolated": any(p.run.extrapolated is not None for p in paths),
        "diverged": any(p.run.diverged_at[0] >= 0 for p in paths),
    }
    return [kind for kind, shown in present.items() if shown]


def legend_keys(paths: Sequence[Path]) -> list[go.Scatter]:
    """Grey legend-only entries that name the event markers present."""
    grey = "#555555"
    markers = {
        "overshoot": {**_OVERSHOOT, "color": grey},
        "oscillation": {**_OSCILLATION, "color": grey},
        "extrapolated": {**_EXTRAPOLATED, "color": grey},
        "diverged": DIVERGED,
    }
    keys = [(EVENT_NAMES[kind], markers[kind]) for kind in events_present(paths)]
    return [
        go.Scatter(x=[None], y=[None], mode="markers", name=name, marker=marker, legendgroup=f"key-{name}")
        for name, marker in keys
    ]
