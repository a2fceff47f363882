"""Diagnostics (SPEC §4) against hand-computed steps."""

from __future__ import annotations

import copy
import importlib.util
import math
import pickle
import threading

import pandas as pd
import pytest
import safetensors.torch
import torch

from dgs_core.diagnostics import (
    EPS,
    FRAME_COLUMNS,
    GLOBAL,
    Diagnostics,
    ReferenceDiagnostics,
    quantile_name,
    to_frame,
)
from dgs_core.diagnostics.quantiles import RowSummariser
from dgs_core.diagnostics.summaries import SUMMARIES
from dgs_core.optim import registry

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _step(diag, opt, step, grads, lr=None, *, params):
    """One hand-made step: set the gradients, then the diagnostics hooks around opt.step()."""
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    diag.before_step()
    opt.step()
    return diag.after_step(step, lr)


def _grads(*shape, steps=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # bounded away from 0 so that η_eff is well conditioned
    return [
        (torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.1)
        * torch.where(torch.rand(*shape, generator=gen) < 0.5, -1.0, 1.0).double()
        for _ in range(steps)
    ]


def _expected_stats(values: torch.Tensor) -> dict[str, float]:
    flat = values.reshape(-1).double()
    q = torch.quantile(flat, torch.tensor(QUANTILES, dtype=torch.float64))
    return {
        "mean": flat.mean().item(),
        **{quantile_name(l): v for l, v in zip(QUANTILES, q.tolist(), strict=True)},
    }


def _assert_stats(actual, expected, rel=1e-9):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=rel, abs=1e-300), key


def test_sgd_effective_lr_is_lr_and_scaling_factor_one():
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.05)
    diag = Diagnostics(opt, [("w", w)], keep="all")
    for step, g in enumerate(_grads(6, 5), start=1):
        g[0, 0] = 0.0  # no gradient, no move: η_eff = 0/(0 + 1e-12) = 0
        record = _step(diag, opt, step, [g], params=[w])
        (tensor,) = record.tensors
        lr_eff = record.elements["w/lr_eff"]
        assert lr_eff[0, 0] == 0.0
        mask = torch.ones(6, 5, dtype=torch.bool)
        mask[0, 0] = False
        torch.testing.assert_close(lr_eff[mask], torch.full((29,), 0.05, dtype=torch.float32))
        torch.testing.assert_close(record.elements["w/scaling_factor"][mask], torch.ones(29))
        # summaries: 29 of 30 elements at lr, one at 0
        # equal up to rounding and the ε = 1e-12 of the denominator (|g| ≥ 0.1 here)
        assert tensor.stats["lr_eff"]["q50"] == pytest.approx(0.05, rel=1e-10)
        assert tensor.stats["scaling_factor"]["q50"] == pytest.approx(1.0, rel=1e-10)
        assert tensor.stats["scaling_factor"]["mean"] == pytest.approx(29 / 30, rel=1e-10)
        assert record.lr == 0.05


def test_sgd_scaling_factor_divides_by_the_schedule_lr():
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)])
    # the schedule says 0.2 but the group was left at 0.1: the step is half the schedule's
    record = _step(diag, opt, 1, _grads(4, 4, steps=1), lr=0.2, params=[w])
    stats = record.tensors[0].stats
    assert stats["lr_eff"]["mean"] == pytest.approx(0.1, rel=1e-12)
    assert stats["scaling_factor"]["mean"] == pytest.approx(0.5, rel=1e-12)
    assert record.lr == 0.2


def test_adam_effective_lr_matches_a_hand_computed_adam_step():
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    w = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr, betas=(b1, b2), eps=eps)
    diag = Diagnostics(opt, [("w", w)], keep="all")
    m = torch.zeros(5, 7, dtype=torch.float64)
    v = torch.zeros(5, 7, dtype=torch.float64)
    for t, g in enumerate(_grads(5, 7, steps=4), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        expected = update.abs() / (g.abs() + EPS)
        record = _step(diag, opt, t, [g], params=[w])
        stats = record.tensors[0].stats
        _assert_stats(stats["lr_eff"], _expected_stats(expected), rel=1e-7)
        _assert_stats(stats["scaling_factor"], _expected_stats(expected / lr), rel=1e-7)
        torch.testing.assert_close(record.elements["w/lr_eff"], expected.float(), rtol=1e-5, atol=0)
        assert stats["update_norm"]["value"] == pytest.approx(update.norm().item(), rel=1e-7)
        assert stats["grad_norm"]["value"] == pytest.approx(g.norm().item(), rel=1e-12)
        assert stats["param_norm"]["value"] == pytest.approx(w.norm().item(), rel=1e-12)


@pytest.mark.parametrize("importance", ["grad", "taylor"])
def test_importance_is_the_bias_corrected_ema(importance):
    beta = 0.8
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    diag = Diagnostics(opt, {"w": w}, beta=beta, importance=importance, keep="all")
    ema = torch.zeros(3, 4, dtype=torch.float64)
    for t, g in enumerate(_grads(3, 4, steps=5), start=1):
        score = g.abs() if importance == "grad" else (g * w.detach()).abs()  # θ before the step
        ema = beta * ema + (1 - beta) * score
        expected = ema / (1 - beta**t)
        record = _step(diag, opt, t, [g], params=[w])
        _assert_stats(record.tensors[0].stats["importance"], _expected_stats(expected), rel=1e-12)
        torch.testing.assert_close(record.elements["w/importance"], expected.float())


def test_importance_is_updated_on_every_step_and_records_every_k():
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], every=3)
    grads = _grads(8, steps=7)
    ema = torch.zeros(8, dtype=torch.float64)
    recorded = []
    for t, g in enumerate(grads, start=1):
        ema = 0.9 * ema + 0.1 * g.abs()
        record = _step(diag, opt, 100 + t, [g], params=[w])
        if record is not None:
            recorded.append(record.step)
            mean = record.tensors[0].stats["importance"]["mean"]
            assert mean == pytest.approx((ema / (1 - 0.9**t)).mean().item(), rel=1e-12)
    assert recorded == [101, 104, 107]


