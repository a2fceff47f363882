"""Home, the front door: a live race on Rosenbrock, "start here" into lesson 1, one card per lab
with the question it answers, and every registered optimizer.

The race is the Surface lab's own simulation (its cache) and figure; the sentence under it is
read off the runs (:func:`dgs_core.viz.lessons.race_caption`), so Home claims nothing its
figure does not show.
"""

from urllib.parse import urlencode

import plotly.graph_objects as go
import streamlit as st

from app_pages.parts.surface_state import compute_runs
from app_pages.ui import presenting
from dgs_core.lessons import lessons_dir, load_lessons
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.viz import surface as surface_viz
from dgs_core.viz.lessons import projector_fonts, race_caption
from dgs_core.viz.tables import optimizer_table

RACE = SurfaceConfig(surface="rosenbrock", optimizers=("sgd", "momentum", "adam", "adan", "dgs"))
LABS = (
    (
        "app_pages/surface_lab.py",
        "Surface lab",
        "⛰️",
        "How does each optimizer move on a landscape you can see? Paths, overshoots and oscillations "
        "on 2-D test functions, from a start you click.",
    ),
    (
        "app_pages/training_lab.py",
        "Training lab",
        "🧠",
        "What does each optimizer do to every parameter of a real network? Importance scores, "
        "scaling factors and effective learning rates while it trains; the large-batch gap.",
    ),
    (
        "app_pages/annealing_lab.py",
        "Annealing lab",
        "📉",
        "When and how should the learning rate come down? Schedules, plateau cuts, the lr each "
        "optimizer really applies, and annealing on high-quality data.",
    ),
    (
        "app_pages/runs.py",
        "Runs",
        "🗂️",
        "Did that result hold? Open, compare and resume the snapshots the labs export.",
    ),
)


@st.cache_resource(max_entries=2, show_spinner=False)
def race_figure(projector: bool) -> go.Figure:
    """The race's animated figure, the same for every visit: built once per server, with the
    projector's fonts or without, and never changed after (a Home rerun took 0.22 s of the
    server's CPU building it each time, 0.08 s now: ``bench/page_scripts.py``)."""
    runs, _ = compute_runs(RACE, {})
    figure = surface_viz.contour_figure(
        RACE.get_surface(), runs, animate=True, clickable=False, events=False, height=600
    )
    # the legend on top: the animation's play button and step slider take the bottom
    figure.update_layout(
        title=None,
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        margin={"t": 90, "b": 20},
    )
    return projector_fonts(figure) if projector else figure


st.title("DGS Lab")
st.markdown(
    "An interactive laboratory for deep-learning optimizers: **Dynamic Gradient Scaling (DGS)**, "
    "Adan, LARS, LAMB, EXTRAP-SGD, AdaGrad-Norm, AdAdaGrad, AdaScale SGD, MARS, Lion, Muon, "
    "Schedule-Free AdamW and the classic baselines side by side, on 2-D landscapes and on real "
    "networks."
)

race, start = st.columns([3, 2], gap="large")
with race:
    runs, _ = compute_runs(RACE, {})
    st.markdown("**The Rosenbrock race**: five optimizers from (−2, 2); press ▶ play.")
    st.plotly_chart(race_figure(presenting()), key="home_race", config={"displaylogo": False})
    st.caption(race_caption(runs), help="read off these runs; ε = 10⁻³")
    st.link_button("Open this race in the Surface lab ↗", f"surface?{urlencode(RACE.to_query())}")
with start:
    lessons, _ = load_lessons(lessons_dir())
    st.subheader("Start here")
    if lessons:
        first = lessons[0]
        st.markdown(f"**Lesson 1: {first.title}.** {first.summary}")
        st.page_link(
            "app_pages/lessons.py",
            label="Start lesson 1 →",
            icon="🎓",
            query_params={"lesson": first.id, "step": "1"},
        )
        st.caption(
            f"{len(lessons)} lessons, each a few steps of prose, a live figure and a link into its "
            "lab. Teaching? Turn on *Presenter mode* in the sidebar, or add `&present=1` to a link."
        )
    for page, title, icon, question in LABS:
        with st.container(border=True):
            st.page_link(page, label=title, icon=icon)
            st.caption(question)

st.subheader("Optimizers")
st.caption(
    "An *interpretation* is an optimizer whose paper gives no equation: DGS Lab supplies its own, "
    "documented in docs/algorithms.md and in each optimizer's description. Where an optimizer "
    "computes something other than its official (or reference) code, the last column says what."
)
st.dataframe(
    optimizer_table(),
    hide_index=True,
    column_config={
        "paper": st.column_config.LinkColumn("paper"),
        "interpretation": st.column_config.CheckboxColumn("interpretation"),
        "needs closure": st.column_config.CheckboxColumn("needs closure"),
        "departs from the official code": st.column_config.TextColumn("departs from the official code"),
    },
    # the interpretation flag beside the name, where a narrow screen still shows it
    column_order=(
        "optimizer",
        "interpretation",
        "summary",
        "paper",
        "key",
        "needs closure",
        "departs from the official code",
    ),
    width="stretch",
    height="content",  # every optimizer at once, no scrolling inside the table
)
