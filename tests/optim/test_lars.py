"""LARS / LARC (SPEC §1.4) against pytorch-optimizer 4.1, hand-computed steps, and across paths."""

from __future__ import annotations

import copy

import pytest
import pytorch_optimizer
import torch

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim._compile import compile_stats
from dgs_core.optim.lars import HYPERPARAMS, LARS

F64 = torch.float64
SHAPES = [(6,), (3, 5), (2, 3, 4), ()]


def _tensors(shapes=SHAPES, seed: int = 0, dtype=F64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def _grad_seq(steps: int, shapes=SHAPES, seed: int = 1, dtype=F64) -> list[list[torch.Tensor]]:
    return [_tensors(shapes, seed=seed + k, dtype=dtype) for k in range(steps)]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grad_seq) -> None:
    # clones: the reference overwrites p.grad with the momentum buffer
    for grads in grad_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_pytorch_optimizer_lars(weight_decay: float, foreach: bool) -> None:
    # SPEC and the reference agree with eps = 0 (and nonzero norms): ndim ≥ 2 tensors get the trust
    # ratio with the decay inside it, 1-D and 0-d tensors plain momentum SGD without decay.
    params, grad_seq = _tensors(), _grad_seq(20)
    ours, theirs = _leaves(params), _leaves(params)
    _run(LARS(ours, lr=0.5, eps=0.0, weight_decay=weight_decay, foreach=foreach), ours, grad_seq)
    _run(pytorch_optimizer.LARS(theirs, lr=0.5, weight_decay=weight_decay), theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_trust_ratio_step_by_hand() -> None:
    # ‖θ‖ = 5, ‖g‖ = 10: tr = τ‖θ‖/(‖g‖ + λ‖θ‖ + ε), buf = tr (g + λθ), θ ← θ − η buf
    w = torch.tensor([[3.0, 4.0]], dtype=F64, requires_grad=True)
    opt = LARS([w], lr=2.0, momentum=0.5, weight_decay=0.1, trust_coefficient=0.02, eps=1e-3)
    w.grad = torch.tensor([[6.0, 8.0]], dtype=F64)
    opt.step()
    tr = 0.02 * 5 / (10 + 0.1 * 5 + 1e-3)
    buf = tr * torch.tensor([[6.3, 8.4]], dtype=F64)
    torch.testing.assert_close(opt.state[w]["trust_ratio"], torch.tensor(tr, dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(
        w.detach(), torch.tensor([[3.0, 4.0]], dtype=F64) - 2.0 * buf, rtol=1e-15, atol=0
    )
    # second step: momentum on the buffer, a new trust ratio from the moved θ
    theta = w.detach().clone()
    w.grad = torch.tensor([[1.0, 0.0]], dtype=F64)
    opt.step()
    tr2 = 0.02 * theta.norm() / (1.0 + 0.1 * theta.norm() + 1e-3)
    buf2 = 0.5 * buf + tr2 * (torch.tensor([[1.0, 0.0]], dtype=F64) + 0.1 * theta)
    torch.testing.assert_close(w.detach(), theta - 2.0 * buf2, rtol=1e-14, atol=0)


@pytest.mark.parametrize("exclude_1d", [True, False])
def test_exclude_1d(exclude_1d: bool) -> None:
    b = torch.tensor([3.0, 4.0], dtype=F64, requires_grad=True)  # a bias
    opt = LARS(
        [b], lr=1.0, momentum=0.0, weight_decay=0.5, trust_coefficient=0.1, eps=0.0, exclude_1d=exclude_1d
    )
    b.grad = torch.tensor([0.0, 2.0], dtype=F64)
    opt.step()
    if exclude_1d:  # plain SGD: no trust ratio, no decay
        expected = torch.tensor([3.0, 2.0], dtype=F64)
        assert "trust_ratio" not in opt.state[b] and tensor_summaries(opt, b) == {}
    else:  # tr = 0.1·5/(2 + 0.5·5) = 1/9; Δ = tr·(g + λθ) = (1.5, 4)/9
        expected = torch.tensor([3.0 - 1.5 / 9, 4.0 - 4.0 / 9], dtype=F64)
        torch.testing.assert_close(tensor_summaries(opt, b)["trust_ratio"], torch.tensor(1 / 9, dtype=F64))
    torch.testing.assert_close(b.detach(), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize(("lr", "expected_ratio"), [(0.5, 0.2), (0.05, 1.0)])
def test_trust_clip_is_larc(lr: float, expected_ratio: float) -> None:
    # tr = 0.01·5/(0.5) = 0.1; LARC: min(tr/η, 1): 0.2 at η = 0.5, clipped to 1 at η = 0.05
    w = torch.tensor([[3.0, 4.0]], dtype=F64, requires_grad=True)
    opt = LARS([w], lr=lr, momentum=0.0, trust_coefficient=0.01, eps=0.0, trust_clip=True)
    w.grad = torch.tensor([[0.3, 0.4]], dtype=F64)
    opt.step()
    torch.testing.assert_close(opt.state[w]["trust_ratio"], torch.tensor(expected_ratio, dtype=F64))
    expected = torch.tensor([[3.0, 4.0]], dtype=F64) - lr * expected_ratio * torch.tensor(
        [[0.3, 0.4]], dtype=F64
    )
    torch.testing.assert_close(w.detach(), expected, rtol=1e-15, atol=0)


def test_trust_ratio_is_one_for_zero_norms() -> None:
    # ‖θ‖ = 0, or ‖g‖ = 0 (where pytorch-optimizer would take τ/λ when λ > 0): tr = 1
    zero_param = torch.zeros(2, 2, dtype=F64, requires_grad=True)
    zero_grad = torch.ones(2, 2, dtype=F64, requires_grad=True)
    opt = LARS([zero_param, zero_grad], lr=0.1, weight_decay=0.1)
    zero_param.grad, zero_grad.grad = torch.ones(2, 2, dtype=F64), torch.zeros(2, 2, dtype=F64)
    opt.step()
    assert opt.state[zero_param]["trust_ratio"].item() == 1.0
    assert opt.state[zero_grad]["trust_ratio"].item() == 1.0
    torch.testing.assert_close(zero_param.detach(), torch.full((2, 2), -0.1, dtype=F64))
    torch.testing.assert_close(zero_grad.detach(), torch.full((2, 2), 1 - 0.1 * 0.1, dtype=F64))


def test_larc_with_zero_lr_does_not_divide_by_zero() -> None:
    w = torch.ones(2, 2, dtype=F64, requires_grad=True)
    opt = LARS([w], lr=0.0, trust_clip=True)
    w.grad = torch.ones(2, 2, dtype=F64)
    opt.step()
    assert opt.state[w]["trust_ratio"].item() == 1.0 and torch.equal(w.detach(), torch.ones(2, 2, dtype=F64))


@pytest.mark.parametrize(
    "hparams",
    [{}, {"weight_decay": 0.1, "trust_clip": True}, {"exclude_1d": False}, {"independent_rows": True}],
)
def test_foreach_path_equals_per_tensor_path(hparams: dict) -> None:
    params, grad_seq = _tensors(), _grad_seq(6)
    results = []
    for foreach in (False, True):
        leaves = _leaves(params)
        hp = dict(hparams)
        rows = hp.pop("independent_rows", False)  # a parameter-group key (registry.create sets it)
        opt = LARS([{"params": leaves, "independent_rows": rows}], lr=0.5, foreach=foreach, **hp)
        _run(opt, leaves, grad_seq)
        results.append([(p.detach(), opt.state[p].get("trust_ratio")) for p in leaves])
    for (p0, tr0), (p1, tr1) in zip(*results, strict=True):
        torch.testing.assert_close(p0, p1, rtol=1e-14, atol=1e-15)
        assert (tr0 is None) == (tr1 is None)
        if tr0 is not None:
            torch.testing.assert_close(tr0, tr1, rtol=1e-14, atol=0)


@pytest.mark.slow
def test_fused_path_equals_eager_path() -> None:
    # float32 like a real run; the lr follows a schedule: after the first two steps nothing recompiles
    params, grad_seq = _tensors(dtype=torch.float32), _grad_seq(6, dtype=torch.float32)
    results = []
    for fused in (False, True):
        leaves = _leaves(params)
        opt = LARS(leaves, lr=0.5, weight_decay=0.01, fused=fused)
        for k, grads in enumerate(grad_seq):
            opt.param_groups[0]["lr"] = 0.5 / (k + 1)
            _run(opt, leaves, [grads])
            if k == 1:
                compiles = compile_stats().get("_lars_apply", {}).get("compiles")
        results.append(leaves)
    assert compile_stats()["_lars_apply"]["compiles"] == compiles
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("shapes", "exclude_1d"),
    [([(4, 3), (4, 2)], False), ([(4, 2, 3), (4, 5)], True)],  # rows of (4, 5) are 1-D: excluded
)
def test_independent_rows_equal_separate_optimizers(shapes, exclude_1d: bool) -> None:
    params, grad_seq = _tensors(shapes), _grad_seq(6, shapes)
    hp = dict(lr=0.5, weight_decay=0.01, exclude_1d=exclude_1d)
    batched = _leaves(params)
    _run(LARS([{"params": batched, "independent_rows": True}], **hp), batched, grad_seq)
    for i in range(shapes[0][0]):
        row = _leaves([p[i] for p in params])
        _run(LARS(row, **hp), row, [[g[i] for g in grads] for grads in grad_seq])
        for a, b in zip(row, batched, strict=True):
            torch.testing.assert_close(a, b[i], rtol=1e-13, atol=1e-15)


def test_state_dict_round_trip_resumes_identically() -> None:
    params, grad_seq = _tensors(), _grad_seq(8)
    leaves = _leaves(params)
    opt = LARS(leaves, lr=0.5, weight_decay=0.01)
    _run(opt, leaves, grad_seq[:4])
    saved = copy.deepcopy(opt.state_dict())
    checkpoint = [p.detach().clone() for p in leaves]
    _run(opt, leaves, grad_seq[4:])
    resumed = _leaves(checkpoint)
    opt2 = LARS(resumed, lr=0.5, weight_decay=0.01)
    opt2.load_state_dict(saved)
    _run(opt2, resumed, grad_seq[4:])
    for a, b in zip(leaves, resumed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spec", HYPERPARAMS, ids=lambda s: s.name)
def test_bad_hyperparameter_raises_naming_it(spec) -> None:
    bad = "yes" if spec.kind == "bool" else spec.low - 1.0
    with pytest.raises(ValueError, match=f"Invalid {spec.name}: "):
        LARS([torch.zeros(2, requires_grad=True)], **{spec.name: bad})


def test_bad_trust_clip_and_switches_raise() -> None:
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Invalid trust_clip: 'yes'"):
        LARS(w, trust_clip="yes")
    with pytest.raises(ValueError, match="Invalid foreach: 1"):
        LARS(w, foreach=1)


@pytest.mark.parametrize(
    ("key", "value"), [("lr", -1.0), ("momentum", 1.0), ("trust_clip", None), ("exclude_1d", 0)]
)
def test_group_value_rewritten_invalid_raises_at_step(key: str, value: object) -> None:
    w = torch.zeros(2, requires_grad=True)
    opt = LARS([w])
    opt.param_groups[0][key] = value
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=f"Invalid {key}: "):
        opt.step()


def test_tensor_summaries_names_unknown_parameters() -> None:
    opt = LARS([torch.zeros(2, 2, requires_grad=True)])
    with pytest.raises(ValueError, match="Invalid param"):
        tensor_summaries(opt, torch.zeros(2, 2))
