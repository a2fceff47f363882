"""One look for every figure: each registered optimizer's colour and display name.

A method has the same colour in the Surface, Training, Annealing and Landscape figures, the
study bands and the run comparisons.
"""

from __future__ import annotations

import math

import numpy as np

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
PALETTE = (
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD",
    "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF",
)  # fmt: skip


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
    with bare mantissas ("2, 100, 5, 2, 10, 5"). Here: 1-2-5 steps within two decades, every
    decade (or every few) beyond; labels as plain numbers from 0.001 to 10⁴, else 10ᵏ.
    ``integer``: only whole numbers (a batch size). Empty when there is nothing positive.
    """
    data = np.asarray(values, dtype=float).ravel()
    data = data[np.isfinite(data) & (data > 0)]
    if data.size == 0:
        return {}
    lo, hi = math.floor(math.log10(data.min())), math.ceil(math.log10(data.max()))
    hi = max(hi, lo + 1)
    if hi - lo <= 2:
        ticks = [m * 10.0**k for k in range(lo, hi + 1) for m in (1, 2, 5)]
    else:
        every = max(1, math.ceil((hi - lo) / 8))
        ticks = [10.0**k for k in range(lo, hi + 1, every)]
    low, high = data.min(), data.max()
    ticks = [t for t in ticks if low / 1.0001 <= t <= high * 1.0001 or t in (10.0**lo, 10.0**hi)]
    if integer:
        ticks = [t for t in ticks if t >= 1 and float(t).is_integer()]
    plain = all(1e-3 <= t < 1e4 for t in ticks)  # one style of label per axis
    return {"tickvals": ticks, "ticktext": [_tick_label(t, plain) for t in ticks]}


def _tick_label(value: float, plain: bool) -> str:
    if plain:
        return f"{value:g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10.0**exponent)
    power = f"10{str(exponent).translate(_SUPERSCRIPT)}"
    return power if mantissa == 1 else f"{mantissa}×{power}"
