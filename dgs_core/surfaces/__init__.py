"""The Surface lab's core: 2-D test functions, the batched simulator, studies, the configuration.

    functions.py  the docs/algorithms.md#surfaces surfaces (value, closed-form gradient, domain, minima)
    simulator.py  simulate / compare: any registered optimizer from many starts at many lrs
    studies.py    basin maps and learning-rate sweeps
    config.py     SurfaceConfig: the one schema of a surface run (URL, bundle, CLI)

>>> from dgs_core.surfaces import get_surface, simulate
>>> run = simulate(get_surface("rosenbrock"), "adam", steps=200)
>>> run.points.shape
(201, 1, 2)
"""

from dgs_core.surfaces.functions import SURFACES, Surface, check_starts, get_surface, surface_names
from dgs_core.surfaces.simulator import Run, compare, simulate
from dgs_core.surfaces.studies import BasinMap, LrSweep, basin_map, lr_grid, lr_sweep

__all__ = [
    "SURFACES",
    "BasinMap",
    "LrSweep",
    "Run",
    "Surface",
    "basin_map",
    "check_starts",
    "compare",
    "get_surface",
    "lr_grid",
    "lr_sweep",
    "simulate",
    "surface_names",
]
