"""Home: what DGS Lab is, and every registered optimizer."""

from pathlib import Path

import streamlit as st

from dgs_core.viz.tables import optimizer_table

st.title("DGS Lab")
st.markdown(
    "An interactive laboratory for deep-learning optimizers. Watch **Dynamic Gradient Scaling "
    "(DGS)**, Adan, LARS, EXTRAP-SGD, AdaGrad-Norm, AdAdaGrad and the classic baselines side by "
    "side: per-parameter importance scores, scaling factors, learning-rate annealing and "
    "trajectories that overshoot on 2-D loss surfaces."
)
st.subheader("Optimizers")
st.caption(
    "An *interpretation* is an optimizer whose paper gives no equation: DGS Lab supplies its own, "
    "documented in docs/algorithms.md and in each optimizer's description."
)
st.dataframe(
    optimizer_table(),
    hide_index=True,
    column_config={
        "paper": st.column_config.LinkColumn("paper"),
        "interpretation": st.column_config.CheckboxColumn("interpretation"),
        "needs closure": st.column_config.CheckboxColumn("needs closure"),
    },
    # the interpretation flag beside the name, where a narrow screen still shows it
    column_order=("optimizer", "interpretation", "summary", "paper", "key", "needs closure"),
    width="stretch",
    height="content",  # every optimizer at once, no scrolling inside the table
)

st.markdown((Path(__file__).resolve().parents[1] / "assets" / "lessons.md").read_text(encoding="utf-8"))
