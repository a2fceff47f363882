"""The fast path (Diagnostics) gives the reference's records (ReferenceDiagnostics) wherever it
tracks every element: for every registered optimizer on a small model.

Both observe the same optimizer on the same steps, so they see the same gradients and updates.
Every tensor here is smaller than ``sample_size`` and its kept grid, so the fast path tracks
every element and its records must equal the reference's up to rounding: the two compute the
same elementwise values, but not always in the same order (the importance EMA as ``lerp`` or as
β·I + (1 − β)·a; the bias correction and 1/η_t applied to the statistics or to the elements;
sums and norms in another order or precision). Tolerance: relative 1e-12 in float64, 1e-5 in
float32 (norms of float32 tensors: summed in float32 by the fast path, in float64 here).
"""

from __future__ import annotations

import pytest
import torch

from dgs_core.diagnostics import DiagnosticRecord, Diagnostics, ReferenceDiagnostics
from dgs_core.optim import registry

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
SETTINGS = {  # dtype, importance, the fast path's lazy records, every
    "float64": (torch.float64, "grad", False, 1),
    "float64-taylor-lazy": (torch.float64, "taylor", True, 2),
    "float32-lazy": (torch.float32, "grad", True, 1),
}


def _model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 12),
        torch.nn.Tanh(),
        torch.nn.Linear(12, 12),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 3),
    ).to(dtype)


def _run(name: str, dtype: torch.dtype, importance: str, lazy: bool, every: int) -> list[tuple]:
    """(reference record, fast record) of each recorded step of a short run of ``name``."""
    model = _model(dtype)
    info = registry.get(name)
    opt = registry.create(name, model.parameters())
    params = list(model.parameters())
    kwargs = {"every": every, "importance": importance, "keep": "all"}
    reference = ReferenceDiagnostics(opt, model.named_parameters(), **kwargs)
    fast = Diagnostics(opt, model.named_parameters(), lazy=lazy, **kwargs)
    assert fast.sample_size >= max(p.numel() for p in params), "every element tracked"
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 5, generator=gen, dtype=dtype), torch.randint(0, 3, (32,), generator=gen)
    pairs = []
    for step in range(1, 8):

        def closure(step: int = step) -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if step == 3:  # one tensor without a gradient on a recorded step
                params[-1].grad = None
            return loss

        if not info.needs_closure:
            closure()
        reference.before_step()
        fast.before_step()
        opt.step(closure) if info.needs_closure else opt.step()
        lr = 0.5 * opt.param_groups[0]["lr"] if step == 5 else None  # a schedule's lr once
        ours, theirs = reference.after_step(step, lr), fast.after_step(step, lr)
        assert (ours is None) == (theirs is None)
        if ours is not None:
            pairs.append((ours, theirs))
    assert len(pairs) == (7 if every == 1 else 4)
    return pairs


def _assert_same(reference: DiagnosticRecord, fast: DiagnosticRecord, rel: float) -> None:
    assert (fast.step, fast.lr, fast.batch_size) == (reference.step, reference.lr, reference.batch_size)
    assert [t.name for t in fast.tensors] == [t.name for t in reference.tensors]
    for ours, theirs in zip(reference.tensors, fast.tensors, strict=True):
        assert (theirs.shape, theirs.numel, theirs.tracked) == (ours.shape, ours.numel, ours.numel)
        assert theirs.stats.keys() == ours.stats.keys(), ours.name
        for quantity, stats in ours.stats.items():
            assert theirs.stats[quantity].keys() == stats.keys()
            for statistic, value in stats.items():
                where = (ours.name, quantity, statistic)
                assert theirs.stats[quantity][statistic] == pytest.approx(value, rel=rel, abs=1e-300), where
    assert fast.elements.keys() == reference.elements.keys()
    for key, values in reference.elements.items():
        torch.testing.assert_close(fast.elements[key], values, rtol=max(rel, 1e-6), atol=0, msg=key)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", registry.names())
def test_fast_records_equal_the_reference(name: str, setting: str) -> None:
    dtype, importance, lazy, every = SETTINGS[setting]
    pairs = _run(name, dtype, importance, lazy, every)
    for reference, fast in pairs:
        _assert_same(reference, fast, TOLERANCE[dtype])
    (idle,) = [r for r, _ in pairs if r.step == 3]
    assert len(idle.tensors) == 5  # the last bias had no gradient: left out
    own = {"dgs": "clipped", "adan": "diff_norm", "lars": "trust_ratio", "adagrad_norm": "b"}.get(name)
    if own is not None:  # the optimizer's own values are compared too
        assert own in pairs[-1][0].tensors[0].stats
