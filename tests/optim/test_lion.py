"""Lion against pytorch-optimizer 4.1, a hand-written step, its sign agreement, and its rows."""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim import registry
from dgs_core.optim.lion import Lion

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
            p.grad = g.clone()  # the reference negates p.grad in place when maximizing
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_lion(weight_decay: float, foreach: bool) -> None:
    # Same rule, same defaults, decoupled decay: float64 equality to rounding (signs are exact).
    params, grad_seq = _tensors(), [_tensors(seed=k) for k in range(1, 21)]
    ours, theirs = _leaves(params), _leaves(params)
    _run(Lion(ours, lr=0.01, betas=(0.9, 0.99), weight_decay=weight_decay, foreach=foreach), ours, grad_seq)
    reference = pytorch_optimizer.Lion(theirs, lr=0.01, betas=(0.9, 0.99), weight_decay=weight_decay)
    _run(reference, theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_two_steps_by_hand_with_the_sign_agreement() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64, requires_grad=True)
    opt = Lion([w], lr=0.1, betas=(0.5, 0.75), weight_decay=0.2)
    # step 1: m = 0, so c = (1 − β₁) g and the step is −η sign(g) after the decay θ(1 − ηλ)
    g1 = torch.tensor([2.0, -1.0, 0.0, 4.0], dtype=F64)
    w.grad = g1
    opt.step()
    expected = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64) * (1 - 0.1 * 0.2) - 0.1 * torch.sign(g1)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-15)
    assert opt.state[w]["sign_agreement"].item() == 0.75  # sign(c)·g > 0 except where g = 0
    m = 0.25 * g1  # m ← β₂ m + (1 − β₂) g = (0.5, −0.25, 0, 1)
    torch.testing.assert_close(opt.state[w]["exp_avg"], m)
    # step 2: c = 0.5 m + 0.5 g; the momentum overrules g where β₁|m| > (1 − β₁)|g| with the other sign
    theta = w.detach().clone()
    g2 = torch.tensor([-0.25, 0.2, 0.0, -3.0], dtype=F64)  # c = (0.125, −0.025, 0, −1)
    w.grad = g2
    opt.step()
    c = 0.5 * m + 0.5 * g2
    torch.testing.assert_close(w.detach(), theta * (1 - 0.02) - 0.1 * torch.sign(c), rtol=0, atol=1e-15)
    # sign(c)·g > 0 only at element 3 (−, −); elements 0 and 1 disagree, element 2 has g = 0
    assert opt.state[w]["sign_agreement"].item() == 0.25
    assert tensor_summaries(opt, w) == {"sign_agreement": opt.state[w]["sign_agreement"]}
    torch.testing.assert_close(opt.state[w]["exp_avg"], 0.75 * m + 0.25 * g2)


def test_every_coordinate_moves_by_exactly_lr() -> None:
    w = torch.zeros(5, 4, dtype=F64, requires_grad=True)
    opt = Lion([w], lr=0.03)
    for k in range(5):
        before = w.detach().clone()
        w.grad = torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(k)) * 10 ** (k - 2)
        opt.step()
        torch.testing.assert_close((w.detach() - before).abs(), torch.full((5, 4), 0.03, dtype=F64))


def test_sign_agreement_per_row_equals_separate_rows() -> None:
    # The Surface lab's rows: an (N, 2) tensor with independent_rows, one agreement per row.
    starts = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-3.0, 0.25]], dtype=F64)
    grad_seq = [torch.randn(3, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(6)]
    rows = starts.clone().requires_grad_()
    opt = registry.create("lion", [rows], lr=0.1, independent_rows=True)
    for g in grad_seq:
        rows.grad = g.clone()
        opt.step()
    assert opt.state[rows]["sign_agreement"].shape == (3, 1)
    for r in range(3):
        alone = starts[r : r + 1].clone().requires_grad_()
        single = registry.create("lion", [alone], lr=0.1)
        for g in grad_seq:
            alone.grad = g[r : r + 1].clone()
            single.step()
        torch.testing.assert_close(rows.detach()[r], alone.detach()[0], rtol=0, atol=0)
        assert opt.state[rows]["sign_agreement"][r].item() == single.state[alone]["sign_agreement"].item()


def test_bad_betas_name_the_beta() -> None:
    with pytest.raises(ValueError, match=r"Invalid beta2: 1\.0"):
        Lion([torch.zeros(2, requires_grad=True)], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid betas"):
        Lion([torch.zeros(2, requires_grad=True)], betas=(0.9,))
    opt = Lion([torch.zeros(2, requires_grad=True)])
    opt.param_groups[0]["lr"] = -1.0  # a schedule or the UI wrote it: checked at the next step
    with pytest.raises(ValueError, match=r"Invalid lr: -1\.0"):
        opt.step()
