"""Training lab: real networks train while you watch, each optimizer's per-parameter story side by side.

Widgets in → a :class:`~dgs_core.training.TrainConfig` → a :class:`~dgs_core.jobs.Job` that runs
the :class:`~dgs_core.training.Trainer` in a background thread → figures from
:mod:`dgs_core.viz.training`, redrawn by a fragment several times a second.

The thread never touches Streamlit; the page polls it. Session state holds only the job's id
(also in the URL as ``?train_job=…``, so a reloaded tab finds its run again in
:data:`dgs_core.jobs.JOBS`); Stop sets the job's stop signal, which the trainer checks before
every step. While a run is live the status (progress, ETA, each optimizer's latest numbers)
redraws five times a second, and each figure is a fragment of its own with its own period — the
loss curves every 1.5 seconds, the other panels every three to seven — so a redraw sends, and the
browser draws, one figure, and neither the server nor the browser falls behind.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st
import torch

from app_pages.ui import (
    changed_hparams,
    hyperparam_controls,
    optimizer_label,
    optimizer_picker,
    schedule_param_controls,
)
from dgs_core import jobs
from dgs_core.optim import registry
from dgs_core.runs.training import export_training
from dgs_core.schedules import SCHEDULES, ScheduleSpec
from dgs_core.schedules.curves import MAX_CURVE_STEPS, default_params
from dgs_core.studies.large_batch import (
    LR_SCALINGS,
    LargeBatchStudy,
    StudyEvent,
    large_batch_base,
    large_batch_configs,
    large_batch_gap,
)
from dgs_core.training.config import DEFAULT_MAX_STEPS, OptimizerSpec, TrainConfig
from dgs_core.training.models import SIZES, resolve_model_params
from dgs_core.training.tasks import get_task_info, task_names
from dgs_core.training.trainer import Trainer
from dgs_core.viz import training as viz
from dgs_core.viz.runs import training_figures

MAX_STEPS_ENV = "DGS_LAB_MAX_STEPS"  # the server's cap on a run's steps (default DEFAULT_MAX_STEPS)
TICK_SECONDS = 0.2  # the live status (progress, ETA, latest numbers): 5 redraws/s
# While live each figure is its own fragment with its own period (seconds). A figure costs the
# browser 20-150 ms to draw (plotly in headless chromium on 2 busy cores), and while it draws
# nothing else on the page updates: redrawing them all 5×/s would stall the page. Periods that
# share no small multiple keep the redraws from bunching up.
LIVE_PERIODS = {
    "loss": 1.5,
    "boundary": 3.1,
    "lr": 3.7,
    "accuracy": 4.3,
    "importance": 5.3,
    "scaling": 5.9,
    "per_parameter": 6.7,
    "batch": 7.1,
}
PANEL_TICK_SECONDS = 1.0  # the large-batch study's redraws while live
STOP_WAIT_SECONDS = 0.8  # Stop waits this long for the trainer to end its step
IDLE_STOP_SECONDS = 180.0  # a run nobody watches (tab closed) stops itself after this long
DEFAULT_OPTIMIZERS = ("sgd", "adam", "dgs")
RUN_OWNED = ("initial_batch_size", "max_batch_size", "seed")  # set by the run, not per optimizer
TASK_HIDDEN = ("hq_fraction",)  # the Annealing lab's HQ subset plays no part here
CONSTANT = "constant lr"
QUANTITY_LABELS = {
    "scaling_factor": "scaling factor η_eff / η",
    "importance": "importance score Î",
    "lr_eff": "effective lr η_eff",
    "scale": "DGS scale s_t (DGS only)",
}
# Imported by a fresh process's first run, deep inside it (seconds on a busy CPU): load them
# in the background as soon as the page is first shown.
PRELOAD = ("torch._dynamo", "sklearn.datasets")
LIVE_HELP = (
    "While the run is live the progress and the latest numbers redraw five times a second, the "
    "loss curves every second and the other panels every two to four seconds; the step scrubber "
    "appears when the run stops."
)


def steps_cap() -> int:
    """The server's cap on a run's steps: ``$DGS_LAB_MAX_STEPS`` or the trainer's default."""
    try:
        cap = int(os.environ.get(MAX_STEPS_ENV, DEFAULT_MAX_STEPS))
    except ValueError:
        return DEFAULT_MAX_STEPS
    return cap if cap >= 1 else DEFAULT_MAX_STEPS