def test_record_argument_forces_or_skips():
    w = torch.randn(4, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], every=5)
    w.grad = torch.ones(4)
    diag.before_step(record=False)  # step 1 would be recorded
    opt.step()
    assert diag.after_step(1) is None
    diag.before_step(record=True)  # step 2 would not
    opt.step()
    assert diag.after_step(2).step == 2


def test_frame_columns_and_global_rows(monkeypatch):
    class BatchSGD(torch.optim.SGD):
        batch_size = 64

    def own_values(optimizer, group, p, state, sample):
        return {"trust_ratio": p.detach().norm() / 10, "b": 2.5}

    monkeypatch.setitem(SUMMARIES, BatchSGD, own_values)
    w = torch.randn(10, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = BatchSGD([w, b], lr=0.1)
    diag = Diagnostics(opt, [("w", w), ("b", b)])
    records = [_step(diag, opt, 1, [torch.randn(10, 3), torch.randn(3)], params=[w, b])]
    norm_after_first_step = w.detach().norm().item()
    records.append(_step(diag, opt, 2, [torch.randn(10, 3), torch.randn(3)], params=[w, b]))
    frame = records[0].to_frame()
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame["step"].dtype == "int64"
    assert frame["value"].dtype == "float64"
    assert set(frame["tensor"]) == {GLOBAL, "w", "b"}
    assert set(frame["quantity"]) == {
        "lr",
        "batch_size",
        "importance",
        "lr_eff",
        "scaling_factor",
        "grad_norm",
        "update_norm",
        "param_norm",
        "trust_ratio",
        "b",
    }
    stats = set(frame.loc[frame["quantity"] == "lr_eff", "statistic"])
    assert stats == {"mean", "q05", "q25", "q50", "q75", "q95"}

    def value(tensor, quantity, statistic="value"):
        rows = frame[(frame.tensor == tensor) & (frame.quantity == quantity) & (frame.statistic == statistic)]
        assert len(rows) == 1
        return rows["value"].item()

    assert value(GLOBAL, "batch_size") == 64
    assert value(GLOBAL, "lr") == pytest.approx(0.1)
    assert value("w", "trust_ratio") == pytest.approx(norm_after_first_step / 10, rel=1e-6)
    assert value("b", "b") == 2.5
    both = to_frame(records)
    assert len(both) == 2 * len(frame)
    assert sorted(set(both["step"])) == [1, 2]
    pd.testing.assert_frame_equal(both[both.step == 1].reset_index(drop=True), frame)


def test_per_element_copy_is_capped_and_indexed():
    w = torch.randn(300, 2, 5, requires_grad=True)  # 2-D view: 300 × 10
    small = torch.randn(4, 3, requires_grad=True)
    opt = torch.optim.SGD([w, small], lr=0.1)
    diag = Diagnostics(opt, [("w", w), ("small", small)], keep=("w", "small"), keep_max_elements=500)
    g = torch.randn(300, 2, 5)
    record = _step(diag, opt, 1, [g, torch.randn(4, 3)], params=[w, small])
    copy = record.elements["w/importance"]
    assert copy.dtype == torch.float32 and copy.device.type == "cpu"
    assert copy.numel() <= 500
    rows, cols = diag.element_index["w/rows"], diag.element_index["w/cols"]
    assert copy.shape == (rows.numel(), cols.numel())
    assert rows[0] == 0 and rows[-1] == 299 and cols[0] == 0 and cols[-1] == 9
    # after one step Î_1 = |g_1|: the copy holds exactly the indexed elements
    torch.testing.assert_close(copy, g.reshape(300, 10).abs()[rows][:, cols])
    assert record.elements["small/importance"].shape == (4, 3)  # fits: kept whole
    assert {t.name: t.tracked for t in record.tensors} == {"w": copy.numel(), "small": 12}
    # what a snapshot stores, with safetensors
    stored = safetensors.torch.load(safetensors.torch.save({**record.elements, **diag.element_index}))
    torch.testing.assert_close(stored["w/importance"], copy)
    torch.testing.assert_close(stored["w/cols"], cols)
    assert set(record.elements) == {
        f"{n}/{q}" for n in ("w", "small") for q in ("importance", "lr_eff", "scaling_factor")
    }


def test_records_keep_their_values_after_later_steps():
    w = torch.randn(3, 2, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], keep="all")
    first = _step(diag, opt, 1, [torch.randn(3, 2)], params=[w])
    saved = {k: v.clone() for k, v in first.elements.items()}
    _step(diag, opt, 2, [torch.randn(3, 2)], params=[w])
    for key, value in saved.items():
        torch.testing.assert_close(first.elements[key], value, rtol=0, atol=0)


