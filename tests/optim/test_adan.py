"""Adan (SPEC §1.3) against pytorch-optimizer 4.1, a hand-written step, and itself across paths."""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_optimizer
import torch

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim._compile import compile_stats
from dgs_core.optim.adan import HYPERPARAMS, Adan

F64 = torch.float64
SHAPES = [(7,), (3, 5), (2, 3, 4), (1,)]


def _tensors(shapes=SHAPES, seed: int = 0, dtype=F64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def _grad_seq(steps: int, shapes=SHAPES, seed: int = 1, dtype=F64) -> list[list[torch.Tensor]]:
    return [_tensors(shapes, seed=seed + k, dtype=dtype) for k in range(steps)]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grad_seq) -> None:
    # clones: the reference negates p.grad in place on its per-tensor path
    for grads in grad_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()


def _hand_adan(theta, grad_seq, *, lr, betas, eps, weight_decay, no_prox):
    """SPEC §1.3 line by line for one tensor."""
    b1, b2, b3 = betas
    m = v = n = torch.zeros_like(theta)
    previous = None
    for t, g in enumerate(grad_seq, start=1):
        d = torch.zeros_like(g) if previous is None else g - previous
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * d
        n = b3 * n + (1 - b3) * (g + b2 * d) ** 2
        u = (m / (1 - b1**t) + b2 * v / (1 - b2**t)) / (n.sqrt() / math.sqrt(1 - b3**t) + eps)
        if no_prox:
            theta = theta * (1 - lr * weight_decay) - lr * u
        else:
            theta = (theta - lr * u) / (1 + lr * weight_decay)
        previous = g
    return theta


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_adan(weight_decay: float, foreach: bool) -> None:
    params, grad_seq = _tensors(), _grad_seq(20)
    ours, theirs = _leaves(params), _leaves(params)
    _run(Adan(ours, lr=0.01, weight_decay=weight_decay, foreach=foreach), ours, grad_seq)
    _run(
        pytorch_optimizer.Adan(theirs, lr=0.01, weight_decay=weight_decay, weight_decouple=False),
        theirs,
        grad_seq,
    )
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("max_grad_norm", [0.5, 100.0])
def test_max_grad_norm_matches_pytorch_optimizer(max_grad_norm: float) -> None:
    # the reference accumulates the global norm in float32: agreement to ~1e-7, not 1e-10
    params, grad_seq = _tensors(), _grad_seq(20)
    ours, theirs = _leaves(params), _leaves(params)
    _run(Adan(ours, lr=0.01, weight_decay=0.02, max_grad_norm=max_grad_norm), ours, grad_seq)
    _run(
        pytorch_optimizer.Adan(theirs, lr=0.01, weight_decay=0.02, max_grad_norm=max_grad_norm),
        theirs,
        grad_seq,
    )
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("no_prox", [False, True])
def test_matches_hand_written_steps(no_prox: bool) -> None:
    params, grad_seq = _tensors(), _grad_seq(8)
    hp = dict(lr=0.02, betas=(0.9, 0.8, 0.95), eps=1e-6, weight_decay=0.3)
    ours = _leaves(params)
    _run(Adan(ours, no_prox=no_prox, **hp), ours, grad_seq)
    for k, (p, theta) in enumerate(zip(ours, params, strict=True)):
        expected = _hand_adan(theta, [grads[k] for grads in grad_seq], no_prox=no_prox, **hp)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


def test_first_step_has_no_difference_term() -> None:
    w = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    opt = Adan([w], lr=0.1, eps=0.0)
    w.grad = torch.tensor([3.0, -0.5], dtype=F64)
    opt.step()
    assert not opt.state[w]["exp_avg_diff"].any()  # d_1 = 0
    torch.testing.assert_close(w.detach(), torch.tensor([0.9, -1.9], dtype=F64), rtol=1e-15, atol=0)
    assert tensor_summaries(opt, w) == {"diff_norm": 0.0, "t": 1.0}


