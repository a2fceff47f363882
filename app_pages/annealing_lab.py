"""Annealing lab: learning-rate schedules, plateau cuts, the effective lr, and the two-phase recipe.

Widgets in → plain values → :mod:`dgs_core.schedules.curves`, :mod:`dgs_core.studies.annealing`
→ :mod:`dgs_core.viz.annealing`.
Training runs advance in slices of about a second inside fragments that rerun themselves,
so the rest of the page stays usable while they grow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pandas as pd
import streamlit as st

from app_pages.ui import hyperparam_controls, optimizer_label, optimizer_picker
from dgs_core import jobs
from dgs_core.optim import registry
from dgs_core.params import Param
from dgs_core.runs.training import export_training
from dgs_core.schedules import PLATEAU_HYPERPARAMS, SCHEDULES, ScheduleSpec
from dgs_core.schedules.curves import (
    CurveSpec,
    check_run_steps,
    default_params,
    parse_step_list,
    schedule_curves,
)
from dgs_core.schedules.plateau import PLATEAU_DEMO_HYPERPARAMS, PlateauDemo, plateau_demo
from dgs_core.studies.annealing import (
    ANNEAL_SHAPES,
    MAX_TRAIN_STEPS,
    METRICS,
    VARIANTS,
    StudyRuns,
    TwoPhaseSettings,
    effective_lr_config,
    two_phase_configs,
    two_phase_record,
)
from dgs_core.training.tasks import get_task_info, task_names
from dgs_core.viz import annealing as viz
from dgs_core.viz.runs import training_figures

SLICE_SECONDS = 1.5  # training per rerun of a live section: the UI waits at most about this long
TICK_SECONDS = 0.1  # pause between two slices (the fragment's run_every)
KEEP_FINISHED = 3  # finished runs kept per section, so returning to a setting is instant
DEFAULT_CURVES = ("warmup_cosine", "step_decay", "wsd")
EFFECTIVE_LR_COLUMNS = ("schedule lr (last)", "η_eff median (last)", "η_eff 5 % (last)", "η_eff 95 % (last)")
OWN_WARMUP = ("warmup", "warmup_cosine", "wsd", "one_cycle")  # no extra warmup offered
PLATEAU_SHOWN = ("factor", "patience", "threshold", "cooldown", "min_lr")
DEMO_PLATEAU = {"factor": 0.5, "patience": 5}  # torch's 0.1 / 10 cut rarely in 150 evaluations
PRELOAD = ("torch._dynamo", "sklearn.datasets")  # imported by the first run: seconds, done early


def _specs(name: str, specs: tuple[Param, ...]) -> SimpleNamespace:
    """A spec group in the shape ``hyperparam_controls`` reads (name, hyperparams, defaults)."""
    return SimpleNamespace(name=name, hyperparams=specs, defaults={s.name: s.default for s in specs})


@st.cache_resource(show_spinner=False)
def _preloaded() -> bool:
    jobs.preload(PRELOAD)  # once per server process
    return True


def _shown_error(message: str | None) -> bool:
    if message:
        st.error(message)
    return bool(message)


# ---------------------------------------------------------------------------------------------
# Cached compute (plain inputs only)
# ---------------------------------------------------------------------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def _curves_frame(curves_json: str, run_steps: int) -> pd.DataFrame:
    curves = [CurveSpec.from_dict(c) for c in json.loads(curves_json)]
    return schedule_curves(curves, run_steps)


@st.cache_data(max_entries=32, show_spinner=False)
def _plateau(settings_json: str) -> PlateauDemo:
    return plateau_demo(**json.loads(settings_json))


# ---------------------------------------------------------------------------------------------
# Live runs: a StudyRuns in session state, advanced by a self-rerunning fragment
# ---------------------------------------------------------------------------------------------


def _start(section: str, key: str, configs: Callable[[], dict[str, Any]], extra: dict[str, Any]) -> None:
    """Make ``key``'s run the section's current one: a finished copy if kept, else a new one."""
    done: dict[str, dict[str, Any]] = st.session_state.setdefault(f"anneal_{section}_done", {})
    job = done.get(key)
    if job is None:
        job = {"key": key, "study": StudyRuns(configs()), "stopped": False, **extra}
    job["stopped"] = False
    st.session_state[f"anneal_{section}_job"] = job


def _remember(section: str, job: dict[str, Any]) -> None:
    done: dict[str, dict[str, Any]] = st.session_state.setdefault(f"anneal_{section}_done", {})
    done.pop(job["key"], None)
    done[job["key"]] = job
    while len(done) > KEEP_FINISHED:
        done.pop(next(iter(done)))


def _live(section: str, draw: Callable[[dict[str, Any], bool], None]) -> None:
    """Advance the section's run by one slice per rerun of a fragment, then draw it
    (``draw(job, live)``; ``live`` while more slices follow)."""
    job = st.session_state.get(f"anneal_{section}_job")
    running = job is not None and not job["stopped"] and not job["study"].finished

    @st.fragment(run_every=TICK_SECONDS if running else None)
    def live() -> None:
        job = st.session_state.get(f"anneal_{section}_job")
        if job is None:
            return
        runs: StudyRuns = job["study"]
        was_running = not job["stopped"] and not runs.finished
        if was_running:
            progress = runs.advance(max_seconds=SLICE_SECONDS)
        else:
            progress = runs.progress()
        state = "finished" if progress.finished else ("stopped" if job["stopped"] else "running")
        bar, stop = st.columns([5, 1])
        bar.progress(progress.fraction, text=f"{state}: {progress.steps_done} / {progress.steps_total} steps")
        if was_running and not progress.finished and stop.button("Stop", key=f"anneal_{section}_stop"):
            job["stopped"] = True
        draw(job, was_running and not progress.finished and not job["stopped"])
        if was_running and (progress.finished or job["stopped"]):
            if progress.finished:
                _remember(section, job)
            st.rerun(scope="app")  # a full rerun turns the fragment's timer off

    live()


# ---------------------------------------------------------------------------------------------
# 1. Schedules
# ---------------------------------------------------------------------------------------------


def schedule_controls(name: str, run_steps: int) -> CurveSpec | None:
    """One curve's controls; the curve, or None (with the reason shown) when invalid."""
    info = SCHEDULES[name]
    start = default_params(name, run_steps)
    scalars = replace(info, hyperparams=tuple(h for h in info.hyperparams if h.kind != "int_list"))
    params, errors = hyperparam_controls(scalars, key="anneal_sched", values=start)  # type: ignore[arg-type]
    for spec in info.hyperparams:
        if spec.kind != "int_list":
            continue
        text = st.text_input(
            spec.name,
            value=", ".join(str(v) for v in start[spec.name]),
            key=f"anneal_sched_{name}_{spec.name}",
            help=f"{spec.help} — valid: {spec.describe_range()}, separated by commas",
        )
        try:
            params[spec.name] = spec.validate(parse_step_list(text, spec.name))
        except ValueError as exc:
            errors[spec.name] = str(exc)
            st.error(str(exc))
    prefix = 0
    if name not in OWN_WARMUP:
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
        st.error(str(exc))
        return None
    return curve


