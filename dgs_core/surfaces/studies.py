"""Studies on a surface: many starts (basin maps) and many learning rates (sensitivity, fair tuning).

Each runs the simulator once on a batch of independent rows: :func:`basin_map` colours a grid
of starts by where each one ended, :func:`lr_sweep` measures a metric over a grid of learning
rates (:func:`lr_grid`), the sensitivity curve and the fair comparison's tuning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from dgs_core import metrics
from dgs_core.params import Param, invalid
from dgs_core.surfaces.functions import Surface, check_starts, get_surface
from dgs_core.surfaces.simulator import DEFAULT_TOLERANCE, Run, _Engine, simulate

Array = np.ndarray

RESOLUTION = Param("resolution", 60, low=2, high=1000, integer=True, help="basin-map grid points per axis")
TOLERANCE = Param(
    "tolerance", DEFAULT_TOLERANCE, low=0.0, low_open=True, high=1e6, log=True, help="ε of steps to ε"
)
RADIUS = Param("radius", 0.1, low=0.0, low_open=True, high=1e6, help="distance that counts as at a minimum")


def lr_grid(
    center: float, *, decades_below: float = 2.0, decades_above: float = 1.5, per_decade: int = 4
) -> Array:
    """A log-spaced grid of learning rates around ``center`` (the default lr), center included.

    >>> lr_grid(1e-2, decades_below=1, decades_above=1, per_decade=2)
    array([0.001     , 0.00316228, 0.01      , 0.03162278, 0.1       ])
    """
    if not (math.isfinite(center) and center > 0):
        raise invalid("center", center, "> 0")
    if int(per_decade) != per_decade or per_decade < 1:
        raise invalid("per_decade", per_decade, "an integer >= 1")
    for name, value in (("decades_below", decades_below), ("decades_above", decades_above)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"Invalid {name}: {value!r} (must be >= 0)")
    low = round(decades_below * per_decade)
    high = round(decades_above * per_decade)
    return center * 10.0 ** (np.arange(-low, high + 1) / per_decade)


@dataclass(frozen=True, eq=False)
class BasinMap:
    """Where an optimizer ends from every start of a grid, and how fast.

    ``xs`` (nx,), ``ys`` (ny,); the other arrays are ``(ny, nx)`` with ``[j, i]`` for the start
    ``(xs[i], ys[j])`` (the heatmap layout).

    Attributes:
        final_point: ``(ny, nx, 2)`` the last (finite) point.
        final_gap: f − f* at the end (f where f* is unknown); +inf where diverged.
        steps_to_tolerance: first step with f − f* < ε, −1 if never.
        diverged_at: first non-finite step, −1 if none.
        basin: index into ``surface.all_minima`` of the minimum the run ended at (within
            ``radius``), :data:`BASIN_ELSEWHERE` (−1) for none, :data:`BASIN_DIVERGED` (−2).
    """

    surface: Surface
    optimizer: str
    hparams: Mapping[str, Any]
    xs: Array
    ys: Array
    final_point: Array
    final_gap: Array
    steps_to_tolerance: Array
    diverged_at: Array
    basin: Array
    steps: int
    tolerance: float
    radius: float
    seconds: float


BASIN_ELSEWHERE = -1
BASIN_DIVERGED = -2


def basin_map(
    surface: Surface | str,
    optimizer: str = "sgd",
    hparams: Mapping[str, Any] | None = None,
    *,
    resolution: int | tuple[int, int] = 100,
    steps: int = 300,
    tolerance: float = DEFAULT_TOLERANCE,
    radius: float | None = None,
    seed: int = 0,
    noise_std: float = 0.0,
    batch_size: int = 1,
    clip_norm: float | None = None,
) -> BasinMap:
    """Run ``optimizer`` from every start of a ``resolution`` grid over the domain, in one batch.

    Each start is its own problem (per-row reductions), so a pixel is exactly the run
    :func:`simulate` gives from that start. ``radius`` (default 2% of the domain's diagonal)
    decides whether a final point sits at one of ``surface.all_minima``.
    """
    surf = get_surface(surface)
    nx, ny = (resolution, resolution) if isinstance(resolution, int | np.integer) else resolution
    nx, ny = RESOLUTION.validate(nx), RESOLUTION.validate(ny)
    tolerance = TOLERANCE.validate(tolerance)
    (x0, x1), (y0, y1) = surf.domain
    radius = 0.02 * math.hypot(x1 - x0, y1 - y0) if radius is None else RADIUS.validate(radius)
    xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
    starts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    engine = _Engine(
        surf,
        optimizer,
        hparams,
        start=starts,
        lrs=None,
        steps=steps,
        seed=seed,
        noise_std=noise_std,
        batch_size=batch_size,
        clip_norm=clip_norm,
        outside="raise",
    )
    raw = engine.run(keep_path=False)
    loss, diverged = raw["loss"], raw["diverged_at"] >= 0
    gap = loss if surf.f_min is None else loss - surf.f_min
    final = raw["final_point"]
    basin = np.full(len(final), BASIN_ELSEWHERE)
    if surf.all_minima:
        distance = np.linalg.norm(final[:, None, :] - np.asarray(surf.all_minima)[None], axis=-1)
        nearest = distance.argmin(axis=1)
        basin = np.where(distance.min(axis=1) <= radius, nearest, BASIN_ELSEWHERE)
    basin[diverged] = BASIN_DIVERGED
    reached = metrics.steps_to_target(gap, tolerance) if surf.f_min is not None else np.full(len(final), -1)
    shape = (ny, nx)
    return BasinMap(
        surface=surf,
        optimizer=engine.info.name,
        hparams=MappingProxyType(dict(engine.hparams)),
        xs=xs,
        ys=ys,
        final_point=final.reshape(ny, nx, 2),
        final_gap=np.where(diverged, np.inf, gap[-1]).reshape(shape),
        steps_to_tolerance=np.asarray(reached).reshape(shape),
        diverged_at=raw["diverged_at"].reshape(shape),
        basin=basin.reshape(shape),
        steps=engine.steps,
        tolerance=tolerance,
        radius=radius,
        seconds=raw["seconds"],
    )


CRITERIA = ("steps_to_tolerance", "final_gap")


@dataclass(frozen=True, eq=False)
class LrSweep:
    """One optimizer at many learning rates from one start, run as one batch.

    ``run`` has one row per learning rate (``run.lrs``); the summary arrays are ``(L,)``.
    ``default_lr`` is the lr the optimizer would use without the sweep.
    """

    run: Run
    default_lr: float
    tolerance: float

    @property
    def lrs(self) -> Array:
        return self.run.lrs

    @property
    def final_gap(self) -> Array:
        return self.run.final_gap

    @property
    def diverged_at(self) -> Array:
        return self.run.diverged_at

    @property
    def default_index(self) -> int | None:
        """The row run at the default lr (None when the sweep's lrs do not contain it)."""
        close = np.isclose(self.lrs, self.default_lr, rtol=1e-9, atol=0.0)
        return int(np.argmax(close)) if close.any() else None

    @property
    def steps_to_tolerance(self) -> Array:
        if self.run.surface.f_min is None:
            return np.full(self.run.rows, metrics.NOT_REACHED)
        return np.atleast_1d(metrics.steps_to_target(self.run.gap, self.tolerance))

    def best_index(self, criterion: str = "steps_to_tolerance") -> int | None:
        """The tuned learning rate's row, or None when every lr diverged.

        ``"steps_to_tolerance"``: fewest steps to ε, ties and rows that never reach ε ranked by
        final gap; ``"final_gap"``: smallest final gap.
        """
        if criterion not in CRITERIA:
            raise invalid("criterion", criterion, f"one of {', '.join(CRITERIA)}")
        gap = np.where(np.isnan(self.final_gap), np.inf, self.final_gap)
        if np.all(self.diverged_at >= 0):
            return None
        if criterion == "final_gap":
            return int(np.argmin(gap))
        reached = self.steps_to_tolerance
        steps = np.where(reached >= 0, reached, np.iinfo(np.int64).max)
        return int(np.lexsort((gap, steps))[0])

    def best_lr(self, criterion: str = "steps_to_tolerance") -> float | None:
        index = self.best_index(criterion)
        return None if index is None else float(self.lrs[index])

    def best_run(self, criterion: str = "steps_to_tolerance") -> Run | None:
        """The tuned row as a run of its own."""
        index = self.best_index(criterion)
        return None if index is None else self.run.row(index)


def lr_sweep(
    surface: Surface | str,
    optimizer: str = "sgd",
    hparams: Mapping[str, Any] | None = None,
    *,
    lrs: Sequence[float] | Array | None = None,
    start: Any = None,
    steps: int = 300,
    tolerance: float = DEFAULT_TOLERANCE,
    **kwargs: Any,
) -> LrSweep:
    """Final gap (and steps to ε) against the learning rate, all lrs in one batch.

    ``lrs`` defaults to :func:`lr_grid` around the optimizer's surface-default lr (the same
    15 points per optimizer: a fair, equal tuning budget). Tuning picks the best row
    (:meth:`LrSweep.best_index`). Each lr is one parameter group; with gradient noise every lr
    sees the same noise sequence (common random numbers). ``kwargs`` go to :func:`simulate`.
    """
    from dgs_core.optim import registry

    surf = get_surface(surface)
    start_point = np.asarray(check_starts(surf, start, outside=kwargs.get("outside", "clamp"))[0])
    if len(start_point) != 1:
        raise ValueError(f"Invalid start: {len(start_point)} points (an lr sweep runs from one start)")
    default_lr = float(registry.get(optimizer).resolve(hparams, surface=True)["lr"])
    grid = lr_grid(default_lr) if lrs is None else lrs
    run = simulate(surf, optimizer, hparams, start=start, lrs=grid, steps=steps, **kwargs)
    return LrSweep(run=run, default_lr=default_lr, tolerance=TOLERANCE.validate(tolerance))
