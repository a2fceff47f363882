"""MARS against pytorch-optimizer 4.1, the variance-reduced step by hand, the 1-D AdamW, rows."""

from __future__ import annotations

import math

import pytest
import pytorch_optimizer
import torch
from pytorch_optimizer.base.optimizer import BaseOptimizer

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim import registry
from dgs_core.optim.mars import MARS

F64 = torch.float64
SHAPES = [(7,), (3, 5), (2, 3, 4), ()]


def _tensors(shapes=SHAPES, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=F64) for s in shapes]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grad_seq) -> None:
    for grads in grad_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()


@pytest.fixture
def exact_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference adds 1e-15 to v inside the square root (``apply_ams_bound``); without it the
    comparison is one of rounding only. (Its effect is 1e-15/(2v) relative: ours has none.)"""
    original = BaseOptimizer.apply_ams_bound

    # the reference's untyped signature, copied
    def without_offset(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=1e-15):  # type: ignore[no-untyped-def]  # (reason above)
        return original(ams_bound, exp_avg_sq, max_exp_avg_sq, eps, exp_avg_sq_eps=0.0)

    monkeypatch.setattr(BaseOptimizer, "apply_ams_bound", staticmethod(without_offset))


# (ours, the reference's) arguments, at η = 0.01: the defaults (the reference's 1-D decay is 0.1,
# ours 0; its lr_1d is absolute, ours a ratio of η), decay on both paths, MARS on every tensor,
# another 1-D lr and betas
CASES = [
    ({}, {"lr_1d": 0.01, "weight_decay_1d": 0.0}),
    ({"weight_decay": 0.01, "weight_decay_1d": 0.1}, {"lr_1d": 0.01, "weight_decay": 0.01}),
    ({"optimize_1d": True, "gamma": 0.1}, {"optimize_1d": True, "gamma": 0.1}),
    (
        {"lr_1d_ratio": 0.5, "betas_1d": (0.8, 0.9)},
        {"lr_1d": 0.005, "betas_1d": (0.8, 0.9), "weight_decay_1d": 0.0},
    ),
]


@pytest.mark.usefixtures("exact_reference")
@pytest.mark.parametrize(("ours_kwargs", "reference_kwargs"), CASES)
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_mars(ours_kwargs: dict, reference_kwargs: dict, foreach: bool) -> None:
    params, grad_seq = _tensors(), [_tensors(seed=k) for k in range(1, 21)]
    ours, theirs = _leaves(params), _leaves(params)
    opt = MARS(ours, lr=0.01, foreach=foreach, **ours_kwargs)
    _run(opt, ours, grad_seq)
    reference = pytorch_optimizer.MARS(theirs, lr=0.01, foreach=False, **reference_kwargs)
    _run(reference, theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_reference_without_the_patch_agrees_to_its_offset() -> None:
    # The 1e-15 inside the reference's square root moves the update by about 1e-15/(2v) relative:
    # 3e-8 at worst here, where an element's v is about 1e-8.
    params, grad_seq = _tensors(), [_tensors(seed=k) for k in range(1, 21)]
    ours, theirs = _leaves(params), _leaves(params)
    _run(MARS(ours, lr=0.01), ours, grad_seq)
    reference = pytorch_optimizer.MARS(theirs, lr=0.01, lr_1d=0.01, weight_decay_1d=0.0, foreach=False)
    _run(reference, theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_two_steps_by_hand() -> None:
    theta = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    w = theta.clone().requires_grad_()
    lr, (b1, b2), gamma, eps = 0.1, (0.9, 0.99), 0.5, 1e-8
    opt = MARS([w], lr=lr, betas=(b1, b2), gamma=gamma, eps=eps, weight_decay=0.2)
    k = gamma * b1 / (1 - b1)  # 4.5
    g1 = torch.tensor([[0.1, 0.0], [-0.2, 0.05]], dtype=F64)
    w.grad = g1
    opt.step()
    c1 = g1 + k * g1  # g_prev = 0; ‖c1‖ = 5.5·0.229 > 1: clipped
    norm1 = c1.norm()
    assert norm1 > 1 and opt.state[w]["correction_norm"].item() == pytest.approx(norm1.item(), rel=1e-15)
    c1 = c1 / norm1
    m, v = (1 - b1) * c1, (1 - b2) * c1 * c1
    expected = theta * (1 - lr * 0.2) - lr * (m / (1 - b1)) / ((v.sqrt() + eps) / math.sqrt(1 - b2))
    torch.testing.assert_close(w.detach(), expected, rtol=1e-14, atol=1e-15)
    theta = w.detach().clone()
    g2 = torch.tensor([[0.1, 0.01], [-0.19, 0.05]], dtype=F64)
    w.grad = g2
    opt.step()
    c2 = g2 + k * (g2 - g1)  # small: not clipped
    assert c2.norm() < 1 and opt.state[w]["correction_norm"].item() == pytest.approx(c2.norm().item())
    m, v = b1 * m + (1 - b1) * c2, b2 * v + (1 - b2) * c2 * c2
    expected = theta * (1 - lr * 0.2) - lr * (m / (1 - b1**2)) / ((v.sqrt() + eps) / math.sqrt(1 - b2**2))
    torch.testing.assert_close(w.detach(), expected, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(opt.state[w]["previous_grad"], g2)


def test_vectors_take_adamw_unless_optimize_1d() -> None:
    # The 1-D path is AdamW with lr η·ratio, betas_1d and weight_decay_1d: torch's AdamW (with
    # ε = 0: MARS, as its reference, adds ε before the √(1 − β₂ᵗ) correction, torch after it).
    bias = torch.randn(5, dtype=F64).requires_grad_()
    twin = bias.detach().clone().requires_grad_()
    opt = MARS([bias], lr=0.02, lr_1d_ratio=0.5, betas_1d=(0.8, 0.9), weight_decay_1d=0.1, eps=0.0)
    adamw = torch.optim.AdamW([twin], lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, eps=0.0)
    grad_seq = [[torch.randn(5, dtype=F64, generator=torch.Generator().manual_seed(k))] for k in range(10)]
    _run(opt, [bias], grad_seq)
    _run(adamw, [twin], grad_seq)
    torch.testing.assert_close(bias.detach(), twin.detach(), rtol=1e-13, atol=1e-15)
    assert tensor_summaries(opt, bias) == {}  # no correction on the AdamW path
    vector = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = MARS([vector], optimize_1d=True)
    vector.grad = torch.ones(3, dtype=F64)
    opt.step()
    assert "correction_norm" in opt.state[vector]


def test_rows_are_clipped_by_their_own_norm() -> None:
    # The Surface lab's rows (optimize_1d on by the surface defaults): one ‖c‖ per row.
    starts = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-3.0, 0.25]], dtype=F64)
    grad_seq = [
        torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) * 3 for k in range(6)
    ]
    rows = starts.clone().requires_grad_()
    opt = registry.create("mars", [rows], surface=True, independent_rows=True)
    _run(opt, [rows], [[g] for g in grad_seq])
    assert opt.state[rows]["correction_norm"].shape == (3, 1)
    for r in range(3):
        alone = starts[r : r + 1].clone().requires_grad_()
        single = registry.create("mars", [alone], surface=True)
        _run(single, [alone], [[g[r : r + 1]] for g in grad_seq])
        torch.testing.assert_close(rows.detach()[r], alone.detach()[0], rtol=1e-15, atol=0)
        torch.testing.assert_close(
            opt.state[rows]["correction_norm"][r, 0], single.state[alone]["correction_norm"]
        )
