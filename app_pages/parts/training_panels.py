"""The Training lab's figures: each one a fragment with its own redraw period while a run is live.

A figure costs the browser 20-150 ms to draw (plotly in headless chromium on 2 busy cores), and
while it draws nothing else on the page updates: redrawing them all five times a second would
stall the page. So each figure redraws on its own period (:data:`LIVE_PERIODS`), and one redraw
sends, and the browser draws, one figure — not the whole page. Periods that share no small
multiple keep the redraws from bunching up. When the run has settled a full run draws them all
at the scrubber's step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

import streamlit as st

from app_pages import live
from dgs_core import jobs, workers
from dgs_core.training.config import TrainConfig
from dgs_core.training.models import build_model
from dgs_core.training.trainer import PACE, Trainer
from dgs_core.viz import training as viz

FIRST_STEP_WAIT_S = 0.5  # the page waits this long for a new run's first step, then polls
TICK_SECONDS = 0.15  # the live status (progress, ETA, latest numbers): asks for 6.7 redraws/s
LIVE_PERIODS = {  # seconds between two redraws of each figure while the run is live
    "loss": 1.0,
    "boundary": 3.1,
    "lr": 3.7,
    "accuracy": 4.3,
    "importance": 5.3,
    "scaling": 5.9,
    "per_parameter": 6.7,
    "batch": 7.1,
}
_OTHERS = [period for name, period in LIVE_PERIODS.items() if name != "loss"]
LIVE_HELP = (
    f"While the run is live the progress and the latest numbers redraw every {TICK_SECONDS:g} s, "
    f"the loss curves every {LIVE_PERIODS['loss']:g} s and the other panels every {min(_OTHERS):g} "
    f"to {max(_OTHERS):g} s (n times slower while n runs are live on the server); the step "
    "scrubber appears when the run stops."
)
WAITING = "The loss curves of every optimizer appear here within a second of Start."
QUANTITY_LABELS = {
    "scaling_factor": "scaling factor η_eff / η",
    "importance": "importance score Î",
    "lr_eff": "effective lr η_eff",
    "scale": "DGS scale s_t (DGS only)",
}
RUN = live.Slot(
    "train",
    building="the task, the models and the optimizers",
    idle="Choose the settings in the sidebar and press **Start**.",
)


def training_job(payload: Trainer | TrainConfig, pace: float = 0.0) -> jobs.Job:
    """A job that trains (a new trainer for a config, or continues a stopped one) in a worker
    process (:func:`dgs_core.workers.train`; the trainer is the mirror the pages read), spread
    over about ``pace`` seconds (0: as fast as possible; :meth:`Trainer.run`)."""
    pace = float(PACE.validate(pace))  # type: ignore[arg-type]  # a float here
    return jobs.Job(
        lambda: payload if isinstance(payload, Trainer) else Trainer(payload),
        lambda trainer, stop: workers.train(trainer, stop, pace=pace),
        poll=lambda trainer: (trainer.step, trainer.config.steps),  # events come on evaluations only
        idle_stop_s=live.IDLE_STOP_SECONDS,
        name="train",
    )


def results_of(job: jobs.Job | None) -> tuple[Trainer | None, int]:
    """The job's trainer (None while it is being built) and its furthest step."""
    trainer = job.payload if job is not None else None
    if not isinstance(trainer, Trainer):
        return None, 0
    return trainer, max((r.steps_done for r in trainer.results.values()), default=0)


def data_version(job: jobs.Job, trainer: Trainer) -> tuple:
    """Changes whenever the run records something (a step, a diagnostic record, a status)."""
    return job.id, tuple((r.steps_done, len(r.records), r.status) for r in trainer.results.values())


def _panel(name: str, step: int | None, draw: Callable[[dict[str, Any], tuple, int], None]) -> None:
    """``draw(results, data version, step shown)`` in a fragment of its own (:func:`live.every`)."""

    def redraw(job: jobs.Job) -> None:
        trainer, latest = results_of(job)
        if trainer is not None:
            draw(trainer.results, data_version(job, trainer), latest if step is None else step)

    live.every(RUN, LIVE_PERIODS[name], redraw)


