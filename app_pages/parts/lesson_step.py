"""A lesson step's live pieces: its controls, its data (cached) and its one figure.

The data is what the step's lab would compute for the same configuration: the Surface lab's
own cached runs, sweeps and basin maps (:mod:`app_pages.parts.surface_state`), a prepared
bundle read once per process, the two-phase study run once per settings. The figure comes
from :mod:`dgs_core.viz.lessons`, which calls the labs' builders.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app_pages.parts import surface_state
from app_pages.ui import param_controls, presenting
from dgs_core import lessons
from dgs_core.lessons import Step
from dgs_core.optim import registry
from dgs_core.runs.read import read_bundle
from dgs_core.schedules.curves import schedule_curves
from dgs_core.studies.annealing import TwoPhaseSettings, TwoPhaseStudy
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz import lessons as viz


@st.cache_resource(max_entries=16, show_spinner=False)
def prepared_bundle(path: str, mtime: float) -> Any:
    """A prepared run, read once per file version (``mtime`` keys a rebuilt file)."""
    return read_bundle(path)


@st.cache_resource(max_entries=4, show_spinner=False)
def two_phase_study(settings_json: str) -> TwoPhaseStudy:
    """The two-phase demo's four variants, trained once per settings (seconds on a CPU)."""
    study = TwoPhaseStudy(TwoPhaseSettings.from_dict(json.loads(settings_json)))
    for _ in study.run():
        pass
    return study


@st.cache_resource(max_entries=4, show_spinner=False)
def trained(config_json: str) -> Trainer:
    """A training step that ships no prepared run, trained once per configuration."""
    trainer = Trainer(TrainConfig.from_json(config_json))
    for _ in trainer.run():
        pass
    return trainer


def _label(name: str) -> str:
    optimizer, _, hparam = name.partition(".")
    return f"{registry.get(optimizer).label} {hparam}" if hparam else name.replace("_", " ")


def step_controls(step: Step, key: str) -> Any:
    """The one or two controls a Surface-lab step names → its configuration with their values
    (the step's own when a value is invalid; the error shows under the control)."""
    config = step.lab_config()
    if step.lab != "surface" or not step.controls:
        return config
    values: dict[str, Any] = {}
    for name in step.controls:
        spec = replace(lessons.control_param(step, name), name=_label(name))
        chosen, errors = param_controls(
            [spec], key=f"{key}_{name}", values={spec.name: lessons.control_start(step, config, name)}
        )
        if not errors:
            values[name] = chosen[spec.name]
    try:
        return lessons.with_controls(step, values)
    except ValueError as exc:
        st.error(str(exc))
        return config


def step_figure(step: Step, config: Any, directory: Path) -> go.Figure | None:
    """The step's one figure, computed as its lab computes it; None (the reason shown) when it
    cannot be drawn."""
    if step.prepared:
        path = lessons.prepared_path(step, directory)
        if not path.exists():
            st.error(
                f"{step.lesson}, step {step.index + 1}: its prepared run {path.name} is missing; "
                "make it with `python -m dgs_core lessons --rebuild`."
            )
            return None
        bundle = prepared_bundle(str(path), path.stat().st_mtime)
        if step.lab == "study":
            return viz.study_step_figure(step.figure, bundle.study)
        return viz.training_step_figure(step.figure, bundle.results, bundle.task)
    if step.lab == "surface":
        runs, errors = surface_state.compute_runs(config, {})
        for name, message in errors.items():
            st.error(f"{_label(name)} is left out: {message}")
        if not runs:
            return None
        sweeps = basin = None
        if step.figure in ("sensitivity", "tuning"):
            sweeps = surface_state.compute_sweeps(config, list(runs))
        if step.figure == "basin":
            name = config.basin if config.basin in runs else next(iter(runs))
            kwargs = {k: v for k, v in config.simulation_kwargs().items() if k != "start"}
            args = surface_state.surface_args(config)
            hparams = surface_state.items(config.hparams_for(name))
            with st.spinner("Running from every start of the grid…"):
                basin = surface_state.basin(*args, name, hparams, config.basin_resolution, **kwargs)
        return viz.surface_step_figure(step.figure, config, runs, sweeps=sweeps, basin=basin)
    if step.lab == "annealing":
        if step.figure == "two_phase":
            with st.spinner("Training the four variants (seconds)…"):
                study = two_phase_study(json.dumps(config.to_dict(), sort_keys=True))
            return viz.annealing_step_figure("two_phase", study=study)
        if step.figure == "schedules":
            curves, run_steps = config
            frame = schedule_curves(curves, run_steps)
            return viz.annealing_step_figure("schedules", frame=frame, curves=curves)
    if step.lab == "training":
        with st.spinner("Training (a prepared run would load at once)…"):
            trainer = trained(config.to_json())
        return viz.training_step_figure(step.figure, trainer.results, trainer.task)
    st.info(f"The {step.figure.replace('_', ' ')} figure is drawn in the {step.lab} lab: open it below.")
    return None


def show_figure(figure: go.Figure | None, key: str) -> None:
    """The figure, its fonts made for a projector in presenter mode."""
    if figure is None:
        return
    if presenting():
        viz.projector_fonts(figure)
    st.plotly_chart(figure, key=key, config={"displaylogo": False})
