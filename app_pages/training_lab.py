"""Training lab: real networks train while you watch, each optimizer's per-parameter story side by side.

Widgets in → a :class:`~dgs_core.training.TrainConfig` → a :class:`~dgs_core.jobs.Job` that runs
the :class:`~dgs_core.training.Trainer` in a background thread (:mod:`app_pages.live`: the job's
id in session state and in the URL as ``?train_job=…``, so a reloaded tab finds its run again;
Stop sets the stop signal the trainer checks before every step) → figures from
:mod:`dgs_core.viz.training`, each redrawn by a fragment of its own
(:mod:`app_pages.parts.training_panels`). The large-batch question is its own tab
(:mod:`app_pages.parts.large_batch`).
"""

from __future__ import annotations

import os
from typing import Any

import streamlit as st

from app_pages import live
from app_pages.parts import fair, run_list, training_state
from app_pages.parts.landscape_runs import large_batch_link, training_link
from app_pages.parts.large_batch import large_batch_section
from app_pages.parts.training_panels import (
    LIVE_HELP,
    RUN,
    TICK_SECONDS,
    live_panels,
    results_of,
    training_job,
)
from app_pages.parts.training_state import CONSTANT, TABS
from app_pages.ui import (
    FieldSlots,
    optimizer_controls,
    optimizer_label,
    optimizer_picker,
    plain,
    schedule_param_controls,
    task_controls,
)
from dgs_core import jobs
from dgs_core.device import available_devices
from dgs_core.limits import check_training
from dgs_core.runs.training import export_training
from dgs_core.schedules import SCHEDULES, ScheduleSpec
from dgs_core.schedules.curves import MAX_CURVE_STEPS, default_params
from dgs_core.training.config import DEFAULT_MAX_STEPS, OptimizerSpec, TrainConfig
from dgs_core.training.tasks import get_task_info
from dgs_core.training.trainer import Trainer
from dgs_core.viz import training as viz
from dgs_core.viz.runs import training_figures

MAX_STEPS_ENV = "DGS_LAB_MAX_STEPS"  # the server's cap on a run's steps (default DEFAULT_MAX_STEPS)
DEFAULT_OPTIMIZERS = ("sgd", "adam", "dgs")
RUN_OWNED = ("initial_batch_size", "max_batch_size", "seed")  # set by the run, not per optimizer
TASK_HIDDEN = ("hq_fraction",)  # the Annealing lab's HQ subset plays no part here


def steps_cap() -> int:
    """The server's cap on a run's steps: ``$DGS_LAB_MAX_STEPS`` or the trainer's default."""
    try:
        cap = int(os.environ.get(MAX_STEPS_ENV, DEFAULT_MAX_STEPS))
    except ValueError:
        return DEFAULT_MAX_STEPS
    return cap if cap >= 1 else DEFAULT_MAX_STEPS


# ---------------------------------------------------------------------------------------------
# Controls (sidebar): plain values out, each error shown under its control
# ---------------------------------------------------------------------------------------------


def _reset_schedule_lengths() -> None:
    """A new run length rescales the schedule's defaults (its controls are rebuilt)."""
    for key in [k for k in st.session_state if str(k).startswith("train_sched_")]:
        del st.session_state[key]


def optimizers() -> tuple[list[OptimizerSpec], list[str]]:
    """The chosen optimizers with their changed hyperparameters; and the error messages."""
    names = optimizer_picker(key="train_optimizers", default=list(DEFAULT_OPTIMIZERS))
    chosen, bad = optimizer_controls(names, key="train_hp", exclude=RUN_OWNED, summary=True)
    errors = [f"{optimizer_label(name)}: {message}" for name, message in bad.items()]
    if not names:
        errors.append("Pick at least one optimizer.")
    return [OptimizerSpec(name, hparams) for name, hparams in chosen.items()], errors