def schedules_section() -> tuple[list[CurveSpec], int]:
    """The composer and the plateau demo; returns the valid curves and the run length."""
    st.markdown(
        "Pick schedules to overlay. Each box holds one schedule's formula and parameters; the "
        "curves redraw as you type. Invalid values are refused next to the control, with the reason."
    )
    top = st.columns([1, 3, 1])
    raw_steps = top[0].number_input("Run length (steps)", value=300, step=10, key="anneal_run_steps")
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
        return [], 0
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

    st.subheader("Plateau annealer (ReduceLROnPlateau)")
    st.markdown(
        "The annealer watches a validation metric and multiplies the lr by *factor* once it has "
        "not improved (by *threshold*, relative) for more than *patience* evaluations. Here it runs "
        "on a toy validation curve whose noise floor is proportional to the lr, so each cut "
        "(▼, dotted line) lowers it."
    )
    annealer_column, toy_column, right = st.columns([1, 1, 4])
    with annealer_column:
        shown = tuple(s for s in PLATEAU_HYPERPARAMS if s.name in PLATEAU_SHOWN)
        plateau, plateau_errors = hyperparam_controls(
            _specs("plateau", shown),
            key="anneal_plateau",
            values=DEMO_PLATEAU,  # type: ignore[arg-type]
        )
    with toy_column:
        toy, toy_errors = hyperparam_controls(
            _specs("toy", PLATEAU_DEMO_HYPERPARAMS),
            key="anneal_plateau",  # type: ignore[arg-type]
        )
    with right:
        if plateau_errors or toy_errors:
            st.info("Fix the values marked on the left to run the annealer.")
        else:
            try:
                demo = _plateau(json.dumps({**plateau, **toy}, sort_keys=True))
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.plotly_chart(viz.plateau_demo_figure(demo), key="anneal_plateau_chart")
                st.dataframe(viz.plateau_events_table(demo.events), hide_index=True, height=160)
    return curves, run_steps


# ---------------------------------------------------------------------------------------------
# 2. Effective learning rate
# ---------------------------------------------------------------------------------------------


def _draw_effective(job: dict[str, Any], live: bool) -> None:
    results = job["study"].all_results("effective")
    if not results:
        return
    st.plotly_chart(viz.effective_lr_figure(results), key="anneal_eff_chart")
    lr_format = st.column_config.NumberColumn(format="%.3e")
    st.dataframe(
        viz.effective_lr_table(results),
        hide_index=True,
        column_config={c: lr_format for c in EFFECTIVE_LR_COLUMNS},
    )


