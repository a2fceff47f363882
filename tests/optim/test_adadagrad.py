"""Adaptive batch sizes (SPEC §1.7): every test against a hand computation, the batched form,
per-sample gradients, the controller, AdAdaGrad / AdAdaGrad-Norm and their registry records."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from dgs_core.optim import adadagrad, registry
from dgs_core.optim.adadagrad import (
    UNBOUNDED_BATCH,
    AdAdaGrad,
    AdAdaGradNorm,
    BatchSizeController,
    augmented_inner_product_test,
    coordinatewise_test,
    flatten_per_sample,
    inner_product_test,
    norm_test,
    orthogonality_test,
)
from dgs_core.optim.adagrad_norm import AdaGradNorm
from dgs_core.training.batching import per_sample_grads

# Four samples, three coordinates. Mean g_B = (1, 0.5, -0.25).
ROWS = [
    [1.0, 2.0, 0.0],
    [3.0, -1.0, 1.0],
    [0.0, 0.5, -2.0],
    [0.0, 0.5, 0.0],
]
G = torch.tensor(ROWS, dtype=torch.float64)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def var(xs: list[float]) -> float:  # unbiased
    m = mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def columns(rows: list[list[float]]) -> list[list[float]]:
    return [list(c) for c in zip(*rows, strict=True)]


def dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True))


G_B = [mean(c) for c in columns(ROWS)]
NORM_SQ = dot(G_B, G_B)


def test_norm_test_by_hand() -> None:
    eta = 0.7
    expected = math.ceil(sum(var(c) for c in columns(ROWS)) / (eta**2 * NORM_SQ))
    assert norm_test(G, eta) == expected
    assert isinstance(norm_test(G, eta), int)


def test_inner_product_test_by_hand() -> None:
    theta = 0.3
    inner = [dot(r, G_B) for r in ROWS]
    assert inner_product_test(G, theta) == math.ceil(var(inner) / (theta**2 * NORM_SQ**2))


def test_orthogonality_test_by_hand() -> None:
    nu = 0.8
    residual = [[x - dot(r, G_B) / NORM_SQ * g for x, g in zip(r, G_B, strict=True)] for r in ROWS]
    expected = math.ceil(sum(var(c) for c in columns(residual)) / (nu**2 * NORM_SQ))
    assert orthogonality_test(G, nu) == expected


def test_augmented_inner_product_is_the_larger_test() -> None:
    theta, nu = 0.9, 0.8
    both = augmented_inner_product_test(G, theta, nu)
    assert both == max(inner_product_test(G, theta), orthogonality_test(G, nu))
    # and each side can be the larger one
    assert augmented_inner_product_test(G, 0.05, 10.0) == inner_product_test(G, 0.05)
    assert augmented_inner_product_test(G, 10.0, 0.05) == orthogonality_test(G, 0.05)


def test_coordinatewise_test_by_hand() -> None:
    eta, eps = 0.6, 1e-3
    accumulator = [4.0, 0.25, 9.0]
    P = [1 / (math.sqrt(a) + eps) for a in accumulator]
    numerator = sum(p * var(c) for p, c in zip(P, columns(ROWS), strict=True))
    denominator = eta**2 * sum(p * g * g for p, g in zip(P, G_B, strict=True))
    got = coordinatewise_test(G, eta, torch.tensor(accumulator, dtype=torch.float64), eps)
    assert got == math.ceil(numerator / denominator)


def test_coordinatewise_with_uniform_metric_is_the_norm_test() -> None:
    assert coordinatewise_test(G, 0.3, torch.full((3,), 2.5, dtype=torch.float64)) == norm_test(G, 0.3)


def test_tests_on_tiny_variance_ask_for_one_sample() -> None:
    quiet = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-9]], dtype=torch.float64)
    for got in (norm_test(quiet, 0.1), inner_product_test(quiet, 0.1), orthogonality_test(quiet, 0.1)):
        assert got == 1


def test_zero_mean_gradient() -> None:
    noisy = torch.tensor([[1.0, -2.0], [-1.0, 2.0]], dtype=torch.float64)  # mean 0, variance > 0
    assert norm_test(noisy, 0.1) == UNBOUNDED_BATCH
    assert orthogonality_test(noisy, 0.1) == UNBOUNDED_BATCH
    assert inner_product_test(noisy, 0.1) == 1  # 0/0: ⟨∇f_i, 0⟩ has no variance either
    assert augmented_inner_product_test(noisy, 0.1, 0.1) == UNBOUNDED_BATCH
    silent = torch.zeros(3, 2, dtype=torch.float64)  # 0/0 everywhere
    assert norm_test(silent, 0.1) == 1


def test_batched_form_equals_row_by_row() -> None:
    torch.manual_seed(0)
    batched = (
        torch.randn(5, 6, 4, dtype=torch.float64)
        + torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None, None]
    )
    accumulator = torch.rand(5, 4, dtype=torch.float64) + 0.1
    cases = [
        (norm_test, (0.5,), {}),
        (inner_product_test, (0.5,), {}),
        (orthogonality_test, (0.5,), {}),
        (augmented_inner_product_test, (0.5, 0.7), {}),
    ]
    for test, args, _ in cases:
        got = test(batched, *args)
        assert got.dtype == torch.int64 and got.shape == (5,)
        assert got.tolist() == [test(batched[r], *args) for r in range(5)]
    got = coordinatewise_test(batched, 0.5, accumulator, 1e-8)
    assert got.tolist() == [coordinatewise_test(batched[r], 0.5, accumulator[r], 1e-8) for r in range(5)]


def test_half_precision_is_computed_in_float32() -> None:
    assert norm_test(G.to(torch.bfloat16), 0.7) == norm_test(G.to(torch.bfloat16).to(torch.float32), 0.7)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: norm_test(G[:1], 0.1), "Invalid G: 1 sample"),
        (lambda: norm_test(G[0], 0.1), "Invalid G: "),
        (lambda: norm_test(G.long(), 0.1), "Invalid G: dtype"),
        (lambda: norm_test(G, 0.0), "Invalid eta: 0.0"),
        (lambda: inner_product_test(G, -1.0), "Invalid theta: -1.0"),
        (lambda: orthogonality_test(G, float("inf")), "Invalid nu: inf"),
        (lambda: coordinatewise_test(G, 0.1, torch.ones(2)), "Invalid accumulator"),
        (lambda: coordinatewise_test(G, 0.1, torch.ones(3), -1.0), "Invalid eps: -1.0"),
    ],
)
def test_bad_inputs_raise_value_error_naming_argument(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# -- per-sample gradients -----------------------------------------------------------------------


def _loop_grads(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    out: dict[str, list[torch.Tensor]] = {name: [] for name in trainable}
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in trainable.items():
            out[name].append(p.grad.clone())
    return {name: torch.stack(gs) for name, gs in out.items()}


def test_per_sample_grads_match_a_loop_on_an_mlp() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    loss_fn = nn.functional.cross_entropy
    got = per_sample_grads(model, loss_fn, x, y)
    expected = _loop_grads(model, loss_fn, x, y)
    assert list(got) == list(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12)
    chunked = per_sample_grads(model, loss_fn, x, y, chunk_size=4)
    for name in expected:
        torch.testing.assert_close(chunked[name], expected[name], rtol=1e-12, atol=1e-12)
    # the batch gradient is their mean
    model.zero_grad()
    loss_fn(model(x), y).backward()
    flat = flatten_per_sample(got)
    torch.testing.assert_close(flat.mean(0), torch.cat([p.grad.reshape(-1) for p in model.parameters()]))


def test_per_sample_grads_on_a_cnn_skip_frozen_parameters() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    model[0].bias.requires_grad_(False)
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    got = per_sample_grads(model, nn.functional.cross_entropy, x, y)
    assert "0.bias" not in got
    expected = _loop_grads(model, nn.functional.cross_entropy, x, y)
    for name, value in got.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-12, atol=1e-12)


# -- the controller -----------------------------------------------------------------------------


def _fixed_test(sizes: list[int]):
    calls = iter(sizes)

    def test(G: torch.Tensor, constant: float) -> int:
        return next(calls)

    return test


def test_controller_never_shrinks_and_respects_the_cap() -> None:
    controller = BatchSizeController(_fixed_test([8, 3, 20, 500, 2]), initial=4, max_batch=64)
    sizes = []
    for _ in range(5):
        assert controller.test_due
        controller.propose(G)
        sizes.append(controller.record_step())
    assert sizes == [8, 8, 20, 64, 64]
    assert controller.history == [4, 8, 8, 20, 64]  # the batch size each step used


def test_controller_tests_every_interval_steps() -> None:
    controller = BatchSizeController(_fixed_test([5, 9, 12]), initial=2, max_batch=100, interval=3)
    due, proposals = [], []
    for _ in range(7):
        due.append(controller.test_due)
        proposals.append(controller.propose(G))
        controller.record_step()
    assert due == [True, False, False, True, False, False, True]
    assert proposals == [5, None, None, 9, None, None, 12]
    assert controller.history == [2, 5, 5, 5, 9, 9, 9]
    assert controller.batch_size == 12


def test_controller_runs_named_tests_with_its_constant() -> None:
    controller = BatchSizeController("norm", initial=2, max_batch=10**6, constant=0.7)
    assert controller.propose(G) == norm_test(G, 0.7)
    controller.record_step()
    assert controller.batch_size == norm_test(G, 0.7)
    augmented = BatchSizeController("augmented_inner_product", initial=2, max_batch=10**6, constant=0.3)
    assert augmented.propose(G) == augmented_inner_product_test(G, 0.3, 0.3)


def test_controller_state_dict_round_trip() -> None:
    controller = BatchSizeController("norm", initial=2, max_batch=1000, interval=2)
    for _ in range(3):
        controller.propose(G)
        controller.record_step()
    controller.propose(G)  # pending at save time: none due now (3 % 2), so still None
    state = copy.deepcopy(controller.state_dict())
    clone = BatchSizeController("norm", initial=2, max_batch=1000, interval=2)
    clone.load_state_dict(state)
    assert (clone.batch_size, clone.history, clone.test_due) == (
        controller.batch_size,
        controller.history,
        controller.test_due,
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test": "nope"}, "Invalid test: 'nope'"),
        ({"test": 3}, "Invalid test: 3"),
        ({"initial": 1}, "Invalid initial_batch_size: 1"),
        ({"initial": 50, "max_batch": 10}, "Invalid initial_batch_size: 50"),
        ({"interval": 0}, "Invalid test_interval: 0"),
        ({"constant": 0.0}, "Invalid test_constant: 0.0"),
    ],
)
def test_controller_bad_inputs(kwargs: dict, match: str) -> None:
    args = {"test": "norm", "initial": 2, "max_batch": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        BatchSizeController(args.pop("test"), **args)


# -- the optimizers -----------------------------------------------------------------------------


def _model_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    y = x[:, :1] * 2 - x[:, 1:] + 0.5 * torch.randn(64, 1, dtype=torch.float64)  # noisy targets
    return model, x, y


def _train(opt, model, x, y, steps: int) -> list[int]:
    loss_fn = nn.functional.mse_loss
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(x), (opt.batch_size,), generator=generator)
        xb, yb = x[index], y[index]
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        if opt.test_due:
            opt.propose_batch_size(per_sample_grads(model, loss_fn, xb, yb))
        opt.step()
    return opt.batch_size_history


def test_adadagrad_updates_are_torch_adagrad() -> None:
    results = []
    for cls in (AdAdaGrad, torch.optim.Adagrad):
        model, x, y = _model_and_data()
        opt = cls(model.parameters(), lr=0.05, weight_decay=0.01, lr_decay=0.01)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_adadagrad_norm_updates_are_adagrad_norm() -> None:
    results = []
    for cls in (AdAdaGradNorm, AdaGradNorm):
        model, x, y = _model_and_data()
        opt = cls(model.parameters(), lr=0.5)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_adadagrad_tests_in_adagrad_metric_of_the_coming_step() -> None:
    model, x, y = _model_and_data()
    opt = AdAdaGrad(model.parameters(), lr=0.1, eps=1e-6, initial_batch_size=2, max_batch_size=10**6)
    for _ in range(2):  # give the accumulator some history
        opt.zero_grad()
        nn.functional.mse_loss(model(x[:8]), y[:8]).backward()
        opt.step()
    grads = per_sample_grads(model, nn.functional.mse_loss, x[:8], y[:8])
    matrix = flatten_per_sample(grads)
    accumulator = torch.cat([opt.state[p]["sum"].reshape(-1) for p in model.parameters()])
    expected = coordinatewise_test(matrix, 0.1, accumulator + matrix.mean(0) ** 2, 1e-6)
    assert opt.propose_batch_size(grads) == expected
    opt.step()
    assert opt.batch_size == max(2, expected)


def test_adadagrad_norm_proposes_by_the_norm_test() -> None:
    model, x, y = _model_and_data()
    opt = AdAdaGradNorm(model.parameters(), initial_batch_size=2, max_batch_size=10**6, test_constant=0.4)
    grads = per_sample_grads(model, nn.functional.mse_loss, x[:8], y[:8])
    assert opt.propose_batch_size(grads) == norm_test(flatten_per_sample(grads), 0.4)
    # the matrix form is accepted too, and a second proposal in the same step is not due
    assert opt.propose_batch_size(flatten_per_sample(grads)) is None


@pytest.mark.parametrize("cls", [AdAdaGrad, AdAdaGradNorm])
def test_batch_grows_on_noisy_data_and_round_trips_through_state_dict(cls) -> None:
    model, x, y = _model_and_data()
    opt = cls(model.parameters(), initial_batch_size=2, max_batch_size=48, test_interval=2)
    history = _train(opt, model, x, y, 12)
    assert len(history) == 12
    assert history[0] == 2 and history[-1] > 2
    assert all(a <= b <= 48 for a, b in itertools.pairwise(history))
    assert all(history[k] == history[k + 1] for k in range(1, 11, 2))  # grows only after test steps 0, 2, …

    saved = copy.deepcopy(opt.state_dict())
    model2 = copy.deepcopy(model)
    opt2 = cls(model2.parameters(), initial_batch_size=2, max_batch_size=48, test_interval=2)
    opt2.load_state_dict(saved)
    assert opt2.batch_size == opt.batch_size and opt2.batch_size_history == history
    assert opt2.test_due == opt.test_due


def test_per_sample_dict_must_list_the_optimizers_parameters_in_order() -> None:
    model, x, y = _model_and_data()
    params = list(model.parameters())
    opt = AdAdaGrad(params[::-1])
    grads = per_sample_grads(model, nn.functional.mse_loss, x[:4], y[:4])
    with pytest.raises(ValueError, match="Invalid per_sample"):
        opt.propose_batch_size(grads)
    with pytest.raises(ValueError, match="Invalid per_sample"):
        opt.propose_batch_size(torch.zeros(4, 3))


@pytest.mark.parametrize(("name", "value"), [("lr", -1.0), ("eps", -1.0), ("initial_batch_size", 0)])
def test_adadagrad_bad_inputs(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"Invalid {name}: "):
        AdAdaGrad([torch.zeros(2, requires_grad=True)], **{name: value})


@pytest.mark.parametrize("cls", [AdAdaGrad, AdAdaGradNorm])
def test_group_value_rewritten_invalid_raises_at_step(cls) -> None:
    w = torch.ones(2, requires_grad=True)
    opt = cls([w])
    opt.param_groups[0]["lr"] = -1.0
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"Invalid lr: -1\.0"):
        opt.step()
    assert w.tolist() == [1.0, 1.0]


def test_registry_records() -> None:
    for name, cls, test, interpretation in (
        ("adadagrad", AdAdaGrad, "coordinatewise", True),
        ("adadagrad_norm", AdAdaGradNorm, "norm", False),
    ):
        info = registry.get(name)
        assert info.cls is cls and info.batch_test == test and info.interpretation is interpretation
        assert info.paper == adadagrad.PAPER
        assert {"initial_batch_size", "max_batch_size", "test_interval", "test_constant"} <= set(
            info.defaults
        )
        opt = registry.create(name, [torch.zeros(2, requires_grad=True)], surface=True)
        assert opt.batch_size == info.resolve(surface=True)["initial_batch_size"]
    assert adadagrad.TESTS[registry.get("adadagrad").batch_test] is coordinatewise_test


def test_a_group_added_before_its_first_step_is_tested_with_its_starting_sum() -> None:
    # torch's Adagrad creates a new group's sum at its next step; the test before that step
    # uses the sum it will start from, as if the group had been there from the start.
    G = torch.tensor([[0.0, 1, 2, 1], [2, 1, 0, 3], [1, 1, 1, 1]])
    first, second = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    added = AdAdaGrad([first], initial_accumulator_value=0.5, max_batch_size=10**6)
    added.add_param_group({"params": [second]})
    together = AdAdaGrad([first, second], initial_accumulator_value=0.5, max_batch_size=10**6)
    assert added.propose_batch_size(G) == together.propose_batch_size(G)


@pytest.mark.parametrize("cls", [AdAdaGrad, AdAdaGradNorm])
def test_complex_parameters_are_tested_as_their_real_twin(cls) -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, generator=g, dtype=torch.complex128, requires_grad=True)
    twin = torch.view_as_real(z.detach()).clone().requires_grad_()
    per_sample = torch.randn(5, 3, generator=g, dtype=torch.complex128)  # 5 samples
    opts = [cls([z], max_batch_size=10**6), cls([twin], max_batch_size=10**6)]
    z.grad, twin.grad = per_sample.mean(0), torch.view_as_real(per_sample).mean(0)
    for opt in opts:
        opt.step()  # an accumulator that is not uniform
    proposals = [
        opts[0].propose_batch_size({"z": per_sample}),
        opts[1].propose_batch_size({"twin": torch.view_as_real(per_sample)}),
    ]
    assert proposals[0] == proposals[1] > 1
