"""Schedule-Free AdamW against pytorch-optimizer 4.1, the average it evaluates at, eval()/train()."""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch
from pytorch_optimizer.base.optimizer import BaseOptimizer

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim import registry
from dgs_core.optim.schedule_free import ScheduleFreeAdamW

F64 = torch.float64
SHAPES = [(7,), (3, 5), (2, 3, 4), ()]


def _tensors(shapes=SHAPES, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=F64) for s in shapes]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _step(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()  # the reference normalizes p.grad in place
    opt.step()


@pytest.fixture
def exact_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference adds 1e-15 to v̂ inside the square root; without it the comparison is one of
    rounding only (its effect is 1e-15/(2v̂) relative)."""
    original = BaseOptimizer.apply_ams_bound

    # the reference's untyped signature, copied
    def without_offset(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=1e-15):  # type: ignore[no-untyped-def]  # (reason above)
        return original(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=0.0)

    monkeypatch.setattr(BaseOptimizer, "apply_ams_bound", staticmethod(without_offset))


@pytest.mark.usefixtures("exact_reference")
@pytest.mark.parametrize(
    "hparams",
    [{}, {"weight_decay": 0.05, "warmup_steps": 5}, {"r": 1.5, "weight_lr_power": 1.0, "betas": (0.7, 0.99)}],
)
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_schedule_free_adamw(hparams: dict, foreach: bool) -> None:
    # Both the training point y (the parameters while training) and, through eval(), the average
    # x, at every step; a changing lr (as a schedule writes it) enters the averaging weights.
    params = _tensors()
    ours, theirs = _leaves(params), _leaves(params)
    opt = ScheduleFreeAdamW(ours, lr=0.05, foreach=foreach, **hparams)
    reference = pytorch_optimizer.ScheduleFreeAdamW(theirs, lr=0.05, foreach=False, **hparams)
    for k in range(1, 16):
        for o in (opt, reference):
            o.param_groups[0]["lr"] = 0.05 * (1 + 0.1 * (k % 3))
        grads = _tensors(seed=k)
        _step(opt, ours, grads)
        _step(reference, theirs, grads)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        opt.eval(), reference.eval()
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        opt.train(), reference.train()


def test_the_evaluation_point_is_the_average_of_the_iterates() -> None:
    # r = 0 and a constant γ: c_t = 1/t and x_t = mean(z_1 … z_t); y = (1 − β₁) z + β₁ x.
    theta = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    w = theta.clone().requires_grad_()
    opt = ScheduleFreeAdamW([w], lr=0.1, betas=(0.8, 0.999))
    zs = []
    for t in range(1, 8):
        w.grad = torch.sin(w.detach() * t) + 0.3  # any gradient taken at y
        opt.step()
        assert opt.state[w]["interpolation_weight"] == pytest.approx(1 / t, rel=1e-15)
        assert tensor_summaries(opt, w) == {"interpolation_weight": opt.state[w]["interpolation_weight"]}
        z = opt.state[w]["z"].clone()
        zs.append(z)
        x = torch.stack(zs).mean(0)
        torch.testing.assert_close(w.detach(), 0.2 * z + 0.8 * x, rtol=1e-13, atol=1e-15)
        opt.eval()
        torch.testing.assert_close(w.detach(), x, rtol=1e-13, atol=1e-15)
        opt.train()


def test_one_step_by_hand_with_warmup_and_decay() -> None:
    # t = 1: γ₁ = γ/W, c₁ = 1, v = (1 − β₂) g², ĝ = g/(√(v/(1 − β₂)) + ε) + λy = g/(|g| + ε) + λy;
    # z₁ = z₀ − γ₁ĝ and x₁ = z₁, so y₁ = z₁.
    theta = torch.tensor([2.0, -1.0], dtype=F64)
    g = torch.tensor([0.5, 4.0], dtype=F64)
    w = theta.clone().requires_grad_()
    opt = ScheduleFreeAdamW([w], lr=0.4, weight_decay=0.1, warmup_steps=4)
    w.grad = g
    opt.step()
    expected = theta - 0.1 * (g / (g.abs() + 1e-8) + 0.1 * theta)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(opt.state[w]["z"], expected)
    assert opt.state[w]["lr_max"] == 0.1 and opt.state[w]["weight_sum"] == pytest.approx(0.01)


def test_step_refuses_eval_mode_and_the_mode_travels_in_state_dict() -> None:
    w = torch.ones(3, dtype=F64, requires_grad=True)
    opt = ScheduleFreeAdamW([w], lr=0.1)
    w.grad = torch.ones(3, dtype=F64)
    opt.step()
    opt.eval()
    opt.eval()  # idempotent
    assert opt.param_groups[0]["train_mode"] is False
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()
    saved = opt.state_dict()
    other = ScheduleFreeAdamW([w.detach().clone().requires_grad_()], lr=0.1)
    other.load_state_dict(saved)
    assert other.param_groups[0]["train_mode"] is False
    opt.train()
    opt.train()
    opt.step()


def test_eval_before_any_step_leaves_the_parameters() -> None:
    w = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = registry.create("schedule_free", [w])
    opt.eval()
    opt.train()
    torch.testing.assert_close(w.detach(), torch.tensor([1.0, 2.0], dtype=F64), rtol=0, atol=0)


def test_train_mode_is_validated() -> None:
    w = torch.ones(2, requires_grad=True)
    opt = ScheduleFreeAdamW([w])
    opt.param_groups[0]["train_mode"] = "yes"
    with pytest.raises(ValueError, match="Invalid train_mode: 'yes'"):
        opt.step()
