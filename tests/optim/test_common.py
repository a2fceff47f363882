"""One shared table over every registered optimizer (STYLE practice 10).

Bad inputs raise a ValueError naming the argument; the loss falls on a quadratic in 20 steps;
Rosenbrock converges with the documented surface defaults; a state_dict resume gives
identical weights; the foreach path equals the simple path.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from dgs_core.optim import registry
from dgs_core.params import Param

NAMES = registry.names()


def _quadratic_params(dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(3, generator=g, dtype=dtype).requires_grad_()
    return [w, b]


def _quadratic_loss(params: list[torch.Tensor]) -> torch.Tensor:
    # f = ½ Σ a_i θ_i² with curvatures spread over [0.5, 2]: a well-posed bowl, f* = 0.
    loss = torch.zeros((), dtype=params[0].dtype)
    for p in params:
        a = torch.linspace(0.5, 2.0, p.numel(), dtype=p.dtype).reshape(p.shape)
        loss = loss + 0.5 * (a * p * p).sum()
    return loss


def _closure_for(opt: torch.optim.Optimizer, params: list[torch.Tensor], loss_fn):
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        return loss

    return closure


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], loss_fn, steps: int) -> list[float]:
    closure = _closure_for(opt, params, loss_fn)
    losses = []
    for _ in range(steps):
        losses.append(float(opt.step(closure).detach()))
    return losses


def _bad_value(spec: Param) -> object:
    if spec.kind == "bool":
        return "yes"
    if spec.kind == "choice":
        return "no-such-choice"
    if spec.low is not None:
        return spec.low - 1.0
    if spec.high is not None:
        return spec.high + 1.0
    return float("nan")


@pytest.mark.parametrize("name", NAMES)
def test_registry_record_is_complete(name: str) -> None:
    info = registry.get(name)
    assert info.summary and info.description and info.paper.startswith("https://")
    assert info.hyperparams, "every optimizer exposes at least its learning rate"
    assert info.hyperparam("lr").default > 0
    # defaults validate, and every surface default names a real hyperparameter
    info.resolve()
    info.resolve(surface=True)
    # departures from the official code: short sentences, none for torch's own classes
    assert all(isinstance(d, str) and d and "|" not in d for d in info.departures)
    if info.cls.__module__.startswith("torch."):
        assert info.departures == ()
    assert info.docs == f"docs/algorithms.md#{name}"
    anchors = (Path(__file__).resolve().parents[2] / "docs" / "algorithms.md").read_text(encoding="utf-8")
    assert f'<a id="{name}"></a>' in anchors  # the link lands on its section


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error_naming_argument(name: str) -> None:
    info = registry.get(name)
    for spec in info.hyperparams:
        bad = _bad_value(spec)
        with pytest.raises(ValueError, match=rf"Invalid {spec.name}: .*{repr(bad)[:6]}"):
            registry.create(name, _quadratic_params(), **{spec.name: bad})
    with pytest.raises(ValueError, match="Invalid hyperparameter"):
        registry.create(name, _quadratic_params(), not_a_hyperparameter=1.0)


def test_unknown_optimizer_is_named() -> None:
    with pytest.raises(ValueError, match="Invalid optimizer: 'nope'"):
        registry.create("nope", _quadratic_params())


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_on_quadratic_in_20_steps(name: str) -> None:
    # Registry defaults, as a user's first try would have them. LARS's defaults (η = τ = 1e-3)
    # move a tensor by 1e-6 of its norm per step, so "falls" is strict decrease, not a rate.
    params = _quadratic_params()
    opt = registry.create(name, params)
    losses = _run(opt, params, _quadratic_loss, 20)
    final = float(_quadratic_loss(params).detach())
    assert math.isfinite(final)
    assert final < losses[0], f"{name}: {losses[0]:.6g} → {final:.6g}"


def _rosenbrock(params: list[torch.Tensor]) -> torch.Tensor:
    x, y = params[0][0, 0], params[0][0, 1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


@pytest.mark.parametrize("name", NAMES)
def test_rosenbrock_converges_with_documented_defaults(name: str) -> None:
    # SPEC §5 default start (−2, 2); the surface defaults are the documented per-optimizer
    # settings for the 2-D lab (README, "Surface defaults").
    point = torch.tensor([[-2.0, 2.0]], dtype=torch.float64, requires_grad=True)
    opt = registry.create(name, [point], surface=True)
    _run(opt, [point], _rosenbrock, 3000)
    gap = float(_rosenbrock([point]))
    assert gap < 1e-2, f"{name} ended at {point.detach().tolist()} with f − f* = {gap:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_identical(name: str) -> None:
    params = _quadratic_params()
    opt = registry.create(name, params, surface=True)
    _run(opt, params, _quadratic_loss, 5)
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(opt.state_dict())
    _run(opt, params, _quadratic_loss, 5)
    expected = [p.detach().clone() for p in params]

    resumed = [p.clone().requires_grad_() for p in saved_params]
    opt2 = registry.create(name, resumed, surface=True)
    opt2.load_state_dict(saved_state)
    _run(opt2, resumed, _quadratic_loss, 5)
    for a, b in zip(resumed, expected, strict=True):
        assert torch.equal(a.detach(), b), name


@pytest.mark.parametrize("name", NAMES)
def test_foreach_path_equals_simple_path(name: str) -> None:
    results = []
    for foreach in (False, True):
        params = _quadratic_params()
        opt = registry.create(name, params, surface=True, foreach=foreach)
        _run(opt, params, _quadratic_loss, 10)
        results.append([p.detach().clone() for p in params])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_create_with_independent_rows_sets_the_group_key_where_it_is_read(name: str) -> None:
    # The optimizers with a per-tensor reduction read the group key; the elementwise ones
    # (torch's own, ExtraSGD, AdAdaGrad) have independent rows already and never see it.
    rows = [torch.zeros(4, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]  # 4 problems
    opt = registry.create(name, [{"params": rows}], independent_rows=True)
    reads_rows = issubclass(registry.get(name).cls, registry._READS_ROWS)
    assert [group.get("independent_rows") for group in opt.param_groups] == [True if reads_rows else None]
    with pytest.raises(ValueError, match="Invalid independent_rows: 'yes'"):
        registry.create(name, _quadratic_params(), independent_rows="yes")
