"""Annealing lab: learning-rate schedules, plateau cuts, the effective lr, and the two-phase recipe.

Widgets in → plain values → :mod:`dgs_core.schedules.curves`, :mod:`dgs_core.studies.annealing`
→ :mod:`dgs_core.viz.annealing`. The schedule composer and the plateau demo are
:mod:`app_pages.parts.schedules`, the two-phase demo :mod:`app_pages.parts.two_phase`. Training
runs are background jobs (:mod:`app_pages.live`): the page stays usable while they grow, and a
reloaded tab finds them again (their ids in the URL).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import live
from app_pages.parts import annealing_state, run_list
from app_pages.parts.schedules import schedules_section
from app_pages.parts.two_phase import two_phase_section
from app_pages.ui import (
    changed_hparams,
    hyperparam_controls,
    optimizer_label,
    optimizer_picker,
    plain,
    task_picker,
)
from dgs_core import jobs
from dgs_core.optim import registry
from dgs_core.schedules.curves import CurveSpec
from dgs_core.studies import TrainerStudy, study_job
from dgs_core.studies.annealing import MAX_TRAIN_STEPS, effective_lr_config
from dgs_core.studies.annealing_lab import TABS, EffectiveSettings
from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.viz import annealing as viz

PERIOD_SECONDS = 1.0  # redraws while the run trains
EFFECTIVE_LR_COLUMNS = ("schedule lr (last)", "η_eff median (last)", "η_eff 5 % (last)", "η_eff 95 % (last)")
EFFECTIVE = live.Slot("anneal_eff", building="the task and the models", start_label="Run", short=True)
RUN = "effective"  # the study's one run


def _run_config(job: jobs.Job | None) -> TrainConfig | None:
    study = job.payload if job is not None else None
    return study.configs[RUN] if isinstance(study, TrainerStudy) else None


def draw_effective(job: jobs.Job) -> None:
    """The progress, each optimizer's schedule lr against its effective-lr band, the table."""
    live.status(EFFECTIVE, job)
    study: TrainerStudy | None = job.payload
    results = study.all_results(RUN) if study is not None else {}
    if not results:
        return
    trainer = study.trainers.get(RUN) if study is not None else None
    if trainer is not None:  # in the Runs page's list (unsaved) once the job has ended
        run_list.offer_trainer(f"anneal_eff:{job.id}", job, trainer, name="Annealing lab: effective lr")
    version = (job.id, tuple((r.steps_done, len(r.records), r.status) for r in results.values()))
    live.chart("anneal_eff", version, lambda: viz.effective_lr_figure(results))
    lr_format = st.column_config.NumberColumn(format="%.3e")
    st.dataframe(
        viz.effective_lr_table(results),
        hide_index=True,
        column_config={c: lr_format for c in EFFECTIVE_LR_COLUMNS},
    )


def effective_controls(
    curves: list[CurveSpec], run_steps: int
) -> tuple[EffectiveSettings | None, TrainConfig | None]:
    """Schedule, task, optimizers and their hyperparameters → the tab's settings (for the link)
    and the run's config (None: the reason is shown)."""
    labels = [c.label for c in curves]
    label = st.selectbox("Schedule (from the composer)", labels, key="anneal_eff_curve")
    task = task_picker("anneal_eff_task")
    names = optimizer_picker(key="anneal_eff_optimizers", default=["sgd", "adam", "dgs"])
    hparams: dict[str, dict[str, Any]] = {}
    failed = False
    with st.expander("Optimizer hyperparameters"):
        for name in names:
            st.markdown(f"**{optimizer_label(name)}**")
            hparams[name], errors = hyperparam_controls(name, key="anneal_eff")
            failed = failed or bool(errors)
    st.caption(f"Trains for the composer's run length: {run_steps} steps (cap {MAX_TRAIN_STEPS}).")
    if not names:
        st.error("Pick at least one optimizer.")
        return None, None
    if failed:
        return None, None
    curve = curves[labels.index(label)]
    try:
        optimizers = tuple(OptimizerSpec(n, changed_hparams(n, hparams[n])) for n in names)
        settings = EffectiveSettings(curve.schedule.name, task, optimizers)
        return settings, effective_lr_config(
            schedule=curve.spec(run_steps),
            optimizers=[(n, registry.get(n).resolve(hparams[n])) for n in names],
            steps=run_steps,
            task=task,
        )
    except ValueError as exc:
        st.error(plain(exc))
        return None, None


def effective_section(curves: list[CurveSpec], run_steps: int) -> EffectiveSettings | None:
    """The tab; returns its settings (None: invalid, or no curve to apply)."""
    st.markdown(
        "Apply one of the composed schedules to several optimizers on a task. Each panel shows "
        "the lr the schedule set (black; scaled to the optimizer's own lr) against what the "
        "optimizer actually applied per parameter: the band of η_eff = |Δθ| / |g| over the model "
        "(docs/algorithms.md). For plain SGD they coincide; adaptive methods spread it over decades."
    )
    if not curves:
        st.info("Compose at least one valid schedule in the first tab.")
        return None
    left, right = st.columns([1, 2])
    with left:
        settings, config = effective_controls(curves, run_steps)
        if st.button("Run", key="anneal_eff_run", type="primary", disabled=config is None):
            build = lambda: TrainerStudy({RUN: config})  # noqa: E731  # in the job's thread
            job = study_job(build, name="effective-lr", idle_stop_s=live.IDLE_STOP_SECONDS)
            live.start(EFFECTIVE, job, reuse=config.to_json())  # type: ignore[union-attr]  # enabled: a config
    with right:
        shown = _run_config(live.current(EFFECTIVE))
        if shown is not None and config is not None and shown != config:
            st.caption("The controls changed since this run; press Run for a new one.")
        live.watch(EFFECTIVE, draw_effective, period=PERIOD_SECONDS)
    return settings


# ---------------------------------------------------------------------------------------------

live.preload()
annealing_state.from_link()  # a link's tab and settings, on a session's first visit
st.title("Annealing lab")
st.caption(
    "Learning-rate schedules, plateau annealing, the lr each optimizer really applies, and a "
    "two-phase annealing run with a switch to high-quality data."
)
if (link_problem := annealing_state.link_error()) is not None:
    st.error(
        f"This link's settings could not be used, so the lab starts from its defaults: {plain(link_problem)}"
    )
tab_schedules, tab_effective, tab_two_phase = st.tabs(
    list(TABS.values()), key=annealing_state.TAB_KEY, on_change="rerun"
)
with tab_schedules:
    schedule_parts = schedules_section()
with tab_effective:
    effective = effective_section(schedule_parts["curves"] or [], schedule_parts["run_steps"] or 0)
with tab_two_phase:
    two_phase = two_phase_section(annealing_state.current().two_phase)
tab = {label: key for key, label in TABS.items()}.get(st.session_state.get(annealing_state.TAB_KEY))
annealing_state.publish(tab=tab, effective=effective, two_phase=two_phase, **schedule_parts)
