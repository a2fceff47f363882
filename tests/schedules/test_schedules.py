"""Schedules against closed forms written independently here and against torch's schedulers."""

from __future__ import annotations

import copy
import inspect
import json
import math
import pickle
import random

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

from dgs_core import schedules
from dgs_core.schedules import (
    SCHEDULES,
    PlateauAnnealer,
    ScheduleSpec,
    build,
    chain,
    lambda_lr,
    make_schedule,
    sample,
)

REL = 1e-12


def close(actual, expected, rel=REL, abs=1e-15):
    assert len(actual) == len(expected)
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, dtype=float), rtol=rel, atol=abs)


def torch_lrs(make, steps, lr):
    """The lr torch's scheduler gives each of ``steps`` steps (read before stepping)."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr)
    sched = make(opt)
    out = [float(opt.param_groups[0]["lr"])]
    while len(out) < steps:
        opt.step()
        sched.step()
        out.append(float(opt.param_groups[0]["lr"]))
    return out


# --- closed forms, written here from the definitions ------------------------------------------


def test_constant():
    assert sample(make_schedule("constant", base_lr=0.3), 5) == [0.3] * 5


def test_step_decay_closed_form_and_torch():
    f = make_schedule("step_decay", base_lr=0.1, step_size=3, gamma=0.5)
    expected = [0.1] * 3 + [0.05] * 3 + [0.025] * 3 + [0.0125]
    close(sample(f, 10), expected)
    ref = torch_lrs(lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 50, 0.1)
    close(sample(f, 50), ref)


def test_multistep_closed_form_and_torch():
    f = make_schedule("multistep", base_lr=1.0, milestones=[2, 5, 6], gamma=0.1)
    close(sample(f, 8), [1, 1, 0.1, 0.1, 0.1, 0.01, 0.001, 0.001])
    ref = torch_lrs(lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 5, 6], gamma=0.1), 8, 1.0)
    close(sample(f, 8), ref)


def test_exponential_closed_form_and_torch():
    f = make_schedule("exponential", base_lr=0.2, gamma=0.9)
    expected, lr = [], 0.2
    for _ in range(40):
        expected.append(lr)
        lr *= 0.9
    close(sample(f, 40), expected)
    close(sample(f, 40), torch_lrs(lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9), 40, 0.2))


def test_linear_closed_form_and_torch():
    f = make_schedule("linear", base_lr=0.1, total_steps=10, start_factor=0.25, end_factor=1.0)
    expected = [0.1 * np.interp(t, [0, 10], [0.25, 1.0]) for t in range(15)]
    close(sample(f, 15), expected)
    ref = torch_lrs(
        lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=10), 15, 0.1
    )
    close(sample(f, 15), ref, rel=1e-10)
    decay = make_schedule("linear", base_lr=0.1, total_steps=4)  # defaults: 1 -> 0
    close(sample(decay, 6), [0.1, 0.075, 0.05, 0.025, 0.0, 0.0])


def test_cosine_closed_form_and_torch():
    base, low, T = 0.1, 0.01, 20
    f = make_schedule("cosine", base_lr=base, total_steps=T, min_lr=low)
    t = np.arange(T + 1)
    expected = low + (base - low) * (1 + np.cos(np.pi * t / T)) / 2
    close(sample(f, T + 1), expected)
    assert f(T // 2) == pytest.approx((base + low) / 2, rel=1e-15)
    assert f(T) == pytest.approx(low) and f(T + 7) == low  # holds min_lr after T
    ref = torch_lrs(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=T, eta_min=low), T + 1, base)
    close(sample(f, T + 1), ref, rel=1e-10)


def test_warmup_cosine_closed_form():
    base, W, T, low = 0.4, 4, 12, 0.04
    f = make_schedule("warmup_cosine", base_lr=base, warmup_steps=W, total_steps=T, min_lr=low)
    expected = [base * t / W for t in range(W)]
    expected += [low + (base - low) * 0.5 * (1 + math.cos(math.pi * k / (T - W))) for k in range(T - W)]
    expected += [low] * 3
    close(sample(f, T + 3), expected)
    assert f(W) == base
    no_warmup = make_schedule("warmup_cosine", base_lr=base, warmup_steps=0, total_steps=T, min_lr=low)
    close(sample(no_warmup, T), sample(make_schedule("cosine", base_lr=base, total_steps=T, min_lr=low), T))
    all_warmup = make_schedule("warmup_cosine", base_lr=base, warmup_steps=T, total_steps=T, min_lr=low)
    assert all_warmup(T - 1) == pytest.approx(base * (T - 1) / T) and all_warmup(T) == low


@pytest.mark.parametrize(("first", "mult"), [(5, 1), (3, 2), (2, 3)])
def test_cosine_restarts_closed_form_and_torch(first, mult):
    base, low, n = 0.1, 0.001, 60
    f = make_schedule("cosine_restarts", base_lr=base, first_cycle=first, cycle_mult=mult, min_lr=low)
    expected, length = [], first
    while len(expected) < n:  # one cosine per cycle, cycles growing by `mult`
        expected += [low + (base - low) * (1 + math.cos(math.pi * k / length)) / 2 for k in range(length)]
        length *= mult
    close(sample(f, n), expected[:n])
    ref = torch_lrs(
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=first, T_mult=mult, eta_min=low), n, base
    )
    close(sample(f, n), ref)
    # far out: cycle k starts at T0 (m^k - 1)/(m - 1) (T0 k when m = 1) and restarts at base_lr
    k = 15
    restart = first * k if mult == 1 else first * (mult**k - 1) // (mult - 1)
    assert f(restart) == base
    assert f(restart - 1) == pytest.approx(expected[first - 1] if mult == 1 else low, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize(
    ("total", "pct", "div", "final_div"),
    [
        (100, 0.3, 25.0, 1e4),
        (37, 0.25, 10.0, 100.0),
        (10, 0.5, 4.0, 2.0),
        (50, 0.05, 25.0, 1e4),
        (8, 1.0, 5.0, 10.0),
    ],
)
def test_one_cycle_matches_torch(total, pct, div, final_div):
    peak = 0.5
    f = make_schedule(
        "one_cycle",
        base_lr=peak,
        total_steps=total,
        pct_start=pct,
        div_factor=div,
        final_div_factor=final_div,
    )
    ref = torch_lrs(
        lambda o: lr_scheduler.OneCycleLR(
            o,
            max_lr=peak,
            total_steps=total,
            pct_start=pct,
            div_factor=div,
            final_div_factor=final_div,
            anneal_strategy="cos",
            three_phase=False,
            cycle_momentum=False,
        ),
        total,
        0.123,  # torch ignores the optimizer's lr
    )
    close(sample(f, total), ref)
    assert f(total + 5) == f(total - 1)  # holds its last value where torch would raise


def test_one_cycle_closed_form():
    peak, T, p, d, fd = 1.0, 11, 0.5, 10.0, 100.0
    f = make_schedule(
        "one_cycle", base_lr=peak, total_steps=T, pct_start=p, div_factor=d, final_div_factor=fd
    )
    e = p * T - 1  # 4.5: the rise ends between steps 4 and 5
    start, end = peak / d, peak / d / fd

    def cos_anneal(a, b, x):
        return b + (a - b) * (1 + math.cos(math.pi * x)) / 2

    expected = [
        cos_anneal(start, peak, t / e) if t <= e else cos_anneal(peak, end, (t - e) / (T - 1 - e))
        for t in range(T)
    ]
    close(sample(f, T), expected)
    assert f(0) == pytest.approx(start) and f(T - 1) == pytest.approx(end)
    single = make_schedule("one_cycle", base_lr=peak, total_steps=10, pct_start=0.1)  # torch: 0/0 at step 0
    assert single(0) == peak


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_closed_form_and_torch(power):
    f = make_schedule("polynomial", base_lr=0.2, total_steps=16, power=power)
    expected = [0.2 * (1 - min(t, 16) / 16) ** power for t in range(20)]
    close(sample(f, 20), expected)
    ref = torch_lrs(lambda o: lr_scheduler.PolynomialLR(o, total_iters=16, power=power), 20, 0.2)
    close(sample(f, 20), ref, rel=1e-10)


def test_polynomial_is_lars_schedule_and_reaches_end_lr():
    f = make_schedule("polynomial", base_lr=2.0, total_steps=10)  # defaults: power 2, to zero
    assert [f(t) for t in (0, 5, 10, 11)] == pytest.approx([2.0, 2.0 * 0.25, 0.0, 0.0])
    g = make_schedule("polynomial", base_lr=1.0, total_steps=4, power=1.0, end_lr=0.2)
    close(sample(g, 6), [1.0, 0.8, 0.6, 0.4, 0.2, 0.2])


def test_warmup_closed_form():
    f = make_schedule("warmup", base_lr=0.1, warmup_steps=4)
    close(sample(f, 7), [0.0, 0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    g = make_schedule("warmup", base_lr=0.1, warmup_steps=4, start_lr=0.02)
    close(sample(g, 5), [0.02, 0.04, 0.06, 0.08, 0.1])


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_closed_form(shape):
    base, low, W, stable, D = 1.0, 0.1, 2, 3, 4
    f = make_schedule(
        "wsd", base_lr=base, warmup_steps=W, stable_steps=stable, decay_steps=D, decay_shape=shape, min_lr=low
    )
    cooldown = {
        "linear": lambda p: 1 - p,
        "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
        "1-sqrt": lambda p: 1 - math.sqrt(p),
    }[shape]
    expected = (
        [0.0, 0.5] + [base] * stable + [low + (base - low) * cooldown(k / D) for k in range(D)] + [low] * 2
    )
    close(sample(f, W + stable + D + 2), expected)


def test_wsd_zero_length_pieces():
    f = make_schedule("wsd", base_lr=1.0, warmup_steps=0, stable_steps=0, decay_steps=0, min_lr=0.25)
    assert sample(f, 3) == [0.25, 0.25, 0.25]
    g = make_schedule("wsd", base_lr=1.0, warmup_steps=0, stable_steps=2, decay_steps=2)
    close(sample(g, 5), [1.0, 1.0, 1.0, 0.5, 0.0])


# --- the table ----------------------------------------------------------------------------------


def test_table_covers_spec_and_matches_signatures():
    required = {
        "constant",
        "step_decay",
        "multistep",
        "exponential",
        "linear",
        "cosine",
        "warmup_cosine",
        "cosine_restarts",
        "one_cycle",
        "polynomial",
        "warmup",
        "wsd",
    }
    assert required <= set(SCHEDULES)
    for name, info in SCHEDULES.items():
        assert info.name == name and info.label and info.formula and info.description
        assert info.hyperparams[0].name == "base_lr"
        signature = inspect.signature(info.fn)
        keyword = [p.name for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert sorted(keyword) == sorted(h.name for h in info.hyperparams), name
        for spec in info.hyperparams:  # every default is valid and the defaults build
            assert spec.validate(spec.default) == spec.default
        assert math.isfinite(make_schedule(name)(0))
    assert schedules.names() == list(SCHEDULES)


def test_make_schedule_uses_defaults_and_returns_floats():
    f = make_schedule("step_decay")
    assert f.spec.params == SCHEDULES["step_decay"].defaults
    assert isinstance(make_schedule("constant", base_lr=1)(0), float)
    assert make_schedule("multistep", milestones=(3, 4)).spec.params["milestones"] == (3, 4)
    assert make_schedule("cosine", base_lr=np.float64(0.1), total_steps=10.0)(np.int64(10)) == 0.0


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("cosine", {"base_lr": 0.1, "min_lr": 0.5}, "Invalid min_lr: 0.5 (must be <= base_lr=0.1)"),
        (
            "warmup_cosine",
            {"warmup_steps": 200, "total_steps": 100},
            "Invalid warmup_steps: 200 (must be <= total_steps=100)",
        ),
        ("cosine", {"total_steps": -5}, "Invalid total_steps: -5 (must be an integer in [1, 1e+09])"),
        (
            "warmup_cosine",
            {"warmup_steps": -1},
            "Invalid warmup_steps: -1 (must be an integer in [0, 1e+09])",
        ),
        ("cosine", {"total_steps": 0}, "Invalid total_steps: 0"),
        ("cosine", {"total_steps": 2.5}, "Invalid total_steps: 2.5"),
        ("cosine", {"base_lr": -0.1}, "Invalid base_lr: -0.1"),
        ("cosine", {"base_lr": float("nan")}, "Invalid base_lr: nan"),
        (
            "cosine",
            {"steps": 10},
            "Invalid parameter for cosine: 'steps' (must be one of base_lr, total_steps, min_lr)",
        ),
        ("cosinus", {}, "Invalid schedule: 'cosinus' (must be one of constant, step_decay"),
        (
            "multistep",
            {"milestones": [5, 3]},
            "Invalid milestones: [5, 3] (must be a strictly increasing list",
        ),
        ("multistep", {"milestones": [0, 3]}, "Invalid milestones: [0, 3]"),
        ("multistep", {"milestones": "30,60"}, "Invalid milestones: '30,60'"),
        ("exponential", {"gamma": 0.0}, "Invalid gamma: 0.0 (must be in (0, 1])"),
        ("step_decay", {"step_size": 0}, "Invalid step_size: 0"),
        ("cosine_restarts", {"cycle_mult": 1.5}, "Invalid cycle_mult: 1.5"),
        ("one_cycle", {"pct_start": 1.2}, "Invalid pct_start: 1.2 (must be in [0, 1])"),
        ("polynomial", {"base_lr": 0.1, "end_lr": 0.2}, "Invalid end_lr: 0.2 (must be <= base_lr=0.1)"),
        ("polynomial", {"power": 0.0}, "Invalid power: 0.0"),
        ("warmup", {"base_lr": 0.1, "start_lr": 1.0}, "Invalid start_lr: 1.0 (must be <= base_lr=0.1)"),
        (
            "wsd",
            {"decay_shape": "sqrt"},
            "Invalid decay_shape: 'sqrt' (must be one of 'linear', 'cosine', '1-sqrt')",
        ),
        ("wsd", {"base_lr": 0.01, "min_lr": 0.1}, "Invalid min_lr: 0.1 (must be <= base_lr=0.01)"),
        ("linear", {"end_factor": 2.0}, "Invalid end_factor: 2.0 (must be in [0, 1])"),
    ],
)
def test_invalid_parameters_are_named(name, params, message):
    with pytest.raises(ValueError) as err:
        make_schedule(name, **params)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("step", [-1, 1.5, "3", None, True])
def test_invalid_step_is_named(step):
    f = make_schedule("cosine")
    with pytest.raises(ValueError, match=r"Invalid step: .* \(must be an integer >= 0\)"):
        f(step)


# --- chain ------------------------------------------------------------------------------------


def test_chain_pieces_see_local_steps():
    warm = make_schedule("warmup", base_lr=0.1, warmup_steps=4)
    flat = make_schedule("constant", base_lr=0.1)
    decay = make_schedule("step_decay", base_lr=0.1, step_size=2, gamma=0.5)
    f = chain([(4, warm), (3, flat), (6, decay)])
    expected = [0.0, 0.025, 0.05, 0.075] + [0.1] * 3 + [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    close(sample(f, 13), expected)
    assert f.boundaries == (4, 7) and f.total_steps == 13
    assert f(13) == decay(6) and f(100) == decay(93)  # the last piece keeps going


def test_chain_accepts_plain_callables_but_then_has_no_spec():
    f = chain([(2, lambda t: 1.0 + t), (2, lambda t: 10.0 * t)])
    assert sample(f, 4) == [1.0, 2.0, 0.0, 10.0]
    with pytest.raises(ValueError, match=r"Invalid schedule of segment 0: .*has no ScheduleSpec"):
        _ = f.spec


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([], "Invalid segments: [] (must be a non-empty list)"),
        ([(0, schedules.constant)], "Invalid num_steps of segment 0: 0 (must be an integer >= 1)"),
        ([(3, schedules.constant), (-2, schedules.constant)], "Invalid num_steps of segment 1: -2"),
        ([(2.0, schedules.constant)], "Invalid num_steps of segment 0: 2.0"),
        ([(2, 0.1)], "Invalid schedule of segment 0: 0.1 (must be callable)"),
        ([(2,)], "Invalid segment 0: (2,)"),
    ],
)
def test_chain_validation(segments, message):
    with pytest.raises(ValueError) as err:
        chain(segments)
    assert str(err.value).startswith(message)


# --- spec round trip --------------------------------------------------------------------------


def _composer_spec():
    return ScheduleSpec.chain(
        [
            (10, ScheduleSpec("warmup", {"base_lr": 0.1, "warmup_steps": 10})),
            (20, ScheduleSpec("constant", {"base_lr": 0.1})),
            (30, ScheduleSpec("multistep", {"base_lr": 0.1, "milestones": [10, 20]})),
            (
                40,
                ScheduleSpec.chain(
                    [
                        (5, ScheduleSpec("constant", {"base_lr": 1e-3})),
                        (5, ScheduleSpec("cosine", {"total_steps": 5})),
                    ]
                ),
            ),
        ]
    )


def test_spec_round_trip_through_json():
    spec = _composer_spec()
    data = json.loads(json.dumps(spec.to_dict()))
    again = ScheduleSpec.from_dict(data)
    assert again == spec and again.to_dict() == data
    assert sample(build(again), 110) == sample(build(spec), 110)
    assert data["segments"][2]["schedule"]["params"]["milestones"] == [10, 20]  # plain lists in JSON
    assert build(spec).spec == spec  # a chain of built schedules gives its spec back
    assert spec.total_steps == 100


def test_spec_fills_defaults_and_builds_like_make_schedule():
    spec = ScheduleSpec("wsd", {"base_lr": 0.3})
    assert dict(spec.params) == {**SCHEDULES["wsd"].defaults, "base_lr": 0.3}
    assert sample(build(spec), 1100) == sample(make_schedule("wsd", base_lr=0.3), 1100)
    assert make_schedule("wsd", base_lr=0.3).spec == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "cosine", "params": {"min_lr": 1.0}}, "Invalid min_lr: 1.0 (must be <= base_lr=0.1)"),
        ({"name": "cosine", "params": {}, "extra": 1}, "Invalid schedule spec key: 'extra'"),
        ({"params": {}}, "Invalid schedule spec:"),
        ({"name": "cosine", "params": [1]}, "Invalid params for 'cosine': [1]"),
        ({"name": "chain", "segments": []}, "Invalid segments: [] (must be a non-empty list)"),
        ({"name": "chain", "segments": [{"steps": 3}]}, "Invalid segment 0:"),
        (
            {"name": "chain", "segments": [{"steps": 0, "schedule": {"name": "constant"}}]},
            "Invalid num_steps of segment 0: 0",
        ),
        ({"name": "chain", "params": {}}, "Invalid schedule spec key: 'params'"),
        ("cosine", "Invalid schedule spec: 'cosine' (must be a mapping)"),
    ],
)
def test_spec_from_dict_refuses_invalid(data, message):
    with pytest.raises(ValueError) as err:
        ScheduleSpec.from_dict(data)
    assert str(err.value).startswith(message)


def test_spec_pickles_and_hashes():
    spec = _composer_spec()
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and hash(again) == hash(spec) and copy.deepcopy(spec) == spec
    assert sample(pickle.loads(pickle.dumps(build(spec))), 110) == sample(build(spec), 110)


def test_spec_is_immutable():
    spec = ScheduleSpec("cosine")
    with pytest.raises(TypeError):
        # the test writes to the read-only params on purpose
        spec.params["base_lr"] = 1.0  # type: ignore[index]  # (reason above)


# --- LambdaLR adapter -------------------------------------------------------------------------


SHORT = {
    "total_steps": 40,
    "warmup_steps": 10,
    "stable_steps": 10,
    "decay_steps": 10,
    "first_cycle": 7,
    "cycle_mult": 2,
    "step_size": 5,
    "milestones": (5, 20),
    "gamma": 0.7,
}


def short_schedule(name):
    """``name`` with its step counts shrunk so that 50 steps show its whole shape."""
    return make_schedule(name, **{k: v for k, v in SHORT.items() if k in SCHEDULES[name].defaults})


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lambda_lr_writes_exactly_the_schedule(name):
    schedule = short_schedule(name)
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    opt = torch.optim.SGD([{"params": params[:1], "lr": 0.5}, {"params": params[1:], "lr": 0.0}])
    sched = lambda_lr(opt, schedule)
    seen = []
    for _ in range(50):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    expected = sample(schedule, 50)
    assert seen == [[lr, lr] for lr in expected]  # exactly, in every group, lr=0 group included


def test_lambda_lr_state_dict_resumes():
    schedule = make_schedule("cosine", base_lr=0.1, total_steps=20)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = lambda_lr(opt, schedule)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched2 = lambda_lr(opt2, schedule)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == schedule(8)


# --- plateau annealer -------------------------------------------------------------------------


def _metric_sequences():
    rng = random.Random(0)
    noisy = [1.0 / (1 + 0.05 * t) + 0.02 * rng.random() for t in range(120)]
    flat = [1.0] * 60
    bumpy = [1.0, 0.9, 0.95, 0.95, 0.89999, 0.9, 0.8, 0.8, 0.8, 0.81, 0.7] * 8
    rising = [0.1 * t - 0.002 * t * t for t in range(80)]  # for max mode: rises, then falls
    negative = [-1.0 - 0.001 * (t % 7) for t in range(60)]
    with_nan = [1.0, 0.9, math.nan, 0.9, math.nan, math.nan, 0.5, math.nan] * 6
    return {
        "noisy": noisy,
        "flat": flat,
        "bumpy": bumpy,
        "rising": rising,
        "negative": negative,
        "nan": with_nan,
    }


PLATEAU_CASES = [
    {},
    {"patience": 0},
    {"patience": 2, "cooldown": 3, "factor": 0.7},
    {"patience": 1, "threshold": 0.05, "threshold_mode": "abs"},
    {"patience": 3, "threshold": 0.0, "threshold_mode": "abs", "factor": 0.5},
    {"mode": "max", "patience": 2, "factor": 0.8},
    {"mode": "max", "patience": 1, "threshold_mode": "abs", "threshold": 0.01, "cooldown": 1},
    {"patience": 1, "min_lr": 0.004, "factor": 0.3},
    {"patience": 0, "min_lr": 1e-3, "eps": 1e-3},
    {"patience": 2, "factor": 0.0},
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES, ids=[str(k) for k in PLATEAU_CASES])
@pytest.mark.parametrize("sequence", list(_metric_sequences()))
def test_plateau_annealer_equals_torch(kwargs, sequence):
    metrics = _metric_sequences()[sequence]
    lr = 0.1
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr)
    ref = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    annealer = PlateauAnnealer(lr, **kwargs)
    previous = lr
    for i, metric in enumerate(metrics):
        opt.step()
        ref.step(metric)
        ours = annealer.step(metric)
        assert ours == opt.param_groups[0]["lr"], f"step {i}"
        if ours != previous:
            assert annealer.events[-1] == schedules.ReductionEvent(i, previous, ours)
        previous = ours
    assert len(annealer.events) == len({e.step for e in annealer.events})
    assert annealer.best == ref.best or (math.isnan(annealer.best) and math.isnan(ref.best))


def test_plateau_events_record_the_callers_step():
    annealer = PlateauAnnealer(1.0, patience=0)
    for step, metric in [(10, 1.0), (20, 2.0), (30, 3.0)]:
        annealer.step(metric, at=step)
    assert [(e.step, e.old_lr) for e in annealer.events] == [(20, 1.0), (30, 0.1)]
    assert annealer.events[1].new_lr == pytest.approx(0.01)


def test_plateau_state_dict_round_trip_is_json_and_resumes():
    metrics = _metric_sequences()["bumpy"]
    full = PlateauAnnealer(0.1, patience=1, cooldown=2)
    part = PlateauAnnealer(0.1, patience=1, cooldown=2)
    fresh = PlateauAnnealer(0.1, patience=1, cooldown=2)
    assert json.loads(json.dumps(fresh.state_dict()))["best"] == "inf"  # nothing seen yet
    lrs = [full.step(m) for m in metrics]
    for m in metrics[:37]:
        part.step(m)
    state = json.loads(json.dumps(part.state_dict()))
    resumed = PlateauAnnealer(1.0)  # its own settings are replaced by the saved ones
    resumed.load_state_dict(state)
    assert resumed.patience == 1 and resumed.cooldown == 2
    assert lrs[37:] == [resumed.step(m) for m in metrics[37:]]
    assert resumed.state_dict() == full.state_dict()


def test_plateau_apply_to_writes_every_group():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": 5.0})
    annealer = PlateauAnnealer(0.2, patience=0)
    annealer.step(1.0)
    annealer.step(1.0)
    annealer.apply_to(opt)
    assert [g["lr"] for g in opt.param_groups] == [annealer.lr, annealer.lr] == [pytest.approx(0.02)] * 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 1.0}, "Invalid factor: 1.0 (must be in [0, 1))"),
        ({"mode": "minimum"}, "Invalid mode: 'minimum' (must be one of 'min', 'max')"),
        ({"threshold_mode": "relative"}, "Invalid threshold_mode: 'relative'"),
        ({"patience": -1}, "Invalid patience: -1"),
        ({"cooldown": 0.5}, "Invalid cooldown: 0.5"),
        ({"min_lr": -1.0}, "Invalid min_lr: -1.0"),
        ({"verbose": True}, "Invalid hyperparameter for PlateauAnnealer: 'verbose'"),
    ],
)
def test_plateau_validation(kwargs, message):
    with pytest.raises(ValueError) as err:
        PlateauAnnealer(0.1, **kwargs)
    assert str(err.value).startswith(message)


def test_plateau_load_state_dict_refuses_bad_state():
    annealer = PlateauAnnealer(0.1)
    state = annealer.state_dict()
    with pytest.raises(ValueError, match="Invalid PlateauAnnealer state key: 'extra'"):
        annealer.load_state_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match=r"Invalid factor: 2\.0"):
        annealer.load_state_dict({**state, "hyperparams": {**state["hyperparams"], "factor": 2.0}})
    with pytest.raises(ValueError, match="Invalid best: 'big'"):
        annealer.load_state_dict({**state, "best": "big"})
    assert annealer.state_dict() == state  # a refused load changes nothing


def test_sample_validates_length():
    assert sample(make_schedule("constant"), 0) == []
    with pytest.raises(ValueError, match=r"Invalid total_steps: -1 \(must be an integer >= 0\)"):
        sample(make_schedule("constant"), -1)
