"""Landscape lab: the real loss surface around a trained run, every optimizer's path in one plane.

A finished or stopped Training-lab run, or a training bundle opened on the Runs page
(:mod:`app_pages.parts.landscape_runs`) → a :class:`~dgs_core.landscape.Landscape` → the plane
and grid chosen in the sidebar → one background job (:mod:`app_pages.parts.landscape_work`:
the grid, the interpolation between two optimizers, the sharpness table; progress, ETA and
Stop from :mod:`app_pages.live`) → figures from :mod:`dgs_core.viz.landscape`. The planes,
grids, interpolation and sharpness are described in docs/algorithms.md ("Loss landscape").
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app_pages import live
from app_pages.parts.landscape_runs import (
    FROM,
    LandscapeRun,
    bundle_run,
    landscape_of,
    large_batch_run,
    training_run,
)
from app_pages.parts.landscape_work import (
    SLOT,
    Request,
    Results,
    adopt_stored,
    export_button,
    grid_key,
    landscape_job,
    partial_grid,
    results_for,
)
from app_pages.ui import FieldSlots
from dgs_core import jobs
from dgs_core.landscape import SPLITS, GridSpec, Landscape, Plane, PlaneSpec, build_plane
from dgs_core.landscape.grid import SETTINGS as GRID_SETTINGS
from dgs_core.landscape.planes import PCA_CENTRES
from dgs_core.params import ParamError
from dgs_core.viz import landscape as viz

PLANE_LABELS = {
    "exact": "Exact: initial weights + two optimizers",
    "pca": "PCA of the optimizers' paths",
    "random": "Filter-normalized random, around one optimizer",
}
RESOLUTION = GRID_SETTINGS["resolution"]
SPLIT_LABELS = {"train": "training loss", "val": "validation loss"}
PERIOD_SECONDS = 0.5  # the status's redraws while the job runs
HEIGHT = 520  # of the contour and the surface, side by side


# ---------------------------------------------------------------------------------------------
# Controls (sidebar): plain values out, each error under its widget
# ---------------------------------------------------------------------------------------------


def _partner(labels: list[str]) -> int:
    """The default second path: the first one's optimizer at the other batch size (a large-batch
    study's "sgd · batch 16" → "sgd · batch 512"), else the second path."""
    first = labels[0].split(" · batch ")[0]
    return next((i for i, label in enumerate(labels) if i and label.startswith(f"{first} · batch ")), 1)


def plane_controls(landscape: Landscape) -> PlaneSpec | None:
    """The plane asked for, or None (its error shown under the widget it names)."""
    labels = list(landscape.labels)
    kind = st.radio("Plane", list(PLANE_LABELS), format_func=PLANE_LABELS.get, key="landscape_kind")
    slots = FieldSlots()
    try:
        if kind == "exact":
            first = st.selectbox("First optimizer", labels, index=0, key="landscape_exact_first")
            second = st.selectbox(
                "Second optimizer", labels, index=_partner(labels), key="landscape_exact_second"
            )
            slots.add("labels", "plane")
            return PlaneSpec.exact(first, second)
        if kind == "pca":
            chosen = st.multiselect("Paths in the PCA", labels, default=labels, key="landscape_pca_labels")
            slots.add("labels")
            centre = st.selectbox(
                "Centre",
                [*PCA_CENTRES, *labels],
                key="landscape_pca_centre",
                format_func=lambda c: c if c in PCA_CENTRES else f"{c}'s final weights",
                help="mean: plain PCA; initial: every path starts at the origin; an optimizer: as Li et al.",
            )
            slots.add("centre")
            if not chosen:
                st.error("Pick at least one optimizer's path.")
                return None
            return PlaneSpec.pca(() if chosen == labels else chosen, centre)  # all: "every path"
        around = st.selectbox("Around", labels, key="landscape_random_label")
        seed = st.number_input("Seed", value=0, step=1, key="landscape_random_seed")
        slots.add("seed")
        biases = st.checkbox(
            "Include biases and norms",
            key="landscape_random_biases",
            help="off (Li et al.'s default): 1-D parameters get no direction; on: the weights themselves",
        )
        slots.add("include_bias_and_norm")
        return PlaneSpec.random(around, int(seed), biases)
    except ParamError as exc:
        if not slots.show(exc):
            st.error(str(exc))
        return None


def grid_controls() -> GridSpec | None:
    resolution = st.number_input(
        "Grid points per axis",
        value=41,
        step=10,
        key="landscape_resolution",
        help=f"{RESOLUTION.low}–{RESOLUTION.high}; the grid has this many squared",
    )
    slots = FieldSlots()
    slots.add("resolution")
    try:
        return GridSpec(resolution=resolution)
    except ParamError as exc:
        slots.show(exc)
        return None


def pair_controls(landscape: Landscape) -> tuple[str, str] | None:
    labels = list(landscape.labels)
    start = st.selectbox("From", labels, index=0, key="landscape_line_start")
    end = st.selectbox("To", labels, index=_partner(labels), key="landscape_line_end")
    if start == end:
        st.error("Pick two different optimizers.")
        return None
    return start, end


def chosen_run() -> LandscapeRun | None:
    """The run to draw: the Training lab's or the Runs page's (a choice when both exist)."""
    found = [training_run(), large_batch_run(), bundle_run()]
    for _, why in found:
        if why:
            st.warning(why)
    runs = [run for run, _ in found if run is not None]
    if not runs:
        st.info(
            "Train two or more optimizers in the Training lab (they start from the same initial "
            "weights), or open a training bundle on the Runs page; then open the loss landscape."
        )
        st.page_link("app_pages/training_lab.py", label="Go to the Training lab", icon="🧠")
        return None
    if len(runs) == 1:
        return runs[0]
    wanted = st.query_params.get(FROM)
    preferred = next((i for i, run in enumerate(runs) if run.kind == wanted), 0)
    titles = [run.title for run in runs]
    title = st.radio("Run", titles, index=preferred, key="landscape_source")
    return runs[titles.index(title)]


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def draw_status(job: jobs.Job) -> None:
    live.status(SLOT, job)


