"""Optimizer-specific summaries (dgs_core.diagnostics.summaries) against values by hand."""

from __future__ import annotations

import pytest
import torch

from dgs_core.diagnostics import Diagnostics, ReferenceDiagnostics
from dgs_core.diagnostics.summaries import SUMMARIES, SUMMARIES_MANY, summary_for, tensor_summaries
from dgs_core.optim import registry
from dgs_core.optim.adadagrad import AdAdaGradNorm
from dgs_core.optim.adagrad_norm import AdaGradNorm
from dgs_core.optim.adan import Adan
from dgs_core.optim.dgs import DGS

F64 = torch.float64


def test_optimizer_summaries_without_a_sampler_are_exact():
    w = torch.randn(50, 40, requires_grad=True)
    opt = Adan([w], lr=0.01)
    for _ in range(2):
        w.grad = torch.randn(50, 40)
        opt.step()
    v = opt.state[w]["exp_avg_diff"]
    assert float(tensor_summaries(opt, w)["diff_norm"]) == pytest.approx(v.norm().item(), rel=1e-6)
    every = lambda tensor: tensor.reshape(-1)  # noqa: E731 — a sampler tracking all elements
    sampled = tensor_summaries(opt, w, sample=every)["diff_norm"]
    assert float(sampled) == pytest.approx(v.norm().item(), rel=1e-6)
    # a sample of a quarter of the elements: the norm extrapolated by √(numel / tracked) = 2
    quarter = lambda tensor: tensor.reshape(-1)[::4]  # noqa: E731
    expected = 2 * v.reshape(-1)[::4].norm().item()
    assert float(tensor_summaries(opt, w, sample=quarter)["diff_norm"]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="Invalid param"):
        tensor_summaries(opt, torch.zeros(2))


