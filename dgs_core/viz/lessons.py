"""Figures of the Lessons page: each step's one figure, drawn by the labs' own builders.

No streamlit here. The page computes a step's data (the Surface lab's cached runs and sweeps, a
prepared bundle, the two-phase study) and passes it in; the figure is the one its lab draws
for the same data, so a step looks exactly as the lab will when its link is opened.
:func:`projector_fonts` enlarges every text of a figure for presenter mode.

>>> from dgs_core.lessons import load_lessons
>>> step = load_lessons()[0][0].steps[0]
>>> config = step.lab_config()
>>> fig = surface_step_figure(step.figure, config, config.simulate())
>>> fig = projector_fonts(fig)
>>> fig.layout.font.size
18
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dgs_core.optim import registry
from dgs_core.params import invalid
from dgs_core.viz import annealing as annealing_viz
from dgs_core.viz import studies as studies_viz
from dgs_core.viz import surface as surface_viz
from dgs_core.viz import training as training_viz

PROJECTOR_FONT = 18  # px: the smallest figure text readable from the back of a room at 1280 × 720
STEP_HEIGHT = 440  # px: one figure beside the prose fits a 1280 × 720 projector


def _labelled(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Registry names → display labels (the panels' titles)."""
    return {registry.get(name).label if name in registry.names() else name: v for name, v in mapping.items()}


