"""AdaScale SGD against the paper's equations written out (Johnson et al. 2020, Algorithm 1 and
Appendix B.3), with the group gradients from torch.func per-sample gradients, grouped."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim import registry
from dgs_core.optim.adascale import AdaScaleSGD
from dgs_core.training.batching import group_grads, per_sample_grads

F64 = torch.float64


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(64, 3, dtype=F64)
    y = torch.randint(0, 4, (64,))
    return model, x, y


def _grouped_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: int) -> dict:
    """g_i = the mean of group i's per-example gradients (groups of consecutive examples)."""
    per_sample = per_sample_grads(model, nn.functional.cross_entropy, x, y)
    return {name: g.reshape(scale, -1, *g.shape[1:]).mean(dim=1) for name, g in per_sample.items()}


def test_group_grads_are_per_sample_grads_grouped() -> None:
    model, x, y = _problem()
    for groups in (1, 4, 8):
        got = group_grads(model, nn.functional.cross_entropy, x[:40], y[:40], groups)
        expected = _grouped_per_sample(model, x[:40], y[:40], groups)
        assert list(got) == list(expected)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-14)
    # a remainder is left out: 42 examples in 4 groups are 4 × 10
    got = group_grads(model, nn.functional.cross_entropy, x[:42], y[:42], 4)
    torch.testing.assert_close(got["0.weight"], _grouped_per_sample(model, x[:40], y[:40], 4)["0.weight"])
    with pytest.raises(ValueError, match="Invalid groups: 0"):
        group_grads(model, nn.functional.cross_entropy, x, y, 0)


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.01)])
def test_matches_the_papers_equations(momentum: float, weight_decay: float) -> None:
    # Each step: a batch of S·b = 4·8 examples; σ̂² = Σ_i ‖g_i − ḡ‖²/(S − 1), μ̂² = max(‖ḡ‖² − σ̂²/S, 0)
    # over all the model's tensors; bias-corrected EMAs; r = (σ² + μ²)/(σ²/S + μ²);
    # b ← μ b + (ḡ + λθ); θ ← θ − r η b; τ ← τ + r.
    scale, lr, theta_ema = 4, 0.5, 0.9
    model, x, y = _problem()
    twin = copy.deepcopy(model)
    opt = AdaScaleSGD(
        model.parameters(),
        lr=lr,
        scale=scale,
        smoothing=theta_ema,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    params = [p.detach().clone() for p in twin.parameters()]
    buffers = [torch.zeros_like(p) for p in params]
    variance_ema = signal_ema = weight = tau = 0.0
    for step in range(8):
        xb, yb = x[step * 8 : step * 8 + 32], y[step * 8 : step * 8 + 32]
        # the paper, by hand, on the twin
        for p, value in zip(twin.parameters(), params, strict=True):
            p.data.copy_(value)
        groups = list(_grouped_per_sample(twin, xb, yb, scale).values())
        mean = [g.mean(0) for g in groups]
        variance = sum(float(((g - m) ** 2).sum()) for g, m in zip(groups, mean, strict=True)) / (scale - 1)
        signal = max(sum(float((m**2).sum()) for m in mean) - variance / scale, 0.0)
        variance_ema = theta_ema * variance_ema + (1 - theta_ema) * variance
        signal_ema = theta_ema * signal_ema + (1 - theta_ema) * signal
        weight = theta_ema * weight + (1 - theta_ema)
        sigma2, mu2 = variance_ema / weight, signal_ema / weight
        r = (sigma2 + mu2) / (sigma2 / scale + mu2)
        for i, (p, m) in enumerate(zip(params, mean, strict=True)):
            buffers[i] = momentum * buffers[i] + (m + weight_decay * p)
            params[i] = p - r * lr * buffers[i]
        tau += r
        # the optimizer, on the model, with group_grads (the trainer's way)
        opt.measure_gain(group_grads(model, nn.functional.cross_entropy, xb, yb, scale))
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        first = next(model.parameters())
        assert opt.state[first]["gain_ratio"].item() == pytest.approx(r, rel=1e-10)
        assert opt.state[first]["tau"].item() == pytest.approx(tau, rel=1e-10)
        assert 1.0 <= r <= scale
        for p, expected in zip(model.parameters(), params, strict=True):
            torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)
    assert opt.tau == pytest.approx(tau, rel=1e-10) and tau > 8  # noisy groups: r > 1 on average
    summaries = tensor_summaries(opt, list(model.parameters())[-1])  # every tensor reports its group's
    assert summaries["tau"] is opt.state[first]["tau"]


