"""The Training lab's "Fair comparison" mode: every optimizer gets the same tuning budget on Ray
Tune, then its best configuration is re-run over several seeds.

Widgets in → a :class:`~dgs_core.studies.sweep.StudySpec` (a bad value is shown under the widget
its field names) → a :class:`~dgs_core.studies.tuner.SweepStudy` as a background job
(:mod:`app_pages.live`, slot ``train_fair``: its id in the URL as ``?train_fair_job=…``, so a
reloaded tab finds the study again). The job's first step joins Ray (:func:`engine.connect`:
the embedded local Ray starts on the first study of a server, which the page shows). While it
runs: trials done / total with the ETA, and each optimizer's best score so far; when it has
ended (or was stopped, keeping the finished trials): the seed bands, the sensitivity curves,
the tuned hyperparameters, the study bundle, and a button that trains the tuned configurations
as an ordinary live run. The mode is kept in the URL (``?train_mode=fair``); a ``?study=`` link
(:meth:`StudySpec.to_link`, e.g. a lesson's "open in the lab") fills the settings in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from app_pages import live
from app_pages.parts import run_list, training_state
from app_pages.parts.training_panels import RUN, training_job
from app_pages.ui import FieldSlots, optimizer_picker, plain, task_controls
from dgs_core import jobs
from dgs_core.limits import check_study, check_training
from dgs_core.params import ParamError
from dgs_core.runs.study import export_study
from dgs_core.studies import engine, study_job
from dgs_core.studies.sweep import EARLY_STOPPING, METRICS, SEARCHES, SEEDS, StudySpec
from dgs_core.studies.tuner import StudyResult, SweepStudy
from dgs_core.training.tasks import get_task_info
from dgs_core.viz.studies import (
    METRIC_LABELS,
    best_table,
    progress_table,
    seed_bands_figure,
    sensitivity_figure,
    study_figures,
)

MODE_KEY = "train_mode"  # session state and URL: "live" or "fair"
LINK_KEY = "study"  # URL: a study's settings (StudySpec.to_link), e.g. from a lesson
MODES = {"live": "Live run", "fair": "Fair comparison"}
FAIR = live.Slot(
    "train_fair",
    building="the study",
    noun="study",
    idle="Pick the optimizers, the trial budget and the seeds, then press **Start the fair comparison**.",
    start_label="Start the fair comparison",
    unit="trial",
)
DEFAULT_OPTIMIZERS = ("sgd", "adam", "dgs", "adan")
PROGRESS_SECONDS = 0.5  # the status and the best-so-far table while the study runs
SENSITIVITY_SECONDS = 3.0  # the sensitivity curves so far
TRAINING_METRICS = [name for name, (kind, _) in METRICS.items() if kind == "training"]
SEARCH_LABELS = {"random": "random", "grid": "grid", "tpe": "TPE (Optuna)"}
EARLY_LABELS = {"none": "none", "asha": "ASHA"}


def fair_mode() -> bool:
    """The page's mode switch (live run or fair comparison); True in the fair comparison.

    A tab's first run takes the mode from the URL (``?train_mode=…``), else the fair comparison
    when the URL names a study (``?train_fair_job=…``)."""
    if MODE_KEY not in st.session_state:
        linked = st.query_params.get(MODE_KEY)
        if linked not in MODES:
            linked = "fair" if FAIR.key in st.query_params or LINK_KEY in st.query_params else "live"
        st.session_state[MODE_KEY] = linked
    mode = st.radio(
        "Mode",
        list(MODES),
        format_func=MODES.get,
        key=MODE_KEY,
        horizontal=True,
        on_change=_mode_to_url,
        label_visibility="collapsed",
        help="Live run: train the chosen optimizers side by side. Fair comparison: tune every "
        "optimizer with the same budget on Ray, then re-run each winner over several seeds.",
    )
    return mode == "fair"


def _mode_to_url() -> None:
    st.query_params[MODE_KEY] = st.session_state[MODE_KEY]


# ---------------------------------------------------------------------------------------------
# Controls: plain values in, a validated StudySpec out
# ---------------------------------------------------------------------------------------------


def seed_widgets(spec: StudySpec) -> None:
    """A tab that found its study through the URL shows that study's settings (a widget that
    already has a value keeps it)."""
    values = {
        "train_task": spec.task,
        "train_size": spec.model.get("size", "small"),
        "train_fair_steps": spec.steps,
        "train_fair_batch": spec.batch_size,
        "train_fair_seed": spec.seed,
        "train_fair_eval_every": spec.eval_every,
        "train_fair_optimizers": list(spec.optimizers),
        "train_fair_trials": spec.trials,
        "train_fair_seeds": spec.seeds,
        "train_fair_search": spec.search,
        "train_fair_early": spec.early_stopping,
        "train_fair_metric": spec.metric,
        **{f"train_task_{spec.task}_{name}": value for name, value in spec.task_params.items()},
    }
    for key, value in values.items():
        st.session_state.setdefault(key, value)


def _seed_from_link(text: str) -> None:
    """A ``study=`` link's settings in the sidebar (a lesson's "open in the lab"); a bad link is
    said, naming its field, and the sidebar keeps its values."""
    try:
        seed_widgets(StudySpec.from_link(text))
    except ParamError as exc:
        st.error("This link's study settings were not used: " + plain(str(exc)))


def problem_controls(task_hidden: Sequence[str], slots: FieldSlots) -> tuple[dict[str, Any], bool]:
    """The sidebar: task, model and what every trial runs (steps, batch, seed, evaluations)."""
    st.header("Study settings")
    task, task_params, size, task_ok = task_controls(
        key="train_task", size_key="train_size", hidden=task_hidden
    )
    steps = st.number_input("Steps per trial", value=300, step=50, key="train_fair_steps")
    slots.add("steps")
    batch = st.number_input("Batch size", value=32, step=8, key="train_fair_batch")
    slots.add("batch_size")
    seed = st.number_input(
        "Seed",
        value=0,
        step=1,
        key="train_fair_seed",
        help="the tuning trials' seed; the winners re-run with seeds seed, seed + 1, …",
    )
    slots.add("seed")
    eval_every = st.number_input(
        "Evaluate every (steps)",
        value=25,
        step=5,
        key="train_fair_eval_every",
        help="the validation loss is read at these steps: the tuning metric and the seed curves",
    )
    slots.add("eval_every")
    problem = {
        "task": task,
        "task_params": task_params,
        "model": {"size": size},
        "steps": steps,
        "batch_size": batch,
        "seed": seed,
        "eval_every": eval_every,
    }
    return problem, task_ok


def study_controls(slots: FieldSlots) -> dict[str, Any]:
    """The main area: optimizers, the equal budget, the seeds, how trials are chosen."""
    names = optimizer_picker(key="train_fair_optimizers", default=list(DEFAULT_OPTIMIZERS))
    slots.add("optimizers", "optimizer")
    c1, c2, c3, c4, c5 = st.columns(5)
    with c1:
        trials = st.number_input(
            "Trials per optimizer",
            value=8,
            step=1,
            key="train_fair_trials",
            help="the tuning budget, the same for every optimizer",
        )
        slots.add("trials")
    with c2:
        seeds = st.number_input(
            "Seeds",
            value=3,
            step=1,
            key="train_fair_seeds",
            help="each optimizer's best configuration is re-run with this many seeds (the bands)",
        )
        slots.add("seeds")
    with c3:
        search = st.selectbox("Search", SEARCHES, format_func=SEARCH_LABELS.get, key="train_fair_search")
        slots.add("search")
    with c4:
        early = st.selectbox(
            "Early stopping",
            EARLY_STOPPING,
            format_func=EARLY_LABELS.get,
            key="train_fair_early",
            help="ASHA stops the poorest tuning trials at their evaluations (never the seed runs)",
        )
        slots.add("early_stopping")
    with c5:
        metric = st.selectbox(
            "Tuning metric", TRAINING_METRICS, format_func=METRIC_LABELS.get, key="train_fair_metric"
        )
        slots.add("metric")
    return {
        "optimizers": tuple(names),
        "trials": trials,
        "seeds": seeds,
        "search": search,
        "early_stopping": early,
        "metric": metric,
    }


def build_spec(values: dict[str, Any], slots: FieldSlots) -> tuple[StudySpec | None, str]:
    """The validated spec within the server's limits, or None and the message (also shown under
    its widget when one holds the field it names)."""
    try:
        spec = StudySpec(kind="training", **values)
        check_study(spec)  # $DGS_LAB_MAX_TRIALS, $DGS_LAB_MAX_STEPS
        return spec, ""
    except ValueError as exc:
        if isinstance(exc, ParamError) and exc.field == "optimizers" and not values["optimizers"]:
            message = "Pick at least one optimizer."
            slots.show(ParamError("optimizers", [], message))
            return None, message
        slots.show(exc)
        return None, str(exc)


# ---------------------------------------------------------------------------------------------
# The study as a job: progress while it runs, the results when it has ended
# ---------------------------------------------------------------------------------------------


def _styled(table: pd.DataFrame) -> Any:
    """A small table as plain HTML: no index, numbers to 4 significant digits, "–" for NaN."""
    return table.style.hide(axis="index").format(
        "{:.4g}", subset=table.select_dtypes("float").columns, na_rep="–"
    )


def draw_progress(job: jobs.Job) -> None:
    """Stop, trials done / total with the ETA, "starting Ray…", each optimizer's best so far."""
    live.status(FAIR, job)
    study = job.payload
    if not isinstance(study, SweepStudy):
        return
    if job.running and engine.current() is None:  # SweepStudy.run joins Ray first
        with st.container(key="train_fair_starting"):
            st.info(
                "Starting Ray… The first study on this server starts an embedded local Ray "
                "(a few seconds); later studies reuse it."
            )
    if job.running and job.signal.is_set():
        st.caption("Stopping: cancelling the running trials; the finished ones are kept.")
    elif job.running and study.progress()[0] == 0:
        st.caption("Ray Tune is starting the first trials (each worker loads PyTorch once)…")
    with st.container(key="train_fair_progress"):
        st.table(_styled(progress_table(study.spec, study.rows)))


