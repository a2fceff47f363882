"""The Landscape lab's core: the real loss surface of a trained model, every optimizer's path on it.

For a finished or stopped training run whose optimizers started from the same initial weights
(a :class:`~dgs_core.training.Trainer`, a training bundle read back, or a large-batch study):

    weights.py    Landscape: every optimizer's recorded weights (the trainer's trajectory), the
                  model and the task; the losses at a flat weight vector
    planes.py     PlaneSpec, build_plane: the exact plane through the initial weights and two
                  solutions, the PCA plane of all paths, filter-normalized random directions
                  (Li et al. 2018); each Plane says how faithful it is
    grid.py       evaluate_grid (a loop reference and a vmapped fast path, chunked to a memory
                  budget), interpolate (1-D, between two solutions), LandscapeCache
    sharpness.py  the top Hessian eigenvalue at each solution (power iteration on HVPs)

Figures: :mod:`dgs_core.viz.landscape`. Bundles: :func:`dgs_core.runs.export_training`
takes the grids (``landscapes=``) and :func:`dgs_core.runs.read_bundle` gives them back.

>>> from dgs_core.training import TrainConfig, Trainer
>>> trainer = Trainer(TrainConfig(task="moons", optimizers=["sgd", "adam", "dgs"], steps=40,
...                               eval_every=10, task_params={"n_samples": 200}, device="cpu"))
>>> _ = list(trainer.run())
>>> landscape = Landscape.from_trainer(trainer)
>>> grid = evaluate_grid(landscape, build_plane(landscape, PlaneSpec.pca()), GridSpec(resolution=11))
>>> grid.losses["val"].shape, grid.complete
((11, 11), True)
>>> curve = interpolate(landscape, "sgd", "adam", points=5)
>>> table = sharpness_table(landscape, max_iter=20)
"""

from dgs_core.landscape.grid import (
    GridSpec,
    Interpolation,
    LandscapeCache,
    LossGrid,
    evaluate_grid,
    interpolate,
    losses_at,
)
from dgs_core.landscape.planes import (
    Plane,
    PlaneSpec,
    ProjectedPath,
    build_plane,
    filter_normalize,
    random_directions,
)
from dgs_core.landscape.sharpness import (
    Sharpness,
    hessian_vector_product,
    sharpness_table,
    top_hessian_eigenvalue,
)
from dgs_core.landscape.weights import SPLITS, Landscape, ParamLayout, WeightPath

__all__ = [
    "SPLITS",
    "GridSpec",
    "Interpolation",
    "Landscape",
    "LandscapeCache",
    "LossGrid",
    "ParamLayout",
    "Plane",
    "PlaneSpec",
    "ProjectedPath",
    "Sharpness",
    "WeightPath",
    "build_plane",
    "evaluate_grid",
    "filter_normalize",
    "hessian_vector_product",
    "interpolate",
    "losses_at",
    "random_directions",
    "sharpness_table",
    "top_hessian_eigenvalue",
]