def test_pure_noise_gains_scale_and_pure_signal_gains_one() -> None:
    w = torch.zeros(2, dtype=F64, requires_grad=True)
    noise = AdaScaleSGD([w], lr=0.1, scale=4)
    noise.measure_gain([torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=F64)])
    w.grad = torch.zeros(2, dtype=F64)
    noise.step()
    assert noise.state[w]["gain_ratio"].item() == 4.0
    v = torch.zeros(2, dtype=F64, requires_grad=True)
    signal = AdaScaleSGD([v], lr=0.1, scale=4)
    signal.measure_gain([torch.tensor([[1.0, 2.0]] * 4, dtype=F64)])
    v.grad = torch.tensor([1.0, 2.0], dtype=F64)
    signal.step()
    assert signal.state[v]["gain_ratio"].item() == 1.0
    torch.testing.assert_close(v.detach(), torch.tensor([-0.1, -0.2], dtype=F64))


def test_without_a_measurement_or_at_scale_one_it_is_sgd() -> None:
    params = [torch.randn(3, 4, dtype=F64), torch.randn(4, dtype=F64)]
    grad_seq = [[torch.randn(3, 4, dtype=F64), torch.randn(4, dtype=F64)] for _ in range(5)]
    for scale in (1, 4):
        ours = [p.clone().requires_grad_() for p in params]
        sgd = [p.clone().requires_grad_() for p in params]
        opt = AdaScaleSGD(ours, lr=0.1, momentum=0.9, weight_decay=0.01, scale=scale)
        reference = torch.optim.SGD(sgd, lr=0.1, momentum=0.9, weight_decay=0.01)
        for grads in grad_seq:
            if scale == 1:  # nothing to measure: ignored
                opt.measure_gain([g.unsqueeze(0) for g in grads])
            for p, q, g in zip(ours, sgd, grads, strict=True):
                p.grad, q.grad = g.clone(), g.clone()
            opt.step()
            reference.step()
        for a, b in zip(ours, sgd, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)
        assert opt.tau == 5.0


def test_rows_have_their_own_gain() -> None:
    # The Surface lab's rows: an (N, 2) tensor, (S, N, 2) group gradients, one r and τ per row.
    starts = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-3.0, 0.25]], dtype=F64)
    gen = torch.Generator().manual_seed(2)
    groups_seq = [
        torch.randn(4, 3, 2, dtype=F64, generator=gen) + torch.tensor([[0.0], [1.0], [5.0]]) for _ in range(5)
    ]
    rows = starts.clone().requires_grad_()
    opt = registry.create("adascale", [rows], lr=0.1, independent_rows=True)
    for groups in groups_seq:
        opt.measure_gain([groups])
        rows.grad = groups.mean(0)
        opt.step()
    assert opt.state[rows]["gain_ratio"].shape == (3,)
    for r in range(3):
        alone = starts[r : r + 1].clone().requires_grad_()
        single = registry.create("adascale", [alone], lr=0.1)
        for groups in groups_seq:
            single.measure_gain([groups[:, r : r + 1]])
            alone.grad = groups[:, r : r + 1].mean(0)
            single.step()
        torch.testing.assert_close(rows.detach()[r], alone.detach()[0], rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(opt.state[rows]["tau"][r], single.state[alone]["tau"], rtol=1e-14, atol=0)
    assert opt.state[rows]["gain_ratio"][2] < opt.state[rows]["gain_ratio"][0]  # more signal, less gain


def test_a_pending_measurement_travels_in_state_dict_and_bad_shapes_are_refused() -> None:
    w = torch.ones(2, dtype=F64, requires_grad=True)
    opt = AdaScaleSGD([w], scale=2)
    opt.measure_gain([torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)])
    saved = copy.deepcopy(opt.state_dict())
    other = AdaScaleSGD([w.detach().clone().requires_grad_()], scale=2)
    other.load_state_dict(saved)
    w.grad = torch.ones(2, dtype=F64)
    other.param_groups[0]["params"][0].grad = torch.ones(2, dtype=F64)
    opt.step()
    other.step()
    torch.testing.assert_close(other.param_groups[0]["params"][0], w)
    assert opt.state[w]["gain_ratio"].item() > 1.0
    with pytest.raises(ValueError, match="Invalid group_grads"):
        opt.measure_gain([torch.zeros(3, 2, dtype=F64)])  # 3 groups, scale 2
    with pytest.raises(ValueError, match="Invalid scale: 0"):
        AdaScaleSGD([w], scale=0)
