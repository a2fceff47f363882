"""The large-batch question: the same optimizers at a small and a large batch, for the same epochs.

Does a large batch generalise worse, and do LARS (You, Gitman, Ginsburg 2017) and EXTRAP-SGD
(Lin, Kong, Stich, Jaggi 2020) close the gap? :func:`large_batch_configs` builds the two runs,
:class:`LargeBatchStudy` trains them (a :class:`~dgs_core.studies.trainers.TrainerStudy`: in
turns, so both grow together) and :func:`large_batch_gap` tabulates each optimizer's train −
validation gap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pandas as pd

from dgs_core.optim import registry
from dgs_core.params import Param, ParamSet
from dgs_core.studies.trainers import TrainerStudy
from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.training.results import EVAL_COLUMNS, RunResult
from dgs_core.training.tasks import make_task

# ---------------------------------------------------------------------------------------------
# The large-batch question
# ---------------------------------------------------------------------------------------------

# SGD, LARS and ExtraSGD for the large-batch question. LARS: τ = 0.01 with η = 0.5 moves each
# weight tensor by about 0.5 % of its norm per step (before momentum) and its biases by plain
# momentum SGD at 0.5; a small sweep on moons and digits (batches 16 vs 256, equal epochs) found it
# the best of η ∈ {0.1, 0.5, 1}, τ ∈ {1e-3, 1e-2} at the large batch. SGD and ExtraSGD keep 0.1.
LARGE_BATCH_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "sgd": {"lr": 0.1},
        "lars": {"lr": 0.5, "trust_coefficient": 0.01},
        "extrasgd": {"lr": 0.1, "extrapolation_lr": 0.1},
    }
)
LR_SCALINGS = ("none", "linear", "sqrt")
_SETTINGS = ParamSet(
    (
        Param("small_batch", 16, low=1, high=1 << 20, integer=True, help="the small batch size"),
        Param("large_batch", 512, low=2, high=1 << 20, integer=True, help="the large batch size"),
        Param("epochs", 20.0, low=0.0, low_open=True, high=1e6, help="epochs of each run"),
        Param("lr_scaling", "none", choices=LR_SCALINGS, help="lr × B/b (linear), × √(B/b) (sqrt)"),
    )
)


def large_batch_configs(
    base: TrainConfig,
    *,
    small_batch: int = 16,
    large_batch: int = 512,
    epochs: float = 20.0,
    lr_scaling: str = "none",
) -> dict[int, TrainConfig]:
    """The same run at two batch sizes and equal epochs: ``{batch_size: config}``.

    Steps = ⌈epochs · n_train / batch⌉ (at least 1). ``lr_scaling`` multiplies each
    optimizer's lr at the large batch by B/b ("linear", Goyal et al. 2017) or √(B/b)
    ("sqrt"), or leaves it ("none"). The base config's optimizers are used as they are;
    :func:`large_batch_base` gives the default SGD, LARS and ExtraSGD. Raises ``ValueError``
    naming a bad argument, or ``steps`` with the cap when a run would exceed ``max_steps``.
    """
    small_batch = _SETTINGS["small_batch"].validate(small_batch)
    large_batch = _SETTINGS["large_batch"].validate(large_batch)
    if large_batch <= small_batch:
        raise _SETTINGS["large_batch"].error(large_batch, f"> small_batch = {small_batch}")
    epochs = _SETTINGS["epochs"].validate(epochs)
    lr_scaling = _SETTINGS["lr_scaling"].validate(lr_scaling)
    n_train = make_task(base.task, seed=base.seed, **base.task_params).n_train
    out = {}
    for batch in (small_batch, large_batch):
        ratio = batch / small_batch
        scale = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[lr_scaling]
        optimizers = []
        for label, spec in zip(base.labels, base.optimizers, strict=True):
            hparams = dict(spec.hparams)
            if scale != 1.0:
                hparams["lr"] = registry.get(spec.name).resolve(spec.hparams)["lr"] * scale
            optimizers.append(OptimizerSpec(spec.name, hparams, label))
        b = min(batch, n_train)
        steps = max(1, math.ceil(epochs * n_train / b))
        out[batch] = base.replace(
            batch_size=batch,
            batch_policy="fixed",
            max_batch_size=max(batch, base.max_batch_size),
            steps=steps,
            eval_every=max(1, steps // 20),
            optimizers=tuple(optimizers),
        )
    return out


def large_batch_base(task: str = "moons", **changes: Any) -> TrainConfig:
    """A config for the large-batch question: SGD, LARS and ExtraSGD with the lab's lrs."""
    optimizers = tuple(OptimizerSpec(name, hparams) for name, hparams in LARGE_BATCH_DEFAULTS.items())
    return TrainConfig(task=task, optimizers=changes.pop("optimizers", optimizers), **changes)


class LargeBatchStudy(TrainerStudy):
    """The runs of :func:`large_batch_configs`, keyed by batch size; :meth:`gap` compares them.

    >>> study = LargeBatchStudy(large_batch_base("moons", task_params={"n_samples": 200}),
    ...                         small_batch=16, large_batch=128, epochs=1)
    >>> _ = list(study.run())
    >>> list(study.gap()["optimizer"])
    ['sgd', 'sgd', 'lars', 'lars', 'extrasgd', 'extrasgd']
    """

    def __init__(self, base: TrainConfig, **kwargs: Any) -> None:
        super().__init__(large_batch_configs(base, **kwargs))

    def gap(self) -> pd.DataFrame:
        """One row per optimizer and batch size, from each run's last evaluation."""
        return large_batch_gap({b: t.results for b, t in list(self.trainers.items())})


def large_batch_gap(results: Mapping[int, Mapping[str, RunResult]]) -> pd.DataFrame:
    """Train/validation gap per optimizer at each batch size (last evaluation of each run).

    Columns: optimizer (label), name, batch_size, steps, epochs, train_loss, train_metric,
    val_loss, val_metric, loss_gap (val − train), metric_gap (train − val), status.
    """
    rows = []
    labels = list(dict.fromkeys(label for runs in results.values() for label in runs))
    for label in labels:
        for batch in sorted(results):
            r = results[batch].get(label)
            if r is None:
                continue
            evals = r.evaluations
            last = {c: float(evals[c].iloc[-1]) if len(evals) else math.nan for c in EVAL_COLUMNS}
            rows.append(
                {
                    "optimizer": label,
                    "name": r.name,
                    "batch_size": batch,
                    "steps": r.steps_done,
                    "epochs": float(r.columns["epoch"][-1]) if r.steps_done else 0.0,
                    **last,
                    "loss_gap": last["val_loss"] - last["train_loss"],
                    "metric_gap": last["train_metric"] - last["val_metric"],
                    "status": r.status,
                }
            )
    return pd.DataFrame(rows)