def schedule(steps: int) -> tuple[ScheduleSpec | None, list[str]]:
    """The lr schedule's shape (None: constant); it multiplies every optimizer's lr."""
    name = st.selectbox(
        "Learning-rate schedule",
        [CONSTANT, *SCHEDULES],
        format_func=lambda n: n if n == CONSTANT else SCHEDULES[n].label,
        key="train_schedule",
        help="Multiplies each optimizer's own lr: lr_t = lr · schedule(t), the schedule's peak being 1.",
    )
    if name == CONSTANT:
        return None, []
    info = SCHEDULES[name]
    start = {**default_params(name, max(1, steps)), "base_lr": 1.0}
    with st.expander(f"{info.label} parameters", expanded=False):
        st.caption(info.description)
        st.latex(info.formula)
        params, bad = schedule_param_controls(info, key="train_sched", values=start, hidden=("base_lr",))
        if bad:
            return None, [f"schedule: {m}" for m in bad.values()]
        try:
            return ScheduleSpec(name, params), []
        except ValueError as exc:  # cross-parameter rules (warmup_steps <= total_steps, …)
            st.error(plain(exc))
            return None, [f"schedule: {exc}"]


def run_controls() -> tuple[TrainConfig | None, list[str], dict[str, Any] | None]:
    """Every setting of the sidebar → a validated config (or None and the error messages), and
    the task settings the large-batch study shares (None when they are invalid)."""
    task, task_params, size, task_ok = task_controls(
        key="train_task", size_key="train_size", hidden=TASK_HIDDEN
    )
    specs, errors = optimizers()
    if not task_ok:
        errors.append("Fix the task parameters marked above.")
    cap = steps_cap()
    slots = FieldSlots()
    steps = st.number_input(
        "Steps",
        value=300,
        step=50,
        key="train_steps",
        on_change=_reset_schedule_lengths,
        help=f"updates per optimizer; this server's cap is max_steps={cap} (${MAX_STEPS_ENV})",
    )
    slots.add("steps", "max_steps")
    lr_schedule, schedule_errors = schedule(max(1, min(int(steps), cap, MAX_CURVE_STEPS)))
    errors += schedule_errors
    batch = st.number_input("Batch size", value=32, step=8, key="train_batch")
    slots.add("batch_size")
    policy = st.radio(
        "Batch size policy",
        ["fixed", "adaptive"],
        format_func=lambda p: "fixed" if p == "fixed" else "adaptive (AdAdaGrad's test)",
        horizontal=True,
        key="train_policy",
        help="adaptive: AdAdaGrad and AdAdaGrad-Norm grow their batch by their batch-size test "
        "(Lau, Liu, Kolar 2024) up to the maximum; the other optimizers keep the batch size.",
    )
    max_batch = 1024
    if policy == "adaptive":
        max_batch = st.number_input("Maximum batch size", value=1024, step=64, key="train_max_batch")
    slots.add("max_batch_size")
    seed = st.number_input("Seed", value=0, step=1, key="train_seed")
    slots.add("seed")
    with st.expander("Evaluation, diagnostics, device"):
        eval_every = st.number_input(
            "Evaluate every (steps; 0 = auto)",
            value=0,
            step=1,
            key="train_eval_every",
            help="training- and validation-set loss and accuracy; auto: about 60 evaluations per run",
        )
        slots.add("eval_every")
        diag_every = st.number_input(
            "Diagnostics every (steps; 0 = auto)",
            value=0,
            step=1,
            key="train_diag_every",
            help="importance, effective lr, scaling factors (docs/algorithms.md); auto: ~60 records per run",
        )
        slots.add("diag_every")
        device = st.selectbox("Device", ["auto", *available_devices()], key="train_device")
    shared = {
        "task": task,
        "task_params": task_params,
        "model": {"size": size},
        "seed": seed,
        "device": device,
        "max_steps": cap,
    }
    if not task_ok:
        shared = None
    if errors:
        return None, errors, shared
    auto = max(1, int(steps) // 60)
    try:
        config = TrainConfig(
            optimizers=tuple(specs),
            schedule=lr_schedule,
            batch_size=batch,
            batch_policy=policy,
            max_batch_size=max_batch if policy == "adaptive" else max(max_batch, batch),
            steps=steps,
            eval_every=eval_every or auto,
            diag_every=diag_every or auto,
            **shared,  # type: ignore[arg-type]  # shared is None only when errors were returned above
        )
        check_training(config)  # the server's limits: steps, optimizers, diagnostic records
    except ValueError as exc:
        slots.show(exc)
        return None, [str(exc)], shared
    return config, [], shared


# ---------------------------------------------------------------------------------------------
# The live training view
# ---------------------------------------------------------------------------------------------


def draw_status(job: jobs.Job) -> None:
    """Stop / Continue, the progress bar with the ETA, and each optimizer's latest numbers
    (cheap: no figures, so it redraws every TICK_SECONDS while the run is live)."""
    trainer, last = results_of(job)
    if trainer is not None:  # in the Runs page's list (unsaved) once the job has ended
        run_list.offer_trainer(f"train:{job.id}", job, trainer)
    can_continue = job.finished and trainer is not None and not trainer.complete
    pace = training_state.session_pace()
    live.status(RUN, job, resume=lambda trainer: training_job(trainer, pace), can_resume=can_continue)
    if trainer is None or not last:
        return
    results = trainer.results
    diverged = [f"{k}: {r.status}" for k, r in results.items() if r.status.startswith("diverged")]
    if diverged:
        st.warning(
            "A non-finite loss or weight stopped " + "; ".join(diverged) + ". The other optimizers go on."
        )
    st.dataframe(viz.lanes_table(results), hide_index=True, key="train_lanes")
    if job.finished:
        export_button(trainer)
        training_link(job)


def export_button(trainer: Trainer) -> None:
    """The run as a snapshot bundle; built only when clicked."""
    config = trainer.config
    st.download_button(
        "Export snapshot (.zip)",
        data=lambda: export_training(trainer, figures=training_figures(trainer.results, trainer.task)),
        file_name=f"dgs-lab-{config.task}-{'-'.join(config.labels)}-{trainer.step}-steps.zip",
        mime="application/zip",
        key="train_export",
        on_click="ignore",
        help="the run as a versioned bundle (config, metrics, diagnostics, weights): open it on "
        "the Runs page, or re-run it with `python -m dgs_core run`",
    )


# ---------------------------------------------------------------------------------------------

live.preload()
st.title("Training lab")
st.caption(
    "Real networks train while you watch: every optimizer starts from the same initial weights "
    "and sees the same batches, and its per-parameter story — importance scores, effective "
    "learning rates, scaling factors — is drawn side by side."
)
if fair.fair_mode():
    fair.fair_comparison(task_hidden=TASK_HIDDEN)
    st.stop()  # the fair comparison is the whole page in its mode
linked = training_state.from_link()  # a link's configuration, on a session's first visit
with st.sidebar:
    st.header("Run settings")
    config, config_errors, shared_settings = run_controls()
    pace, pace_errors = training_state.pace_control()
    config_errors += pace_errors
    config = config if pace is not None else None
for problem in training_state.link_problems():
    st.warning(f"Part of this link could not be used: {plain(problem)}")
if linked is not None and live.current(RUN) is None:  # the link's run is not on this server
    st.session_state.pop(f"{RUN.key}_lost", None)
    live.start(RUN, training_job(linked, pace or 0.0))  # the same configuration and seed: the same numbers

tab_train, tab_large = st.tabs(list(TABS.values()), key="train_tab", on_change=training_state.tab_changed)
with tab_train:
    start_col, note_col = st.columns([1, 5], vertical_alignment="center")
    started = start_col.button(
        "Start",
        key="train_start",
        type="primary",
        disabled=config is None,
        width="stretch",
        help="train every chosen optimizer from the same initialisation, in lockstep",
    )
    if config is None:
        note_col.error("Cannot start: " + " · ".join(config_errors))
    else:
        note_col.caption(
            f"{len(config.optimizers)} optimizer(s) × {config.steps} steps on "
            f"{get_task_info(config.task).label}, batch {config.batch_size} ({config.batch_policy}), "
            f"seed {config.seed}, {training_state.pace_words(pace)}. {LIVE_HELP}"
        )
    if started and config is not None and pace is not None:
        st.session_state.pop("train_step_wanted", None)
        live.start(RUN, training_job(config, pace))
        training_state.publish(config, pace)
    live.watch(RUN, draw_status, period=TICK_SECONDS)
    live_panels(training_state.scrubber(live.current(RUN)))
with tab_large:
    large_batch_section(shared_settings, on_done=large_batch_link)
