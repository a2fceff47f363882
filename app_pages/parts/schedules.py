"""The Annealing lab's first tab: the schedule composer and the plateau annealer's demo.

Widgets in → :class:`~dgs_core.schedules.curves.CurveSpec` → cached curves
(:func:`~dgs_core.schedules.curves.schedule_curves`) → :mod:`dgs_core.viz.annealing`.
"""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from app_pages.parts.annealing_state import show_prefix
from app_pages.ui import param_controls, plain, schedule_param_controls
from dgs_core.schedules import PLATEAU_HYPERPARAMS, SCHEDULES, ScheduleSpec
from dgs_core.schedules.curves import CurveSpec, check_run_steps, default_params, schedule_curves
from dgs_core.schedules.plateau import PLATEAU_DEMO_HYPERPARAMS, PlateauDemo, plateau_demo
from dgs_core.studies.annealing_lab import DEFAULT_CURVES, DEFAULT_RUN_STEPS, DEMO_PLATEAU, PLATEAU_SHOWN
from dgs_core.viz import annealing as viz


@st.cache_data(max_entries=64, show_spinner=False)
def _curves_frame(curves_json: str, run_steps: int) -> pd.DataFrame:
    curves = [CurveSpec.from_dict(c) for c in json.loads(curves_json)]
    return schedule_curves(curves, run_steps)


@st.cache_data(max_entries=32, show_spinner=False)
def _plateau(settings_json: str) -> PlateauDemo:
    return plateau_demo(**json.loads(settings_json))


def schedule_controls(name: str, run_steps: int) -> CurveSpec | None:
    """One curve's controls; the curve, or None (with the reason shown) when invalid."""
    info = SCHEDULES[name]
    params, errors = schedule_param_controls(info, key="anneal_sched", values=default_params(name, run_steps))
    prefix = 0
    if show_prefix(name):
        prefix = st.number_input(
            "warmup_before",
            value=0,
            step=1,
            key=f"anneal_prefix_{name}",
            help="linear warmup from 0 to base_lr, then the schedule from its step 0 — valid: integer >= 0",
        )
    if errors:
        return None
    try:
        curve = CurveSpec(ScheduleSpec(name, params), prefix)
        curve.check_run(run_steps)
    except ValueError as exc:  # cross-parameter rules: min_lr <= base_lr, warmup within the run
        st.error(plain(exc))
        return None
    return curve


def composer() -> tuple[list[CurveSpec], int, bool]:
    """The composer; returns the valid curves, the run length (0: invalid) and the log axis."""
    st.markdown(
        "Pick schedules to overlay. Each box holds one schedule's formula and parameters; the "
        "curves redraw as you type. Invalid values are refused next to the control, with the reason."
    )
    top = st.columns([1, 3, 1])
    raw_steps = top[0].number_input(
        "Run length (steps)", value=DEFAULT_RUN_STEPS, step=10, key="anneal_run_steps"
    )
    chosen = top[1].multiselect(
        "Schedules",
        list(SCHEDULES),
        default=list(DEFAULT_CURVES),
        format_func=lambda n: SCHEDULES[n].label,
        key="anneal_curves",
    )
    log_y = top[2].checkbox("log lr axis", value=False, key="anneal_log_y")
    fit_help = "reset every schedule's parameters to defaults scaled to the run length (warmup 10 %, …)"
    if top[2].button("Fit parameters to the run", key="anneal_fit", help=fit_help):
        for key in [k for k in st.session_state if k.startswith(("anneal_sched_", "anneal_prefix_"))]:
            del st.session_state[key]  # the controls below start again from default_params
    try:
        run_steps = check_run_steps(raw_steps)
    except ValueError as exc:
        top[0].error(str(exc))
        return [], 0, log_y
    curves: list[CurveSpec] = []
    for row_start in range(0, len(chosen), 3):
        columns = st.columns(3)
        for column, name in zip(columns, chosen[row_start : row_start + 3], strict=False):
            with column.container(border=True):
                st.markdown(f"**{SCHEDULES[name].label}**")
                st.caption(SCHEDULES[name].description)
                curve = schedule_controls(name, run_steps)
                if curve is not None:
                    curves.append(curve)
    if curves:
        curves_json = json.dumps([c.to_dict() for c in curves], sort_keys=True)
        frame = _curves_frame(curves_json, run_steps)
        st.plotly_chart(viz.schedule_overlay_figure(frame, curves, log_y=log_y), key="anneal_overlay")
        for curve in curves:
            info = SCHEDULES[curve.schedule.name]
            prefix = f"linear warmup over {curve.warmup_before} steps, then " if curve.warmup_before else ""
            st.markdown(f"**{curve.label}** — {prefix}{info.description}")
            st.latex(info.formula)
    elif chosen:
        st.info("No valid schedule to draw: fix the values marked above.")
    return curves, run_steps, log_y


def plateau_section() -> dict | None:
    """The plateau annealer on a toy validation curve; returns its settings (None: invalid)."""
    st.subheader("Plateau annealer (ReduceLROnPlateau)")
    st.markdown(
        "The annealer watches a validation metric and multiplies the lr by *factor* once it has "
        "not improved (by *threshold*, relative) for more than *patience* evaluations. Here it runs "
        "on a toy validation curve whose noise floor is proportional to the lr, so each cut "
        "(▼, dotted line) lowers it."
    )
    annealer_column, toy_column, right = st.columns([1, 1, 4])
    with annealer_column:
        shown = [s for s in PLATEAU_HYPERPARAMS if s.name in PLATEAU_SHOWN]
        plateau, plateau_errors = param_controls(shown, key="anneal_plateau_plateau", values=DEMO_PLATEAU)
    with toy_column:
        toy, toy_errors = param_controls(PLATEAU_DEMO_HYPERPARAMS, key="anneal_plateau_toy")
    with right:
        if plateau_errors or toy_errors:
            st.info("Fix the values marked on the left to run the annealer.")
            return None
        try:
            demo = _plateau(json.dumps({**plateau, **toy}, sort_keys=True))
        except ValueError as exc:
            st.error(plain(exc))
            return None
        st.plotly_chart(viz.plateau_demo_figure(demo), key="anneal_plateau_chart")
        st.dataframe(viz.plateau_events_table(demo.events), hide_index=True, height=160)
    return {**plateau, **toy}


def schedules_section() -> dict:
    """The composer and the plateau demo; returns what they hold as the lab configuration's
    fields (:class:`~dgs_core.studies.annealing_lab.AnnealingLabConfig`; None: invalid)."""
    curves, run_steps, log_y = composer()
    plateau = plateau_section() if run_steps else None  # an invalid run length stops the tab there
    return {
        "run_steps": run_steps or None,
        "curves": tuple(curves) if run_steps else None,
        "log_y": log_y,
        "plateau": plateau,
    }