def test_large_tensors_are_subsampled_reproducibly():
    def run(seed):
        torch.manual_seed(0)
        w = torch.randn(200, 100, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)
        diag = Diagnostics(opt, [("w", w)], sample_size=2000, seed=seed)
        g = torch.rand(200, 100)  # uniform on [0, 1): known quantiles
        return _step(diag, opt, 1, [g], params=[w]), g

    (record, g), (again, _), (other, _) = run(0), run(0), run(1)
    tensor = record.tensors[0]
    assert tensor.tracked == 2000 and tensor.numel == 20_000
    assert tensor.stats == again.tensors[0].stats
    assert tensor.stats != other.tensors[0].stats
    importance = tensor.stats["importance"]
    for q in QUANTILES:
        assert importance[quantile_name(q)] == pytest.approx(q, abs=0.04)
    assert importance["mean"] == pytest.approx(g.mean().item(), abs=0.02)
    # norms extrapolated from the subset: √(numel / tracked) · ‖x_subset‖
    norms = {k: tensor.stats[f"{k}_norm"]["value"] for k in ("grad", "update", "param")}
    assert norms["grad"] == pytest.approx(g.norm().item(), rel=0.03)
    assert norms["update"] == pytest.approx(0.1 * norms["grad"], rel=1e-5)  # SGD: Δθ = −0.1 g
    torch.manual_seed(0)
    assert norms["param"] == pytest.approx((torch.randn(200, 100) - 0.1 * g).norm().item(), rel=0.03)
    assert tensor.stats["lr_eff"]["q05"] == pytest.approx(0.1, rel=1e-5)


def test_closure_step_reads_the_gradients_after_the_step():
    # With no gradient at before_step (zero_grad sets them to None), "auto" reads p.grad after
    # the step: for a closure optimizer that is the gradient its update used.
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], keep="all")

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    start = w.detach().clone()
    opt.zero_grad()
    diag.before_step()
    opt.step(closure)
    record = diag.after_step(1)
    # per-element copies are 2-D (heatmaps): a vector is one row
    torch.testing.assert_close(record.elements["w/lr_eff"], torch.full((1, 3), 0.1))
    torch.testing.assert_close(record.elements["w/importance"], (2 * start).abs().float().reshape(1, 3))


def test_explicit_after_mode_ignores_stale_gradients():
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], grads="after", keep="all")
    w.grad = torch.tensor([100.0, 100.0], dtype=torch.float64)  # stale, from an earlier step

    def closure():
        w.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
        return torch.zeros(())

    diag.before_step()
    opt.step(closure)
    record = diag.after_step(1)
    torch.testing.assert_close(record.elements["w/importance"], torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(record.elements["w/lr_eff"], torch.full((1, 2), 0.1))


_HAS_EXTRASGD = importlib.util.find_spec("dgs_core.optim.extrasgd") is not None


def _registry_complete() -> bool:
    try:
        registry.infos()
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _HAS_EXTRASGD, reason="dgs_core.optim.extrasgd is not written yet")
@pytest.mark.parametrize("zero_grad_first", [True, False])
def test_extrasgd_uses_the_gradient_at_the_extrapolated_point(zero_grad_first):
    from dgs_core.optim.extrasgd import ExtraSGD

    if not zero_grad_first and not _registry_complete():
        pytest.skip("the registry (needs_closure) is not importable until every optimizer exists")
    a = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)  # f = ½ Σ a θ², ∇f = a θ
    w = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64, requires_grad=True)
    lr, gamma = 0.05, 0.1
    opt = ExtraSGD([w], lr=lr, extrapolation_lr=gamma, momentum=0.0, variant="extragradient")
    diag = Diagnostics(opt, [("w", w)], keep="all")

    def closure():
        opt.zero_grad()
        loss = 0.5 * (a * w**2).sum()
        loss.backward()
        return loss

    w.grad = torch.full((3,), 100.0, dtype=torch.float64)  # stale, from an earlier step
    for t in (1, 2):
        x = w.detach().clone()
        extrapolated_grad = a * (x - gamma * a * x)  # ĝ = ∇f(x − γ̂ ∇f(x))
        if zero_grad_first:
            opt.zero_grad()
        diag.before_step()
        opt.step(closure)
        record = diag.after_step(t)
        torch.testing.assert_close(w.detach(), x - lr * extrapolated_grad)
        # plain (μ = 0) ExtraSGD applies ĝ with lr: η_eff = lr against ĝ, the gradient it used
        torch.testing.assert_close(record.elements["w/lr_eff"], torch.full((1, 3), lr))
        if t == 1:
            torch.testing.assert_close(record.elements["w/importance"], extrapolated_grad.abs().float()[None])


def test_batch_size_is_the_one_the_step_used():
    class GrowingBatch(torch.optim.SGD):
        batch_size = 16

        def step(self, closure=None):
            loss = super().step(closure)
            self.batch_size *= 2  # like AdAdaGrad: after step(), the next step's batch size
            return loss

    w = torch.zeros(2, requires_grad=True)
    opt = GrowingBatch([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)])
    sizes = [_step(diag, opt, t, [torch.ones(2)], params=[w]).batch_size for t in (1, 2, 3)]
    assert sizes == [16, 32, 64]


