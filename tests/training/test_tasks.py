"""Tasks: shapes, seeded splits, label noise, the clean HQ subset, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgs_core.training.tasks import get_task_info, make_task, task_names

SMALL = {"moons": {"n_samples": 200}, "circles": {"n_samples": 200}, "spirals": {"n_samples": 210}}


def _make(name: str, seed: int = 0, **params):
    return make_task(name, seed=seed, **{**SMALL.get(name, {}), **params})


@pytest.mark.parametrize("name", task_names())
def test_split_shapes_and_types(name: str) -> None:
    task = _make(name)
    pool = {"moons": 200, "circles": 200, "spirals": 210, "digits": 1797, "modular": 23 * 23}[name]
    n_val = round(task.params["val_fraction"] * pool)
    assert task.x_val.shape[0] == n_val and task.n_train == pool - n_val
    assert task.y_train.dtype == task.y_val.dtype == torch.long
    assert int(task.y_train.max()) < task.num_classes and int(task.y_val.min()) >= 0
    expected_shape = {"digits": (1, 8, 8), "modular": (4,)}.get(name, (2,))
    assert task.input_shape == expected_shape
    assert task.is_2d == (expected_shape == (2,))
    assert task.x_train.dtype == (torch.long if name == "modular" else torch.float32)


@pytest.mark.parametrize("name", task_names())
def test_same_seed_same_data_other_seed_other_split(name: str) -> None:
    a, b, c = _make(name, seed=3), _make(name, seed=3), _make(name, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.hq_index, b.hq_index)
    assert not torch.equal(a.x_val, c.x_val)


@pytest.mark.parametrize("name", task_names())
def test_label_noise_flips_exactly_the_fraction_outside_the_hq_subset(name: str) -> None:
    clean = _make(name, label_noise=0.0, hq_fraction=0.25)
    noisy = _make(name, label_noise=0.3, hq_fraction=0.25)
    # the split does not depend on the noise: same examples, labels differ exactly where flipped
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.x_val, noisy.x_val)
    changed = noisy.y_train != clean.y_train
    assert torch.equal(changed, noisy.noisy)
    assert int(changed.sum()) == round(0.3 * noisy.n_train)
    assert not noisy.noisy[noisy.hq_index].any(), "the HQ subset is never noised"
    assert torch.equal(noisy.y_hq, clean.y_train[noisy.hq_index])
    assert len(noisy.hq_index) == round(0.25 * noisy.n_train)
    assert torch.equal(noisy.y_val, clean.y_val), "validation labels stay clean"


def test_sources_and_grid() -> None:
    task = _make("moons", hq_fraction=0.5)
    x, y = task.source("hq")
    assert torch.equal(x, task.x_train[task.hq_index]) and torch.equal(y, task.y_hq)
    assert task.source("main")[0] is task.x_train
    with pytest.raises(ValueError, match="Invalid data source: 'clean'"):
        task.source("clean")
    xs, ys, points = task.grid(7)
    assert xs.shape == ys.shape == (7,) and points.shape == (49, 2)
    x_min, _, _, y_max = task.bounds
    assert x_min < float(task.x_train[:, 0].min()) and float(task.x_train[:, 1].max()) < y_max
    with pytest.raises(ValueError, match="not a 2-D task"):
        _make("digits").grid()


@pytest.mark.parametrize("operation, fn", [("add", np.add), ("sub", np.subtract), ("mul", np.multiply)])
def test_modular_labels(operation: str, fn) -> None:
    task = make_task("modular", modulus=11, operation=operation)
    x = task.x_train.numpy()
    assert (x[:, 1] == 11).all() and (x[:, 3] == 12).all() and task.vocab_size == 13
    np.testing.assert_array_equal(task.y_train.numpy(), np.mod(fn(x[:, 0], x[:, 2]), 11))
    assert task.n_train + task.x_val.shape[0] == 121


def test_spirals_has_the_requested_classes() -> None:
    task = make_task("spirals", n_samples=100, classes=4)
    assert task.num_classes == 4 and set(task.y_train.tolist()) == {0, 1, 2, 3}


def test_digits_are_scaled_to_unit_range() -> None:
    task = _make("digits")
    assert float(task.x_train.min()) >= 0.0 and float(task.x_train.max()) == 1.0


def test_to_moves_every_tensor() -> None:
    task = _make("moons").to("cpu")
    assert task.x_train.device.type == "cpu" and task.hq_index.device.type == "cpu"


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("mnist", {}, "Invalid task: 'mnist'"),
        ("moons", {"noise": -0.1}, "Invalid noise: -0.1"),
        ("moons", {"n_samples": 10.5}, "Invalid n_samples: 10.5"),
        ("moons", {"n_samples": "many"}, "Invalid n_samples: 'many'"),
        ("moons", {"label_noise": 0.95}, "Invalid label_noise: 0.95"),
        ("moons", {"label_noise": 0.6, "hq_fraction": 0.5}, "Invalid label_noise: 0.6"),
        ("moons", {"depth": 3}, "Invalid task parameter for moons: 'depth'"),
        ("modular", {"operation": "div"}, "Invalid operation: 'div'"),
        ("modular", {"modulus": 1}, "Invalid modulus: 1"),
        ("circles", {"val_fraction": 0.0}, "Invalid val_fraction: 0.0"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_task(name, **params)


def test_every_task_has_a_record() -> None:
    for name in task_names():
        info = get_task_info(name)
        assert info.summary and info.model in ("mlp", "cnn", "transformer")
        assert info.resolve() == info.defaults
