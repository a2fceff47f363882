"""Surface lab: every chosen optimizer from the same start on a 2-D test function.

The surfaces: docs/algorithms.md#surfaces.

Widgets in → a :class:`~dgs_core.surfaces.config.SurfaceConfig`, mirrored in the URL's query
string → cached simulations (:mod:`dgs_core.surfaces`) → figures (:mod:`dgs_core.viz.surface`).
The timeline (play, speeds, single steps, slider, moving markers) is drawn and played in the
browser by a canvas component from one cached payload: it never reruns the page. A click on a
contour moves the start of every optimizer.
The session's state, the cache and the callbacks are :mod:`app_pages.parts.surface_state`; the
views besides the timeline :mod:`app_pages.parts.surface_views`.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from app_pages.parts import surface_state as state
from app_pages.parts import surface_views as views
from app_pages.parts.surface_timeline import timeline
from app_pages.ui import (
    PROJECTOR_FONT,
    optimizer_controls,
    optimizer_label,
    optimizer_picker,
    plain,
    presenting,
)
from dgs_core import metrics, surfaces
from dgs_core.params import ParamError
from dgs_core.surfaces.config import VIEWS, SurfaceConfig, clean_start
from dgs_core.viz import surface as viz

TIMELINE_VIEWS = ("panels", "overlay", "3d")
VIEW_LABELS = {
    "panels": "Small multiples",
    "overlay": "Overlay",
    "3d": "3-D surface",
    "basin": "Basin map",
    "sensitivity": "lr sensitivity",
    "tuning": "Fair comparison",
}


# ---------------------------------------------------------------------------------------------
# Controls (sidebar)
# ---------------------------------------------------------------------------------------------


def surface_controls(config: SurfaceConfig) -> tuple[SurfaceConfig, list[str], dict[str, str]]:
    """The sidebar: returns the configuration, notes about the start, and errors by optimizer."""
    notes: list[str] = []
    with st.sidebar:
        st.header("Surface")
        name = st.selectbox(
            "Surface",
            surfaces.surface_names(),
            format_func=lambda n: surfaces.SURFACES[n].label,
            key="surface_surface",
            on_change=state.on_surface_change,
        )
        params = {}
        for param, default in surfaces.SURFACES[name].params.items():
            # seeded here, for the surface just chosen (it may differ from the last run's)
            state.seed_widget(f"surface_param_{param}", float(config.surface_params.get(param, default)))
            value = st.number_input(
                "κ (condition number)" if param == "kappa" else param,
                key=f"surface_param_{param}",
                format="%.4g",
                help="a surface parameter — valid: a finite number > 0",
            )
            try:
                surfaces.get_surface(name, **{param: value})
                params[param] = value
            except ValueError as exc:
                st.error(plain(exc))
        surf = surfaces.get_surface(name, **params)
        st.markdown("**Start** — or click a contour")
        left, right = st.columns(2)
        x = left.number_input("x₀", key="surface_x", step=0.1, format="%.4f")
        y = right.number_input("y₀", key="surface_y", step=0.1, format="%.4f")
        start, notes = clean_start(surf, (x, y), digits=None)  # typed or linked: kept exact
        for note in notes:
            st.warning(f"The {note}.")

        st.header("Optimizers")
        names = optimizer_picker(key="surface_optimizers", default=config.optimizers)
        values = {opt: config.hparams_for(opt) for opt in names}
        hparams, hparam_errors = optimizer_controls(names, key="surface_hp", values=values, surface=True)

        st.header("Simulation")
        steps = st.number_input(
            "Steps",
            *state.field_range("steps"),
            step=50,
            key="surface_steps",
            on_change=state.on_steps_change,
        )
        noise = st.number_input(
            "Gradient noise σ",
            *state.field_range("noise_std"),
            step=0.5,
            key="surface_noise",
            help="the optimizers see ∇f + σ·ξ/√B, ξ ~ N(0, I), the same draws for every optimizer",
        )
        batch = st.number_input("Batch size B", *state.field_range("batch_size"), step=1, key="surface_batch")
        seed = st.number_input("Seed", *state.field_range("seed"), step=1, key="surface_seed")
        clip = None
        if st.toggle("Clip gradients", key="surface_clip_on", help="off unless you turn it on"):
            clip = st.number_input(
                "Max gradient norm", *state.field_range("clip_norm"), key="surface_clip", format="%.4g"
            )
        st.button("Reset all settings", key="surface_reset", on_click=state.reset)
    new = replace(
        config,
        surface=name,
        surface_params=params,
        optimizers=tuple(names),
        hparams={k: v for k, v in hparams.items() if v},
        start=start,
        steps=int(steps),
        seed=int(seed),
        noise_std=float(noise),
        batch_size=int(batch),
        clip_norm=None if clip is None else float(clip),
        step=None,
        basin_optimizer=config.basin_optimizer if config.basin_optimizer in names else None,
    )
    return new, notes, hparam_errors


# ---------------------------------------------------------------------------------------------
# The timeline
# ---------------------------------------------------------------------------------------------


def timeline_section(config: SurfaceConfig, runs: dict[str, surfaces.Run]) -> None:
    """The paths and the curves along the steps, drawn and played in the browser.

    Play, the speeds, single steps, the slider and the moving markers run in the browser
    (:mod:`app_pages.parts.surface_timeline`): no rerun per frame. The payload is cached on the
    configuration, so only a change to the simulation (a click, a hyperparameter, the surface)
    builds a new one.
    """
    step = min(max(int(st.session_state.get("surface_step", config.steps)), 0), config.steps)
    surf = config.get_surface()
    labelled = views.panel_labels(runs)
    if config.view == "3d":
        main, side = st.columns([3, 2])
        with main:
            st.plotly_chart(viz.surface_3d_figure(surf, labelled, step=step, height=760), key="surface_3d")
            st.caption(
                "Drag to rotate. Set the start by clicking a contour in the other views; "
                "the timeline plays there."
            )
        with side:
            st.plotly_chart(viz.loss_figure(labelled, step=step, height=360), key="surface_loss")
            st.plotly_chart(viz.scaling_figure(labelled, step=step, height=420), key="surface_scaling")
        return
    query = tuple(sorted(replace(config, step=None).to_query().items()))
    data = state.timeline_data(query, tuple(runs), step, _surface=surf, _runs=labelled)
    timeline(data, key="surface_main", on_start=state.on_start, font=PROJECTOR_FONT if presenting() else 12)
    st.caption(
        f"▶ plays in your browser (← → step, space plays); **{viz.OPENING_LABEL}** replays steps 0 – "
        f"{data['opening']} slowly, where overshoots happen. Pause, and the address bar keeps the "
        "step: a copied link opens there."
    )


# ---------------------------------------------------------------------------------------------

previous = state.session_config()
state.seed_widgets(previous)
state.follow_browser_step(previous)
config, start_notes, hparam_errors = surface_controls(previous)
views.header(config)

parsed, link_notices = st.session_state.get("surface_link", (None, []))
if link_notices and replace(config, step=None, view=parsed.view) == replace(parsed, step=None):
    st.warning(
        "Some settings in this link could not be used; their defaults apply:\n\n"
        + "\n".join(f"- {plain(notice)}" for notice in link_notices)
    )

view = st.radio(
    "View",
    VIEWS,
    format_func=VIEW_LABELS.get,
    horizontal=True,
    key="surface_view",
    label_visibility="collapsed",
)
config = replace(config, view=view)
try:  # the server's work budget, before anything is simulated
    config.check_work()
except ParamError as exc:
    st.error(f"{plain(exc)}. Lower it to see this view.")
    if exc.field == "steps":
        st.sidebar.error(plain(exc))  # marks the widget that holds the field
    st.stop()
runs, run_errors = state.compute_runs(config, hparam_errors)
for name, message in run_errors.items():
    st.error(f"{optimizer_label(name)} is left out: {message}")
for name, run in runs.items():
    if run.diverged_at[0] >= 0:
        st.warning(
            f"{optimizer_label(name)} (lr {run.lrs[0]:.3g}) "
            f"{metrics.divergence_message(int(run.diverged_at[0]))}: its path stops at the last "
            "finite point (✕); the others go on."
        )

if not runs:
    st.info("Pick at least one optimizer in the sidebar.")
elif view in TIMELINE_VIEWS:
    timeline_section(config, runs)
    views.metrics_section(runs)
elif view == "basin":
    config = views.basin_section(config, runs)
elif view == "sensitivity":
    config = views.sensitivity_section(config, runs)
else:
    config = views.tuning_section(config, runs)

if runs:
    views.export_section(config, runs)
    views.optimizers_section(list(runs))
step = st.session_state.get("surface_step", config.steps)
state.publish(replace(config, step=step if view in TIMELINE_VIEWS and step < config.steps else None))
