"""Muon against pytorch-optimizer 4.1 (its Newton–Schulz in float64, and as shipped in bfloat16),
the orthogonalized step by hand, the AdamW fallback for everything that is not a matrix, rows."""

from __future__ import annotations

import functools
import math

import pytest
import pytorch_optimizer
import torch
from pytorch_optimizer.optimizer.muon import base as reference_base
from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim import registry
from dgs_core.optim.muon import Muon, newton_schulz

F64 = torch.float64
SHAPES = [(7,), (3, 5), (6, 2), (2, 3, 4), ()]


def _tensors(shapes=SHAPES, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=F64) for s in shapes]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grad_seq) -> None:
    for grads in grad_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()  # the reference's Nesterov step overwrites p.grad
        opt.step()


def _reference(
    params: list[torch.Tensor], *, lr: float, weight_decay: float, **kwargs
) -> torch.optim.Optimizer:
    """pytorch-optimizer's Muon with the groups ours chooses by shape: matrices on Muon, the rest
    on AdamW at lr·adamw_lr_ratio."""
    matrices = [p for p in params if p.ndim >= 2]
    others = [p for p in params if p.ndim < 2]
    groups = [
        {"params": matrices, "use_muon": True, "lr": lr, "weight_decay": weight_decay},
        {"params": others, "use_muon": False, "lr": lr * 0.015, "weight_decay": 0.01},
    ]
    return pytorch_optimizer.Muon(groups, foreach=False, **kwargs)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (2, 3, 4), (1, 6)])
def test_newton_schulz_equals_the_references_in_float64(shape: tuple[int, ...]) -> None:
    g = torch.randn(shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    for steps in (1, 5, 8):
        expected = zero_power_via_newton_schulz_5(g, num_steps=steps, dtype=F64)
        torch.testing.assert_close(newton_schulz(g, steps), expected, rtol=1e-12, atol=1e-14)
    # about orthogonal: singular values between 0.6 and 1.2 after five steps
    matrix = newton_schulz(g.reshape(g.shape[0], -1), 5)
    values = torch.linalg.svdvals(matrix)
    assert bool(((values > 0.6) & (values < 1.2)).all()), values


@pytest.fixture
def reference_in_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's one departure from ours is the precision of Newton–Schulz: run it in float64."""
    monkeypatch.setattr(
        reference_base,
        "zero_power_via_newton_schulz_5",
        functools.partial(zero_power_via_newton_schulz_5, dtype=F64),
    )


@pytest.mark.usefixtures("reference_in_float64")
@pytest.mark.parametrize(("nesterov", "weight_decay"), [(True, 0.0), (False, 0.1)])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_muon(nesterov: bool, weight_decay: float, foreach: bool) -> None:
    params, grad_seq = _tensors(), [_tensors(seed=k) for k in range(1, 16)]
    ours, theirs = _leaves(params), _leaves(params)
    opt = Muon(
        ours, lr=0.02, nesterov=nesterov, weight_decay=weight_decay, adamw_weight_decay=0.01, foreach=foreach
    )
    _run(opt, ours, grad_seq)
    _run(_reference(theirs, lr=0.02, weight_decay=weight_decay, nesterov=nesterov), theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_the_references_bfloat16_iteration_agrees_to_its_precision() -> None:
    # As shipped, the reference orthogonalizes in bfloat16 (8 bits of mantissa): its steps differ
    # from ours by a few parts in a thousand of their size, never more.
    params, grad_seq = _tensors(), [_tensors(seed=k) for k in range(1, 6)]
    ours, theirs = _leaves(params), _leaves(params)
    _run(Muon(ours, lr=0.02, adamw_weight_decay=0.01), ours, grad_seq)
    _run(_reference(theirs, lr=0.02, weight_decay=0.0), theirs, grad_seq)
    start = _tensors()
    for a, b, s in zip(ours, theirs, start, strict=True):
        moved = (a.detach() - s).abs().max()
        assert (a.detach() - b.detach()).abs().max() <= 0.02 * moved, (a.shape, moved)


def test_one_step_by_hand() -> None:
    # No momentum history: b = (1 − μ) g, u = (1 − μ) g + μ b; O = NS₅(u) of the (rows, rest) view;
    # a tall (6, 2) matrix steps √(6/2) times further.
    theta = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(5))
    g = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(6))
    w = theta.clone().requires_grad_()
    opt = Muon([w], lr=0.1, momentum=0.9, weight_decay=0.5)
    w.grad = g
    opt.step()
    b = 0.1 * g
    orthogonal = newton_schulz(0.1 * g + 0.9 * b, 5)
    expected = theta * (1 - 0.1 * 0.5) - 0.1 * math.sqrt(3.0) * orthogonal
    torch.testing.assert_close(w.detach(), expected, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], b)
    assert opt.state[w]["update_norm"].item() == pytest.approx(orthogonal.norm().item(), rel=1e-14)
    assert tensor_summaries(opt, w) == {"update_norm": opt.state[w]["update_norm"]}
    # the update's size ignores the gradient's: nearly orthogonal, ‖O‖_F ≈ √min(rows, cols)
    assert 0.6 * math.sqrt(2) < orthogonal.norm().item() < 1.2 * math.sqrt(2)