def surface_step_figure(
    figure: str,
    config: Any,
    runs: Mapping[str, Any],
    *,
    sweeps: Mapping[str, Any] | None = None,
    basin: Any = None,
    height: int = STEP_HEIGHT,
) -> go.Figure:
    """A Surface-lab step's figure: ``panels``, ``overlay``, ``loss``, ``scaling`` from the runs;
    ``sensitivity`` and ``tuning`` from the lr ``sweeps`` (``{name: LrSweep}``); ``basin`` from
    a :class:`~dgs_core.surfaces.studies.BasinMap`."""
    surf = config.get_surface()
    if figure == "panels":
        cols = min(len(runs), 4)
        rows = -(-len(runs) // cols)
        return surface_viz.small_multiples_figure(
            surf, _labelled(runs), cols=cols, resolution=80, panel_height=max(260, height // rows)
        )
    if figure == "overlay":
        return surface_viz.contour_figure(surf, runs, clickable=False, height=height)
    if figure == "loss":
        return surface_viz.loss_figure(runs, height=height)
    if figure == "scaling":
        return surface_viz.scaling_figure(runs, height=height)
    if figure == "basin":
        if basin is None:
            raise invalid("basin", basin, "a BasinMap for a basin step")
        return surface_viz.basin_map_figure(basin, kind=config.basin_kind, clickable=False, height=height)
    if figure in ("sensitivity", "tuning"):
        if not sweeps:
            raise invalid("sweeps", sweeps, f"the lr sweeps of a {figure} step")
        if figure == "sensitivity":
            return surface_viz.lr_sensitivity_figure(
                _labelled(sweeps), metric=config.lr_metric, criterion=config.tuning, height=height
            )
        tuned = {n: run for n, s in sweeps.items() if (run := s.best_run(config.tuning)) is not None}
        return surface_viz.contour_figure(
            surf, tuned, clickable=False, title="Each optimizer at its tuned learning rate", height=height
        )
    raise invalid("figure", figure, "a Surface-lab figure")


def training_step_figure(
    figure: str, results: Mapping[str, Any], task: Any, *, height: int = STEP_HEIGHT
) -> go.Figure:
    """A Training-lab step's figure from a run's results (a prepared bundle's, usually)."""
    last = max((r.steps_done for r in results.values()), default=0)
    builders = {
        "loss": lambda: training_viz.loss_figure(results, height=height),
        "accuracy": lambda: training_viz.accuracy_figure(results, height=height),
        "lr": lambda: training_viz.lr_figure(results, height=height),
        "batch": lambda: training_viz.batch_size_figure(results, height=height),
        "importance": lambda: training_viz.layer_heatmap_figure(results, "importance", height=height),
        "scaling": lambda: training_viz.layer_heatmap_figure(results, "scaling_factor", height=height),
        "histogram": lambda: training_viz.scaling_histogram_figure(results, step=last, height=height),
        "boundary": lambda: training_viz.decision_boundary_figure(results, task, step=last),
    }
    if figure not in builders:
        raise invalid("figure", figure, "a Training-lab figure")
    return builders[figure]()


def annealing_step_figure(
    figure: str,
    *,
    frame: Any = None,
    curves: Sequence[Any] = (),
    study: Any = None,
    height: int = STEP_HEIGHT,
) -> go.Figure:
    """An Annealing-lab step's figure: ``schedules`` from the composer's ``frame`` and
    ``curves``; ``two_phase`` from a finished :class:`~dgs_core.studies.annealing.TwoPhaseStudy`."""
    if figure == "schedules":
        return annealing_viz.schedule_overlay_figure(frame, curves, height=height)
    if figure == "two_phase":
        reductions = {name: study.reductions(name) for name in study.results}
        return annealing_viz.two_phase_figure(
            study.results, study.settings, reductions=reductions, height=height
        )
    raise invalid("figure", figure, "schedules or two_phase (the effective lr is drawn in the lab)")


def study_step_figure(figure: str, result: Any, *, height: int = STEP_HEIGHT) -> go.Figure:
    """A study step's figure from its :class:`~dgs_core.studies.tuner.StudyResult`."""
    if figure == "sensitivity":
        return studies_viz.sensitivity_figure(result, height=height)
    if figure == "seed_bands":
        return studies_viz.seed_bands_figure(result, height=height)
    raise invalid("figure", figure, "sensitivity or seed_bands")


def projector_fonts(fig: go.Figure, size: int = PROJECTOR_FONT) -> go.Figure:
    """Every text of ``fig`` at least ``size`` px (in place; returned): the base font, titles,
    axis titles and ticks, legends, colour bars and annotations (subplot titles included)."""
    fig.update_layout(font={"size": size}, legend={"font": {"size": size}})
    if fig.layout.title.text:
        fig.update_layout(title={"font": {"size": max(size + 2, fig.layout.title.font.size or 0)}})
    # fewer ticks on narrow panels: at this size "100 200 300" of neighbours would run together
    fig.for_each_xaxis(lambda a: a.update(tickfont={"size": size}, title={"font": {"size": size}}, nticks=4))
    fig.for_each_yaxis(lambda a: a.update(tickfont={"size": size}, title={"font": {"size": size}}))
    # at this size a log axis over a few decades would label every digit (2, 3, … 9)
    fig.for_each_yaxis(lambda a: a.update(nticks=6))
    for annotation in fig.layout.annotations or ():
        annotation.font.size = max(size, annotation.font.size or 0)
    if fig.layout.coloraxis.colorbar is not None:
        fig.update_coloraxes(colorbar={"tickfont": {"size": size}, "title": {"font": {"size": size}}})
    for trace in fig.data:
        if hasattr(trace, "colorbar") and trace.colorbar is not None:
            trace.update(colorbar={"tickfont": {"size": size}, "title": {"font": {"size": size}}})
        if hasattr(trace, "textfont"):
            trace.update(textfont={"size": size})
    for menu in fig.layout.updatemenus or ():
        menu.font.size = size
    for slider in fig.layout.sliders or ():
        slider.font.size = size
        slider.currentvalue.font.size = size
    return fig


def race_caption(runs: Mapping[str, Any]) -> str:
    """What a race of Surface-lab runs shows, read off the runs themselves: who reaches
    f − f* < ε and at which step, then the others by their final f − f* (so the Home page states
    nothing its figure does not show)."""
    reached, others = [], []
    for name, run in runs.items():
        values = run.metrics()
        steps, gap = int(values["steps_to_tolerance"][0]), float(values["final_gap"][0])
        label = registry.get(name).label if name in registry.names() else name
        if steps >= 0:
            reached.append((steps, label))
        else:
            others.append((gap if math.isfinite(gap) else math.inf, label))
    parts = [f"{label} reaches f − f* < ε at step {steps}" for steps, label in sorted(reached)]
    if others:
        length = max(run.steps for run in runs.values())
        ranked = ", ".join(f"{label} ({gap:.2g})" for gap, label in sorted(others))
        parts.append(f"after {length} steps f − f* is {ranked}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