def test_non_scalar_optimizer_values_are_averaged(monkeypatch):
    class RowwiseSGD(torch.optim.SGD):
        pass

    def own_values(optimizer, group, p, state, sample):
        return {"b": torch.tensor([1.0, 3.0])}  # e.g. AdaGrad-Norm with independent_rows

    monkeypatch.setitem(SUMMARIES, RowwiseSGD, own_values)
    w = torch.zeros(2, 2, requires_grad=True)
    opt = RowwiseSGD([w], lr=0.1)
    record = _step(Diagnostics(opt, [("w", w)]), opt, 1, [torch.ones(2, 2)], params=[w])
    assert record.tensors[0].stats["b"] == {"value": 2.0}


def test_tensors_without_gradient_are_left_out():
    w = torch.randn(3, requires_grad=True)
    frozen = torch.randn(3, requires_grad=True)
    opt = torch.optim.SGD([w, frozen], lr=0.1)
    diag = Diagnostics(opt, [("w", w), ("frozen", frozen)])
    w.grad = torch.ones(3)
    diag.before_step()
    opt.step()
    record = diag.after_step(1)
    assert [t.name for t in record.tensors] == ["w"]
    assert diag.names == ["w", "frozen"]


def test_a_tensor_without_gradient_keeps_its_importance_until_the_next_one():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    v = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w, v], lr=0.1)
    diag = Diagnostics(opt, [("w", w), ("v", v)], keep="all")
    gw, gv = _grads(3, steps=3), _grads(2, steps=3, seed=1)
    _step(diag, opt, 1, [gw[0], gv[0]], params=[w, v])
    w.grad, v.grad = gw[1].clone(), None  # v sits this step out
    diag.before_step()
    opt.step()
    only_w = diag.after_step(2)
    assert [t.name for t in only_w.tensors] == ["w"]
    record = _step(diag, opt, 3, [gw[2], gv[2]], params=[w, v])
    ema_w = 0.9**2 * 0.1 * gw[0].abs() + 0.9 * 0.1 * gw[1].abs() + 0.1 * gw[2].abs()
    ema_v = 0.9 * 0.1 * gv[0].abs() + 0.1 * gv[2].abs()  # two gradients seen: t = 2
    torch.testing.assert_close(record.elements["w/importance"], (ema_w / (1 - 0.9**3)).float()[None])
    torch.testing.assert_close(record.elements["v/importance"], (ema_v / (1 - 0.9**2)).float()[None])
    torch.testing.assert_close(record.elements["v/lr_eff"], torch.full((1, 2), 0.1))


def test_unnamed_parameters_get_group_names():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    diag = Diagnostics(opt, [("a", a)])
    assert diag.names == ["a", "group1.param0"]
    record = _step(diag, opt, 1, [torch.ones(2), torch.ones(2)], params=[a, b])
    # lr=None: each tensor's scaling factor divides by its own group's lr
    assert [t.stats["scaling_factor"]["mean"] for t in record.tensors] == pytest.approx([1.0, 1.0])
    assert [t.stats["lr_eff"]["mean"] for t in record.tensors] == pytest.approx([0.1, 0.5])


@pytest.mark.parametrize("cls", [Diagnostics, ReferenceDiagnostics])
def test_reset_forgets_the_importance(cls):
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = cls(opt, [("w", w)])
    _step(diag, opt, 1, [torch.tensor([1.0, 1.0], dtype=torch.float64)], params=[w])
    diag.reset()
    record = _step(diag, opt, 2, [torch.tensor([3.0, 3.0], dtype=torch.float64)], params=[w])
    assert record.tensors[0].stats["importance"]["mean"] == pytest.approx(3.0)


@pytest.mark.parametrize("cls", [Diagnostics, ReferenceDiagnostics])
def test_state_dict_resumes_with_identical_records(cls):
    def build():
        w = torch.arange(12.0, dtype=torch.float64).reshape(3, 4).requires_grad_()
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
        return w, opt, cls(opt, [("w", w)], every=2, keep="all")

    grads = _grads(3, 4, steps=6)
    w, opt, diag = build()
    straight = [_step(diag, opt, t, [g], params=[w]) for t, g in enumerate(grads, start=1)]
    w, opt, diag = build()
    for t, g in enumerate(grads[:3], start=1):
        _step(diag, opt, t, [g], params=[w])
    saved = (w.detach().clone(), opt.state_dict(), diag.state_dict())
    w, opt, diag = build()
    with torch.no_grad():
        w.copy_(saved[0])
    opt.load_state_dict(saved[1])
    diag.load_state_dict(saved[2])
    resumed = [_step(diag, opt, t, [g], params=[w]) for t, g in enumerate(grads[3:], start=4)]
    assert [r is None for r in resumed] == [r is None for r in straight[3:]] == [True, False, True]
    assert resumed[1].tensors == straight[4].tensors
    with pytest.raises(ValueError, match="Invalid state"):
        cls(opt, [("v", w)]).load_state_dict(saved[2])