def _chart(name: str, step: int | None, build: Callable[[dict[str, Any], int], Any]) -> None:
    """A figure ``build(results, step shown)`` in a fragment of its own."""
    _panel(
        name,
        step,
        lambda results, data, at: live.chart(f"train_{name}", (data, at), lambda: build(results, at)),
    )


def live_panels(step: int | None) -> None:
    """Every figure at ``step`` (None: the latest, while the run is live)."""
    job = live.current(RUN)
    trainer, last = results_of(job)
    if job is None:  # an empty chart: the browser loads its charting code before the first curve
        live.chart("train_waiting", None, lambda: viz.waiting_figure(WAITING))
        return
    if (trainer is None or last == 0) and job.running:  # a run just started: its first step is
        deadline = time.monotonic() + FIRST_STEP_WAIT_S  # a few ms away on a warm server
        while job.running and results_of(job)[1] == 0 and time.monotonic() < deadline:
            job.join(0.02)
        trainer, last = results_of(job)
    if trainer is None or last == 0:
        if job.running:  # lay the panels out once the run has its first step
            live.until(RUN, lambda job: results_of(job)[1] > 0, period=TICK_SECONDS)
        return
    draw_panels(
        trainer,
        step,
        chart=lambda name, build: _chart(name, step, build),
        panel=lambda name, draw: _panel(name, step, draw),
    )


def run_panels(trainer: Trainer, step: int, *, prefix: str, version: Hashable) -> None:
    """The same figures of a settled run (the Runs page's view of a training run) at ``step``;
    keys ``f"{prefix}_…"``, figures cached per ``version`` (e.g. the run's id) and step."""
    results = trainer.results
    draw_panels(
        trainer,
        step,
        chart=lambda name, build: live.chart(
            f"{prefix}_{name}", (version, step), lambda: build(results, step)
        ),
        panel=lambda name, draw: draw(results, version, step),
        prefix=prefix,
    )


def draw_panels(
    trainer: Trainer,
    step: int | None,
    *,
    chart: Callable[[str, Callable[[dict[str, Any], int], Any]], None],
    panel: Callable[[str, Callable[[dict[str, Any], tuple, int], None]], None],
    prefix: str = "train",
) -> None:
    """The layout: ``chart(name, build(results, step shown))`` draws a figure, ``panel(name,
    draw(results, data version, step shown))`` a group of widgets and figures."""
    # Curves draw a cursor only at the scrubber's step (none while live); the snapshots show `at`.
    if any(spec.name == "muon" for spec in trainer.config.optimizers):
        st.caption(viz.muon_split_note(build_model(trainer.task, trainer.config.model)))
    st.subheader("Loss: mini-batch, training set and validation")
    chart("loss", lambda results, at: viz.loss_figure(results, step=step))
    st.subheader("Learning rate: the schedule and the effective-lr band")
    st.caption(
        "Black: the lr the schedule set. Band: 5–95 % and 25–75 % of the per-parameter effective "
        "lr |Δθ| / |g| over the whole model, dotted its median (docs/algorithms.md)."
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
        panel("per_parameter", lambda results, data, at: per_parameter(results, data, at, prefix=prefix))
    if trainer.task.is_2d:
        st.subheader("Decision boundary")
        st.caption(
            "Predicted class over the plane with the validation points, at the evaluation at or "
            "before the step."
        )
        chart("boundary", lambda results, at: viz.decision_boundary_figure(results, trainer.task, step=at))


def per_parameter(results: dict[str, Any], data: Hashable, at: int, *, prefix: str = "train") -> None:
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
            "Quantity", list(QUANTITY_LABELS), format_func=QUANTITY_LABELS.get, key=f"{prefix}_quantity"
        )
        live.chart(
            f"{prefix}_histogram",
            (data, at, quantity),
            lambda: viz.scaling_histogram_figure(results, step=at, quantity=quantity),
        )
    with right:
        if sizes:
            if st.session_state.get(f"{prefix}_tensor") not in sizes:
                st.session_state[f"{prefix}_tensor"] = max(sizes, key=sizes.__getitem__)  # the largest
            tensor = st.selectbox("Weight matrix", list(sizes), key=f"{prefix}_tensor")
            live.chart(
                f"{prefix}_weights",
                (data, at, quantity, tensor),
                lambda: viz.weight_heatmap_figure(results, tensor, step=at, quantity=quantity),
            )