def draw_live_sensitivity(job: jobs.Job) -> None:
    """The sensitivity curves of the tuning trials finished so far."""
    study = job.payload
    if not isinstance(study, SweepStudy) or not study.rows:
        return
    live.chart(
        "train_fair_live_sensitivity",
        (job.id, len(study.rows)),
        lambda: sensitivity_figure(study.snapshot(), height=360),
    )


def draw_results(job: jobs.Job) -> None:
    """The seed bands, the sensitivity curves, the tuned hyperparameters, the bundle, and the
    button that trains the tuned configurations live."""
    study = job.payload
    result = study.result if isinstance(study, SweepStudy) else None
    if result is None:
        return
    # the study is in the session's list on the Runs page at once, unsaved
    run_list.offer(f"study:{job.id}", lambda: export_study(result, figures=study_figures(result)))
    if job.state == jobs.STOPPED:
        st.warning(f"Stopped: the {len(result.trials)} trials that finished are kept below.")
    st.caption(f"Ran on Ray ({result.address}).")
    bands, sensitivity = st.columns(2)
    with bands:
        if (result.trials["phase"] == SEEDS).any():
            # a shorter title: the figure has half the page's width here
            live.chart(
                "train_fair_bands",
                job.id,
                lambda: seed_bands_figure(result).update_layout(
                    title="Tuned runs over the seeds: mean ± 1 std"
                ),
            )
        else:
            st.info("No seed run finished: the bands need the re-runs of the tuned configurations.")
    with sensitivity:
        live.chart("train_fair_sensitivity", job.id, lambda: sensitivity_figure(result))
    st.subheader("Tuned hyperparameters")
    with st.container(key="train_fair_best"):
        st.table(_styled(best_table(result)))
    if message := st.session_state.pop("train_fair_open_error", None):
        st.error("Cannot open the tuned run: " + plain(message))
    row = st.container(horizontal=True, vertical_alignment="center")
    row.button(
        "Open the tuned run in the Training lab",
        key="train_fair_open",
        type="primary",
        on_click=_open_tuned,
        args=(result,),
        help="train every optimizer at its tuned hyperparameters side by side, live, with the "
        "study's task, steps, batch size and seed",
    )
    spec = result.spec
    row.download_button(
        "Download the study (.zip)",
        data=lambda: export_study(result, figures=study_figures(result)),
        file_name=f"dgs-lab-study-{spec.task}-{'-'.join(spec.optimizers)}.zip",
        mime="application/zip",
        key="train_fair_export",
        on_click="ignore",
        help="the study as a bundle (spec, every trial, the seed curves, figures): open it on the Runs page",
    )


