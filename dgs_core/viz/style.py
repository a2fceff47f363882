"""One look for every figure: each registered optimizer's colour and display name.

A method has the same colour in the Surface, Training, Annealing and Landscape figures, the
study bands and the run comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

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
    "lamb": "#637939",
    "adascale": "#6B6ECF",
    "mars": "#E7969C",
    "lion": "#FFBB78",
    "muon": "#843C39",
    "schedule_free": "#BD9E39",
}
PALETTE = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#17BECF")
"""Colours for labels without an optimizer colour of their own (in order)."""


def rgba(color: str, alpha: float) -> str:
    """``"#RRGGBB"`` with opacity ``alpha``, as plotly's ``"rgba(r,g,b,a)"``."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def optimizer_label(name: str) -> str:
    """The registry's display name for ``name`` (the name itself if unknown)."""
    try:
        from dgs_core.optim import registry

        return registry.get(name).label
    except (ImportError, ValueError):
        return name


# A horizontal legend above the plot: below it, it covers the x-axis labels once the plot is
# wide (sidebar collapsed) or short.
LEGEND_ABOVE = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}

# ▲ means an overshoot (docs/algorithms.md#metrics) in every figure; a loss spike is ✦.
SPIKE_MARKER = {"symbol": "star-diamond", "size": 10, "line": {"width": 1, "color": "black"}}
SPIKE_NAME = "spike ✦ (loss above its running median)"

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def log_ticks(values: object, *, integer: bool = False) -> dict[str, list]:
    """Tick values and labels for a log axis over the finite positive ``values``.

    Plotly's own log ticks label a range under a decade with one "10⁻¹" only, and a few decades
    with bare mantissas ("2, 100, 5, 2, 10, 5"). Here: the coarsest of 10ᵏ, 1-2-5 × 10ᵏ and
    1…9 × 10ᵏ that puts at least three ticks inside the data (else the data's ends join them;
    at most nine: every few decades on a wide range); labels as plain numbers from 0.001 to
    10⁴, else 10ᵏ. ``integer``: whole numbers only (a batch size). Empty when nothing is > 0.
    """
    data = np.asarray(values, dtype=float).ravel()
    data = data[np.isfinite(data) & (data > 0)]
    if data.size == 0:
        return {}
    low, high = float(data.min()), float(data.max())
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks: list[float] = []
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            float(f"{m * 10.0**k:.12g}")
            for k in range(lo, hi + 1)
            for m in mantissas
            if low / 1.0001 <= m * 10.0**k <= high * 1.0001
        ]
        if integer:
            ticks = [t for t in ticks if t >= 1 and t.is_integer()]
        if len(ticks) >= 3:
            break
    if len(ticks) > 9:  # a wide range: every few decades
        every = math.ceil(len(ticks) / 9)
        ticks = ticks[::every]
    if len(ticks) < 3:  # a range too narrow for three of them: its two ends too
        ends = {float(f"{low:.2g}"), float(f"{high:.2g}")}
        ticks = sorted({*ticks, *(t for t in ends if not integer or t.is_integer())})
    plain = all(1e-3 <= t < 1e4 for t in ticks)  # one style of label per axis
    return {"tickvals": ticks, "ticktext": [_tick_label(t, plain) for t in ticks]}


def _tick_label(value: float, plain: bool) -> str:
    if plain:
        return f"{value:g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = float(f"{value / 10.0**exponent:.2g}")
    power = f"10{str(exponent).translate(_SUPERSCRIPT)}"
    return power if mantissa == 1 else f"{mantissa:g}×{power}"


def vertical_lines(fig: go.Figure, xs: Sequence[float], line: dict, *, panels: int = 1) -> go.Figure:
    """A line at each of ``xs`` from the bottom to the top of the first ``panels`` panels of a
    one-column figure (``make_subplots(rows=panels, cols=1)``: panel r draws on axes x r and
    y r), in place; returned.

    The same shapes as plotly's ``add_vline(row="all")``, added in one layout update: that call
    checks the whole subplot grid for each line (about 10 ms each on a two-panel figure; the
    Annealing lab's rerun, with its plateau cuts and phase boundary, took 0.29 s of the
    server's CPU with it and takes 0.19 s with this: ``bench/page_scripts.py``).
    """
    axes = [("x", "y")] + [(f"x{r}", f"y{r}") for r in range(2, panels + 1)]
    lines = [
        {"type": "line", "x0": x, "x1": x, "xref": xa, "y0": 0, "y1": 1, "yref": f"{ya} domain", "line": line}
        for x in xs
        for xa, ya in axes
    ]
    fig.update_layout(shapes=(*fig.layout.shapes, *lines))
    return fig