def test_hooks_out_of_order_raise():
    w = torch.zeros(2, requires_grad=True)
    diag = Diagnostics(torch.optim.SGD([w], lr=0.1))
    with pytest.raises(RuntimeError, match="before_step"):
        diag.after_step(1)
    w.grad = torch.ones(2)
    diag.before_step()
    with pytest.raises(RuntimeError, match="twice"):
        diag.before_step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 1.0}, "Invalid beta: 1.0"),
        ({"every": 0}, "Invalid every: 0"),
        ({"importance": "hessian"}, "Invalid importance: 'hessian'"),
        ({"quantiles": (0.5, 1.5)}, "Invalid quantiles: 1.5"),
        ({"sample_size": 0}, "Invalid sample_size: 0"),
        ({"keep": ("nope",)}, "Invalid keep: 'nope'"),
        ({"grads": "during"}, "Invalid grads: 'during'"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs, message):
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Diagnostics(torch.optim.SGD([w], lr=0.1), [("w", w)], **kwargs)


def test_row_quantiles_match_torch_quantile():
    x = torch.randn(6, 37, dtype=torch.float64)
    levels = (0.0, 0.05, 0.33, 0.5, 0.95, 1.0)
    expected = torch.quantile(x, torch.tensor(levels, dtype=torch.float64), dim=1).T
    summarise = RowSummariser(levels, torch.float64, on_cpu=True)
    torch.testing.assert_close(torch.from_numpy(summarise(list(x))[:, 1:]), expected)


def test_quantile_names():
    assert [quantile_name(q) for q in (0.05, 0.5, 0.999, 1.0)] == ["q05", "q50", "q99.9", "q100"]


_HAS_DGS = importlib.util.find_spec("dgs_core.optim.dgs") is not None


@pytest.mark.skipif(not _HAS_DGS, reason="dgs_core.optim.dgs is not written yet")
def test_dgs_reported_scale_is_the_optimizer_state():
    from dgs_core.optim.dgs import DGS

    torch.manual_seed(0)
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    opt = DGS([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], keep="all")
    for t, g in enumerate(_grads(6, 4, steps=3), start=1):
        record = _step(diag, opt, t, [g], params=[w])
        scale = opt.state[w]["scale"]
        stats = record.tensors[0].stats
        _assert_stats(stats["scale"], _expected_stats(scale), rel=1e-12)
        torch.testing.assert_close(record.elements["w/scale"], scale.float())
        if "importance" in opt.state[w]:  # same β: DGS's own EMA equals ours
            expected = opt.state[w]["importance"] / (1 - 0.9**t)
            torch.testing.assert_close(record.elements["w/importance"], expected.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    def run(device):
        torch.manual_seed(0)
        w = torch.randn(300, 200, dtype=torch.float64, device=device, requires_grad=True)
        opt = torch.optim.Adam([w], lr=1e-2)
        diag = Diagnostics(opt, [("w", w)], sample_size=1000, keep=(), seed=3)
        grads = [g.to(device) for g in _grads(300, 200, steps=2)]
        return [_step(diag, opt, t, [g], params=[w]) for t, g in enumerate(grads, start=1)][-1]

    cpu, cuda = run("cpu"), run("cuda")
    for quantity, stats in cpu.tensors[0].stats.items():
        for key, value in stats.items():
            assert cuda.tensors[0].stats[quantity][key] == pytest.approx(value, rel=1e-6), (quantity, key)
    assert math.isfinite(cpu.tensors[0].stats["lr_eff"]["mean"])


# -- the fast paths equal the simple ones -------------------------------------------------------


def _records_of(diag, opt, params, grads_per_step, *, lr=None):
    return [_step(diag, opt, t, grads, lr, params=params) for t, grads in enumerate(grads_per_step, start=1)]


def _model_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(40, 30), (30,), (3, 40), (3,), (5, 7, 9)]  # sampled (> 100) and whole tensors
    return [torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in shapes]


def _grad_steps(params, steps=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(steps)]


def test_every_tensor_at_once_equals_one_tensor_at_a_time():
    # all gradients present: one gather per bank and flat updates; a parameter that never has a
    # gradient sends every step down the per-tensor path. Both must give the same numbers.
    params = _model_params()
    grads = _grad_steps(params)
    opt = torch.optim.SGD([{"params": params}], lr=0.1, momentum=0.9)
    fast = _records_of(Diagnostics(opt, sample_size=100, keep=("group0.param2",)), opt, params, grads)

    params = _model_params()
    idle = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([{"params": [*params, idle]}], lr=0.1, momentum=0.9)
    diag = Diagnostics(opt, sample_size=100, keep=("group0.param2",))
    simple = [_step(diag, opt, t, step_grads, params=params) for t, step_grads in enumerate(grads, start=1)]
    for a, b in zip(fast, simple, strict=True):
        assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
        for x, y in zip(a.tensors, b.tensors, strict=True):
            assert x.tracked == y.tracked and x.stats.keys() == y.stats.keys()
            for quantity in x.stats:
                _assert_stats(x.stats[quantity], y.stats[quantity], rel=1e-12)
        for key in a.elements:
            torch.testing.assert_close(a.elements[key], b.elements[key], rtol=0, atol=0)


