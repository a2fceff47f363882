"""ExtraSGD (SPEC §1.5): hand-computed single steps per variant, parity with Nesterov SGD,
closure handling, fast paths, resume and validation."""

from __future__ import annotations

import copy

import pytest
import torch

from dgs_core.optim._compile import compile_stats
from dgs_core.optim.extrasgd import ExtraSGD

# f(x) = ½ Σ a_j x_j² + Σ c_j x_j  →  ∇f(x) = a ⊙ x + c  (a fixed "batch": same f every call)
A = (1.0, 3.0)
C = (0.5, -1.0)
X0 = (1.0, -2.0)


def grad_f(x: list[float]) -> list[float]:
    return [a * xi + c for a, xi, c in zip(A, x, C, strict=True)]


def f_torch(x: torch.Tensor) -> torch.Tensor:
    a = torch.tensor(A, dtype=x.dtype)
    c = torch.tensor(C, dtype=x.dtype)
    return 0.5 * (a * x * x).sum() + (c * x).sum()


def make(**kwargs) -> tuple[torch.Tensor, ExtraSGD, list[int]]:
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=True)
    opt = ExtraSGD([x], **kwargs)
    calls = [0]

    def closure() -> torch.Tensor:
        calls[0] += 1
        opt.zero_grad()
        loss = f_torch(x)
        loss.backward()
        return loss

    opt.closure = closure  # type: ignore[attr-defined]  # the tests carry the closure on the optimizer
    return x, opt, calls


def axpy(alpha: float, u: list[float], v: list[float]) -> list[float]:
    """v + alpha·u"""
    return [vi + alpha * ui for ui, vi in zip(u, v, strict=True)]


