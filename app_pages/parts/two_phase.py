"""The Annealing lab's two-phase tab: a main phase on noisy data, then annealing on clean data.

Widgets in → :class:`~dgs_core.studies.annealing.TwoPhaseSettings` → a
:class:`~dgs_core.studies.annealing.TwoPhaseStudy` run as a background job (:mod:`app_pages.live`,
slot ``anneal_tp``: it survives a reload, its id in the URL) → :mod:`dgs_core.viz.annealing`.
"""

from __future__ import annotations

import json

import streamlit as st

from app_pages import live
from app_pages.parts import run_list
from app_pages.ui import FieldSlots, changed_hparams, hyperparam_controls, optimizer_label, plain, task_picker
from dgs_core import jobs
from dgs_core.optim import registry
from dgs_core.runs.training import export_training
from dgs_core.studies import study_job
from dgs_core.studies.annealing import (
    ANNEAL_SHAPES,
    METRICS,
    VARIANT_LABELS,
    TwoPhaseSettings,
    TwoPhaseStudy,
    two_phase_record,
)
from dgs_core.studies.annealing_lab import HQ_FRACTION, LABEL_NOISE
from dgs_core.viz import annealing as viz
from dgs_core.viz.runs import training_figures

PERIOD_SECONDS = 1.0  # redraws while the variants train
TWO_PHASE = live.Slot("anneal_tp", building="the four variants", start_label="Run two-phase demo", short=True)


def two_phase_controls(base: TwoPhaseSettings) -> TwoPhaseSettings | None:
    """The demo's settings from the controls, or None with the reason shown under its control.

    ``base`` (the lab's last valid settings, or a link's) gives what has no control: the model
    size, the batch size and the task's other parameters."""
    defaults = TwoPhaseSettings()
    slots = FieldSlots()
    c1, c2, c3 = st.columns(3)
    with c1:
        task = task_picker("anneal_tp_task")
        slots.add("task")
        noise = st.slider(
            "Label noise (main data)",
            LABEL_NOISE.low,
            LABEL_NOISE.high,
            LABEL_NOISE.default,
            0.05,
            key="anneal_tp_noise",
        )
        slots.add("label_noise")
        hq = st.slider(
            "High-quality subset (fraction, clean)",
            HQ_FRACTION.low,
            HQ_FRACTION.high,
            HQ_FRACTION.default,
            0.05,
            key="anneal_tp_hq",
        )
        slots.add("hq_fraction")
        seed = st.number_input("Seed", value=0, step=1, key="anneal_tp_seed")
        slots.add("seed")
    with c2:
        names = registry.names()
        optimizer = st.selectbox(
            "Optimizer",
            names,
            index=names.index(defaults.optimizer),
            format_func=optimizer_label,
            key="anneal_tp_optimizer",
        )
        start = dict(defaults.hparams) if optimizer == defaults.optimizer else {}
        with st.expander("Optimizer hyperparameters (lr is the base rate η₀)"):
            hparams, errors = hyperparam_controls(optimizer, key="anneal_tp", values=start)
        metric = st.selectbox(
            "Validation metric",
            list(METRICS),
            format_func=lambda m: m.replace("val_", "validation "),
            key="anneal_tp_metric",
        )
        eval_every = st.number_input(
            "Validate every (steps)", value=defaults.eval_every, step=1, key="anneal_tp_eval_every"
        )
        slots.add("eval_every")
        schedule_free = st.checkbox(
            "Add Schedule-Free AdamW (constant lr)",
            value=defaults.schedule_free,
            key="anneal_tp_sf",
            help="a fifth run: Schedule-Free AdamW at a constant lr on the main data for the whole budget, "
            "no schedule (its averaging is meant to replace one), evaluated at its averaged point",
        )
        sf_lr = st.number_input(
            "Schedule-Free lr (constant)",
            value=defaults.schedule_free_lr,
            format="%.3e",
            key="anneal_tp_sf_lr",
            disabled=not schedule_free,
        )
        slots.add("schedule_free_lr")
    with c3:
        main_steps = st.number_input(
            "Main phase (steps)", value=defaults.main_steps, step=10, key="anneal_tp_main_steps"
        )
        slots.add("main_steps")
        anneal_steps = st.number_input(
            "Annealing phase budget (steps)",
            value=defaults.anneal_steps,
            step=10,
            key="anneal_tp_anneal_steps",
        )
        slots.add("anneal_steps")
        shape = st.selectbox("Annealing schedule", ANNEAL_SHAPES, key="anneal_tp_shape")
        ratio = st.number_input(
            "Floor min_lr / η₀", value=defaults.min_lr_ratio, format="%.3e", key="anneal_tp_floor"
        )
        slots.add("min_lr_ratio")
        factor = st.number_input("Plateau factor", value=defaults.plateau_factor, key="anneal_tp_factor")
        slots.add("plateau_factor")
        patience = st.number_input(
            "Plateau patience (validations)",
            value=defaults.plateau_patience,
            step=1,
            key="anneal_tp_patience",
        )
        slots.add("plateau_patience")
        stop_patience = st.number_input(
            "Stop after validations without improvement (0: never)",
            value=defaults.stop_patience,
            step=1,
            key="anneal_tp_stop_patience",
        )
        slots.add("stop_patience")
    if errors:
        return None
    # the task's parameters without a control come from base (for moons by default 600
    # samples: small and quick, the demo's default run takes seconds)
    others = dict(base.task_params) if task == base.task else {}
    if task == "moons":
        others.setdefault("n_samples", 600)
    task_params = {**others, "label_noise": noise, "hq_fraction": hq}
    try:
        return TwoPhaseSettings(
            task=task,
            task_params=task_params,
            optimizer=optimizer,
            hparams={"lr": hparams["lr"], **changed_hparams(optimizer, hparams)},  # η₀ and the changes
            seed=seed,
            main_steps=main_steps,
            anneal_steps=anneal_steps,
            eval_every=eval_every,
            anneal_shape=shape,
            min_lr_ratio=ratio,
            plateau_factor=factor,
            plateau_patience=patience,
            stop_patience=stop_patience,
            metric=metric,
            model_size=base.model_size,
            batch_size=base.batch_size,
            schedule_free=schedule_free,
            schedule_free_lr=sf_lr,
        )
    except ValueError as exc:
        if not slots.show(exc):
            st.error(plain(exc))
        return None