def _open_tuned(result: StudyResult) -> None:
    """Switch to the live run with the tuned configurations in the sidebar, and start it."""
    auto = max(1, result.spec.steps // 60)  # the live run's "auto" evaluation and diagnostics
    config = result.tuned_config(eval_every=auto, diag_every=auto, device="cpu")
    state = st.session_state
    try:
        check_training(config)  # the server's limits on a live run (optimizers, records)
    except ValueError as exc:
        state["train_fair_open_error"] = str(exc)
        return
    state[MODE_KEY] = "live"
    st.query_params[MODE_KEY] = "live"
    training_state.seed_controls(config)
    state.update(train_eval_every=0, train_diag_every=0)  # "auto", as the tuned run's values are
    pace = training_state.session_pace()
    live.start(RUN, training_job(config, pace))
    training_state.publish(config, pace)


def _where() -> str:
    info = engine.current()
    if info is not None:
        return f"Ray: {info.address}, {info.workers} trials at a time."
    if engine.ADDRESS_ENV in os.environ:
        return f"Ray: the cluster at ${engine.ADDRESS_ENV}, joined on the first study."
    return f"Ray starts on the first study: embedded, local, {engine.local_workers()} trials at a time."


def fair_comparison(*, task_hidden: Sequence[str] = ()) -> None:
    """The whole mode: sidebar settings, the start button, the live progress, the results."""
    job = live.current(FAIR)
    if job is not None and isinstance(job.payload, SweepStudy):
        seed_widgets(job.payload.spec)
    elif LINK_KEY in st.query_params:
        _seed_from_link(st.query_params[LINK_KEY])
    slots = FieldSlots()
    with st.sidebar:
        problem, task_ok = problem_controls(task_hidden, slots)
    st.markdown(
        "**A fair race.** Every optimizer gets the same number of tuning trials (its learning "
        "rate searched log-uniformly over its default × 10^±2), scored by the tuning metric; then "
        "each one's best configuration is re-run over several seeds, so the curves carry bands "
        "(mean ± 1 std) and the differences can be told from the noise. The trials run on Ray: on "
        "this server's own Ray in trial processes kept warm between studies, and on Ray Tune's "
        "trial processes with early stopping (ASHA) or on a cluster."
    )
    values = {**problem, **study_controls(slots)}
    spec, error = (None, "Fix the task parameters marked in the sidebar.") if not task_ok else (None, "")
    if task_ok:
        spec, error = build_spec(values, slots)
    start_col, note_col = st.columns([1, 3], vertical_alignment="center")
    started = start_col.button(
        FAIR.start_label, key="train_fair_start", type="primary", disabled=spec is None, width="stretch"
    )
    if spec is None:
        note_col.error("Cannot start: " + plain(error))
    else:
        note_col.caption(
            f"{len(spec.optimizers)} optimizer(s) × ({spec.trials} tuning trials + {spec.seeds} "
            f"seeds) = {spec.trials_total} trials of {spec.steps} steps on "
            f"{get_task_info(spec.task).label}. {_where()}"
        )
    if started and spec is not None:
        study = SweepStudy(spec)  # it joins Ray when it runs, in the job's thread
        live.start(FAIR, study_job(lambda: study, name="fair", idle_stop_s=live.IDLE_STOP_SECONDS))
    live.watch(FAIR, draw_progress, period=PROGRESS_SECONDS)
    job = live.current(FAIR)  # a new one, if Start was pressed
    if job is not None and job.running:
        live.every(FAIR, SENSITIVITY_SECONDS, draw_live_sensitivity)
    elif job is not None:
        draw_results(job)