def test_sampled_tensors_track_the_drawn_elements():
    # block gathers (rows of the (numel // 16) × 16 view) read exactly the elements of the index
    params = _model_params()
    opt = torch.optim.SGD(params, lr=0.1)
    diag = Diagnostics(opt, sample_size=100, importance="taylor")
    (grads,) = _grad_steps(params, steps=1)
    start = [p.detach().clone() for p in params]
    _step(diag, opt, 1, grads, params=params)
    sampled = [s for s in diag._tracked if s.index is not None]
    assert sampled and all(s.block_rows is not None for s in sampled)
    for s in diag._tracked:
        k = [p is s.param for p in params].index(True)
        flat = (grads[k] * start[k]).abs().reshape(-1)
        expected = flat if s.index is None else flat[s.index]
        torch.testing.assert_close(s.importance, 0.1 * expected, rtol=1e-12, atol=0)  # (1 − β)·|g ⊙ θ|


def test_noncontiguous_gradients_and_replaced_parameters_are_read_correctly():
    w = torch.randn(64, 48, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], sample_size=64)
    (s,) = diag._tracked
    g = torch.randn(48, 64, dtype=torch.float64).T  # a transposed view: not contiguous
    w.grad = g
    diag.before_step()
    opt.step()
    diag.after_step(1)
    torch.testing.assert_close(s.importance, 0.1 * g.abs().reshape(-1)[s.index], rtol=1e-12, atol=0)
    with torch.no_grad():
        w.data = torch.randn(64, 48, dtype=torch.float64)  # new storage: the cached view is stale
    before = w.detach().clone()
    w.grad = torch.ones(64, 48, dtype=torch.float64)
    diag.before_step()
    opt.step()
    record = diag.after_step(2)
    torch.testing.assert_close(s.after, w.detach().reshape(-1)[s.index])
    expected = ((before - w.detach()).abs() / (1 + EPS)).reshape(-1)[s.index]
    assert record.tensors[0].stats["lr_eff"]["mean"] == pytest.approx(expected.mean().item(), rel=1e-12)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_gradients_with_a_graph_leave_the_buffers_out_of_autograd():
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], keep="all")
    (w**3).sum().backward(create_graph=True)  # w.grad = 3w² requires grad
    assert w.grad.requires_grad
    expected = (3 * w.detach() ** 2).float()
    diag.before_step()
    opt.step()
    record = diag.after_step(1)
    torch.testing.assert_close(record.elements["w/importance"], expected)
    assert not any(bank.storage.requires_grad for bank in diag._banks)


def test_half_precision_parameters_are_tracked_in_float32():
    w = torch.randn(40, 30).half().requires_grad_()
    b = torch.randn(30).half().requires_grad_()
    opt = torch.optim.SGD([w, b], lr=0.5)
    diag = Diagnostics(opt, [("w", w), ("b", b)], sample_size=200, keep=("b",))
    g = [torch.randn(40, 30).half(), torch.randn(30).half()]
    record = _step(diag, opt, 1, g, params=[w, b])
    s_w = diag._tracked[0]
    assert s_w.importance.dtype == torch.float32
    torch.testing.assert_close(s_w.importance, 0.1 * g[0].float().abs().reshape(-1)[s_w.index])
    torch.testing.assert_close(record.elements["b/importance"], g[1].float().abs()[None])


def test_kept_tensors_of_groups_with_their_own_lr():
    a = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    diag = Diagnostics(opt, [("a", a), ("b", b)], keep="all")
    ones = [torch.ones(2, 3, dtype=torch.float64), torch.ones(4, dtype=torch.float64)]
    record = _step(diag, opt, 1, ones, params=[a, b])
    torch.testing.assert_close(record.elements["a/lr_eff"], torch.full((2, 3), 0.1))
    torch.testing.assert_close(record.elements["b/lr_eff"], torch.full((1, 4), 0.5))
    torch.testing.assert_close(record.elements["a/scaling_factor"], torch.ones(2, 3))
    torch.testing.assert_close(record.elements["b/scaling_factor"], torch.ones(1, 4))
    # a schedule's lr (one for all) divides both: a moves at 1x, b at 5x the schedule
    record = _step(diag, opt, 2, ones, lr=0.1, params=[a, b])
    torch.testing.assert_close(record.elements["b/scaling_factor"], torch.full((1, 4), 5.0))
    # copies of one record are contiguous, never alias the buffers, and save with safetensors
    assert all(t.is_contiguous() for t in record.elements.values())
    stored = safetensors.torch.load(safetensors.torch.save(dict(record.elements)))
    assert stored.keys() == record.elements.keys()


def test_summaries_of_rows_of_any_lengths_match_torch():
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # rows in the buffers' dtype
    diag = Diagnostics(torch.optim.SGD([w], lr=0.1), [("w", w)])
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 5, 1, 37, 37, 37, 2, 5]
    rows = [torch.randn(n, generator=gen, dtype=torch.float64) for n in lengths]
    rows[3][4] = math.nan  # a NaN sorts last, as in a sort of its row alone
    for layout_rows in (rows, rows[3:6]):  # several runs of lengths, then a single one
        table = diag._summarise(layout_rows)
        assert table.shape == (len(layout_rows), 1 + len(QUANTILES))
        for row, values in zip(layout_rows, table.tolist(), strict=True):
            expected = torch.sort(row).values  # NaN last
            positions = torch.tensor(QUANTILES, dtype=torch.float64) * (row.numel() - 1)
            low, high = positions.floor().long(), positions.ceil().long()
            quantiles = expected[low] + (positions - low) * (expected[high] - expected[low])
            reference = [row.mean().item(), *quantiles.tolist()]
            for a, b in zip(values, reference, strict=True):
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)
    torch.testing.assert_close(
        torch.tensor(diag._summarise(rows[:1])[0, 1:]),
        torch.quantile(rows[0], torch.tensor(QUANTILES, dtype=torch.float64)),
    )