def effective_section(curves: list[CurveSpec], run_steps: int) -> None:
    st.markdown(
        "Apply one of the composed schedules to several optimizers on a task. Each panel shows "
        "the lr the schedule set (black; scaled to the optimizer's own lr) against what the "
        "optimizer actually applied per parameter: the band of η_eff = |Δθ| / |g| over the model "
        "(SPEC §4). For plain SGD they coincide; adaptive methods spread it over decades."
    )
    if not curves:
        st.info("Compose at least one valid schedule in the first tab.")
        return
    left, right = st.columns([1, 2])
    with left:
        labels = [c.label for c in curves]
        label = st.selectbox("Schedule (from the composer)", labels, key="anneal_eff_curve")
        task = st.selectbox(
            "Task", task_names(), format_func=lambda n: get_task_info(n).label, key="anneal_eff_task"
        )
        names = optimizer_picker(key="anneal_eff_optimizers", default=["sgd", "adam", "dgs"])
        hparams: dict[str, dict[str, Any]] = {}
        failed = False
        with st.expander("Optimizer hyperparameters"):
            for name in names:
                st.markdown(f"**{optimizer_label(name)}**")
                hparams[name], errors = hyperparam_controls(registry.get(name), key="anneal_eff")
                failed = failed or bool(errors)
        st.caption(f"Trains for the composer's run length: {run_steps} steps (cap {MAX_TRAIN_STEPS}).")
        error = None
        config = None
        if not names:
            error = "Pick at least one optimizer."
        elif not failed:
            curve = curves[labels.index(label)]
            try:
                config = effective_lr_config(
                    schedule=curve.spec(run_steps),
                    optimizers=[(n, registry.get(n).resolve(hparams[n])) for n in names],
                    steps=run_steps,
                    task=task,
                )
            except ValueError as exc:
                error = str(exc)
        _shown_error(error)
        if st.button("Run", key="anneal_eff_run", type="primary", disabled=config is None):
            _start("eff", config.to_json(), lambda: {"effective": config}, {})  # type: ignore[union-attr]
    with right:
        job = st.session_state.get("anneal_eff_job")
        if job is not None and config is not None and job["key"] != config.to_json():
            st.caption("The controls changed since this run; press Run for a new one.")
        _live("eff", _draw_effective)


# ---------------------------------------------------------------------------------------------
# 3. The two-phase demo
# ---------------------------------------------------------------------------------------------


def two_phase_controls() -> TwoPhaseSettings | None:
    """The demo's settings from the controls, or None with the reason shown."""
    defaults = TwoPhaseSettings()
    c1, c2, c3 = st.columns(3)
    with c1:
        task = st.selectbox(
            "Task", task_names(), format_func=lambda n: get_task_info(n).label, key="anneal_tp_task"
        )
        noise = st.slider("Label noise (main data)", 0.0, 0.8, 0.3, 0.05, key="anneal_tp_noise")
        hq = st.slider("High-quality subset (fraction, clean)", 0.05, 1.0, 0.2, 0.05, key="anneal_tp_hq")
        seed = st.number_input("Seed", value=0, step=1, key="anneal_tp_seed")
    with c2:
        names = registry.names()
        optimizer = st.selectbox(
            "Optimizer", names, index=names.index(defaults.optimizer), format_func=optimizer_label,
            key="anneal_tp_optimizer",
        )  # fmt: skip
        start = dict(defaults.hparams) if optimizer == defaults.optimizer else {}
        with st.expander("Optimizer hyperparameters (lr is the base rate η₀)"):
            hparams, errors = hyperparam_controls(registry.get(optimizer), key="anneal_tp", values=start)
        metric = st.selectbox(
            "Validation metric", list(METRICS), format_func=lambda m: m.replace("val_", "validation "),
            key="anneal_tp_metric",
        )  # fmt: skip
        eval_every = st.number_input("Validate every (steps)", value=defaults.eval_every, step=1,
                                     key="anneal_tp_eval_every")  # fmt: skip
    with c3:
        main_steps = st.number_input("Main phase (steps)", value=defaults.main_steps, step=10,
                                     key="anneal_tp_main_steps")  # fmt: skip
        anneal_steps = st.number_input("Annealing phase budget (steps)", value=defaults.anneal_steps, step=10,
                                       key="anneal_tp_anneal_steps")  # fmt: skip
        shape = st.selectbox("Annealing schedule", ANNEAL_SHAPES, key="anneal_tp_shape")
        ratio = st.number_input("Floor min_lr / η₀", value=defaults.min_lr_ratio, format="%.3e",
                                key="anneal_tp_floor")  # fmt: skip
        factor = st.number_input("Plateau factor", value=defaults.plateau_factor, key="anneal_tp_factor")
        patience = st.number_input("Plateau patience (validations)", value=defaults.plateau_patience, step=1,
                                   key="anneal_tp_patience")  # fmt: skip
        stop_patience = st.number_input(
            "Stop after validations without improvement (0: never)", value=defaults.stop_patience, step=1,
            key="anneal_tp_stop_patience",
        )  # fmt: skip
    if errors:
        return None
    task_params = {"label_noise": noise, "hq_fraction": hq}
    if task == "moons":
        task_params["n_samples"] = 600  # small and quick: the demo's default run takes seconds
    try:
        return TwoPhaseSettings(
            task=task, task_params=task_params, optimizer=optimizer, hparams=hparams, seed=seed,
            main_steps=main_steps, anneal_steps=anneal_steps, eval_every=eval_every, anneal_shape=shape,
            min_lr_ratio=ratio, plateau_factor=factor, plateau_patience=patience, stop_patience=stop_patience,
            metric=metric,
        )  # fmt: skip
    except ValueError as exc:
        st.error(str(exc))
        return None


