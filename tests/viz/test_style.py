"""One colour per registered optimizer (dgs_core.viz.style)."""

from __future__ import annotations

from dgs_core.optim import registry
from dgs_core.viz.style import OPTIMIZER_COLORS


def test_every_registered_optimizer_has_its_own_colour() -> None:
    names = registry.names()
    assert set(names) <= set(OPTIMIZER_COLORS), sorted(set(names) - set(OPTIMIZER_COLORS))
    colours = [OPTIMIZER_COLORS[name].upper() for name in names]
    assert len(set(colours)) == len(colours)