def assert_equal_list(t: torch.Tensor, values: list[float]) -> None:
    torch.testing.assert_close(t.detach(), torch.tensor(values, dtype=torch.float64), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_extragradient_two_steps_by_hand(momentum: float, decay: float) -> None:
    lr, gamma = 0.1, 0.05
    x, opt, calls = make(lr=lr, extrapolation_lr=gamma, momentum=momentum, weight_decay=decay)

    def g(y: list[float]) -> list[float]:  # gradient of f + ½λ‖y‖²
        return axpy(decay, y, grad_f(y))

    xs, m = list(X0), [0.0, 0.0]
    for _ in range(2):
        y = axpy(-gamma, g(xs), xs)  # x − γ̂ g(x)
        g_hat = g(y)
        m = [momentum * mi + gi for mi, gi in zip(m, g_hat, strict=True)]
        direction = [gi + momentum * mi for gi, mi in zip(g_hat, m, strict=True)]
        xs = axpy(-lr, direction, xs)
        opt.step(opt.closure)
        assert_equal_list(opt.state[x]["extrapolated"], y)
        assert_equal_list(x, xs)
    assert calls[0] == 4  # two closures per step
    if momentum:
        assert_equal_list(opt.state[x]["momentum_buffer"], m)
    else:
        assert "momentum_buffer" not in opt.state[x]


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_past_variant_reuses_last_gradient(momentum: float) -> None:
    lr, gamma = 0.1, 0.2
    x, opt, calls = make(lr=lr, extrapolation_lr=gamma, momentum=momentum, variant="past")
    xs, m, past = list(X0), [0.0, 0.0], None
    for _ in range(3):
        y = xs if past is None else axpy(-gamma, past, xs)  # δ = 0 on the first step
        g_hat = grad_f(y)
        m = [momentum * mi + gi for mi, gi in zip(m, g_hat, strict=True)]
        xs = axpy(-lr, [gi + momentum * mi for gi, mi in zip(g_hat, m, strict=True)], xs)
        past = g_hat
        opt.step(opt.closure)
        assert_equal_list(opt.state[x]["extrapolated"], y)
        assert_equal_list(opt.state[x]["past_grad"], past)
        assert_equal_list(x, xs)
    assert calls[0] == 3  # one gradient per step


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_noise_variant_draws_seeded_gaussian(momentum: float) -> None:
    lr, sigma, seed = 0.1, 0.3, 7
    x, opt, calls = make(lr=lr, momentum=momentum, variant="noise", noise_std=sigma, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    xs, m = list(X0), [0.0, 0.0]
    for _ in range(2):
        xi = torch.randn(2, generator=gen, dtype=torch.float64).tolist()
        y = axpy(sigma, xi, xs)
        g_hat = grad_f(y)
        m = [momentum * mi + gi for mi, gi in zip(m, g_hat, strict=True)]
        xs = axpy(-lr, [gi + momentum * mi for gi, mi in zip(g_hat, m, strict=True)], xs)
        opt.step(opt.closure)
        assert_equal_list(opt.state[x]["extrapolated"], y)
        assert_equal_list(x, xs)
    assert calls[0] == 2
    assert "past_grad" not in opt.state[x]


def test_returns_loss_at_extrapolated_point_and_grad_there() -> None:
    x, opt, _ = make(lr=0.1, extrapolation_lr=0.1, momentum=0.0)
    y = axpy(-0.1, grad_f(list(X0)), list(X0))
    loss = opt.step(opt.closure)
    expected = float(f_torch(torch.tensor(y, dtype=torch.float64)))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-14)
    assert_equal_list(x.grad, grad_f(y))


@pytest.mark.parametrize("variant", ["extragradient", "noise"])
def test_no_extrapolation_is_nesterov_sgd(variant: str) -> None:
    # γ̂ = 0 (or σ = 0) leaves ExtraSGD with torch's Nesterov SGD, weight decay included.
    torch.manual_seed(0)
    w0 = torch.randn(5, 3, dtype=torch.float64)
    target = torch.randn(5, 3, dtype=torch.float64)
    results = []
    for use_torch in (False, True):
        w = w0.clone().requires_grad_()
        kwargs = dict(lr=0.05, momentum=0.9, weight_decay=0.01)
        if use_torch:
            opt = torch.optim.SGD([w], nesterov=True, **kwargs)
        else:
            opt = ExtraSGD([w], extrapolation_lr=0.0, noise_std=0.0, variant=variant, **kwargs)

        def closure(w=w, opt=opt) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.cosh(w - target).sum()
            loss.backward()
            return loss

        for _ in range(10):
            opt.step(closure)
        results.append(w.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-15, atol=1e-15)


def test_missing_closure_raises() -> None:
    _, opt, _ = make()
    with pytest.raises(ValueError, match="Invalid closure"):
        opt.step()


def _mlp_run(steps: int, **kwargs) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    y = torch.randn(16, 2, dtype=torch.float64)
    opt = ExtraSGD(model.parameters(), **kwargs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("variant", ["extragradient", "past", "noise"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_foreach_equals_simple(variant: str, momentum: float) -> None:
    kwargs = dict(lr=0.05, extrapolation_lr=0.05, momentum=momentum, variant=variant, weight_decay=0.01)
    simple = _mlp_run(5, foreach=False, **kwargs)
    fast = _mlp_run(5, foreach=True, **kwargs)
    for a, b in zip(simple, fast, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fused_equals_eager(momentum: float) -> None:
    torch.manual_seed(0)
    start = [torch.randn(4, 3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)]  # a 0-dim one
    results = []
    for fused in (False, True):
        w, s = (t.clone().requires_grad_() for t in start)
        opt = ExtraSGD(
            [w, s], lr=0.05, extrapolation_lr=0.05, momentum=momentum, weight_decay=0.01, fused=fused
        )

        def closure(w=w, s=s, opt=opt) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.cosh(w * s).sum() + s**4
            loss.backward()
            return loss

        before = compile_stats().get("_extrasgd_single", {}).get("compiles", 0)
        for step in range(5):
            opt.param_groups[0]["lr"] = 0.05 / (step + 1)  # a schedule
            opt.step(closure)
        # lr becomes a graph input after its first change: no compile per scheduled value
        assert compile_stats().get("_extrasgd_single", {}).get("compiles", 0) - before <= 2
        results.append([w.detach(), s.detach()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("variant", ["extragradient", "past", "noise"])
def test_state_dict_resume_is_identical(variant: str) -> None:
    def build(x0: torch.Tensor) -> tuple[torch.Tensor, ExtraSGD, object]:
        x = x0.clone().requires_grad_()
        opt = ExtraSGD([x], lr=0.1, extrapolation_lr=0.1, variant=variant, noise_std=0.5, seed=3)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = f_torch(x)
            loss.backward()
            return loss

        return x, opt, closure

    x, opt, closure = build(torch.tensor(X0, dtype=torch.float64))
    for _ in range(3):
        opt.step(closure)
    saved_x, saved = x.detach().clone(), copy.deepcopy(opt.state_dict())
    for _ in range(3):
        opt.step(closure)

    x2, opt2, closure2 = build(saved_x)
    opt2.load_state_dict(saved)
    for _ in range(3):
        opt2.step(closure2)
    assert torch.equal(x2.detach(), x.detach())


def test_noise_differs_by_seed() -> None:
    x1, opt1, _ = make(variant="noise", seed=1)
    x2, opt2, _ = make(variant="noise", seed=2)
    opt1.step(opt1.closure)
    opt2.step(opt2.closure)
    assert not torch.equal(x1.detach(), x2.detach())


def test_groups_with_different_variants_match_separate_optimizers() -> None:
    # f is separable, so two groups must behave like two optimizers of their own.
    def run(together: bool) -> list[torch.Tensor]:
        a = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
        b = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
        groups = [{"params": [a], "variant": "extragradient"}, {"params": [b], "variant": "past"}]
        opts = [ExtraSGD(groups, lr=0.1)] if together else [ExtraSGD([g], lr=0.1) for g in groups]
        for _ in range(4):
            for opt in opts:

                def closure(opt=opt) -> torch.Tensor:
                    opt.zero_grad()
                    loss = (a**4).sum() + (b**4).sum()
                    loss.backward()
                    return loss

                opt.step(closure)
        return [a.detach(), b.detach()]

    for x, y in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lr", -1.0),
        ("extrapolation_lr", -0.5),
        ("momentum", 1.0),
        ("variant", "future"),
        ("noise_std", -1.0),
        ("weight_decay", -1.0),
        ("seed", -3),
        ("seed", 1.5),
    ],
)
def test_bad_inputs_raise_value_error_naming_argument(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"Invalid {name}: "):
        ExtraSGD([torch.zeros(2, requires_grad=True)], **{name: value})


def test_foreach_and_fused_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="Invalid fused"):
        ExtraSGD([torch.zeros(2, requires_grad=True)], foreach=True, fused=True)


@pytest.mark.parametrize(("name", "value"), [("lr", -1.0), ("momentum", 2.0), ("variant", "nope")])
def test_group_value_rewritten_invalid_raises_at_step(name: str, value: object) -> None:
    x, opt, _ = make()
    opt.step(opt.closure)
    opt.param_groups[0][name] = value
    before = x.detach().clone()
    with pytest.raises(ValueError, match=rf"Invalid {name}: "):
        opt.step(opt.closure)
    assert torch.equal(x.detach(), before)  # nothing moved


def test_groups_are_validated_when_added() -> None:
    _, opt, _ = make()
    with pytest.raises(ValueError, match="Invalid variant: 'nope'"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "variant": "nope"})
    with pytest.raises(ValueError, match=r"Invalid lr: -2\.0"):
        ExtraSGD([{"params": [torch.zeros(2, requires_grad=True)], "lr": -2.0}])
