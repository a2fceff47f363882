"""Plotly figure builders: run data in, ``go.Figure`` (or a pandas table) out.

Never imports streamlit; the pages call these and hand the figures to ``st.plotly_chart``.

* :mod:`dgs_core.viz.surface` — the Surface lab: contours with trajectories, small
  multiples, the 3-D view, loss and per-coordinate lr plots, basin maps, lr-sensitivity
  curves and the metrics table.
* :mod:`dgs_core.viz.tables` — tables built from the registries (README, selectors).

Submodules are imported on use (``from dgs_core.viz import surface``), so importing one
does not pull in the others.
"""