def _field(message: str) -> str | None:
    """The argument a ValueError names ("Invalid steps: …" → "steps")."""
    match = re.match(r"Invalid ([A-Za-z_]+)", message)
    return match.group(1) if match else None


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d} min"


# ---------------------------------------------------------------------------------------------
# Jobs of this session (ids in session state and in the URL; the jobs in dgs_core.jobs.JOBS)
# ---------------------------------------------------------------------------------------------


def _job(slot: str) -> jobs.Job | None:
    """This session's job in ``slot`` ("train_job" or "train_lb_job"), reattached from the URL
    after a reload."""
    job_id = st.session_state.get(slot)
    if job_id is None and slot in st.query_params:
        job_id = st.query_params[slot]
        st.session_state[slot] = job_id
    job = jobs.JOBS.get(job_id)
    if job is None and job_id is not None:
        st.session_state.pop(slot, None)
        st.session_state[f"{slot}_lost"] = True
        if slot in st.query_params:
            del st.query_params[slot]
    return job


def _launch(slot: str, job: jobs.Job) -> None:
    """Stop this session's previous job in ``slot``, then register and start ``job``."""
    previous = _job(slot)
    if previous is not None and previous.running:
        previous.stop(STOP_WAIT_SECONDS)
    try:
        jobs.JOBS.add(job)
    except ValueError as exc:
        st.session_state[f"{slot}_error"] = str(exc)
        return
    job.start()
    st.session_state[slot] = job.id
    st.session_state.pop(f"{slot}_error", None)
    st.query_params[slot] = job.id


def _stop(slot: str) -> None:
    job = _job(slot)
    if job is not None:
        job.stop(STOP_WAIT_SECONDS)


def _training_job(trainer_or_config: Trainer | TrainConfig) -> jobs.Job:
    """A job that trains (a new trainer for a config, or continues a stopped one)."""

    def prepare() -> Trainer:
        if isinstance(trainer_or_config, Trainer):
            return trainer_or_config
        return Trainer(trainer_or_config)

    return jobs.Job(
        prepare,
        lambda trainer, stop: trainer.run(stop),
        poll=lambda trainer: (trainer.step, trainer.config.steps),  # events come on evaluations only
        idle_stop_s=IDLE_STOP_SECONDS,
        name="train",
    )


def _continue(slot: str) -> None:
    job = _job(slot)
    if job is not None and isinstance(job.payload, Trainer):
        _launch(slot, _training_job(job.payload))
        st.session_state["train_rerun_app"] = True  # the fragment's timer is set by a full run


def _chart(cache: jobs.LiveCache, name: str, version: Any, build: Any, *, every_tick: bool = False) -> None:
    st.plotly_chart(cache.get(name, version, build, every_tick=every_tick), key=f"train_{name}_chart")


def _status_line(job: jobs.Job, what: str, rate: float) -> str:
    done, total = job.progress or (0, 0)
    if job.state == jobs.PREPARING:
        return f"preparing: building the {what}…"
    parts = [job.state if job.state != jobs.STOPPED else _stopped_text(job)]
    if total:
        parts.append(f"step {done} / {total}")
    parts.append(f"elapsed {_duration(job.elapsed_s)}")
    if job.running:
        parts.append(f"ETA {_duration(job.eta_s)}")
        parts.append(f"{rate:.1f} redraws/s")
    return " · ".join(parts)


