"""The Training lab's large-batch tab: SGD, LARS and ExtraSGD at a small and a large batch.

The study (:class:`~dgs_core.studies.large_batch.LargeBatchStudy`) runs as a background job
(:mod:`app_pages.live`, slot ``train_lb``): both runs grow together, and the gap figure and
table redraw once a second while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from app_pages import live
from app_pages.ui import FieldSlots, optimizer_label
from dgs_core import jobs
from dgs_core.studies import study_job
from dgs_core.studies.large_batch import LR_SCALINGS, LargeBatchStudy, large_batch_base, large_batch_configs
from dgs_core.viz import training as viz
from dgs_core.viz.large_batch import large_batch_figure

PERIOD_SECONDS = 1.0  # the study's redraws while it runs
STUDY = live.Slot("train_lb", building="the task and the two runs", noun="study")
SCALING_LABELS = {"none": "same lr", "linear": "× B/b (linear)", "sqrt": "× √(B/b)"}
GAP_COLUMNS = {
    "optimizer": "optimizer",
    "batch_size": "batch",
    "steps": "steps",
    "epochs": "epochs",
    "train_metric": "train accuracy",
    "val_metric": "val accuracy",
    "metric_gap": "gap (train − val)",
    "train_loss": "train loss",
    "val_loss": "val loss",
    "status": "status",
}


def large_batch_controls(shared: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The study's settings (task and model from the sidebar) → LargeBatchStudy's arguments, or
    None; an error naming one of these settings is shown under its widget, any other returned."""
    slots = FieldSlots()
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        small = st.number_input("Small batch", value=16, step=8, key="train_lb_small")
        slots.add("small_batch")
    with c2:
        large = st.number_input("Large batch", value=512, step=64, key="train_lb_large")
        slots.add("large_batch")
    with c3:
        epochs = st.number_input("Epochs (both runs)", value=10.0, step=1.0, key="train_lb_epochs")
        slots.add("epochs")
    with c4:
        scaling = st.selectbox(
            "lr at the large batch", LR_SCALINGS, format_func=SCALING_LABELS.get, key="train_lb_scaling"
        )
    kwargs = {"small_batch": small, "large_batch": large, "epochs": float(epochs), "lr_scaling": scaling}
    try:
        base = large_batch_base(**shared)
        configs = large_batch_configs(base, **kwargs)
    except ValueError as exc:
        return None, None if slots.show(exc) else str(exc)
    steps = ", ".join(f"batch {b}: {c.steps} steps" for b, c in configs.items())
    names = ", ".join(f"{optimizer_label(s.name)} (lr {s.hparams['lr']:g})" for s in base.optimizers)
    st.caption(f"{names}; {epochs:g} epochs at each batch size — {steps}.")
    return {"base": base, **kwargs}, None


def draw_study(job: jobs.Job, on_done: Callable[[jobs.Job], None] | None = None) -> None:
    """Stop, the progress, and the gap figure and table (the loss curves once it has ended, and
    ``on_done(job)``: the landscape link)."""
    live.status(STUDY, job)
    study: LargeBatchStudy | None = job.payload
    if study is None:
        return
    results = {batch: trainer.results for batch, trainer in list(study.trainers.items())}
    if not results:
        return
    gap = study.gap()
    data = (job.id, tuple((b, r.steps_done, r.status) for b, runs in results.items() for r in runs.values()))
    live.chart("train_lb_gap", data, lambda: large_batch_figure(gap))
    st.caption(
        "Gap = training-set accuracy − validation accuracy at each run's last evaluation: the larger, "
        "the worse the optimizer generalises at that batch size (below 0: validation is the easier set)."
    )
    shown = gap[list(GAP_COLUMNS)].rename(columns=GAP_COLUMNS)
    st.dataframe(shown, hide_index=True, key="train_lb_table")
    if job.finished:
        if on_done is not None:
            on_done(job)
        with st.expander("Loss curves of each run"):
            for batch, runs in results.items():
                st.markdown(f"**Batch {batch}**")
                live.chart(f"train_lb_loss_{batch}", data, lambda runs=runs: viz.loss_figure(runs))


def large_batch_section(
    shared: dict[str, Any] | None, *, on_done: Callable[[jobs.Job], None] | None = None
) -> None:
    """The tab; ``on_done(job)`` draws under a finished or stopped study (the landscape link)."""
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
        build = lambda: LargeBatchStudy(**kwargs)  # noqa: E731  # in the job's thread
        live.start(STUDY, study_job(build, name="large-batch", idle_stop_s=live.IDLE_STOP_SECONDS))
    live.watch(STUDY, lambda job: draw_study(job, on_done), period=PERIOD_SECONDS)