def draw_grid(run: LandscapeRun, results: Results, key: str, split: str, log_scale: bool) -> None:
    grid = results.grids.get(key) or partial_grid(run.key, key)
    if grid is None:
        st.info("Press **Compute** to evaluate the loss on this plane.")
        return
    st.markdown(f"**{grid.title.replace(' · ', '** · ', 1)}")  # which plane · how faithful
    stopped = "" if grid.complete else " **Stopped before the end: blank where not evaluated.**"
    if split not in grid.losses:  # a grid stored with one split only
        split = next(iter(grid.losses))
        st.info(f"This grid holds the {SPLIT_LABELS[split]} only (as stored in the bundle).")
    st.caption(
        f"{len(grid.xs)} × {len(grid.ys)} grid in {live.duration(grid.seconds)}; open circles mark "
        "each path's start, stars its end. Hover a path point for its distance from the plane and "
        "the loss at its real weights beside the loss on the plane." + stopped
    )
    version = (key, split, log_scale, grid.complete)
    contour, surface = st.columns(2)
    with contour:
        live.chart(
            "landscape_contour",
            version,
            lambda: _untitled(
                viz.landscape_contour_figure(grid, split=split, log_scale=log_scale, height=HEIGHT)
            ),
        )
    with surface:
        live.chart(
            "landscape_surface",
            version,
            lambda: _untitled(viz.landscape_surface_figure(grid, split=split, height=HEIGHT)),
        )


def _untitled(fig: go.Figure) -> go.Figure:
    """Side by side, the plane's long title would be cut (it stands above both figures instead)
    and a colour bar titled across would take a third of the width."""
    for kind in ("contour", "surface"):
        fig.update_traces(colorbar={"title": {"side": "right"}, "thickness": 14}, selector={"type": kind})
    return fig.update_layout(title_text="", margin={"t": 30, "l": 50, "r": 10})


def draw_line_and_sharpness(results: Results, pair: tuple[str, str] | None) -> None:
    curve = results.curves.get(pair) if pair is not None else None
    if curve is None:
        st.caption("The interpolation between the chosen optimizers appears after **Compute**.")
    else:
        live.chart("landscape_interpolation", pair, lambda: viz.interpolation_figure(curve, height=380))
    table = results.sharpness
    if table is None:
        st.caption("The sharpness table appears after **Compute**.")
        return
    rows = len(table)
    live.chart("landscape_sharpness", id(table), lambda: viz.sharpness_figure(table, height=110 + 28 * rows))
    st.caption(
        "Top eigenvalue of the training loss's Hessian at each final weights (power iteration on "
        "Hessian-vector products), beside the validation gap (val − train): sharper minima are "
        "argued to generalise worse (Keskar et al. 2017)."
    )


# ---------------------------------------------------------------------------------------------

st.title("Landscape lab")
st.caption(
    "The real loss surface around a trained run: every optimizer started from the same initial "
    "weights; each plane through weight space says what it is and how faithful it is, and every "
    "optimizer's path is drawn on it in its lab colour."
)
run = chosen_run()
if run is None:
    st.stop()
try:
    landscape = landscape_of(run)
except ParamError as exc:
    st.error(f"This run has no landscape: {exc}")
    st.stop()
if len(landscape.labels) < 2:
    st.info("This run has one optimizer: train two or more from the same initial weights to compare them.")
    st.stop()
results = results_for(run.key)
adopt_stored(results, landscape, run.stored)
for note in (*run.notes, *landscape.notes):
    st.info(note)

with st.sidebar:
    st.header("Plane and grid")
    spec = plane_controls(landscape)
    grid_spec = grid_controls()
    split = st.radio(
        "Loss", SPLITS, index=1, format_func=SPLIT_LABELS.get, horizontal=True, key="landscape_split"
    )
    log_scale = st.toggle("Log colour scale", value=True, key="landscape_log")
    st.header("Interpolation")
    pair = pair_controls(landscape)

plane: Plane | None = None
if spec is not None:
    try:
        version = (run.key, spec.to_json())  # a PCA plane takes an SVD: built once per run and spec
        plane = live.figure("landscape_plane", version, lambda: build_plane(landscape, spec))
    except ParamError as exc:
        st.error(str(exc))
ready = plane is not None and grid_spec is not None and pair is not None
key = grid_key(landscape, plane, grid_spec) if plane is not None and grid_spec is not None else None
compute_col, run_col = st.columns([1, 6], vertical_alignment="center")
run_col.markdown(f"**{run.title}** — optimizers: {', '.join(landscape.labels)}")
if compute_col.button(
    "Compute",
    key="landscape_compute",
    type="primary",
    disabled=not ready,
    width="stretch",
    help="the grid on this plane (both losses), the interpolation and (once per run) the sharpness",
):
    request = Request(run.key, key, plane, grid_spec, pair)  # type: ignore[arg-type]  # ready
    live.start(SLOT, landscape_job(landscape, request, results), reuse=(run.key, key, pair))
live.watch(SLOT, draw_status, period=PERIOD_SECONDS)
if key is not None:
    draw_grid(run, results, key, split, log_scale)
draw_line_and_sharpness(results, pair)
if run.study is None:
    export_button(run.trainer, results, split)
else:
    st.caption(
        "A large-batch study's landscape is not exported: a bundle holds one training run, and the "
        "study is two."
    )