def _stopped_text(job: jobs.Job) -> str:
    if job.stop_reason == "idle":
        return f"stopped (nobody watched it for {IDLE_STOP_SECONDS:.0f} s)"
    return "stopped"


# ---------------------------------------------------------------------------------------------
# Controls (sidebar): plain values out, each ValueError shown under its control
# ---------------------------------------------------------------------------------------------


def _reset_schedule_lengths() -> None:
    """A new run length rescales the schedule's defaults (its controls are rebuilt)."""
    for key in [k for k in st.session_state if str(k).startswith("train_sched_")]:
        del st.session_state[key]


def task_controls() -> tuple[str, dict[str, Any], str, bool]:
    """Task, its parameters, model size; and whether every value is valid."""
    task = st.selectbox("Task", task_names(), format_func=lambda n: get_task_info(n).label, key="train_task")
    info = get_task_info(task)
    st.caption(info.summary)
    params: dict[str, Any] = {}
    valid = True
    with st.expander("Task parameters"):
        for spec in info.params:
            if spec.name in TASK_HIDDEN:
                continue
            key = f"train_task_{task}_{spec.name}"
            help_text = spec.help or None
            if spec.choices is not None:
                value: Any = st.selectbox(spec.name, spec.choices, key=key, help=help_text)
            elif spec.integer:
                value = st.number_input(spec.name, value=int(spec.default), step=1, key=key, help=help_text)
            else:
                value = st.number_input(spec.name, value=float(spec.default), key=key, help=help_text)
            try:
                params[spec.name] = spec.validate(value)
            except ValueError as exc:
                st.error(str(exc))
                valid = False
        if valid:
            try:
                info.resolve(params)
            except ValueError as exc:
                st.error(str(exc))
                valid = False
    size = st.selectbox("Model size", SIZES, index=SIZES.index("small"), key="train_size")
    preset = resolve_model_params(task, {"size": size})
    st.caption(f"{info.model.upper()}: " + ", ".join(f"{k} {v}" for k, v in preset.items()))
    return task, params, size, valid


def optimizer_controls() -> tuple[list[OptimizerSpec], list[str]]:
    """The chosen optimizers with their changed hyperparameters; and the error messages."""
    names = optimizer_picker(key="train_optimizers", default=list(DEFAULT_OPTIMIZERS))
    specs, errors = [], []
    for name in names:
        info = registry.get(name)
        shown = replace(info, hyperparams=tuple(h for h in info.hyperparams if h.name not in RUN_OWNED))
        with st.expander(f"{optimizer_label(name)} hyperparameters"):
            st.caption(info.summary)
            chosen, bad = hyperparam_controls(shown, key="train_hp")
        if bad:
            errors += [f"{optimizer_label(name)}: {message}" for message in bad.values()]
            continue
        specs.append(OptimizerSpec(name, changed_hparams(shown, chosen)))
    if not names:
        errors.append("Pick at least one optimizer.")
    return specs, errors


