"""DGS (SPEC §1.2) against hand-computed steps, torch's SGD, and itself across its paths."""

from __future__ import annotations

import copy

import pytest
import torch

from dgs_core import metrics
from dgs_core.diagnostics.summaries import tensor_summaries
from dgs_core.optim._compile import compile_stats
from dgs_core.optim.dgs import DGS, HYPERPARAMS, _dgs_update

F64 = torch.float64
SHAPES = [(4,), (3, 5), (2, 3, 4)]


def _tensors(shapes=SHAPES, seed: int = 0, dtype=F64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grad_seq) -> None:
    for grads in grad_seq:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()


def _grad_seq(steps: int, shapes=SHAPES, seed: int = 1, dtype=F64) -> list[list[torch.Tensor]]:
    return [_tensors(shapes, seed=seed + k, dtype=dtype) for k in range(steps)]


def _leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.clone().requires_grad_() for t in tensors]


class _Reference:
    """SPEC §1.2 written out literally (Î, r and s as separate tensors), one tensor."""

    def __init__(self, **hparams) -> None:
        self.hp = {**HYPERPARAMS.defaults(), **hparams}
        self.t, self.importance, self.v, self.s = 0, None, None, None

    def step(self, theta: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        h = self.hp
        g = g + h["weight_decay"] * theta
        a = (g * theta).abs() if h["importance"] == "taylor" else g.abs()
        self.t += 1
        previous = torch.zeros_like(theta) if self.importance is None else self.importance
        self.importance = h["beta"] * previous + (1 - h["beta"]) * a
        i_hat = self.importance / (1 - h["beta"] ** self.t)
        r = i_hat / (i_hat.mean() + h["eps"])
        self.s = ((r + h["eps"]) ** (-h["gamma"])).clamp(h["s_min"], h["s_max"])
        previous_v = torch.zeros_like(theta) if self.v is None else self.v
        self.v = h["momentum"] * previous_v + self.s * g
        return theta - h["lr"] * self.v


def test_first_step_by_hand() -> None:
    # |g| = (2, 4): Î = |g| after bias correction, mean 3, r = (2/3, 4/3), s = 1/r = (1.5, 0.75);
    # v = s ⊙ g = (3, −3); θ − 0.1 v = (0.7, −1.7). (ε = 1e-15 keeps these exact to 1e-14.)
    w = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    opt = DGS([w], lr=0.1, eps=1e-15)
    w.grad = torch.tensor([2.0, -4.0], dtype=F64)
    opt.step()
    state = opt.state[w]
    torch.testing.assert_close(state["importance"], torch.tensor([0.2, 0.4], dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(state["scale"], torch.tensor([1.5, 0.75], dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        state["momentum_buffer"], torch.tensor([3.0, -3.0], dtype=F64), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(w.detach(), torch.tensor([0.7, -1.7], dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(opt.adaptive_lr(w), torch.tensor([0.15, 0.075], dtype=F64), rtol=1e-12, atol=0)


def test_second_step_by_hand() -> None:
    # step 2 with g = (1, 1): I = 0.9·(0.2, 0.4) + 0.1·(1, 1) = (0.28, 0.46), Î = I/0.19,
    # r = I/mean(I) = (0.28, 0.46)/0.37, s = 1/r = (37/28, 37/46), v = 0.9·(3, −3) + s.
    w = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    opt = DGS([w], lr=0.1, eps=1e-15)
    w.grad = torch.tensor([2.0, -4.0], dtype=F64)
    opt.step()
    w.grad = torch.tensor([1.0, 1.0], dtype=F64)
    opt.step()
    s = torch.tensor([37 / 28, 37 / 46], dtype=F64)
    v = torch.tensor([2.7, -2.7], dtype=F64) + s
    torch.testing.assert_close(opt.state[w]["scale"], s, rtol=1e-12, atol=0)
    torch.testing.assert_close(w.detach(), torch.tensor([0.7, -1.7], dtype=F64) - 0.1 * v, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "hparams",
    [
        {},
        {"importance": "taylor"},
        {"weight_decay": 0.05},
        {"gamma": 0.5, "beta": 0.5, "momentum": 0.0},
        {"importance": "taylor", "weight_decay": 0.1, "gamma": 2.0, "s_min": 0.5, "s_max": 2.0},
    ],
)
def test_matches_literal_spec_over_several_steps(hparams: dict) -> None:
    params = _tensors()
    grad_seq = _grad_seq(6)
    leaves = _leaves(params)
    opt = DGS(leaves, lr=0.05, **hparams)
    refs = [_Reference(lr=0.05, **hparams) for _ in params]
    thetas = [p.clone() for p in params]
    for grads in grad_seq:
        for p, g in zip(leaves, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        thetas = [ref.step(theta, g) for ref, theta, g in zip(refs, thetas, grads, strict=True)]
        for p, theta, ref in zip(leaves, thetas, refs, strict=True):
            torch.testing.assert_close(p.detach(), theta, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(opt.state[p]["scale"], ref.s, rtol=1e-12, atol=0)


def test_scale_clips_at_s_min_and_s_max() -> None:
    # One large and many tiny gradients: r ≫ 1 for the large one (s = s_min), r ≈ 0 elsewhere
    # (s = s_max); with γ = 1 the unclipped values would be 1/r.
    w = torch.zeros(10, dtype=F64, requires_grad=True)
    opt = DGS([w], s_min=0.2, s_max=5.0)
    w.grad = torch.tensor([100.0] + [1e-6] * 9, dtype=F64)
    opt.step()
    expected = torch.tensor([0.2] + [5.0] * 9, dtype=F64)
    torch.testing.assert_close(opt.state[w]["scale"], expected, rtol=0, atol=0)
    summaries = tensor_summaries(opt, w)
    assert summaries["t"] == 1.0 and float(summaries["clipped"]) == 1.0


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_gamma_zero_is_sgd_with_momentum(weight_decay: float) -> None:
    params, grad_seq = _tensors(), _grad_seq(10)
    ours, theirs = _leaves(params), _leaves(params)
    _run(DGS(ours, lr=0.05, gamma=0.0, weight_decay=weight_decay), ours, grad_seq)
    _run(torch.optim.SGD(theirs, lr=0.05, momentum=0.9, weight_decay=weight_decay), theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def _stepped(**hparams) -> tuple[DGS, list[torch.Tensor]]:
    leaves = _leaves(_tensors())
    opt = DGS(leaves, lr=0.05, **hparams)
    _run(opt, leaves, _grad_seq(3))
    return opt, leaves


def test_soft_reset_scales_importance_and_momentum_and_keeps_t() -> None:
    opt, leaves = _stepped(rho=0.25)
    before = {p: copy.deepcopy(opt.state[p]) for p in leaves}
    opt.reset("soft")
    for p in leaves:
        torch.testing.assert_close(opt.state[p]["importance"], 0.25 * before[p]["importance"], rtol=0, atol=0)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.25 * before[p]["momentum_buffer"])
        assert opt.state[p]["step"] == 3


def test_hard_reset_makes_the_next_step_a_first_step() -> None:
    opt, leaves = _stepped()
    opt.reset("hard")
    for p in leaves:
        assert opt.state[p]["step"] == 0
        assert not opt.state[p]["importance"].any() and not opt.state[p]["momentum_buffer"].any()
    fresh_leaves = _leaves([p.detach() for p in leaves])
    grads = _grad_seq(1, seed=50)
    _run(opt, leaves, grads)
    _run(DGS(fresh_leaves, lr=0.05), fresh_leaves, grads)
    for a, b in zip(leaves, fresh_leaves, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reset_mode_none_uses_each_groups_mode() -> None:
    opt, leaves = _stepped(reset_mode="hard")
    opt.reset()
    assert all(opt.state[p]["step"] == 0 for p in leaves)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_reset_every_n_steps_equals_manual_resets(mode: str) -> None:
    params, grad_seq = _tensors(), _grad_seq(10)
    auto, manual = _leaves(params), _leaves(params)
    opt_auto = DGS(auto, lr=0.05, reset="every", reset_every=3, reset_mode=mode)
    opt_manual = DGS(manual, lr=0.05, reset_mode=mode)
    steps_seen = []
    for k, grads in enumerate(grad_seq, start=1):
        _run(opt_auto, auto, [grads])
        _run(opt_manual, manual, [grads])
        steps_seen.append(opt_auto.state[auto[0]]["step"])
        if k % 3 == 0:
            opt_manual.reset(mode)  # the trigger fires before the step after every 3rd step
    for a, b in zip(auto, manual, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    expected = [1, 2, 3] * 3 + [1] if mode == "hard" else list(range(1, 11))
    assert steps_seen == expected


def test_spike_reset_fires_once_per_run_of_spikes() -> None:
    w = torch.ones(3, dtype=F64, requires_grad=True)
    opt = DGS([w], reset="spike", reset_mode="hard", spike_window=3, spike_threshold=0.5)
    w.grad = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    # median of the previous ≤3 losses: a spike is L > 1.5 × median
    losses = [1.0, 1.0, 1.4, 1.0, 2.0, 5.0, 1.0, 1.0, 1.0, 3.0]
    fired = []
    for loss in losses:
        fired.append(opt.observe_loss(loss))
        opt.step()
    assert fired == [False, False, False, False, True, False, False, False, False, True]
    assert opt.state[w]["step"] == 1  # hard reset just before the last step


def test_spike_resets_agree_with_the_spike_metric() -> None:
    # one reset per run of spikes, as dgs_core.metrics counts them; a non-finite loss is no spike
    g = torch.Generator().manual_seed(3)
    losses = (1 + torch.rand(200, generator=g, dtype=F64) * (torch.rand(200, generator=g) < 0.1) * 5).tolist()
    losses[50] = float("inf")
    w = torch.ones(2, dtype=F64, requires_grad=True)
    opt = DGS([w], reset="spike", spike_window=5, spike_threshold=0.5)
    resets = 0
    for loss in losses:
        resets += opt.observe_loss(loss)
        _run(opt, [w], [[torch.ones(2, dtype=F64)]])
    assert resets == metrics.count_spikes(losses, window=5, tau=0.5) > 3


def test_step_with_closure_observes_the_loss() -> None:
    losses, grad_seq = [1.0, 1.0, 10.0, 1.0], _grad_seq(4, [(3,)])
    runs = {}
    for how in ("closure", "observe_loss", "never"):
        w = torch.ones(3, dtype=F64, requires_grad=True)
        opt = DGS([w], reset="never" if how == "never" else "spike", spike_window=2)
        for loss, (g,) in zip(losses, grad_seq, strict=True):
            if how == "closure":

                def closure(w=w, g=g, loss=loss) -> torch.Tensor:
                    w.grad = g.clone()
                    return torch.tensor(loss)

                opt.step(closure)
            else:
                opt.observe_loss(loss)
                _run(opt, [w], [[g]])
        runs[how] = (w.detach(), opt._loss_history)
    assert torch.equal(runs["closure"][0], runs["observe_loss"][0])
    assert runs["closure"][1] == runs["observe_loss"][1] == [1.0, 10.0, 1.0]  # W + 1 kept
    assert not torch.equal(runs["closure"][0], runs["never"][0])  # the spike at 10 reset the state


def test_adaptive_lr_and_summaries_before_the_first_step() -> None:
    w = torch.ones(2, dtype=F64, requires_grad=True)
    opt = DGS([w], lr=0.3)
    torch.testing.assert_close(opt.adaptive_lr(w), torch.full((2,), 0.3, dtype=F64))
    assert tensor_summaries(opt, w) == {}
    with pytest.raises(ValueError, match="Invalid param"):
        opt.adaptive_lr(torch.ones(2))


@pytest.mark.parametrize(
    "hparams",
    [{}, {"importance": "taylor", "weight_decay": 0.1, "gamma": 0.7}, {"independent_rows": True}],
)
def test_foreach_path_equals_per_tensor_path(hparams: dict) -> None:
    params, grad_seq = _tensors(), _grad_seq(5)
    results = []
    for foreach in (False, True):
        leaves = _leaves(params)
        hp = dict(hparams)
        rows = hp.pop("independent_rows", False)  # a parameter-group key (registry.create sets it)
        opt = DGS([{"params": leaves, "independent_rows": rows}], lr=0.05, foreach=foreach, **hp)
        _run(opt, leaves, grad_seq)
        results.append([(p.detach(), opt.state[p]["scale"]) for p in leaves])
    for (p0, s0), (p1, s1) in zip(*results, strict=True):
        torch.testing.assert_close(p0, p1, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(s0, s1, rtol=1e-14, atol=0)


def test_update_function_runs_alone() -> None:
    # _dgs_update is the math without the class: the first step by hand (test above).
    p, g = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([2.0, -4.0], dtype=F64)
    imp, buf, s = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), torch.empty(2, dtype=F64)
    _dgs_update(
        [p],
        [g],
        [imp],
        [buf],
        [s],
        [0.1],
        lr=0.1,
        beta=0.9,
        gamma=1.0,
        s_min=0.1,
        s_max=10.0,
        momentum=0.9,
        weight_decay=0.0,
        eps=1e-15,
        importance="grad",
    )
    torch.testing.assert_close(p, torch.tensor([0.7, -1.7], dtype=F64), rtol=1e-12, atol=0)


@pytest.mark.slow
def test_fused_path_equals_eager_path() -> None:
    # float32 like a real run; the lr follows a schedule: after the first two steps nothing recompiles
    params, grad_seq = _tensors(dtype=torch.float32), _grad_seq(6, dtype=torch.float32)
    results = []
    for fused in (False, True):
        leaves = _leaves(params)
        opt = DGS(leaves, lr=0.05, importance="taylor", fused=fused)
        for k, grads in enumerate(grad_seq):
            opt.param_groups[0]["lr"] = 0.05 / (k + 1)
            _run(opt, leaves, [grads])
            if k == 1:
                compiles = compile_stats().get("_dgs_single", {}).get("compiles")
        results.append(leaves)
    assert compile_stats()["_dgs_single"]["compiles"] == compiles
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("importance", ["grad", "taylor"])
def test_independent_rows_equal_separate_optimizers(importance: str) -> None:
    n = 4
    weights, biases = _tensors([(n, 3), (n, 2)])
    grad_seq = _grad_seq(5, [(n, 3), (n, 2)])
    batched = _leaves([weights, biases])
    opt = DGS([{"params": batched, "independent_rows": True}], lr=0.05, importance=importance)
    _run(opt, batched, grad_seq)
    for i in range(n):
        row = _leaves([weights[i], biases[i]])
        _run(DGS(row, lr=0.05, importance=importance), row, [[g[i] for g in grads] for grads in grad_seq])
        for a, b in zip(row, batched, strict=True):
            torch.testing.assert_close(a, b[i], rtol=1e-13, atol=1e-15)


def test_state_dict_round_trip_resumes_identically() -> None:
    params, grad_seq = _tensors(), _grad_seq(8)
    losses = [1.0, 1.0, 1.0, 4.0, 1.0, 1.0, 5.0, 1.0]
    leaves = _leaves(params)
    opt = DGS(leaves, lr=0.05, reset="spike", spike_window=2)

    def run(opt: DGS, leaves: list[torch.Tensor], span: range) -> None:
        for k in span:
            opt.observe_loss(losses[k])
            _run(opt, leaves, [grad_seq[k]])

    run(opt, leaves, range(4))
    saved = copy.deepcopy(opt.state_dict())
    checkpoint = [p.detach().clone() for p in leaves]
    run(opt, leaves, range(4, 8))
    resumed = _leaves(checkpoint)
    opt2 = DGS(resumed, lr=0.05, reset="spike", spike_window=2)
    opt2.load_state_dict(saved)
    run(opt2, resumed, range(4, 8))
    for a, b in zip(leaves, resumed, strict=True):
        assert torch.equal(a, b)
    assert opt2._loss_history == opt._loss_history


def _bad(spec) -> object:
    if spec.kind == "bool":
        return "yes"
    if spec.kind == "choice":
        return "nope"
    return spec.low - 1.0


@pytest.mark.parametrize("spec", HYPERPARAMS, ids=lambda s: s.name)
def test_bad_hyperparameter_raises_naming_it(spec) -> None:
    with pytest.raises(ValueError, match=f"Invalid {spec.name}: "):
        DGS([torch.zeros(2, requires_grad=True)], **{spec.name: _bad(spec)})


@pytest.mark.parametrize(
    ("switches", "name"),
    [
        ({"foreach": "yes"}, "foreach"),
        ({"fused": 1}, "fused"),
        ({"foreach": True, "fused": True}, "fused"),
    ],
)
def test_bad_switches_raise_naming_them(switches: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {name}: "):
        DGS([torch.zeros(2, requires_grad=True)], **switches)


def test_bad_independent_rows_group_key_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="Invalid independent_rows: None"):
        DGS([{"params": [torch.zeros(2, requires_grad=True)], "independent_rows": None}])


@pytest.mark.parametrize(
    ("key", "value"), [("lr", -1.0), ("beta", 1.0), ("importance", "hessian"), ("fused", 2)]
)
def test_group_value_rewritten_invalid_raises_at_step(key: str, value: object) -> None:
    w = torch.zeros(2, requires_grad=True)
    opt = DGS([w])
    opt.param_groups[0][key] = value
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=f"Invalid {key}: "):
        opt.step()


def test_bad_reset_mode_raises() -> None:
    opt = DGS([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="Invalid mode: 'medium'"):
        opt.reset("medium")


def test_single_element_tensors_step_as_sgd_with_momentum() -> None:
    # r_t = Î/(Î + ε) = 1 for a tensor of one element, so s_t = 1 up to ε (the class docstring)
    params, grad_seq = _tensors([(), (1,)]), _grad_seq(6, [(), (1,)])
    ours, theirs = _leaves(params), _leaves(params)
    opt = DGS(ours, lr=0.05, gamma=2.0)
    _run(opt, ours, grad_seq)
    _run(torch.optim.SGD(theirs, lr=0.05, momentum=0.9), theirs, grad_seq)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=0)
    assert all(float(opt.state[p]["scale"].reshape(-1)[0]) == pytest.approx(1.0, abs=1e-10) for p in ours)