def _draw_two_phase(job: dict[str, Any], live: bool) -> None:
    runs: StudyRuns = job["study"]
    settings: TwoPhaseSettings = job["settings"]
    results = runs.results
    if not results:
        return
    reductions = {name: runs.reductions(name) for name in results}
    st.caption(
        f"{optimizer_label(settings.optimizer)}, η₀ = {settings.base_lr:g}, floor {settings.min_lr:g}; "
        f"{settings.task_params.get('label_noise', 0):.0%} label noise in the main data, "
        f"high-quality subset {settings.task_params.get('hq_fraction', 0.2):.0%} of the training set."
    )
    st.plotly_chart(viz.two_phase_figure(results, settings, reductions=reductions), key="anneal_tp_chart")
    st.dataframe(
        viz.two_phase_table(results, settings, live=live),
        hide_index=True,
        column_config={"end": st.column_config.TextColumn(width="medium"),
                       "final lr": st.column_config.NumberColumn(format="%.3e")},
    )  # fmt: skip
    if live:
        return  # the record is written once the run has settled
    with st.expander("Annealing plan (saved with the run)"):
        record = two_phase_record(settings, runs)
        text = json.dumps(record, indent=1)
        st.download_button("Download the run record (JSON)", text, file_name="annealing_run.json",
                           mime="application/json", key="anneal_tp_download")  # fmt: skip
        st.json(record, expanded=1)
    left, right = st.columns([2, 1])
    variant = left.selectbox(
        "Variant to export", list(runs.trainers), format_func=lambda n: VARIANTS[n],
        key="anneal_tp_export_variant",
    )  # fmt: skip
    trainer = runs.trainers[variant]
    right.download_button(
        "Export snapshot (.zip)",
        data=lambda: export_training(
            trainer,
            figures=training_figures(trainer.results, trainer.task),
            name=f"Annealing lab: {VARIANTS[variant]}",
        ),
        file_name=f"dgs-lab-annealing-{variant}-{trainer.step}steps.zip",
        mime="application/zip",
        key="anneal_tp_export",
        on_click="ignore",
        help="this variant's run as a versioned bundle, its annealing plan and phase record included; "
        "open it on the Runs page or re-run it with `python -m dgs_core run`",
    )


def two_phase_section() -> None:
    st.markdown(
        "The *iterative learning-rate reduction* recipe: a main phase at the base rate on data "
        "with noisy labels, then an annealing phase that lowers the rate — by a schedule or by "
        "plateau cuts — on the clean high-quality subset, until the rate reaches its floor or the "
        "validation metric stops improving. Four variants share the seed, initialisation, batch "
        "order and budget, so their curves coincide until the phase boundary."
    )
    settings = two_phase_controls()
    key = None if settings is None else json.dumps(settings.to_dict(), sort_keys=True)
    if st.button("Run two-phase demo", key="anneal_tp_run", type="primary", disabled=settings is None):
        _start("tp", key, lambda: two_phase_configs(settings), {"settings": settings})  # type: ignore[arg-type]
    job = st.session_state.get("anneal_tp_job")
    if job is not None and key is not None and job["key"] != key:
        st.caption("The controls changed since this run; press Run for a new one.")
    _live("tp", _draw_two_phase)


# ---------------------------------------------------------------------------------------------

_preloaded()
st.title("Annealing lab")
st.caption(
    "Learning-rate schedules, plateau annealing, the lr each optimizer really applies, and a "
    "two-phase annealing run with a switch to high-quality data."
)
tab_schedules, tab_effective, tab_two_phase = st.tabs(
    ["Schedules", "Effective learning rate", "Two-phase annealing"]
)
with tab_schedules:
    composed, length = schedules_section()
with tab_effective:
    effective_section(composed, length)
with tab_two_phase:
    two_phase_section()