def test_a_scale_for_some_tensors_only_is_kept_for_those():
    class HalfScaled(torch.optim.SGD):
        def step(self, closure=None):
            loss = super().step(closure)
            first = self.param_groups[0]["params"][0]
            self.state[first]["scale"] = torch.full_like(first, 2.0)  # per-element, for one tensor
            return loss

    a = torch.zeros(2, 3, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    opt = HalfScaled([a, b], lr=0.1)
    diag = Diagnostics(opt, [("a", a), ("b", b)], keep="all")
    record = _step(diag, opt, 1, [torch.ones(2, 3), torch.ones(4)], params=[a, b])
    torch.testing.assert_close(record.elements["a/scale"], torch.full((2, 3), 2.0))
    assert "b/scale" not in record.elements
    assert record.tensors[0].stats["scale"]["q50"] == 2.0 and "scale" not in record.tensors[1].stats
    torch.testing.assert_close(record.elements["b/lr_eff"], torch.full((1, 4), 0.1))


def test_importance_between_records_equals_the_step_by_step_ema():
    # the EMA moves on steps that record nothing (39 of them between records here): the
    # records show one update per step
    params = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64)]
    params[1].requires_grad_()
    opt = torch.optim.SGD(params, lr=0.01)
    diag = Diagnostics(opt, [("w", params[0]), ("b", params[1])], every=40, keep="all")
    grads = _grad_steps(params, steps=81)
    emas = [torch.zeros_like(p) for p in params]
    for t, step_grads in enumerate(grads, start=1):
        emas = [0.9 * e + 0.1 * g.abs() for e, g in zip(emas, step_grads, strict=True)]
        record = _step(diag, opt, t, step_grads, params=params)
        assert (record is not None) == (t in (1, 41, 81))
        if record is not None:
            for name, ema in zip(("w", "b"), emas, strict=True):
                expected = (ema / (1 - 0.9**t)).float().reshape(record.elements[f"{name}/importance"].shape)
                torch.testing.assert_close(record.elements[f"{name}/importance"], expected)


