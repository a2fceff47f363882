"""The Runs page's Compare tab: two or more runs overlaid, coloured by optimizer and styled by run,
smoothed as TensorBoard smooths, where each ended, and the settings that differ."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from dgs_core.runs.bundle import Bundle
from dgs_core.runs.compare import config_diff
from dgs_core.runs.store import RunInfo
from dgs_core.viz import runs as viz

SMOOTHING_DEFAULT = 0.6  # TensorBoard's default weight


def compare_section(infos: list[RunInfo], labels: dict[str, str], load: Callable[[RunInfo], Bundle]) -> None:
    """Pick two or more runs; their curves overlaid (smoothed), where each ended, what differs."""
    by_id = {i.id: i for i in infos}
    chosen = st.multiselect(
        "Runs to compare (two or more)", list(by_id), format_func=labels.get, key="runs_compare"
    )
    if len(chosen) < 2:
        st.caption("Pick two or more runs: their curves overlaid, where each ended, and what differs.")
        return
    bundles = {labels[run_id].removesuffix(" · unsaved"): load(by_id[run_id]) for run_id in chosen}
    choices = viz.curve_choices(bundles)
    metric_col, smooth_col = st.columns([1, 2])
    metric = metric_col.selectbox("Curve", list(choices), format_func=choices.get, key="runs_compare_metric")
    smoothing = smooth_col.slider(
        "Smoothing",
        0.0,
        0.99,
        SMOOTHING_DEFAULT,
        0.01,
        key="runs_compare_smoothing",
        help="TensorBoard's: an exponential moving average (debiased) of each curve; 0 = the raw values, "
        "which stay drawn faintly behind",
    )
    st.caption("Colour: the optimizer; line style: the run. Hover a step to read every run's value there.")
    st.plotly_chart(viz.overlay_figure(bundles, metric, smoothing=smoothing), key="runs_compare_overlay")
    st.markdown("**Where each run ended**")
    st.dataframe(viz.metric_table(bundles), hide_index=True, width="stretch", key="runs_compare_metrics")
    st.markdown("**Settings that differ** (effective: defaults resolved)")
    everything = st.toggle("Show the equal settings too", key="runs_compare_all")
    diff = config_diff(bundles, all_settings=everything)
    if diff.empty:
        st.caption("The runs have the same settings.")
    else:
        with st.container(key="runs_compare_diff"):
            st.table(diff.set_index("setting"))