def draw_two_phase(job: jobs.Job) -> None:
    """The progress, the metric and lr of every variant, the table; once ended, the record and
    the export."""
    live.status(TWO_PHASE, job)
    study: TwoPhaseStudy | None = job.payload
    results = study.results if study is not None else {}
    if study is None or not results:
        return
    for variant, trainer in study.trainers.items():  # each variant in the Runs page's list
        run_list.offer_trainer(
            f"anneal_tp:{job.id}:{variant}", job, trainer, name=f"Annealing lab: {VARIANT_LABELS[variant]}"
        )
    settings = study.settings
    st.caption(
        f"{optimizer_label(settings.optimizer)}, η₀ = {settings.base_lr:g}, floor {settings.min_lr:g}; "
        f"{settings.task_params.get('label_noise', 0):.0%} label noise in the main data, "
        f"high-quality subset {settings.task_params.get('hq_fraction', 0.2):.0%} of the training set."
        + (
            f" Schedule-Free AdamW: constant lr {settings.schedule_free_lr:g}, no schedule, evaluated at its "
            "averaged point x."
            if settings.schedule_free
            else ""
        )
    )
    version = (job.id, tuple((r.steps_done, r.status) for r in results.values()))
    reductions = {name: study.reductions(name) for name in results}
    live.chart("anneal_tp", version, lambda: viz.two_phase_figure(results, settings, reductions=reductions))
    st.dataframe(
        viz.two_phase_table(results, settings, live=job.running),
        hide_index=True,
        column_config={
            "end": st.column_config.TextColumn(width="medium"),
            "final lr": st.column_config.NumberColumn(format="%.3e"),
        },
    )
    if job.running:
        return  # the record is written once the run has settled
    with st.expander("Annealing plan (saved with the run)"):
        record = two_phase_record(settings, study)
        text = json.dumps(record, indent=1)
        st.download_button(
            "Download the run record (JSON)",
            text,
            file_name="annealing_run.json",
            mime="application/json",
            key="anneal_tp_download",
        )
        st.json(record, expanded=1)
    left, right = st.columns([2, 1])
    variant = left.selectbox(
        "Variant to export",
        list(study.trainers),
        format_func=lambda n: VARIANT_LABELS[n],
        key="anneal_tp_export_variant",
    )
    trainer = study.trainers[variant]
    right.download_button(
        "Export snapshot (.zip)",
        data=lambda: export_training(
            trainer,
            figures=training_figures(trainer.results, trainer.task),
            name=f"Annealing lab: {VARIANT_LABELS[variant]}",
        ),
        file_name=f"dgs-lab-annealing-{variant}-{trainer.step}steps.zip",
        mime="application/zip",
        key="anneal_tp_export",
        on_click="ignore",
        help="this variant's run as a versioned bundle, its annealing plan and phase record included; "
        "open it on the Runs page or re-run it with `python -m dgs_core run`",
    )


def two_phase_section(base: TwoPhaseSettings) -> TwoPhaseSettings | None:
    """The tab; returns its settings (None: invalid). ``base``: see :func:`two_phase_controls`."""
    st.markdown(
        "The *iterative learning-rate reduction* recipe: a main phase at the base rate on data "
        "with noisy labels, then an annealing phase that lowers the rate — by a schedule or by "
        "plateau cuts — on the clean high-quality subset, until the rate reaches its floor or the "
        "validation metric stops improving. Four variants share the seed, initialisation, batch "
        "order and budget, so their curves coincide until the phase boundary. Schedule-Free AdamW "
        "can run beside them at a constant lr with no schedule (its averaging is meant to make the "
        "annealing unnecessary), evaluated at its averaged point."
    )
    settings = two_phase_controls(base)
    key = None if settings is None else json.dumps(settings.to_dict(), sort_keys=True)
    if st.button("Run two-phase demo", key="anneal_tp_run", type="primary", disabled=settings is None):
        build = lambda: TwoPhaseStudy(settings)  # noqa: E731  # in the job's thread
        job = study_job(build, name="two-phase", idle_stop_s=live.IDLE_STOP_SECONDS)
        live.start(TWO_PHASE, job, reuse=key)
    job = live.current(TWO_PHASE)
    shown = getattr(job.payload, "settings", None) if job is not None else None
    if shown is not None and key is not None and json.dumps(shown.to_dict(), sort_keys=True) != key:
        st.caption("The controls changed since this run; press Run for a new one.")
    live.watch(TWO_PHASE, draw_two_phase, period=PERIOD_SECONDS)
    return settings
