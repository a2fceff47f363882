"""Sharpness of a solution: the top eigenvalue of the training loss's Hessian at it.

Power iteration on Hessian-vector products (Pearlmutter 1994, "Fast Exact Multiplication by
the Hessian"): never forms the Hessian, each product costs about two gradients::

    v₀ ~ N(0, I) / ‖·‖                         (seeded)
    w  = H v_k,   λ_k = v_kᵀ w,   v_{k+1} = w / ‖w‖
    stop when |λ_k − λ_{k−1}| <= tol · |λ_k|, or after max_iter products

H v is ``grad(θ ↦ ∇L(θ)·v)`` with ``torch.func`` (reverse over reverse: on the lab's models it
measured faster than forward over reverse, ``jvp(grad(L))``). Power iteration converges to the
eigenvalue of largest *magnitude*; at a minimum (H positive semi-definite) that is the top
eigenvalue, the usual sharpness (Keskar et al. 2017 discuss sharp and flat minima,
https://arxiv.org/abs/1609.04836; the Hessian's top eigenvalue is the measure of e.g. Yao et
al. 2018, https://arxiv.org/abs/1802.08241). Away from a minimum it may come out negative: the
sign is reported as found. The loss is the whole split's mean cross-entropy, in float32 (the
models' dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch.func import grad

from dgs_core.landscape.weights import SPLITS, Landscape
from dgs_core.params import Param, ParamSet, invalid

SETTINGS = ParamSet(
    (
        Param(
            "tol",
            1e-3,
            low=0.0,
            low_open=True,
            high=0.5,
            log=True,
            help="relative change that ends the iteration",
        ),
        Param("max_iter", 100, low=1, high=10_000, integer=True, help="Hessian-vector products at most"),
        Param("seed", 0, low=0, high=2**63 - 1, integer=True, help="the starting vector"),
    )
)
SHARPNESS_COLUMNS = (
    "label",
    "optimizer",
    "top_eigenvalue",
    "iterations",
    "converged",
    "train_loss",
    "val_loss",
    "loss_gap",
    "train_metric",
    "val_metric",
)


def hessian_vector_product(
    loss: Callable[[torch.Tensor], torch.Tensor], weights: torch.Tensor, vector: torch.Tensor
) -> torch.Tensor:
    """``H(weights) · vector`` for a scalar ``loss`` of a flat weight vector."""
    return grad(lambda w: torch.dot(grad(loss)(w), vector))(weights)


@dataclass(frozen=True)
class Sharpness:
    """The result of :func:`top_hessian_eigenvalue`.

    Attributes:
        label: the optimizer.
        eigenvalue: the last Rayleigh quotient λ_k.
        iterations: Hessian-vector products taken.
        converged: the relative change fell to ``tol`` within ``max_iter``.
        change: the last relative change |λ_k − λ_{k−1}| / |λ_k|.
    """

    label: str
    eigenvalue: float
    iterations: int
    converged: bool
    change: float


def top_hessian_eigenvalue(
    landscape: Landscape,
    label: str,
    *,
    split: str = "train",
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    stop: Callable[[], bool] | None = None,
) -> Sharpness:
    """The Hessian's eigenvalue of largest magnitude at ``label``'s final weights, by power
    iteration (see the module docstring). Raises ``ParamError`` naming ``label``, ``split``,
    ``tol``, ``max_iter`` or ``seed``."""
    path = landscape.path(label)
    if split not in SPLITS:
        raise invalid("split", split, f"one of {', '.join(SPLITS)}")
    settings = SETTINGS.resolve({"tol": tol, "max_iter": max_iter, "seed": seed})
    loss = landscape.functional_loss(split)
    weights = path.final.to(landscape.device)
    generator = torch.Generator().manual_seed(settings["seed"])
    vector = torch.randn(weights.shape, generator=generator).to(landscape.device)
    vector /= vector.norm()
    eigenvalue, change, k = math.nan, math.inf, 0
    while k < settings["max_iter"]:
        if stop is not None and stop():
            break
        product = hessian_vector_product(loss, weights, vector)
        k += 1
        previous, eigenvalue = eigenvalue, float(torch.dot(vector, product))
        norm = float(product.norm())
        if not math.isfinite(eigenvalue) or norm == 0.0:
            break  # a zero (or non-finite) Hessian along v: λ = 0 (or NaN) is the answer found
        vector = product / norm
        if math.isfinite(previous):
            change = abs(eigenvalue - previous) / max(abs(eigenvalue), 1e-30)
            if change <= settings["tol"]:
                break
    return Sharpness(label, eigenvalue, k, change <= settings["tol"], change)


def sharpness_table(
    landscape: Landscape,
    labels: Sequence[str] | None = None,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """One row per optimizer: the top Hessian eigenvalue of the training loss at its final
    weights beside its losses, the validation gap (val − train loss) and accuracies there.

    Columns: :data:`SHARPNESS_COLUMNS`. ``progress(done, total)`` after each optimizer; a
    ``stop()`` ends the table early (the rows done so far).
    """
    if isinstance(labels, str) or (labels is not None and not labels):
        raise invalid("labels", labels, "a non-empty list of optimizer labels")
    labels = list(landscape.labels if labels is None else labels)
    rows = []
    for i, label in enumerate(labels):
        if stop is not None and stop():
            break
        path = landscape.path(label, field="labels")
        found = top_hessian_eigenvalue(landscape, label, tol=tol, max_iter=max_iter, seed=seed, stop=stop)
        train_loss, train_metric = landscape.evaluate(path.final, "train")
        val_loss, val_metric = landscape.evaluate(path.final, "val")
        rows.append(
            {
                "label": label,
                "optimizer": path.name,
                "top_eigenvalue": found.eigenvalue,
                "iterations": found.iterations,
                "converged": found.converged,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "loss_gap": val_loss - train_loss,
                "train_metric": train_metric,
                "val_metric": val_metric,
            }
        )
        if progress is not None:
            progress(i + 1, len(labels))
    return pd.DataFrame(rows, columns=list(SHARPNESS_COLUMNS))
