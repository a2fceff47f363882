"""Training real models side by side: tasks, models, the configuration and the trainer.

    tasks.py     the data sets (generated or shipped with scikit-learn), with their parameters
    models.py    the MLP, residual CNN and tiny transformer, in three sizes
    config.py    TrainConfig and OptimizerSpec: one validated schema per run
    trainer.py   the Trainer: every optimizer from the same initial weights on the same batches
    results.py   RunResult and the progress events the trainer yields
    batching.py  per-sample gradients for the batch-size tests

>>> from dgs_core.training import TrainConfig, Trainer
"""

from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.training.results import ProgressEvent, RunResult
from dgs_core.training.trainer import Trainer

__all__ = ["OptimizerSpec", "ProgressEvent", "RunResult", "TrainConfig", "Trainer"]
