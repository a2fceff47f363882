"""One colour per registered optimizer (dgs_core.viz.style)."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from dgs_core.optim import registry
from dgs_core.viz.style import OPTIMIZER_COLORS, vertical_lines


def test_every_registered_optimizer_has_its_own_colour() -> None:
    names = registry.names()
    assert set(names) <= set(OPTIMIZER_COLORS), sorted(set(names) - set(OPTIMIZER_COLORS))
    colours = [OPTIMIZER_COLORS[name].upper() for name in names]
    assert len(set(colours)) == len(colours)


@pytest.mark.parametrize("panels", [1, 2, 3])
def test_vertical_lines_are_the_shapes_plotly_add_vline_draws_on_every_panel(panels: int) -> None:
    def figure() -> go.Figure:
        fig = make_subplots(rows=panels, cols=1, shared_xaxes=True)
        for row in range(1, panels + 1):
            fig.add_trace(go.Scatter(x=[0, 10], y=[1, 2]), row=row, col=1)
        fig.add_hline(y=1.5)  # a shape already there stays first
        return fig

    line = {"dash": "dot", "color": "#D62728", "width": 1}
    plotly = figure()
    for x in (2, 5.5):
        plotly.add_vline(x=x, line=line, row="all", col=1)
    ours = vertical_lines(figure(), [2, 5.5], line, panels=panels)
    assert ours.layout.shapes == plotly.layout.shapes  # the same shapes, in the same order