def test_dgs_clipped_fraction_is_counted_on_the_given_elements():
    n = 4 * 2048
    w = torch.zeros(n, dtype=F64, requires_grad=True)
    opt = DGS([w], s_min=0.2, s_max=5.0)
    w.grad = torch.ones(n, dtype=F64)
    opt.step()
    scale = opt.state[w]["scale"]
    scale.fill_(1.0)
    scale[: n // 2].fill_(5.0)  # half at s_max ...
    scale.view(-1, 16)[1::4] = 1.0  # ... but for every 4th block of 16 from the second one
    # every element: 4096 − 1024 of 8192 at a bound
    assert float(tensor_summaries(opt, w)["clipped"]) == 0.375
    # a sample of every 4th block (the diagnostics' sample of a large tensor is blocks too)
    blocks = lambda tensor: tensor.view(-1, 16)[::4].reshape(-1)  # noqa: E731
    assert float(tensor_summaries(opt, w, sample=blocks)["clipped"]) == 0.5
    small = torch.zeros(8, dtype=F64, requires_grad=True)
    opt = DGS([small], s_min=0.2, s_max=5.0)
    small.grad = torch.ones(8, dtype=F64)
    opt.step()
    opt.state[small]["scale"].copy_(torch.tensor([0.2, 1, 1, 1, 1, 1, 1, 5.0], dtype=F64))
    assert float(tensor_summaries(opt, small)["clipped"]) == 0.25


def test_dgs_summaries_use_each_groups_bounds():
    torch.manual_seed(0)
    a, b = torch.zeros(3 * 2048 + 5, dtype=F64), torch.zeros(7, 9, dtype=F64)
    c, idle = torch.zeros(11, dtype=F64), torch.zeros(4, dtype=F64)  # idle: no step yet
    tensors = [a, b, c, idle]
    for w in tensors:
        w.requires_grad_(True)
    opt = DGS([{"params": [a, b]}, {"params": [c, idle], "s_min": 0.5, "s_max": 2.0}], gamma=2.0)
    for w in (a, b, c):
        w.grad = torch.randn_like(w) * torch.logspace(-4, 4, w.numel(), dtype=F64).view_as(w)
    opt.step()
    summaries = [tensor_summaries(opt, w) for w in tensors]
    assert summaries[3] == {} and set(summaries[0]) == {"t", "clipped"} and summaries[0]["t"] == 1.0

    def at_bounds(w, low, high):
        scale = opt.state[w]["scale"]
        return float(((scale <= low) | (scale >= high)).double().mean())

    assert float(summaries[1]["clipped"]) == at_bounds(b, 0.1, 10.0)
    assert 0.0 < at_bounds(b, 0.1, 10.0) < 1.0
    assert float(summaries[2]["clipped"]) == at_bounds(c, 0.5, 2.0) != at_bounds(c, 0.1, 10.0)


def test_lookup_follows_the_class_hierarchy():
    assert summary_for(AdAdaGradNorm) is SUMMARIES[AdaGradNorm]  # a subclass reports its base's
    assert summary_for(torch.optim.SGD) is None
    w = torch.tensor([3.0, 4.0], dtype=F64, requires_grad=True)
    opt = registry.create("adadagrad_norm", [w], lr=1.0, b0=1.0)
    assert tensor_summaries(opt, w) == {}  # before the first step
    w.grad = torch.tensor([3.0, 4.0], dtype=F64)
    opt.step()
    assert float(tensor_summaries(opt, w)["b"]) == pytest.approx(26**0.5, rel=1e-15)  # b₁² = b₀² + ‖g₁‖²


@pytest.mark.parametrize("cls", [ReferenceDiagnostics, Diagnostics])
def test_a_new_entry_is_reported_by_both_implementations(monkeypatch, cls):
    # what the module docstring tells a later engineer to do, e.g. for Lion's sign agreement
    class SignSGD(torch.optim.SGD):
        pass

    def sign_agreement(optimizer, group, param, state, sample):
        buffer = state.get("momentum_buffer")
        if buffer is None:
            return {}
        return {"sign_agreement": (sample(buffer).sign() == sample(param.grad).sign()).double().mean()}

    monkeypatch.setitem(SUMMARIES, SignSGD, sign_agreement)
    w = torch.zeros(4, dtype=F64, requires_grad=True)
    opt = SignSGD([w], lr=0.1, momentum=0.5)
    diag = cls(opt, [("w", w)])
    for g in ([1.0, 1.0, 1.0, 1.0], [-1.0, -3.0, 1.0, 1.0]):
        w.grad = torch.tensor(g, dtype=F64)
        diag.before_step()
        opt.step()
        record = diag.after_step(1)
    # momentum buffer (−0.5, −2.5, 1.5, 1.5) against g (−1, −3, 1, 1): all four agree
    assert record.tensors[0].stats["sign_agreement"] == {"value": 1.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_entries_equal_their_per_tensor_entry(dtype):
    # DGS's twin in SUMMARIES_MANY compares every sample at once: the same numbers, bounds hit
    # exactly included (s_t clipped to s_min holds s_min in its own dtype)
    assert set(SUMMARIES_MANY) <= set(SUMMARIES)
    torch.manual_seed(0)
    tensors = [torch.zeros(n, dtype=dtype, requires_grad=True) for n in (50, 7, 300, 4)]
    groups = [{"params": tensors[:2]}, {"params": tensors[2:], "s_min": 0.3, "s_max": 3.0}]
    opt = DGS(groups, gamma=1.0)
    for w in tensors[:3]:  # the last one has no state yet
        w.grad = torch.randn_like(w) * torch.logspace(-2, 2, w.numel(), dtype=dtype)
    opt.step()
    states = [opt.state.get(w, {}) for w in tensors]
    every = [lambda tensor: tensor.reshape(-1)] * len(tensors)
    odd = [lambda tensor: tensor.reshape(-1)[1::2]] * len(tensors)  # a sample of the elements
    param_groups = [opt.param_groups[0]] * 2 + [opt.param_groups[1]] * 2
    for samples in (every, odd):
        many = SUMMARIES_MANY[DGS](opt, param_groups, tensors, states, samples)
        one = [
            _dgs_one(opt, g, w, state, sample)
            for g, w, state, sample in zip(param_groups, tensors, states, samples, strict=True)
        ]
        assert many == one
        assert many[3] == {} and all(0.0 < summary["clipped"] < 1.0 for summary in many[:3])


def _dgs_one(optimizer, group, param, state, sample):
    values = SUMMARIES[DGS](optimizer, group, param, state, sample)
    return {key: float(value) for key, value in values.items()}


SECOND_WAVE = [
    ("lamb", {"trust_ratio"}),
    ("adascale", {"gain_ratio", "tau"}),
    ("mars", {"correction_norm"}),
    ("lion", {"sign_agreement"}),
    ("muon", {"update_norm"}),
    ("schedule_free", {"interpolation_weight"}),
]


@pytest.mark.parametrize("cls", [ReferenceDiagnostics, Diagnostics])
@pytest.mark.parametrize(("name", "quantities"), SECOND_WAVE, ids=[name for name, _ in SECOND_WAVE])
def test_each_optimizers_own_values_reach_the_records(cls, name, quantities):
    # LAMB's trust ratio, AdaScale's r_t and τ, MARS's correction, Lion's sign agreement, Muon's
    # orthogonalized update norm, Schedule-Free's interpolation weight: kept by the update in its
    # state (checked by hand in each optimizer's tests), reported by both implementations
    torch.manual_seed(0)
    w = torch.randn(3, 4, dtype=F64, requires_grad=True)
    opt = registry.create(name, [w])
    assert tensor_summaries(opt, w) == {}  # before the first step
    diag = cls(opt, [("w", w)])
    for t in (1, 2):
        w.grad = torch.randn(3, 4, dtype=F64)
        diag.before_step()
        opt.step()
        record = diag.after_step(t)
    expected = tensor_summaries(opt, w)
    assert set(expected) == quantities
    for quantity in quantities:
        value = float(torch.as_tensor(expected[quantity], dtype=F64).mean())
        assert record.tensors[0].stats[quantity] == {"value": pytest.approx(value, rel=1e-12)}