def test_restart_makes_the_next_step_a_first_step() -> None:
    params = _tensors()
    leaves = _leaves(params)
    opt = Adan(leaves, lr=0.01)
    _run(opt, leaves, _grad_seq(5))
    opt.restart()
    for p in leaves:
        state = opt.state[p]
        assert state["step"] == 0
        assert not (state["exp_avg"].any() or state["exp_avg_diff"].any() or state["exp_avg_sq"].any())
    fresh = _leaves([p.detach() for p in leaves])
    grads = _grad_seq(3, seed=40)
    _run(opt, leaves, grads)
    _run(Adan(fresh, lr=0.01), fresh, grads)
    for a, b in zip(leaves, fresh, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_restart_every_equals_manual_restarts() -> None:
    params, grad_seq = _tensors(), _grad_seq(9)
    auto, manual = _leaves(params), _leaves(params)
    opt_auto, opt_manual = Adan(auto, lr=0.01, restart_every=4), Adan(manual, lr=0.01)
    for k, grads in enumerate(grad_seq, start=1):
        _run(opt_auto, auto, [grads])
        _run(opt_manual, manual, [grads])
        if k % 4 == 0:
            opt_manual.restart()
    for a, b in zip(auto, manual, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert opt_auto.state[auto[0]]["step"] == 1


@pytest.mark.parametrize("hparams", [{}, {"weight_decay": 0.1, "no_prox": True}, {"max_grad_norm": 1.0}])
def test_foreach_path_equals_per_tensor_path(hparams: dict) -> None:
    params, grad_seq = _tensors(), _grad_seq(6)
    results = []
    for foreach in (False, True):
        leaves = _leaves(params)
        _run(Adan(leaves, lr=0.01, foreach=foreach, **hparams), leaves, grad_seq)
        results.append(leaves)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


@pytest.mark.slow
def test_fused_path_equals_eager_path() -> None:
    # float32 like a real run; the lr follows a schedule: after the first two steps nothing recompiles
    params, grad_seq = _tensors(dtype=torch.float32), _grad_seq(6, dtype=torch.float32)
    results = []
    for fused in (False, True):
        leaves = _leaves(params)
        opt = Adan(leaves, lr=0.01, weight_decay=0.1, fused=fused)
        for k, grads in enumerate(grad_seq):
            opt.param_groups[0]["lr"] = 0.01 / (k + 1)
            _run(opt, leaves, [grads])
            if k == 1:
                compiles = compile_stats().get("_adan_single", {}).get("compiles")
        results.append(leaves)
    assert compile_stats()["_adan_single"]["compiles"] == compiles
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.7])
def test_independent_rows_equal_separate_optimizers(max_grad_norm: float) -> None:
    # Adan is elementwise; rows matter for the clip, where each row is clipped by its own norm.
    n, shapes = 4, [(4, 3), (4, 2)]
    params, grad_seq = _tensors(shapes), _grad_seq(6, shapes)
    batched = _leaves(params)
    opt = Adan([{"params": batched, "independent_rows": True}], lr=0.01, max_grad_norm=max_grad_norm)
    _run(opt, batched, grad_seq)
    for i in range(n):
        row = _leaves([p[i] for p in params])
        _run(
            Adan(row, lr=0.01, max_grad_norm=max_grad_norm),
            row,
            [[g[i] for g in grads] for grads in grad_seq],
        )
        for a, b in zip(row, batched, strict=True):
            torch.testing.assert_close(a, b[i], rtol=1e-13, atol=1e-15)


def test_independent_rows_clip_needs_matching_rows() -> None:
    leaves = _leaves(_tensors([(4, 3), (5,)]))
    opt = Adan([{"params": leaves, "independent_rows": True}], max_grad_norm=1.0)
    with pytest.raises(ValueError, match="Invalid independent_rows"):
        _run(opt, leaves, _grad_seq(1, [(4, 3), (5,)]))


def test_state_dict_round_trip_resumes_identically() -> None:
    params, grad_seq = _tensors(), _grad_seq(8)
    leaves = _leaves(params)
    opt = Adan(leaves, lr=0.01, weight_decay=0.1, restart_every=3)
    _run(opt, leaves, grad_seq[:4])
    saved = copy.deepcopy(opt.state_dict())
    checkpoint = [p.detach().clone() for p in leaves]
    _run(opt, leaves, grad_seq[4:])
    resumed = _leaves(checkpoint)
    opt2 = Adan(resumed, lr=0.01, weight_decay=0.1, restart_every=3)
    opt2.load_state_dict(saved)
    _run(opt2, resumed, grad_seq[4:])
    for a, b in zip(leaves, resumed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spec", HYPERPARAMS, ids=lambda s: s.name)
def test_bad_hyperparameter_raises_naming_it(spec) -> None:
    w = [torch.zeros(2, requires_grad=True)]
    if spec.name.startswith("beta"):
        betas = [0.98, 0.92, 0.99]
        betas[int(spec.name[-1]) - 1] = 1.0
        with pytest.raises(ValueError, match=f"Invalid {spec.name}: 1.0"):
            Adan(w, betas=tuple(betas))
        return
    bad = "yes" if spec.kind == "bool" else spec.low - 1.0
    with pytest.raises(ValueError, match=f"Invalid {spec.name}: "):
        Adan(w, **{spec.name: bad})


@pytest.mark.parametrize("betas", [(0.9, 0.9), (0.9, 0.9, 0.9, 0.9), 0.9])
def test_betas_must_be_three(betas) -> None:
    with pytest.raises(ValueError, match="Invalid betas"):
        Adan([torch.zeros(2, requires_grad=True)], betas=betas)


def test_bad_switches_raise() -> None:
    with pytest.raises(ValueError, match="Invalid fused"):
        Adan([torch.zeros(2, requires_grad=True)], foreach=True, fused=True)


@pytest.mark.parametrize(
    ("key", "value", "name"),
    [
        ("lr", -1.0, "lr"),
        ("betas", (0.9, 1.5, 0.9), "beta2"),
        ("no_prox", "no", "no_prox"),
        ("restart_every", 2.5, "restart_every"),
    ],
)
def test_group_value_rewritten_invalid_raises_at_step(key: str, value: object, name: str) -> None:
    w = torch.zeros(2, requires_grad=True)
    opt = Adan([w])
    opt.param_groups[0][key] = value
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=f"Invalid {name}: "):
        opt.step()
