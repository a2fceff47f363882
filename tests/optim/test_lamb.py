"""LAMB against pytorch-optimizer 4.1, the paper's bias-corrected step by hand, φ's bounds, rows."""

from __future__ import annotations

import math

import pytest
import pytorch_optimizer
import torch

from dgs_core.optim import registry
from dgs_core.optim.lamb import LAMB

F64 = torch.float64
SHAPES = [(7,), (3, 5), (2, 3, 4), ()]


def _tensors(shapes=SHAPES, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(s, generator=g, dtype=F64) for s in shapes]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grad_seq) -> None:
    for grads in grad_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_lamb(weight_decay: float, foreach: bool) -> None:
    # The reference without bias correction, with the decay inside the trust ratio
    # (weight_decouple=False), the paper's step η·tr·u (adam_debias=True: its default divides the
    # step by 1 − β₁ᵗ) and its weight-norm clamp [0, 10]: ours with bias_correction=False.
    # One tensor has a norm above 10, so the cap is exercised.
    params = _tensors()
    params[1] = params[1] * 5.0  # ‖θ‖ ≈ 19
    grad_seq = [_tensors(seed=k) for k in range(1, 21)]
    ours, theirs = _leaves(params), _leaves(params)
    opt = LAMB(ours, lr=0.01, weight_decay=weight_decay, bias_correction=False, foreach=foreach)
    _run(opt, ours, grad_seq)
    reference = pytorch_optimizer.Lamb(
        theirs, lr=0.01, weight_decay=weight_decay, weight_decouple=False, adam_debias=True
    )
    _run(reference, theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        # the trust ratio of the last step, which both keep in state["trust_ratio"]
        assert math.isclose(
            float(opt.state[a]["trust_ratio"]), float(reference.state[b]["trust_ratio"]), rel_tol=1e-12
        )


def test_one_bias_corrected_step_by_hand() -> None:
    # t = 1: m̂ = g, v̂ = g², r = g/(|g| + ε); u = r + λθ; tr = φ(‖θ‖)/(‖u‖ + ε); θ ← θ − η tr u
    theta = torch.tensor([[3.0, 4.0], [0.0, 12.0]], dtype=F64)  # ‖θ‖ = 13: φ = 10
    g = torch.tensor([[0.5, -2.0], [1e-3, 4.0]], dtype=F64)
    w = theta.clone().requires_grad_()
    opt = LAMB([w], lr=0.1, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05)
    w.grad = g
    opt.step()
    r = g / (g.abs() + 1e-6)
    u = r + 0.05 * theta
    tr = 10.0 / (u.norm() + 1e-6)
    torch.testing.assert_close(opt.state[w]["trust_ratio"], tr, rtol=1e-14, atol=0)
    torch.testing.assert_close(w.detach(), theta - 0.1 * tr * u, rtol=1e-14, atol=0)
    # t = 2: the bias corrections 1 − β₁², 1 − β₂²
    theta = w.detach().clone()
    g2 = torch.tensor([[1.0, 1.0], [-1.0, 0.25]], dtype=F64)
    w.grad = g2
    opt.step()
    m = 0.8 * 0.2 * g + 0.2 * g2
    v = 0.9 * 0.1 * g * g + 0.1 * g2 * g2
    r = (m / (1 - 0.8**2)) / ((v / (1 - 0.9**2)).sqrt() + 1e-6)
    u = r + 0.05 * theta
    tr = min(theta.norm(), 10.0) / (u.norm() + 1e-6)
    torch.testing.assert_close(w.detach(), theta - 0.1 * tr * u, rtol=1e-14, atol=1e-15)


def test_the_step_is_lr_times_phi_long() -> None:
    # Whatever the gradient's size, ‖Δθ‖ = η·φ(‖θ‖)·‖u‖/(‖u‖ + ε) ≈ η·φ; φ clips ‖θ‖ to [γ_l, γ_u].
    for norm, low, high, phi in [(5.0, 0.0, 10.0, 5.0), (50.0, 0.0, 10.0, 10.0), (0.2, 1.0, 10.0, 1.0)]:
        for size in (1e-4, 1.0, 1e4):
            theta = torch.tensor([0.6, 0.8], dtype=F64) * norm
            w = theta.clone().requires_grad_()
            opt = LAMB([w], lr=0.01, eps=0.0, trust_norm_min=low, trust_norm_max=high)
            w.grad = torch.tensor([size, -2 * size], dtype=F64)
            opt.step()
            assert (w.detach() - theta).norm().item() == pytest.approx(0.01 * phi, rel=1e-12)


def test_trust_ratio_is_one_for_a_zero_parameter_or_update() -> None:
    zero_param = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    zero_grad = torch.ones(2, 2, dtype=F64, requires_grad=True)
    opt = LAMB([zero_param, zero_grad], lr=0.1)
    zero_param.grad, zero_grad.grad = torch.ones(2, 2, dtype=F64), torch.zeros(2, 2, dtype=F64)
    opt.step()
    assert opt.state[zero_param]["trust_ratio"].item() == 1.0
    assert opt.state[zero_grad]["trust_ratio"].item() == 1.0
    # φ = 0, tr = 1: Adam's own first step, η·g/(|g| + ε)
    torch.testing.assert_close(zero_param.detach(), torch.full((2, 2), -0.1 / (1 + 1e-6), dtype=F64))
    torch.testing.assert_close(zero_grad.detach(), torch.ones(2, 2, dtype=F64))


def test_rows_take_their_own_trust_ratio() -> None:
    starts = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-30.0, 0.25]], dtype=F64)
    grad_seq = [torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    rows = starts.clone().requires_grad_()
    opt = registry.create("lamb", [rows], surface=True, independent_rows=True)
    _run(opt, [rows], [[g] for g in grad_seq])
    assert opt.state[rows]["trust_ratio"].shape == (3, 1)
    for r in range(3):
        alone = starts[r : r + 1].clone().requires_grad_()
        single = registry.create("lamb", [alone], surface=True)
        _run(single, [alone], [[g[r : r + 1]] for g in grad_seq])
        torch.testing.assert_close(rows.detach()[r], alone.detach()[0], rtol=1e-15, atol=0)
        torch.testing.assert_close(opt.state[rows]["trust_ratio"][r, 0], single.state[alone]["trust_ratio"])


def test_bad_bounds_name_the_field() -> None:
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(
        ValueError, match=r"Invalid trust_norm_min: 11.0 \(must be <= trust_norm_max = 10.0\)"
    ):
        LAMB([w], trust_norm_min=11.0)
    opt = LAMB([w])
    opt.param_groups[0]["trust_norm_max"] = 0.0
    with pytest.raises(ValueError, match=r"Invalid trust_norm_max: 0\.0"):
        opt.step()


def test_the_reference_default_step_is_longer_by_one_over_the_bias_correction() -> None:
    # The departure, measured: pytorch-optimizer's default divides the step by 1 − β₁ᵗ.
    theta, g = torch.tensor([3.0, 4.0], dtype=F64), torch.tensor([1.0, -2.0], dtype=F64)
    ours, theirs = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    opt = LAMB([ours], lr=0.01, bias_correction=False)
    reference = pytorch_optimizer.Lamb([theirs], lr=0.01, weight_decouple=False)
    _run(opt, [ours], [[g]])
    _run(reference, [theirs], [[g]])
    ratio = (theirs.detach() - theta).norm() / (ours.detach() - theta).norm()
    assert ratio.item() == pytest.approx(1 / (1 - 0.9), rel=1e-12)
