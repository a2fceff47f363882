"""Figures of the Surface lab: run data in (:mod:`dgs_core.surfaces`), ``go.Figure`` out.

No streamlit here; the page passes plain values and shows the figures.

Runs are given as a :class:`~dgs_core.surfaces.Run`, a sequence of runs or a mapping
``{label: Run}`` (as :func:`~dgs_core.surfaces.compare` returns; a label that is the
registry name shows the registry's display name, as do runs given without labels). A run with several rows
(many starts or lrs) draws one path per row.

Timeline: every path figure takes ``step`` (draw each path up to that step; ``None`` = the
whole run). ``animate=True`` also adds Plotly frames with a play button and a step slider
inside the figure, which animate in the browser without a rerun; in
:func:`small_multiples_figure` that one slider moves every panel together. The lab's own
timeline is drawn by a canvas component in the browser: :func:`timeline_data` is its payload
(the paths, their events and the curves along the steps).

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

from dgs_core.viz.surface.curves import (
    batch_size_figure,
    loss_figure,
    lr_sensitivity_figure,
    metrics_table,
    scaling_figure,
    tuning_table,
)
from dgs_core.viz.surface.maps import (
    CLICK_GRID,
    COLORSCALE,
    SPEEDS,
    basin_map_figure,
    basin_names,
    click_grid_trace,
    contour_figure,
    small_multiples_figure,
    start_from_selection,
    surface_3d_figure,
    timeline_steps,
)
from dgs_core.viz.surface.timeline import OPENING_LABEL, TIMELINE_VIEWS, timeline_data

__all__ = [
    "CLICK_GRID",
    "COLORSCALE",
    "OPENING_LABEL",
    "SPEEDS",
    "TIMELINE_VIEWS",
    "basin_map_figure",
    "basin_names",
    "batch_size_figure",
    "click_grid_trace",
    "contour_figure",
    "loss_figure",
    "lr_sensitivity_figure",
    "metrics_table",
    "scaling_figure",
    "small_multiples_figure",
    "start_from_selection",
    "surface_3d_figure",
    "timeline_data",
    "timeline_steps",
    "tuning_table",
]
