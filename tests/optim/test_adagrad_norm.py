"""AdaGrad-Norm (SPEC §1.6): float64 against an independent hand loop, one scalar per group,
independent rows, fast path, resume, summaries and validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim._compile import compile_stats
from dgs_core.optim.adagrad_norm import AdaGradNorm


def loss_of(tensors: list[torch.Tensor]) -> torch.Tensor:
    # a smooth non-quadratic loss so gradients change from step to step
    # sum's start 0 + Tensors: a Tensor
    return sum(torch.cosh(t).sum() + (t**3).sum() / 3 for t in tensors)  # type: ignore[return-value]  # (reason above)


def grad_of(values: list[list[float]]) -> list[list[float]]:
    return [[math.sinh(v) + v * v for v in tensor] for tensor in values]


def hand_loop(groups: list[list[list[float]]], lr: float, b0: float, decay: float, steps: int) -> list:
    """Pure-Python AdaGrad-Norm: b² ← b² + Σ‖g + λθ‖² over the group; θ ← θ − η g / b."""
    groups = copy.deepcopy(groups)
    b_squared = [b0 * b0] * len(groups)
    for _ in range(steps):
        for k, group in enumerate(groups):
            grads = [
                [g + decay * v for g, v in zip(gs, vs, strict=True)]
                for gs, vs in zip(grad_of(group), group, strict=True)
            ]
            b_squared[k] += sum(g * g for gs in grads for g in gs)
            b = math.sqrt(b_squared[k])
            groups[k] = [
                [v - lr * g / b for v, g in zip(vs, gs, strict=True)]
                for vs, gs in zip(group, grads, strict=True)
            ]
    return groups, [math.sqrt(s) for s in b_squared]


def run_torch(groups: list[list[list[float]]], steps: int, *, foreach: bool = False, **kwargs) -> tuple:
    tensors = [[torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in group] for group in groups]
    opt = AdaGradNorm([{"params": ts} for ts in tensors], foreach=foreach, **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        loss_of([t for ts in tensors for t in ts]).backward()
        opt.step()
    return tensors, opt


START = [[[0.5, -1.0, 0.25]], [[1.5], [-0.3, 0.7]]]  # group 0: one tensor; group 1: two tensors


@pytest.mark.parametrize("decay", [0.0, 0.05])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_hand_loop_in_float64(decay: float, foreach: bool) -> None:
    lr, b0, steps = 0.7, 0.3, 6
    expected, b = hand_loop(START, lr, b0, decay, steps)
    tensors, opt = run_torch(START, steps, foreach=foreach, lr=lr, b0=b0, weight_decay=decay)
    for k, ts in enumerate(tensors):
        for t, values in zip(ts, expected[k], strict=True):
            torch.testing.assert_close(
                t.detach(), torch.tensor(values, dtype=torch.float64), rtol=1e-14, atol=1e-14
            )
        assert float(tensor_summaries(opt, ts[-1])["b"]) == pytest.approx(b[k], rel=1e-14)


def test_first_step_by_hand() -> None:
    w = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = AdaGradNorm([w], lr=2.0, b0=1.0)
    w.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    opt.step()
    b = math.sqrt(1 + 25)
    torch.testing.assert_close(w.detach(), torch.tensor([3 - 6 / b, 4 - 8 / b], dtype=torch.float64))


def test_one_scalar_per_group_in_the_groups_first_parameter_state() -> None:
    tensors, opt = run_torch(START, 2)
    for ts in tensors:
        b_squared = opt.state[ts[0]]["b_squared"]
        assert b_squared.shape == ()
        assert all("b_squared" not in opt.state[t] for t in ts[1:])
    assert tensor_summaries(opt, tensors[0][0])["b"] != tensor_summaries(opt, tensors[1][0])["b"]


def test_defaults_follow_spec() -> None:
    opt = AdaGradNorm([torch.zeros(1, requires_grad=True)])
    assert opt.defaults["lr"] == 1.0 and opt.defaults["b0"] == 0.01


def test_tensor_summaries_before_first_step_and_unknown_param() -> None:
    w = torch.zeros(2, requires_grad=True)
    opt = AdaGradNorm([w])
    assert tensor_summaries(opt, w) == {}
    with pytest.raises(ValueError, match="Invalid param"):
        tensor_summaries(opt, torch.zeros(2))


@pytest.mark.parametrize("foreach", [False, True])
def test_independent_rows_equal_row_by_row(foreach: bool) -> None:
    torch.manual_seed(0)
    w0 = torch.randn(4, 3, dtype=torch.float64)
    v0 = torch.randn(4, dtype=torch.float64)

    def loss(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.cosh(w).sum() + (w**3).sum() + (v**4).sum() + (w.sum(dim=-1) * v).sum()

    w, v = w0.clone().requires_grad_(), v0.clone().requires_grad_()
    opt = AdaGradNorm([{"params": [w, v], "independent_rows": True}], lr=0.3, foreach=foreach)
    rows = [(w0[r].clone().requires_grad_(), v0[r : r + 1].clone().requires_grad_()) for r in range(4)]
    row_opts = [AdaGradNorm(list(pair), lr=0.3) for pair in rows]
    for _ in range(5):
        opt.zero_grad()
        loss(w, v).backward()
        opt.step()
        for (wr, vr), row_opt in zip(rows, row_opts, strict=True):
            row_opt.zero_grad()
            loss(wr.unsqueeze(0), vr).backward()
            row_opt.step()
    assert opt.state[w]["b_squared"].shape == (4,)
    for r, (wr, vr) in enumerate(rows):
        torch.testing.assert_close(w[r].detach(), wr.detach(), rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(v[r : r + 1].detach(), vr.detach(), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        tensor_summaries(opt, w)["b"],
        torch.stack(
            [tensor_summaries(row_opt, wr)["b"] for (wr, _), row_opt in zip(rows, row_opts, strict=True)]
        ),
    )


def test_independent_rows_need_a_shared_leading_dimension() -> None:
    mismatched = [torch.zeros(3, 2, requires_grad=True), torch.zeros(4, requires_grad=True)]
    with pytest.raises(ValueError, match="Invalid independent_rows"):
        AdaGradNorm([{"params": mismatched, "independent_rows": True}])
    with pytest.raises(ValueError, match="Invalid independent_rows: 'yes'"):
        AdaGradNorm([{"params": [torch.zeros(2, requires_grad=True)], "independent_rows": "yes"}])


def test_state_dict_resume_is_identical_and_carries_the_accumulator() -> None:
    tensors, opt = run_torch(START, 3, lr=0.5)
    saved_values = [[t.detach().clone() for t in ts] for ts in tensors]
    saved_state = copy.deepcopy(opt.state_dict())
    assert any("b_squared" in s for s in saved_state["state"].values())
    for _ in range(3):
        opt.zero_grad()
        loss_of([t for ts in tensors for t in ts]).backward()
        opt.step()

    resumed = [[t.clone().requires_grad_() for t in ts] for ts in saved_values]
    opt2 = AdaGradNorm([{"params": ts} for ts in resumed], lr=0.5)
    opt2.load_state_dict(saved_state)
    for _ in range(3):
        opt2.zero_grad()
        loss_of([t for ts in resumed for t in ts]).backward()
        opt2.step()
    for ts, rs in zip(tensors, resumed, strict=True):
        for t, r in zip(ts, rs, strict=True):
            assert torch.equal(t.detach(), r.detach())


def test_parameters_without_gradient_are_left_alone() -> None:
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    opt = AdaGradNorm([a, b], b0=1.0)
    a.grad = torch.tensor([0.0, 3.0])
    opt.step()
    assert b.tolist() == [3.0]
    assert float(opt.state[a]["b_squared"]) == pytest.approx(10.0)


@pytest.mark.parametrize(("name", "value"), [("lr", -1.0), ("b0", 0.0), ("b0", -1.0), ("weight_decay", -0.1)])
def test_bad_inputs_raise_value_error_naming_argument(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"Invalid {name}: "):
        AdaGradNorm([torch.zeros(2, requires_grad=True)], **{name: value})


@pytest.mark.parametrize(("name", "value"), [("lr", float("nan")), ("b0", 0.0), ("weight_decay", -1.0)])
def test_group_value_rewritten_invalid_raises_at_step(name: str, value: float) -> None:
    w = torch.ones(2, requires_grad=True)
    opt = AdaGradNorm([w])
    opt.param_groups[0][name] = value
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=rf"Invalid {name}: "):
        opt.step()
    assert w.tolist() == [1.0, 1.0]


@pytest.mark.slow
@pytest.mark.parametrize("independent_rows", [False, True])
def test_fused_equals_eager(independent_rows: bool) -> None:
    torch.manual_seed(0)
    start = [torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    if not independent_rows:
        start.append(torch.tensor(0.3, dtype=torch.float64))  # a 0-dim parameter
    results = []
    for fused in (False, True):
        tensors = [t.clone().requires_grad_() for t in start]
        group = {"params": tensors, "independent_rows": independent_rows}
        opt = AdaGradNorm([group], lr=0.5, weight_decay=0.01, fused=fused)
        before = compile_stats().get("_adagrad_norm_single", {}).get("compiles", 0)
        for step in range(4):
            opt.param_groups[0]["lr"] = 0.5 / (step + 1)  # a schedule
            opt.zero_grad()
            loss_of(tensors).backward()
            opt.step()
        # lr becomes a graph input after its first change: no compile per scheduled value
        assert compile_stats().get("_adagrad_norm_single", {}).get("compiles", 0) - before <= 2
        results.append(tensors)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-14, atol=1e-14)


def test_foreach_and_fused_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="Invalid fused"):
        AdaGradNorm([torch.zeros(2, requires_grad=True)], foreach=True, fused=True)


def test_groups_are_validated_when_added() -> None:
    opt = AdaGradNorm([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=r"Invalid b0: 0\.0"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "b0": 0.0})
