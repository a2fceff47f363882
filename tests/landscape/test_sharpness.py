"""Sharpness: Hessian-vector products and power iteration against a dense eigendecomposition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dgs_core.landscape import Landscape, hessian_vector_product, sharpness_table, top_hessian_eigenvalue
from dgs_core.landscape.sharpness import SHARPNESS_COLUMNS
from dgs_core.params import ParamError
from dgs_core.training.trainer import Trainer
from tests.landscape.conftest import moons_config


@pytest.fixture(scope="module")
def tiny() -> Landscape:
    """A 17-parameter MLP (2 → 3 → 2) trained for a while: a Hessian small enough to form."""
    config = moons_config(model={"size": "tiny", "hidden": 3, "depth": 1}, steps=200, eval_every=50)
    trainer = Trainer(config)
    list(trainer.run())
    return Landscape.from_trainer(trainer)


def _dense_hessian(landscape: Landscape, label: str) -> torch.Tensor:
    """The training loss's whole Hessian at ``label``'s final weights (17 × 17), by autograd."""
    loss = landscape.functional_loss("train")
    return torch.autograd.functional.hessian(loss, landscape.paths[label].final.clone())


def test_hessian_vector_products_are_the_dense_hessian_times_the_vector(tiny: Landscape) -> None:
    assert tiny.numel == 17
    hessian = _dense_hessian(tiny, "adam")
    loss = tiny.functional_loss("train")
    weights = tiny.paths["adam"].final
    for seed in range(3):
        vector = torch.randn(17, generator=torch.Generator().manual_seed(seed))
        product = hessian_vector_product(loss, weights, vector)
        torch.testing.assert_close(product, hessian @ vector, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("label", ["sgd", "adam", "dgs"])
def test_the_top_eigenvalue_matches_a_dense_eigendecomposition(tiny: Landscape, label: str) -> None:
    eigenvalues = torch.linalg.eigvalsh(_dense_hessian(tiny, label).double())
    magnitudes = sorted(eigenvalues.abs().tolist())
    largest = float(eigenvalues[eigenvalues.abs().argmax()])
    assert magnitudes[-1] > 1.2 * magnitudes[-2]  # a gap: power iteration converges to it
    found = top_hessian_eigenvalue(tiny, label, tol=1e-7, max_iter=5000)
    assert found.converged and found.iterations < 5000
    assert found.eigenvalue == pytest.approx(largest, rel=1e-3), (label, eigenvalues.tolist())


def test_the_iteration_cap_and_the_tolerance(tiny: Landscape) -> None:
    capped = top_hessian_eigenvalue(tiny, "adam", tol=1e-12, max_iter=2)
    assert capped.iterations == 2 and not capped.converged and math.isfinite(capped.eigenvalue)
    loose = top_hessian_eigenvalue(tiny, "adam", tol=0.2, max_iter=100)
    assert loose.converged and loose.change <= 0.2 and loose.iterations <= capped.iterations + 100
    again = top_hessian_eigenvalue(tiny, "adam", tol=0.2, max_iter=100)
    assert again == loose  # seeded: the same start, the same answer
    stopped = top_hessian_eigenvalue(tiny, "adam", stop=lambda: True)
    assert stopped.iterations == 0 and not stopped.converged and math.isnan(stopped.eigenvalue)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"label": "lion"}, "label"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"split": "test"}, "split"),
    ],
)
def test_bad_sharpness_inputs_name_their_field(tiny: Landscape, kwargs: dict, field: str) -> None:
    with pytest.raises(ParamError) as info:
        top_hessian_eigenvalue(tiny, **{"label": "adam", **kwargs})
    assert info.value.field == field


def test_the_sharpness_table(tiny: Landscape) -> None:
    done = []
    table = sharpness_table(tiny, max_iter=50, progress=lambda d, t: done.append((d, t)))
    assert list(table.columns) == list(SHARPNESS_COLUMNS) and list(table["label"]) == ["sgd", "adam", "dgs"]
    assert done == [(1, 3), (2, 3), (3, 3)]
    row = table.set_index("label").loc["adam"]
    train, train_metric = tiny.evaluate(tiny.paths["adam"].final, "train")
    assert row["train_loss"] == train and row["train_metric"] == train_metric
    assert row["loss_gap"] == pytest.approx(row["val_loss"] - row["train_loss"])
    assert np.isfinite(table["top_eigenvalue"]).all()
    with pytest.raises(ParamError) as info:
        sharpness_table(tiny, labels=["adam", "lion"])
    assert info.value.field == "labels"