def schedule_controls(steps: int) -> tuple[ScheduleSpec | None, list[str]]:
    """The lr schedule's shape (None: constant); it multiplies every optimizer's lr."""
    choices = [CONSTANT, *SCHEDULES]
    name = st.selectbox(
        "Learning-rate schedule",
        choices,
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
            st.error(str(exc))
            return None, [f"schedule: {exc}"]


def run_controls() -> tuple[TrainConfig | None, list[str], dict[str, Any] | None]:
    """Every setting of the sidebar → a validated config (or None and the error messages), and
    the task settings the large-batch study shares (None when they are invalid)."""
    task, task_params, size, task_ok = task_controls()
    specs, errors = optimizer_controls()
    if not task_ok:
        errors.append("Fix the task parameters marked above.")
    cap = steps_cap()
    slots: dict[str, Any] = {}
    steps = st.number_input(
        "Steps", value=300, step=50, key="train_steps", on_change=_reset_schedule_lengths,
        help=f"updates per optimizer; this server's cap is max_steps={cap} (${MAX_STEPS_ENV})",
    )  # fmt: skip
    slots["steps"] = slots["max_steps"] = st.empty()
    schedule, schedule_errors = schedule_controls(max(1, min(int(steps), cap, MAX_CURVE_STEPS)))
    errors += schedule_errors
    batch = st.number_input("Batch size", value=32, step=8, key="train_batch")
    slots["batch_size"] = st.empty()
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
    slots["max_batch_size"] = st.empty()
    seed = st.number_input("Seed", value=0, step=1, key="train_seed")
    slots["seed"] = st.empty()
    with st.expander("Evaluation, diagnostics, device"):
        eval_every = st.number_input(
            "Evaluate every (steps; 0 = auto)", value=0, step=1, key="train_eval_every",
            help="training- and validation-set loss and accuracy; auto: about 60 evaluations per run",
        )  # fmt: skip
        slots["eval_every"] = st.empty()
        diag_every = st.number_input(
            "Diagnostics every (steps; 0 = auto)", value=0, step=1, key="train_diag_every",
            help="importance, effective lr and scaling factors (SPEC §4); auto: about 60 records per run",
        )  # fmt: skip
        slots["diag_every"] = st.empty()
        devices = ["auto", "cpu", *(["cuda"] if torch.cuda.is_available() else [])]
        device = st.selectbox("Device", devices, key="train_device")
    shared = {"task": task, "task_params": task_params, "model": {"size": size}, "seed": seed,
              "device": device, "max_steps": cap}  # fmt: skip
    if not task_ok:
        shared = None
    if errors:
        return None, errors, shared
    auto = max(1, int(steps) // 60)
    try:
        config = TrainConfig(
            optimizers=tuple(specs),
            schedule=schedule,
            batch_size=batch,
            batch_policy=policy,
            max_batch_size=max_batch if policy == "adaptive" else max(max_batch, batch),
            steps=steps,
            eval_every=eval_every or auto,
            diag_every=diag_every or auto,
            **shared,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        message = str(exc)
        slot = slots.get(_field(message) or "")
        if slot is not None:
            slot.error(message)
        return None, [message], shared
    return config, [], shared


def large_batch_controls(shared: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The study's settings (task and model from the sidebar) → LargeBatchStudy's arguments, or
    the error."""
    c1, c2, c3, c4 = st.columns(4)
    small = c1.number_input("Small batch", value=16, step=8, key="train_lb_small")
    large = c2.number_input("Large batch", value=512, step=64, key="train_lb_large")
    epochs = c3.number_input("Epochs (both runs)", value=10.0, step=1.0, key="train_lb_epochs")
    scaling = c4.selectbox(
        "lr at the large batch",
        LR_SCALINGS,
        format_func={"none": "same lr", "linear": "× B/b (linear)", "sqrt": "× √(B/b)"}.get,
        key="train_lb_scaling",
    )
    kwargs = {"small_batch": small, "large_batch": large, "epochs": float(epochs), "lr_scaling": scaling}
    try:
        base = large_batch_base(**shared)
        configs = large_batch_configs(base, **kwargs)
    except ValueError as exc:
        return None, str(exc)
    steps = ", ".join(f"batch {b}: {c.steps} steps" for b, c in configs.items())
    names = ", ".join(f"{optimizer_label(s.name)} (lr {s.hparams['lr']:g})" for s in base.optimizers)
    st.caption(f"{names}; {epochs:g} epochs at each batch size — {steps}.")
    return {"base": base, **kwargs}, None


# ---------------------------------------------------------------------------------------------
# The live training view
# ---------------------------------------------------------------------------------------------


def _lanes_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per optimizer: its latest step and evaluation. Reads only complete rows (the
    trainer thread appends a step's columns one by one) and the evaluation index the trainer
    sets after writing the values."""
    rows = []
    for label, r in results.items():
        done = min(len(column) for column in r.columns.values())
        evaluated = r.last_evaluation
        last = done - 1
        rows.append(
            {
                "optimizer": label,
                "status": r.status,
                "step": done,
                "batch loss": r.columns["loss"][last] if done else math.nan,
                "val loss": r.columns["val_loss"][evaluated] if evaluated is not None else math.nan,
                "val accuracy": r.columns["val_metric"][evaluated] if evaluated is not None else math.nan,
                "lr": r.columns["lr"][last] if done else math.nan,
                "batch size": r.columns["batch_size"][last] if done else None,
            }
        )
    return pd.DataFrame(rows)


def _results(job: jobs.Job | None) -> tuple[Trainer | None, int]:
    """The job's trainer (None while it is being built) and its furthest step."""
    trainer = job.payload if job is not None else None
    if not isinstance(trainer, Trainer):
        return None, 0
    return trainer, max((r.steps_done for r in trainer.results.values()), default=0)


def _data_version(job: jobs.Job, trainer: Trainer) -> tuple:
    """Changes whenever the run records something (a step, a diagnostic record, a status)."""
    return job.id, tuple((r.steps_done, len(r.records), r.status) for r in trainer.results.values())


def scrubber(job: jobs.Job | None) -> int | None:
    """The step every panel shows: None (the latest) while a run is live, else the slider's."""
    trainer, last = _results(job)
    if job is None or job.running or trainer is None or last < 2:
        return None
    if st.session_state.get("train_step_job") != job.id or st.session_state.get("train_step", 0) > last:
        st.session_state["train_step"] = last
        st.session_state["train_step_job"] = job.id
    return int(
        st.slider(
            "Step — moves every panel",
            min_value=1,
            max_value=last,
            key="train_step",
            help="Curves draw a cursor at this step; the per-parameter views and the decision boundary "
            "show the latest record or evaluation at or before it.",
        )
    )


def live_status() -> None:
    """Stop / Continue, the progress bar with the ETA, and each optimizer's latest numbers: a
    fragment redrawn every ``TICK_SECONDS`` while the run is live (cheap: no figures)."""
    job = _job("train_job")
    ticking = job is not None and job.running

    @st.fragment(run_every=TICK_SECONDS if ticking else None)
    def live() -> None:
        if st.session_state.pop("train_rerun_app", False):
            st.rerun(scope="app")  # Continue: the fragments' timers are set by a full run
        job = _job("train_job")
        if job is None:
            if st.session_state.pop("train_job_lost", False):
                st.info("The run of this link is no longer on the server. Press Start for a new one.")
            else:
                st.info("Choose the settings in the sidebar and press **Start**.")
            return
        meter = st.session_state.setdefault("train_meter", jobs.RateMeter(window_s=5.0))
        meter.tick()
        trainer, last = _results(job)
        stop_col, continue_col, bar_col = st.columns([1, 1, 8], vertical_alignment="center")
        stop_col.button(
            "Stop", key="train_stop", disabled=not job.running, on_click=_stop, args=("train_job",),
            width="stretch",
        )  # fmt: skip
        can_continue = job.finished and trainer is not None and not trainer.complete
        continue_col.button(
            "Continue", key="train_continue", disabled=not can_continue, on_click=_continue,
            args=("train_job",), width="stretch", help="train on from where the run stopped",
        )  # fmt: skip
        status = _status_line(job, "task, the models and the optimizers", meter.rate)
        bar_col.progress(job.fraction, text=status)
        if job.state == jobs.FAILED:
            st.error(f"The run failed: {job.error}")
        if trainer is not None and last:
            results = trainer.results
            diverged = [f"{k}: {r.status}" for k, r in results.items() if r.status.startswith("diverged")]
            if diverged:
                st.warning(
                    "A non-finite loss or weight stopped " + "; ".join(diverged)
                    + ". The other optimizers go on."
                )  # fmt: skip
            st.dataframe(_lanes_table(results), hide_index=True, key="train_lanes")
            if job.finished:
                export_button(trainer)
        if ticking and not job.running:
            # The run ended: a full run turns the timers off and redraws every panel at once;
            # one tick later, so the browser shows "stopped" before it draws them.
            if st.session_state.get("train_end_shown") == job.id:
                st.rerun(scope="app")
            st.session_state["train_end_shown"] = job.id

    with st.container():  # the fragment's own block: its reruns never touch the elements around it
        live()


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


def _figure(name: str, version: Any, build: Callable[[], Any]) -> Any:
    """``build()``'s figure, rebuilt only when ``version`` changed (one cache per session)."""
    cache = st.session_state.setdefault("train_figures", {})
    if name not in cache or cache[name][0] != version:
        cache[name] = (version, build())
    return cache[name][1]


def _plot(name: str, version: Any, build: Callable[[], Any]) -> None:
    st.plotly_chart(_figure(name, version, build), key=f"train_{name}_chart")


def live_panels(step: int | None) -> None:
    """Every figure, each in its own fragment: while the run is live each one redraws on its own
    period (:data:`LIVE_PERIODS`), so one redraw sends, and the browser draws, one figure — not
    the whole page; when the run is settled a full run draws them all at ``step``."""
    job = _job("train_job")
    trainer, last = _results(job)
    if job is None:
        return
    ticking = job.running
    if trainer is None or last == 0:
        if ticking:
            _await_first_step(job)
        return

    def panel(name: str, draw: Callable[[dict[str, Any], tuple, int], None]) -> None:
        """``draw(results, data version, step shown)`` in a fragment of its own."""

        @st.fragment(run_every=LIVE_PERIODS[name] if ticking else None)
        def redraw() -> None:
            live_job = _job("train_job")
            live_trainer, latest = _results(live_job)
            if live_job is None or live_trainer is None or live_job.id != job.id:
                return
            at = latest if step is None else step
            draw(live_trainer.results, _data_version(live_job, live_trainer), at)

        with st.container():  # the fragment's own block: its reruns never touch the others
            redraw()

    def chart(name: str, build: Callable[[dict[str, Any], int], Any]) -> None:
        """A figure ``build(results, step shown)`` in a fragment of its own."""
        panel(name, lambda results, data, at: _plot(name, (data, at), lambda: build(results, at)))

    # Curves draw a cursor only at the scrubber's step (none while live); the snapshots show `at`.
    st.subheader("Loss: mini-batch, training set and validation")
    chart("loss", lambda results, at: viz.loss_figure(results, step=step))
    st.subheader("Learning rate: the schedule and the effective-lr band")
    st.caption(
        "Black: the lr the schedule set. Band: 5–95 % and 25–75 % of the per-parameter effective "
        "lr |Δθ| / |g| over the whole model, dotted its median (SPEC §4)."
    )
    chart("lr", lambda results, at: viz.lr_figure(results, step=step))
    left, right = st.columns(2)
    with left:
        st.markdown("**Accuracy** (training set solid, validation dashed)")
        chart("accuracy", lambda results, at: viz.accuracy_figure(results, step=step))
    with right:
        st.markdown("**Batch size**")
        chart("batch", lambda results, at: viz.batch_size_figure(results, step=step))
    if trainer.config.diag_every:  # a record on step 1, then every diag_every steps
        st.subheader("Per layer over time")
        st.caption("Layer × step: the mean over each tensor's elements; one log colour scale.")
        chart("importance", lambda results, at: viz.layer_heatmap_figure(results, "importance", step=step))
        chart("scaling", lambda results, at: viz.layer_heatmap_figure(results, "scaling_factor", step=step))
        panel("per_parameter", per_parameter)
    if trainer.task.is_2d:
        st.subheader("Decision boundary")
        st.caption("Predicted class over the plane with the validation points, at the evaluation at or "
                   "before the step.")  # fmt: skip
        chart("boundary", lambda results, at: viz.decision_boundary_figure(results, trainer.task, step=at))


def _await_first_step(job: jobs.Job) -> None:
    """While the run is being built: a full run (which lays out the panels) once it has a step."""

    @st.fragment(run_every=TICK_SECONDS)
    def wait() -> None:
        _, last = _results(job)
        if last > 0 or not job.running:
            st.rerun(scope="app")

    with st.container():
        wait()


def per_parameter(results: dict[str, Any], data: tuple, at: int) -> None:
    """The distribution over all parameters and one weight matrix, at step ``at``."""
    record = next((r.record_at(at) for r in results.values() if r.record_at(at) is not None), None)
    if record is None:
        st.caption("No diagnostics record yet.")
        return
    st.subheader(f"Per parameter at step {record.step}")
    sizes = {t.name: t.numel for t in record.tensors if len(t.shape) >= 2}
    left, right = st.columns([2, 3])
    with left:
        quantity = st.selectbox(
            "Quantity", list(QUANTITY_LABELS), format_func=QUANTITY_LABELS.get, key="train_quantity"
        )
        _plot(
            "histogram", (data, at, quantity),
            lambda: viz.scaling_histogram_figure(results, step=at, quantity=quantity),
        )  # fmt: skip
    with right:
        if sizes:
            if st.session_state.get("train_tensor") not in sizes:
                st.session_state["train_tensor"] = max(sizes, key=sizes.__getitem__)  # the largest
            tensor = st.selectbox("Weight matrix", list(sizes), key="train_tensor")
            _plot(
                "weights", (data, at, quantity, tensor),
                lambda: viz.weight_heatmap_figure(results, tensor, step=at, quantity=quantity),
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The large-batch question
# ---------------------------------------------------------------------------------------------


def _study_job(kwargs: dict[str, Any]) -> jobs.Job:
    configs = large_batch_configs(kwargs["base"], **{k: v for k, v in kwargs.items() if k != "base"})
    offsets, total = {}, 0
    for batch, config in configs.items():
        offsets[batch], total = total, total + config.steps

    def measure(event: StudyEvent) -> tuple[int, int]:
        return offsets[event.batch_size] + event.event.step, total

    return jobs.Job(
        lambda: LargeBatchStudy(**kwargs),
        lambda study, stop: study.run(stop),
        measure=measure,
        idle_stop_s=IDLE_STOP_SECONDS,
        name="large-batch",
    )


def _draw_study(job: jobs.Job, cache: jobs.LiveCache) -> None:
    study: LargeBatchStudy | None = job.payload
    if study is None:
        return
    trainers = dict(study.trainers)  # a C-level copy: the thread may add the second run meanwhile
    results = {batch: trainer.results for batch, trainer in trainers.items()}
    if not results:
        return
    gap = large_batch_gap(results)
    data = (job.id, tuple((b, r.steps_done, r.status) for b, runs in results.items() for r in runs.values()))
    _chart(cache, "lb_gap", data, lambda: viz.large_batch_figure(gap), every_tick=True)
    st.caption(
        "Gap = training-set accuracy − validation accuracy at each run's last evaluation: the larger, "
        "the worse the optimizer generalises at that batch size (below 0: validation is the easier set)."
    )
    shown = gap[["optimizer", "batch_size", "steps", "epochs", "train_metric", "val_metric", "metric_gap",
                 "train_loss", "val_loss", "status"]]  # fmt: skip
    st.dataframe(
        shown.rename(columns={"batch_size": "batch", "train_metric": "train accuracy",
                              "val_metric": "val accuracy", "metric_gap": "gap (train − val)",
                              "train_loss": "train loss", "val_loss": "val loss"}),
        hide_index=True, key="train_lb_table",
    )  # fmt: skip
    if job.finished:
        with st.expander("Loss curves of each run"):
            for batch, runs in results.items():
                st.markdown(f"**Batch {batch}**")
                _chart(cache, f"lb_loss_{batch}", data, lambda runs=runs: viz.loss_figure(runs))


def live_study() -> None:
    job = _job("train_lb_job")
    ticking = job is not None and job.running

    @st.fragment(run_every=PANEL_TICK_SECONDS if ticking else None)
    def live() -> None:
        job = _job("train_lb_job")
        if job is None:
            return
        cache = st.session_state.setdefault("train_lb_cache", jobs.LiveCache(per_tick=1, min_age_s=1.0))
        meter = st.session_state.setdefault("train_lb_meter", jobs.RateMeter(window_s=5.0))
        meter.tick()
        cache.begin(live=job.running)
        stop_col, bar_col = st.columns([1, 9], vertical_alignment="center")
        stop_col.button(
            "Stop", key="train_lb_stop", disabled=not job.running, on_click=_stop, args=("train_lb_job",),
            width="stretch",
        )  # fmt: skip
        bar_col.progress(job.fraction, text=_status_line(job, "task and the two runs", meter.rate))
        if job.state == jobs.FAILED:
            st.error(f"The study failed: {job.error}")
        _draw_study(job, cache)
        if ticking and not job.running:
            st.rerun(scope="app")  # the study ended: a full run turns the timer off

    with st.container():  # the fragment's own block: its reruns never touch the elements around it
        live()


def large_batch_section(shared: dict[str, Any] | None) -> None:
    st.markdown(
        "Does a large batch generalise worse? **LARS** (You, Gitman, Ginsburg 2017) and "
        "**EXTRAP-SGD** (Lin, Kong, Stich, Jaggi 2020) were proposed to close the gap between "
        "training and validation accuracy that large-batch SGD opens. One click trains SGD, LARS "
        "and ExtraSGD on the sidebar's task and model at a small and a large batch size for the "
        "same number of epochs (so the large batch takes far fewer steps), and shows each "
        "optimizer's train − validation gap."
    )
    if shared is None:
        st.info("Fix the task settings in the sidebar first.")
        return
    kwargs, error = large_batch_controls(shared)
    if error:
        st.error(error)
    if st.button("Run small vs large batch", key="train_lb_start", type="primary", disabled=kwargs is None):
        _launch("train_lb_job", _study_job(kwargs))
    if message := st.session_state.get("train_lb_job_error"):
        st.error(message)
    live_study()


@st.cache_resource(show_spinner=False)
def _preloaded() -> bool:
    jobs.preload(PRELOAD)  # once per server process
    return True


# ---------------------------------------------------------------------------------------------

_preloaded()
st.title("Training lab")
st.caption(
    "Real networks train while you watch: every optimizer starts from the same initial weights "
    "and sees the same batches, and its per-parameter story — importance scores, effective "
    "learning rates, scaling factors — is drawn side by side."
)
with st.sidebar:
    st.header("Run settings")
    config, config_errors, shared_settings = run_controls()

tab_train, tab_large = st.tabs(["Train", "Large-batch question"])
with tab_train:
    start_col, note_col = st.columns([1, 5], vertical_alignment="center")
    started = start_col.button(
        "Start", key="train_start", type="primary", disabled=config is None, width="stretch",
        help="train every chosen optimizer from the same initialisation, in lockstep",
    )  # fmt: skip
    if config is None:
        note_col.error("Cannot start: " + " · ".join(config_errors))
    else:
        note_col.caption(
            f"{len(config.optimizers)} optimizer(s) × {config.steps} steps on "
            f"{get_task_info(config.task).label}, batch {config.batch_size} ({config.batch_policy}), "
            f"seed {config.seed}. {LIVE_HELP}"
        )
    if started and config is not None:
        _launch("train_job", _training_job(config))
    if message := st.session_state.get("train_job_error"):
        st.error(message)
    live_status()
    step = scrubber(_job("train_job"))
    live_panels(step)
with tab_large:
    large_batch_section(shared_settings)