def test_everything_that_is_not_a_matrix_takes_adamw() -> None:
    # Biases, gains and scalars step as torch's AdamW with lr = η·adamw_lr_ratio, the fallback's
    # betas, ε and decay (and keep no momentum buffer or update norm).
    vectors = [torch.randn(5, dtype=F64), torch.tensor(0.3, dtype=F64)]
    ours, twins = _leaves(vectors), _leaves(vectors)
    opt = Muon(
        ours, lr=0.02, adamw_lr_ratio=0.5, adamw_betas=(0.8, 0.9), adamw_eps=1e-8, adamw_weight_decay=0.1
    )
    adamw = torch.optim.AdamW(twins, lr=0.01, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.1)
    grad_seq = [[torch.randn(5, dtype=F64), torch.randn((), dtype=F64)] for _ in range(10)]
    _run(opt, ours, grad_seq)
    _run(adamw, twins, grad_seq)
    for a, b in zip(ours, twins, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
        assert set(opt.state[a]) == {"step", "exp_avg", "exp_avg_sq"} and tensor_summaries(opt, a) == {}


def test_surface_rows_are_vectors_and_matrix_rows_are_orthogonalized_alone() -> None:
    # The Surface lab's (N, 2) tensor: every row is one point, a vector, so the AdamW fallback.
    points = torch.tensor([[1.0, -1.0], [0.5, 2.0]], dtype=F64, requires_grad=True)
    opt = registry.create("muon", [points], surface=True, independent_rows=True)
    points.grad = torch.ones(2, 2, dtype=F64)
    opt.step()
    assert "exp_avg" in opt.state[points] and "momentum_buffer" not in opt.state[points]
    # An (N, a, b) tensor in rows: N matrices, each orthogonalized on its own.
    starts = torch.randn(3, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    grad_seq = [torch.randn(3, 4, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    rows = starts.clone().requires_grad_()
    opt = registry.create("muon", [rows], lr=0.05, independent_rows=True)
    _run(opt, [rows], [[g] for g in grad_seq])
    assert opt.state[rows]["update_norm"].shape == (3, 1, 1)
    for r in range(3):
        alone = starts[r].clone().requires_grad_()
        single = registry.create("muon", [alone], lr=0.05)
        _run(single, [alone], [[g[r]] for g in grad_seq])
        torch.testing.assert_close(rows.detach()[r], alone.detach(), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(
            opt.state[rows]["update_norm"][r, 0, 0], single.state[alone]["update_norm"]
        )


def test_the_registry_description_says_what_happens_to_the_rest() -> None:
    description = registry.get("muon").description
    assert "AdamW" in description and "2-D surfaces" in description


def test_split_tensors_names_what_the_step_orthogonalizes() -> None:
    from dgs_core.optim.muon import split_tensors

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    matrices, others = split_tensors(model.named_parameters())
    assert [n for n, _ in matrices] == ["0.weight", "2.weight"] and [n for n, _ in others] == [
        "0.bias",
        "2.bias",
    ]
    opt = Muon(model.parameters())
    model(torch.randn(3, 1, 4, 4)).sum().backward()
    opt.step()
    named = dict(model.named_parameters())
    assert all("momentum_buffer" in opt.state[named[n]] for n, _ in matrices)
    assert all("momentum_buffer" not in opt.state[named[n]] and opt.state[named[n]] for n, _ in others)
