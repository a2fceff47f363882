"""The Annealing lab's compute: composed curves, the plateau demo, progressive runs, the two-phase
demo (data switch at the boundary, stop rules, same seed and budget) and its record."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from torch.optim import lr_scheduler

from dgs_core.runs.read import read_bundle
from dgs_core.schedules import SCHEDULES, ScheduleSpec, build, sample
from dgs_core.schedules.annealing import MIN_LR_REACHED, NO_IMPROVEMENT, AnnealingController
from dgs_core.schedules.curves import (
    CurveSpec,
    check_run_steps,
    curve,
    default_params,
    parse_step_list,
    schedule_curves,
)
from dgs_core.schedules.plateau import plateau_demo
from dgs_core.studies.annealing import (
    ANNEAL_SHAPES,
    VARIANTS,
    TwoPhaseSettings,
    anneal_schedule,
    effective_lr_config,
    settings_from_record,
    two_phase_configs,
    two_phase_plans,
    two_phase_record,
)
from dgs_core.studies.trainers import TrainerStudy
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from tests.runs.test_bundles import export_with_figures

SMALL = {"n_samples": 200, "label_noise": 0.3, "hq_fraction": 0.3}


def small_settings(**changes) -> TwoPhaseSettings:
    base = {"task_params": SMALL, "main_steps": 30, "anneal_steps": 20, "eval_every": 5, "model_size": "tiny"}
    return TwoPhaseSettings(**{**base, **changes})


def run_all(configs) -> TrainerStudy:
    runs = TrainerStudy(configs)
    for _ in runs.run():
        pass
    assert runs.complete
    return runs


@pytest.fixture(scope="module")
def demo():
    settings = small_settings()
    return settings, run_all(two_phase_configs(settings))


# ---------------------------------------------------------------------------------------------
# Composed curves
# ---------------------------------------------------------------------------------------------


def test_warmup_prefix_then_schedule_matches_the_closed_form():
    c = curve("cosine", warmup_before=10, base_lr=0.1, total_steps=80, min_lr=0.001)
    lrs = sample(build(c.spec(100)), 100)
    expected = [0.1 * t / 10 for t in range(10)] + [
        0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * min(t, 80) / 80)) / 2 for t in range(90)
    ]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    assert c.label == "Warmup 10 → Cosine"


def test_schedule_curves_samples_every_curve():
    curves = [
        curve("step_decay", base_lr=0.2, step_size=3, gamma=0.5),
        curve("multistep", base_lr=1.0, milestones=(2, 4), gamma=0.1, label="ms"),
    ]
    frame = schedule_curves(curves, 6)
    assert list(frame.columns) == ["curve", "step", "lr"]
    step = frame[frame["curve"] == "Step decay"]
    assert step["step"].tolist() == list(range(6))
    np.testing.assert_allclose(step["lr"], [0.2, 0.2, 0.2, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(frame[frame["curve"] == "ms"]["lr"], [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-12)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: curve("cosine", warmup_before=300).check_run(300),
            "Invalid warmup_before: 300 (must be < the run length 300",
        ),
        (
            lambda: curve("warmup_cosine", warmup_steps=400, total_steps=500).check_run(300),
            "Invalid warmup_steps: 400 (must be <= the run length 300)",
        ),
        (
            lambda: curve("warmup_cosine", warmup_steps=400, total_steps=300),
            "Invalid warmup_steps: 400 (must be <= total_steps=300)",
        ),
        (lambda: curve("cosine", base_lr=0.1, min_lr=0.5), "Invalid min_lr: 0.5 (must be <= base_lr=0.1)"),
        (lambda: curve("step_decay", step_size=-5), "Invalid step_size: -5"),
        (lambda: curve("cosine", warmup_before=-1), "Invalid warmup_before: -1"),
        (lambda: check_run_steps(0), "Invalid run_steps: 0"),
        (lambda: schedule_curves([curve("constant")] * 2, 10), "Invalid labels"),
        (lambda: CurveSpec(ScheduleSpec.chain([(5, ScheduleSpec("constant"))])), "Invalid schedule"),
    ],
)
def test_invalid_curves_are_refused_with_the_reason(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("run_steps", [1, 2, 7, 300, 10_000])
def test_default_params_fit_every_run_length(name, run_steps):
    params = default_params(name, run_steps)
    c = CurveSpec(ScheduleSpec(name, params))
    c.check_run(run_steps)
    if "total_steps" in params:
        assert params["total_steps"] == run_steps


def test_default_exponential_reaches_one_percent_at_the_end():
    params = default_params("exponential", 300)
    end = build(ScheduleSpec("exponential", params))(300)
    assert end == pytest.approx(0.01 * params["base_lr"], rel=1e-9)


def test_curve_round_trips_through_json():
    c = curve("multistep", warmup_before=5, milestones=(10, 20), label="mine")
    again = CurveSpec.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    with pytest.raises(ValueError, match="Invalid curve key: 'colour'"):
        CurveSpec.from_dict({**c.to_dict(), "colour": "red"})


def test_parse_step_list():
    assert parse_step_list(" 10, 20;30 ,") == (10, 20, 30)
    with pytest.raises(ValueError, match=r"Invalid milestones: '10, x' \(must be integers"):
        parse_step_list("10, x")


# ---------------------------------------------------------------------------------------------
# The plateau demo
# ---------------------------------------------------------------------------------------------


def test_plateau_demo_equals_torch_reduce_lr_on_plateau():
    kwargs = {"factor": 0.5, "patience": 3, "threshold": 1e-3, "cooldown": 2, "min_lr": 1e-3}
    demo = plateau_demo(evaluations=200, lr=0.1, noise=0.05, seed=3, **kwargs)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = lr_scheduler.ReduceLROnPlateau(opt, mode="min", **kwargs)
    torch_lrs = []
    for metric in demo.frame["metric"]:
        torch_lrs.append(opt.param_groups[0]["lr"])  # the lr the metric was measured under
        ref.step(metric)
    assert demo.frame["lr"].tolist() == torch_lrs
    changes = [k - 1 for k in range(1, len(torch_lrs)) if torch_lrs[k] != torch_lrs[k - 1]]
    assert [e.step for e in demo.events] == changes
    assert len(demo.events) >= 3  # the demo shows several cuts with these settings


def test_plateau_demo_follows_the_toy_model_by_hand():
    demo = plateau_demo(evaluations=3, lr=0.2, noise=0.0, patience=100)
    e1 = 0.3 + (1.0 - 0.3) * math.exp(-0.15)
    e2 = 0.3 + (e1 - 0.3) * math.exp(-0.15)
    np.testing.assert_allclose(demo.frame["metric"], [1.1, 0.1 + e1, 0.1 + e2], rtol=1e-12)
    np.testing.assert_allclose(demo.frame["best"], demo.frame["metric"].cummin())
    assert demo.events == ()


def test_plateau_demo_refuses_bad_settings():
    with pytest.raises(ValueError, match="Invalid mode: 'max'"):
        plateau_demo(mode="max")
    with pytest.raises(ValueError, match=r"Invalid factor: 1\.5"):
        plateau_demo(factor=1.5)
    with pytest.raises(ValueError, match="Invalid evaluations: 0"):
        plateau_demo(evaluations=0)


# ---------------------------------------------------------------------------------------------
# Progressive runs
# ---------------------------------------------------------------------------------------------


def test_turns_and_stops_give_the_same_numbers_as_one_run():
    config = TrainConfig(
        task="moons",
        task_params=SMALL,
        model={"size": "tiny"},
        optimizers=[("momentum", {"lr": 0.1}), "adam"],
        steps=23,
        eval_every=5,
        diag_every=0,
        device="cpu",
    )
    runs = TrainerStudy({"a": config, "b": config.replace(seed=1)})
    stop = threading.Event()
    for event in runs.run(stop):  # one turn each: 5 steps
        if event.run == "b":
            stop.set()
    assert runs.progress() == (10, 46) and not runs.complete
    assert {r.status for name in "ab" for r in runs.all_results(name).values()} == {"stopped"}
    stop.clear()
    turns = [(e.run, e.event.step) for e in runs.run(stop)]
    # round-robin, each run to its next evaluation
    assert turns[:4] == [("a", 10), ("b", 10), ("a", 15), ("b", 15)]
    assert runs.complete and runs.progress() == (46, 46)
    for name, seed in (("a", 0), ("b", 1)):
        whole = Trainer(config.replace(seed=seed))
        for _ in whole.run():
            pass
        for label, result in whole.results.items():
            pd.testing.assert_frame_equal(runs.all_results(name)[label].metrics, result.metrics)


def test_trainer_study_refuses_bad_input():
    with pytest.raises(ValueError, match="Invalid configs"):
        TrainerStudy({})
    with pytest.raises(ValueError, match="Invalid config 'x'"):
        TrainerStudy({"x": {"task": "moons"}})


# ---------------------------------------------------------------------------------------------
# The two-phase demo
# ---------------------------------------------------------------------------------------------


def test_variants_share_seed_budget_and_optimizer():
    configs = two_phase_configs(small_settings())
    assert list(configs) == list(VARIANTS)
    first = configs["none"]
    for config in configs.values():
        assert config.replace(annealing=None) == first.replace(annealing=None)
        assert config.annealing.total_steps == config.steps == 50


def test_main_phase_is_identical_across_variants(demo):
    settings, runs = demo
    main = settings.main_steps
    reference = runs.results["none"].metrics.iloc[:main]
    for name in VARIANTS:
        frame = runs.results[name].metrics.iloc[:main]
        pd.testing.assert_frame_equal(frame, reference)  # same init, batches, lr: same numbers


def test_data_switches_exactly_at_the_boundary(demo):
    settings, runs = demo
    main = settings.main_steps
    switches = {"none": False, "anneal_main": False, "anneal_hq": True, "plateau_hq": True}
    for name, switched in switches.items():
        frame = runs.results[name].metrics
        sources = frame["data_source"].tolist()
        assert sources[:main] == ["main"] * main
        assert set(sources[main:]) == ({"hq"} if switched else {"main"}), name
    # the annealing schedule starts at the boundary with its own step 0
    frame = runs.results["anneal_hq"].metrics
    schedule = build(anneal_schedule(settings))
    annealed = frame["lr"].iloc[main:].to_numpy()
    np.testing.assert_allclose(annealed, [schedule(t) for t in range(len(annealed))], rtol=1e-12)
    assert frame["lr"].iloc[main - 1] == settings.base_lr
    # the HQ batches change the training: the first annealing losses differ from the same-data ones
    assert frame["loss"].iloc[main] != runs.results["anneal_main"].metrics["loss"].iloc[main]


def _replayed(result, plan):
    """The plan's end (step, reason) replayed from the run's recorded validations."""
    ctl = AnnealingController(plan)
    mode_column = "val_loss" if plan.metric_mode == "min" else "val_metric"
    for row in result.evaluations.itertuples():
        if not ctl.finished(row.step - 1):
            ctl.observe_validation(row.step - 1, getattr(row, mode_column))
    return ctl.end_step, ctl.end_reason


def test_patience_rule_stops_the_annealing_phase():
    settings = small_settings(stop_patience=1, plateau_patience=100, anneal_steps=60)
    runs = run_all(two_phase_configs(settings))
    result = runs.results["plateau_hq"]
    assert result.reason == NO_IMPROVEMENT
    assert settings.main_steps < result.steps_done < settings.total_steps
    plan = two_phase_plans(settings)["plateau_hq"]
    assert _replayed(result, plan) == (result.steps_done, NO_IMPROVEMENT)
    # the last validation before the stop did not improve on the best of the phase
    evals = result.evaluations
    anneal = evals[evals["step"] > settings.main_steps]["val_loss"].to_numpy()
    assert anneal[-1] >= anneal[:-1].min() * (1 - 1e-4)


def test_min_lr_rule_stops_the_plateau_phase():
    # patience 0: every validation without improvement cuts by 10; the floor is 1 % of η₀
    settings = small_settings(plateau_factor=0.1, plateau_patience=0, stop_patience=0, anneal_steps=200)
    runs = run_all(two_phase_configs(settings))
    result = runs.results["plateau_hq"]
    assert result.reason == MIN_LR_REACHED
    assert result.steps_done < settings.total_steps
    cuts = runs.reductions("plateau_hq")
    assert [round(e.new_lr / settings.base_lr, 12) for e in cuts] == [0.1, 0.01]
    lrs = result.metrics["lr"].to_numpy()
    assert lrs.min() == pytest.approx(0.1 * settings.base_lr)  # no step trains at the floor
    plan = two_phase_plans(settings)["plateau_hq"]
    assert _replayed(result, plan) == (result.steps_done, MIN_LR_REACHED)


def test_anneal_shapes_end_at_the_floor():
    for shape in ANNEAL_SHAPES:
        settings = small_settings(anneal_shape=shape, min_lr_ratio=0.05)
        schedule = build(anneal_schedule(settings))
        assert schedule(0) == pytest.approx(settings.base_lr)
        assert schedule(settings.anneal_steps) == pytest.approx(settings.min_lr, rel=1e-9)


def test_record_keeps_the_plan_and_reloads(demo):
    settings, runs = demo
    record = json.loads(json.dumps(two_phase_record(settings, runs)))
    assert settings_from_record(record) == settings
    variant = record["variants"]["anneal_hq"]
    assert variant["planned_boundaries"] == [settings.main_steps]
    phases = variant["plan"]["phases"]
    assert [(p["name"], p["data_source"], p["steps"]) for p in phases] == [
        ("main", "main", 30),
        ("anneal", "hq", 20),
    ]
    assert phases[1]["schedule"] == anneal_schedule(settings).to_dict()
    spans = variant["run"]["annealing"]["spans"]
    assert [(s["start"], s["data_source"]) for s in spans] == [(0, "main"), (30, "hq")]
    # the run's controller can be rebuilt from the record
    ctl = AnnealingController.from_state_dict(variant["run"]["annealing"])
    assert ctl.boundary_steps == (30,)
    plateau = record["variants"]["plateau_hq"]["run"]
    assert plateau["reductions"] == [e.to_dict() for e in runs.reductions("plateau_hq")]
    tampered = json.loads(json.dumps(record))
    tampered["variants"]["anneal_hq"]["plan"]["phases"][1]["data_source"] = "main"
    with pytest.raises(ValueError, match="the plan of 'anneal_hq' differs"):
        settings_from_record(tampered)


def test_a_variant_snapshot_keeps_its_plan_and_phase_record(demo):
    settings, runs = demo
    bundle = read_bundle(export_with_figures(runs.trainers["plateau_hq"]))
    config = TrainConfig.from_dict(bundle.config)
    assert config.annealing == two_phase_plans(settings)["plateau_hq"]
    (lane,) = bundle.trainer.lanes.values()
    (original,) = runs.trainers["plateau_hq"].lanes.values()
    assert lane.controller.state_dict() == original.controller.state_dict()
    assert lane.controller.boundary_steps == (settings.main_steps,)
    pd.testing.assert_frame_equal(bundle.results["momentum"].metrics, runs.results["plateau_hq"].metrics)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"main_steps": 0}, "Invalid main_steps: 0"),
        ({"anneal_steps": -3}, "Invalid anneal_steps: -3"),
        ({"main_steps": 4000, "anneal_steps": 2000}, "Invalid anneal_steps: 2000 (main_steps + anneal_steps"),
        ({"min_lr_ratio": 1.0}, "Invalid min_lr_ratio: 1.0"),
        ({"plateau_factor": 0.0}, "Invalid plateau_factor: 0.0"),
        ({"task_params": {"label_noise": 0.9, "hq_fraction": 0.2}}, "Invalid label_noise: 0.9"),
        ({"optimizer": "nope"}, "nope"),
        ({"hparams": {"lr": -1.0}}, "Invalid lr: -1.0"),
        ({"metric": "f1"}, "Invalid metric: 'f1'"),
    ],
)
def test_invalid_settings_name_the_field(changes, message):
    with pytest.raises(ValueError) as info:
        small_settings(**changes)
    assert message in str(info.value)


def test_effective_lr_config_scales_the_schedule_to_each_optimizer():
    spec = curve("cosine", warmup_before=4, base_lr=1.0, total_steps=16).spec(20)
    config = effective_lr_config(
        schedule=spec,
        optimizers=[("sgd", {"lr": 0.05}), ("adam", {"lr": 0.002})],
        steps=20,
        task_params=SMALL,
        model_size="tiny",
    )
    assert config.diag_every == 1 and config.device == "cpu"
    runs = run_all({"effective": config})
    schedule = build(spec)
    for label, lr in (("sgd", 0.05), ("adam", 0.002)):
        recorded = runs.all_results("effective")[label].metrics["lr"].to_numpy()
        np.testing.assert_allclose(recorded, [lr * schedule(t) for t in range(20)], rtol=1e-12)
    with pytest.raises(ValueError, match="Invalid steps: 6000"):
        effective_lr_config(schedule=spec, optimizers=["sgd"], steps=6000)
