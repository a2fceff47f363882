"""The Landscape page's long work and what it keeps: one background job computes a plane's grid,
the interpolation between two optimizers and (once per run) the sharpness table.

The job (:mod:`app_pages.live`, slot ``landscape``) counts its progress in points: every grid
point, every recorded weight vector evaluated on and off the plane, every point of the
interpolation, and :data:`SHARPNESS_POINTS` per optimizer for the sharpness (about what its
power iteration costs). What it finishes goes into the session's :class:`Results` of the run
(complete grids only, at most :data:`MAX_GRIDS`, the oldest dropped first); a stopped grid is
shown from the job itself, blank where it was not evaluated.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from app_pages import live
from dgs_core import jobs
from dgs_core.landscape import (
    GridSpec,
    Interpolation,
    Landscape,
    LandscapeCache,
    LossGrid,
    Plane,
    evaluate_grid,
    interpolate,
    sharpness_table,
)
from dgs_core.runs.landscape import MAX_LANDSCAPES
from dgs_core.runs.training import export_training
from dgs_core.training.trainer import Trainer
from dgs_core.viz.landscape import landscape_figures
from dgs_core.viz.runs import training_figures

SLOT = live.Slot("landscape", building="the plane", noun="landscape computation", unit="point")
SHARPNESS_ITERATIONS = 100  # power-iteration steps at most (tol 1e-3 usually ends it sooner)
SHARPNESS_POINTS = SHARPNESS_ITERATIONS  # one Hessian-vector product ≈ one grid point's cost
INTERPOLATION_POINTS = 41
MAX_GRIDS = MAX_LANDSCAPES  # what one bundle holds


@dataclass
class Results:
    """What the session computed for one run: grids by cache key, curves by (start, end), the
    sharpness table."""

    grids: OrderedDict[str, LossGrid] = field(default_factory=OrderedDict)
    curves: dict[tuple[str, str], Interpolation] = field(default_factory=dict)
    sharpness: pd.DataFrame | None = None
    adopted: bool = False  # the bundle's own grids are in

    def keep(self, key: str, grid: LossGrid) -> None:
        """Keep a complete grid (the job's thread calls this: a new dict is swapped in, so the
        page never iterates one that changes under it)."""
        if grid.complete:
            grids = OrderedDict(self.grids)
            grids[key] = grid
            grids.move_to_end(key)
            while len(grids) > MAX_GRIDS:
                grids.popitem(last=False)
            self.grids = grids


def adopt_stored(results: Results, landscape: Landscape, stored: Sequence[LossGrid]) -> None:
    """Put the grids a bundle came with among the results (once), each under the key of the
    page's request for its plane and grid (one stored with fewer splits answers it as it is)."""
    if results.adopted:
        return
    for grid in stored:
        results.keep(LandscapeCache.key(landscape, grid.plane.spec, grid.grid), grid)
    results.adopted = True


def results_for(run_key: str) -> Results:
    """The session's results for the run ``run_key``."""
    return st.session_state.setdefault("landscape_results", {}).setdefault(run_key, Results())


@dataclass(frozen=True)
class Request:
    """What one press of Compute asks for."""

    run_key: str
    grid_key: str
    plane: Plane
    grid: GridSpec
    pair: tuple[str, str]


def grid_key(landscape: Landscape, plane: Plane, grid: GridSpec) -> str:
    return LandscapeCache.key(landscape, plane.spec, grid)


class Work:
    """The job's payload: the request, the progress in points, and the stopped grid (if any)."""

    def __init__(self, landscape: Landscape, request: Request, results: Results) -> None:
        self.landscape, self.request, self.results = landscape, request, results
        self.partial: LossGrid | None = None
        paths = sum(2 * len(p.steps) for p in landscape.paths.values())
        self.needs_grid = request.grid_key not in results.grids
        self.needs_curve = request.pair not in results.curves
        self.needs_sharpness = results.sharpness is None
        self.offsets = [0]
        for needed, points in (
            (self.needs_grid, request.grid.resolution**2 + paths),
            (self.needs_curve, INTERPOLATION_POINTS),
            (self.needs_sharpness, SHARPNESS_POINTS * len(landscape.labels)),
        ):
            self.offsets.append(self.offsets[-1] + (points if needed else 0))
        self.done, self.total = 0, self.offsets[-1]

    def _counter(self, phase: int, scale: int = 1):  # progress(done, total) of a phase
        def progress(done: int, _total: int) -> None:
            self.done = self.offsets[phase] + done * scale

        return progress

    def run(self, stop: jobs.StopSignal) -> Iterator[str]:
        landscape, request, results = self.landscape, self.request, self.results
        if self.needs_grid:
            grid = evaluate_grid(landscape, request.plane, request.grid, progress=self._counter(0), stop=stop)
            results.keep(request.grid_key, grid)
            self.partial = None if grid.complete else grid
            yield "grid"
        if self.needs_curve and not stop():
            curve = interpolate(
                landscape, *request.pair, points=INTERPOLATION_POINTS, progress=self._counter(1), stop=stop
            )
            if curve.complete:
                results.curves[request.pair] = curve
            yield "interpolation"
        if self.needs_sharpness and not stop():
            table = sharpness_table(
                landscape,
                max_iter=SHARPNESS_ITERATIONS,
                progress=self._counter(2, SHARPNESS_POINTS),
                stop=stop,
            )
            if len(table) == len(landscape.labels):
                results.sharpness = table
            yield "sharpness"
        self.done = self.total


def landscape_job(landscape: Landscape, request: Request, results: Results) -> jobs.Job:
    return jobs.Job(
        lambda: Work(landscape, request, results),
        lambda work, stop: work.run(stop),
        poll=lambda work: (work.done, work.total),
        idle_stop_s=live.IDLE_STOP_SECONDS,
        name="landscape",
    )


def partial_grid(run_key: str, key: str) -> LossGrid | None:
    """The stopped grid of this session's last job, when it was for this run and grid."""
    job = live.current(SLOT)
    work = job.payload if job is not None else None
    if isinstance(work, Work) and work.request.run_key == run_key and work.request.grid_key == key:
        return work.partial
    return None


def export_button(trainer: Trainer, results: Results, split: str) -> None:
    """The run's bundle with every complete grid of this session, the interpolations and the
    sharpness table as figures; built only when clicked."""
    grids = list(results.grids.values())
    config = trainer.config

    def data() -> bytes:
        figures = training_figures(trainer.results, trainer.task)
        figures.update(
            landscape_figures(grids, list(results.curves.values()), results.sharpness, split=split)
        )
        return export_training(trainer, figures=figures, landscapes=grids)

    st.download_button(
        f"Export the run with its {len(grids)} landscape(s) (.zip)",
        data=data,
        file_name=f"dgs-lab-{config.task}-{'-'.join(config.labels)}-{trainer.step}-steps-landscape.zip",
        mime="application/zip",
        key="landscape_export",
        on_click="ignore",
        disabled=not grids,
        help="the run's bundle (config, metrics, weights, trajectories) with each grid computed here "
        "(plane as JSON + safetensors, grid as Parquet) and the figures: open it on the Runs page",
    )
