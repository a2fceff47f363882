"""One look for every figure: each registered optimizer's colour and display name.

A method has the same colour in the Surface, Training, Annealing and Landscape figures, the
study bands and the run comparisons.
"""

from __future__ import annotations

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
