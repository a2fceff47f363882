"""Models: logits of the right shape, sizes, exact per-sample gradients, causality, bad sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from dgs_core.training.batching import per_sample_grads
from dgs_core.training.models import SIZES, TinyTransformer, build_model, resolve_model_params
from dgs_core.training.tasks import make_task, task_names


@pytest.fixture(scope="module")
def tasks():
    return {
        name: make_task(name, **({"n_samples": 100} if name in ("moons", "circles", "spirals") else {}))
        for name in task_names()
    }


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", task_names())
def test_logits_shape_and_no_batch_norm(tasks, name: str, size: str) -> None:
    task = tasks[name]
    torch.manual_seed(0)
    model = build_model(task, {"size": size})
    logits = model(task.x_train[:5])
    assert logits.shape == (5, task.num_classes)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) < 500_000, "kept small for a CPU lab"


@pytest.mark.parametrize("name", task_names())
def test_per_sample_gradients_equal_one_example_backward(tasks, name: str) -> None:
    task = tasks[name]
    torch.manual_seed(0)
    model = build_model(task, {"size": "tiny"})
    x, y = task.x_train[:4], task.y_train[:4]
    grads = per_sample_grads(model, cross_entropy, x, y)
    for i in range(4):
        model.zero_grad()
        cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name_, p in model.named_parameters():
            torch.testing.assert_close(grads[name_][i], p.grad, rtol=1e-4, atol=1e-6)


def test_transformer_is_causal() -> None:
    torch.manual_seed(0)
    model = TinyTransformer(10, 4, 5, d_model=16, heads=2, layers=2)
    tokens = torch.tensor([[1, 2, 3, 4]])
    changed = tokens.clone()
    changed[0, 3] = 7

    def hidden(t: torch.Tensor) -> torch.Tensor:
        return model.blocks(model.embed(t) + model.position)

    a, b = hidden(tokens), hidden(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # earlier positions never see the last token
    assert not torch.allclose(a[:, 3], b[:, 3])


def test_presets_and_overrides() -> None:
    assert resolve_model_params("moons") == {"hidden": 32, "depth": 2, "activation": "tanh"}
    assert resolve_model_params("moons", {"size": "tiny", "activation": "relu"})["activation"] == "relu"
    assert resolve_model_params("digits", {"channels": 4})["channels"] == 4
    model = build_model(make_task("moons", n_samples=50), {"hidden": 5, "depth": 3})
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [5, 5, 5, 2]


@pytest.mark.parametrize(
    "task, model, message",
    [
        ("moons", {"size": "huge"}, "Invalid size: 'huge'"),
        ("moons", {"channels": 8}, "Invalid model parameter for mlp: 'channels'"),
        ("moons", {"hidden": 0}, "Invalid hidden: 0"),
        ("moons", {"depth": 2.5}, "Invalid depth: 2.5"),
        ("moons", {"activation": "sigmoid"}, "Invalid activation: 'sigmoid'"),
        ("modular", {"d_model": 30, "heads": 4}, "Invalid heads: 4"),
        ("digits", {"blocks": 9}, "Invalid blocks: 9"),
    ],
)
def test_bad_model_parameters_raise_value_error_naming_them(task: str, model: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_model_params(task, model)