def test_state_dict_between_records_resumes_to_the_bit():
    def build():
        torch.manual_seed(3)
        w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.1)
        return w, opt, Diagnostics(opt, [("w", w)], every=4, keep="all")

    grads = _grads(3, 4, steps=9)
    w, opt, diag = build()
    straight = [_step(diag, opt, t, [g], params=[w]) for t, g in enumerate(grads, start=1)]
    w, opt, diag = build()
    for t, g in enumerate(grads[:3], start=1):  # step 1 records, 2 and 3 do not
        _step(diag, opt, t, [g], params=[w])
    state = diag.state_dict()
    saved = (w.detach().clone(), opt.state_dict(), state)
    w, opt, diag = build()
    with torch.no_grad():
        w.copy_(saved[0])
    opt.load_state_dict(saved[1])
    diag.load_state_dict(saved[2])
    resumed = [_step(diag, opt, t, [g], params=[w]) for t, g in enumerate(grads[3:], start=4)]
    for a, b in zip(resumed, straight[3:], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.tensors == b.tensors  # to the bit
            assert all(torch.equal(a.elements[k], b.elements[k]) for k in a.elements)
    # an older version deferred the EMA updates of unrecorded steps and saved them as "pending"
    bad = {**saved[2], "pending": {"w": torch.zeros(2, 5, dtype=torch.float64)}}
    with pytest.raises(ValueError, match="Invalid state: pending"):
        build()[2].load_state_dict(bad)


def test_state_derived_summaries_come_from_the_tracked_elements():
    # Adan's ‖v‖ is extrapolated from the tracked elements like ‖g‖; DGS's clipped fraction is
    # counted on the tracked elements of s_t (the ones its quantiles come from)
    from dgs_core.optim.adan import Adan
    from dgs_core.optim.dgs import DGS

    for make in (lambda ps: Adan(ps, lr=0.01), lambda ps: DGS(ps, lr=0.1, s_min=0.8, s_max=1.25)):
        torch.manual_seed(0)
        big, small = torch.randn(300, 100, requires_grad=True), torch.randn(7, 3, requires_grad=True)
        opt = make([big, small])
        diag = Diagnostics(opt, [("big", big), ("small", small)], sample_size=1000, seed=3)
        for t in range(1, 4):
            record = _step(diag, opt, t, [torch.randn(300, 100), torch.randn(7, 3)], params=[big, small])
        tracked = {s.name: s for s in diag._tracked}
        assert tracked["big"].index is not None and tracked["small"].index is None
        for tensor, p in zip(record.tensors, (big, small), strict=True):
            index = tracked[tensor.name].index
            if isinstance(opt, Adan):
                v = opt.state[p]["exp_avg_diff"].reshape(-1)
                sub = v if index is None else v[index]
                expected = sub.norm().item() * math.sqrt(v.numel() / sub.numel())
                assert tensor.stats["diff_norm"]["value"] == pytest.approx(expected, rel=1e-5)
                if index is None:  # tracked whole: exact
                    assert tensor.stats["diff_norm"]["value"] == pytest.approx(v.norm().item(), rel=1e-6)
                else:  # an estimate of the whole
                    assert tensor.stats["diff_norm"]["value"] == pytest.approx(v.norm().item(), rel=0.1)
            else:
                s_t = opt.state[p]["scale"].reshape(-1)
                sub = s_t if index is None else s_t[index]
                expected = ((sub <= 0.8) | (sub >= 1.25)).double().mean().item()
                assert 0 < expected < 1
                assert tensor.stats["clipped"]["value"] == pytest.approx(expected, abs=1e-12)


# -- lazy summaries ------------------------------------------------------------------------------


def _assert_same_records(lazy, eager):
    assert [r.step for r in lazy] == [r.step for r in eager]
    pd.testing.assert_frame_equal(to_frame(lazy), to_frame(eager), check_exact=True)
    for a, b in zip(lazy, eager, strict=True):
        assert a.elements.keys() == b.elements.keys()
        for key in a.elements:
            torch.testing.assert_close(a.elements[key], b.elements[key], rtol=0, atol=0)


@pytest.mark.parametrize("optimizer", ["dgs", "lars", "sgd"])
def test_lazy_records_read_at_the_end_equal_eager_ones(optimizer):
    # summaries computed after many later steps (and after steps where one tensor had no
    # gradient) from the copy taken on their step: the same numbers as computed on the step
    runs = {}
    for lazy in (True, False):
        params = _model_params()
        opt = registry.create(optimizer, params, lr=0.05)
        diag = Diagnostics(opt, sample_size=100, keep=("group0.param0", "group0.param2"), every=3, lazy=lazy)
        records = []
        for t, grads in enumerate(_grad_steps(params, steps=12), start=1):
            if t in (4, 7):
                grads[1] = None  # no gradient for one tensor on a recorded step
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.clone()
            diag.before_step()
            opt.step()
            record = diag.after_step(t, lr=0.05)
            if record is not None:
                records.append(record)
        assert all(r._raw is not None for r in records) == lazy  # nothing computed yet when lazy
        runs[lazy] = records
    _assert_same_records(runs[True], runs[False])
    assert "scale" in runs[True][0].tensors[0].stats if optimizer == "dgs" else True


def test_reading_one_lazy_record_summarises_every_unread_one():
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01)
    diag = Diagnostics(opt, [("w", w)], keep="all", lazy=True)
    records = _records_of(diag, opt, [w], [[g] for g in _grads(5, 4, steps=4)])
    dropped = records.pop(1)  # a record nobody keeps is forgotten, not summarised for nothing
    del dropped
    assert records[2].tensors[0].name == "w"
    assert all(r._raw is None for r in records) and diag._unread == []
    later = _step(diag, opt, 5, _grads(5, 4, steps=1, seed=9), params=[w])
    assert later._raw is not None and len(diag._unread) == 1


def test_lazy_records_copy_and_pickle_as_their_summaries():
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], keep="all", lazy=True)
    record = _step(diag, opt, 1, _grads(3, 3, steps=1), params=[w])
    for other in (copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert other._raw is None and other.step == 1 and other.lr == 0.1
        _assert_same_records([other], [record])


def test_lazy_records_read_by_another_thread_while_training():
    # the Training lab's pattern: a job thread steps, the page's thread reads the records
    def run(lazy: bool, reader: bool) -> list:
        params = _model_params()
        opt = torch.optim.Adam(params, lr=0.01)
        diag = Diagnostics(opt, sample_size=100, keep="all", every=2, lazy=lazy)
        records, done = [], threading.Event()
        if reader:

            def read():
                while not done.wait(0.001):
                    for r in list(records):
                        r.tensors  # noqa: B018

            thread = threading.Thread(target=read)
            thread.start()
        for t, grads in enumerate(_grad_steps(params, steps=60), start=1):
            record = _step(diag, opt, t, grads, params=params)
            if record is not None:
                records.append(record)
        done.set()
        if reader:
            thread.join()
        return records

    _assert_same_records(run(True, reader=True), run(False, reader=False))


def test_a_failed_summary_leaves_every_record_readable(monkeypatch):
    w = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    diag = Diagnostics(opt, [("w", w)], lazy=True)
    records = _records_of(diag, opt, [w], [[g] for g in _grads(4, 4, steps=3)])
    summaries, failed = Diagnostics._summaries, []

    def fails_once(self, raw):
        if not failed:
            failed.append(raw)
            raise RuntimeError("boom")
        return summaries(self, raw)

    monkeypatch.setattr(Diagnostics, "_summaries", fails_once)
    with pytest.raises(RuntimeError, match="boom"):
        records[0].tensors  # noqa: B018
    assert [r.tensors[0].stats["lr_eff"]["q50"] for r in reversed(records)] == pytest.approx([0.1] * 3)
