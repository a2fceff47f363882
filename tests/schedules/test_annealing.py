"""Annealing plans: boundaries, each stop rule, persistence, and refusal of invalid plans."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim import lr_scheduler

from dgs_core.schedules import ScheduleSpec, make_schedule
from dgs_core.schedules.annealing import (
    BUDGET,
    MIN_LR_REACHED,
    NO_IMPROVEMENT,
    AnnealingController,
    AnnealingPlan,
    Phase,
    PlateauSettings,
    StopRule,
    reaches,
    two_phase_plan,
)

MAIN = ScheduleSpec("warmup_cosine", {"base_lr": 0.1, "warmup_steps": 5, "total_steps": 40, "min_lr": 0.01})


def run(controller, metric_at, every=1, limit=10_000):
    """Drive ``controller`` like a trainer; validate every ``every`` steps with ``metric_at(step)``.

    Returns the per-step (lr, data source) the trainer would have used.
    """
    used, step = [], 0
    while not controller.finished(step):
        assert step < limit
        used.append((controller.lr(step), controller.data_source(step)))
        if step % every == every - 1:
            controller.observe_validation(step, metric_at(step))
        step += 1
    return used


def test_data_source_switches_exactly_at_the_boundary():
    hq = ScheduleSpec("exponential", {"base_lr": 0.01, "gamma": 0.9})
    plan = two_phase_plan(main_steps=40, main_schedule=MAIN, hq_steps=25, hq_schedule=hq)
    ctl = AnnealingController(plan)
    assert ctl.boundary_steps == plan.planned_boundaries == (40,)
    used = run(ctl, lambda s: 1.0)
    sources = [source for _, source in used]
    assert sources == ["main"] * 40 + ["hq"] * 25
    main, anneal = make_schedule("warmup_cosine", **MAIN.params), make_schedule("exponential", **hq.params)
    assert [lr for lr, _ in used] == [main(t) for t in range(40)] + [anneal(t) for t in range(25)]
    assert ctl.phase(39).name == "main" and ctl.phase(40).name == "anneal"
    assert (ctl.end_step, ctl.end_reason) == (65, BUDGET)


def test_schedule_phase_stops_before_the_first_lr_at_min_lr():
    hq = ScheduleSpec(
        "exponential", {"base_lr": 0.01, "gamma": 0.5}
    )  # 0.01, 0.005, 0.0025, 0.00125, 0.000625
    plan = two_phase_plan(main_steps=40, main_schedule=MAIN, hq_steps=100, hq_schedule=hq, min_lr=0.001)
    ctl = AnnealingController(plan)
    assert (ctl.end_step, ctl.end_reason) == (44, MIN_LR_REACHED)  # known before any validation
    used = run(ctl, lambda s: 1.0, every=10)
    assert [lr for lr, _ in used[40:]] == [0.01, 0.005, 0.0025, 0.00125]
    assert ctl.finished(44) and not ctl.finished(43)


def test_min_lr_comparison_forgives_round_off():
    assert reaches(0.01 * 0.1 * 0.1, 1e-4) and reaches(5e-5, 1e-4) and not reaches(1.001e-4, 1e-4)


def test_plateau_phase_stops_when_lr_reaches_min_lr():
    plateau = PlateauSettings(patience=1, factor=0.1, initial_lr=0.01)
    plan = two_phase_plan(
        main_steps=10, main_schedule=ScheduleSpec("constant"), hq_steps=500, hq_plateau=plateau
    )
    plan = AnnealingPlan(
        (plan.phases[0], Phase("anneal", "hq", 500, plateau=plateau, stop=StopRule(min_lr=1e-4)))
    )
    ctl = AnnealingController(plan)
    used = run(ctl, lambda s: 1.0, every=5)  # never improves: a cut after every 2 bad validations
    # validations at 14 (baseline), 19, 24 (cut to 1e-3), 29, 34 (cut to 1e-4 = min_lr: stop)
    assert (ctl.end_step, ctl.end_reason) == (35, MIN_LR_REACHED)
    lrs = [lr for lr, _ in used[10:]]
    assert lrs == [0.01] * 15 + [pytest.approx(1e-3)] * 10  # a cut applies from the next step
    assert [(e.step, e.old_lr) for e in ctl.reductions] == [(24, 0.01), (34, pytest.approx(1e-3))]


def test_stops_when_validation_stops_improving():
    hq = ScheduleSpec("constant", {"base_lr": 0.01})
    plan = two_phase_plan(main_steps=20, main_schedule=MAIN, hq_steps=1000, hq_schedule=hq, patience=3)
    ctl = AnnealingController(plan)
    metrics = {
        29: 0.9,
        39: 0.8,
        49: 0.7,
        59: 0.7,
        69: 0.75,
        79: 0.69995,
    }  # last three: no improvement (rel 1e-4)
    run(ctl, lambda s: metrics.get(s, 0.7), every=10)
    assert (ctl.end_step, ctl.end_reason) == (80, NO_IMPROVEMENT)
    with pytest.raises(ValueError, match=r"Invalid step: 80 \(the plan finished at step 80: validation"):
        ctl.lr(80)


def test_patience_counts_from_the_phase_start_and_uses_the_plans_mode():
    # "max" mode: accuracy; phase 1 reaches 0.9, phase 2 starts lower but its own best counts
    hq = ScheduleSpec("constant", {"base_lr": 0.01})
    plan = two_phase_plan(
        main_steps=10, main_schedule=MAIN, hq_steps=100, hq_schedule=hq, patience=2, metric_mode="max"
    )
    ctl = AnnealingController(plan)
    accuracy = {4: 0.8, 9: 0.9, 14: 0.5, 19: 0.6, 24: 0.7, 29: 0.7, 34: 0.69}
    run(ctl, lambda s: accuracy[s], every=5)
    assert (ctl.end_step, ctl.end_reason) == (35, NO_IMPROVEMENT)


def test_stops_by_budget_when_no_rule_fires():
    plateau = PlateauSettings(patience=100)
    plan = two_phase_plan(
        main_steps=30, main_schedule=MAIN, hq_steps=50, hq_plateau=plateau, min_lr=1e-6, patience=100
    )
    ctl = AnnealingController(plan)
    used = run(ctl, lambda s: 1.0 / (s + 1))  # keeps improving
    assert (ctl.end_step, ctl.end_reason, len(used)) == (80, BUDGET, 80)
    # the plateau phase continued from the lr of the main phase's last step
    assert used[30][0] == make_schedule("warmup_cosine", **MAIN.params)(29)


def test_early_stop_of_a_middle_phase_moves_the_later_boundaries():
    flat = ScheduleSpec("constant", {"base_lr": 0.05})
    plan = AnnealingPlan(
        (
            Phase("warm", "main", 100, schedule=flat, stop=StopRule(patience=2)),
            Phase("anneal", "hq", 20, schedule=ScheduleSpec("linear", {"base_lr": 0.05, "total_steps": 20})),
        )
    )
    ctl = AnnealingController(plan)
    assert ctl.boundary_steps == (100,)
    used = run(ctl, lambda s: 1.0, every=10)  # stalls: baseline at 9, bad at 19 and 29
    assert ctl.boundary_steps == (30,) and ctl.end_step == 50 and ctl.end_reason == BUDGET
    assert [source for _, source in used] == ["main"] * 30 + ["hq"] * 20
    assert [s.reason for s in ctl.spans()] == [NO_IMPROVEMENT, BUDGET]


def test_plateau_phase_follows_reduce_lr_on_plateau():
    settings = {"factor": 0.5, "patience": 2, "threshold": 0.01, "threshold_mode": "abs", "cooldown": 1}
    plan = AnnealingPlan(
        (Phase("only", "hq", 200, plateau=PlateauSettings(initial_lr=0.2, min_lr=0.01, **settings)),)
    )
    ctl = AnnealingController(plan)
    metrics = [1.0 / (1 + 0.3 * (t % 17)) for t in range(200)]
    used = run(ctl, lambda s: metrics[s])
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    ref = lr_scheduler.ReduceLROnPlateau(opt, min_lr=0.01, **settings)
    expected = []
    for metric in metrics:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step(metric)
    assert [lr for lr, _ in used] == expected


def test_deterministic_and_state_dict_round_trip():
    plateau = PlateauSettings(patience=1, factor=0.3)
    plan = two_phase_plan(
        main_steps=25, main_schedule=MAIN, hq_steps=300, hq_plateau=plateau, min_lr=1e-5, patience=8
    )
    metrics = [1.0 / (1 + 0.01 * t) + 0.05 * math.sin(t) for t in range(400)]

    whole = AnnealingController(plan)
    used_whole = run(whole, lambda s: metrics[s], every=3)

    first = AnnealingController(plan)
    step = 0
    while step < 60:
        if step % 3 == 2:
            first.observe_validation(step, metrics[step])
        step += 1
    state = json.loads(json.dumps(first.state_dict()))
    resumed = AnnealingController.from_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    used = [(resumed.lr(s), resumed.data_source(s)) for s in range(60)]
    while not resumed.finished(step):
        used.append((resumed.lr(step), resumed.data_source(step)))
        if step % 3 == 2:
            resumed.observe_validation(step, metrics[step])
        step += 1
    assert used == used_whole
    assert (resumed.end_step, resumed.end_reason, resumed.spans()) == (
        whole.end_step,
        whole.end_reason,
        whole.spans(),
    )
    assert resumed.reductions == whole.reductions


def test_invalid_state_is_refused_and_changes_nothing():
    plan = two_phase_plan(main_steps=10, main_schedule=MAIN, hq_steps=10, hq_schedule=MAIN, patience=2)
    other = two_phase_plan(main_steps=11, main_schedule=MAIN, hq_steps=10, hq_schedule=MAIN, patience=2)
    ctl = AnnealingController(plan)
    ctl.observe_validation(3, 1.0)
    before = ctl.state_dict()
    saved = AnnealingController(plan)
    for step in (12, 14, 16):
        saved.observe_validation(step, 1.0)
    good = json.loads(json.dumps(saved.state_dict()))
    assert good["spans"][1] == {
        "name": "anneal",
        "data_source": "hq",
        "start": 10,
        "end": 17,
        "reason": NO_IMPROVEMENT,
    }
    bad_states = [
        (AnnealingController(other).state_dict(), "plan differs"),
        ({**good, "observations": [[16, 1.0], [12, 1.0]]}, r"Invalid step: 12 \(must be > the previous"),
        ({**good, "observations": [[25, 1.0]]}, r"Invalid step: 25 \(the plan finished at step 20"),
        ({**good, "observations": [[12, "low"]]}, "Invalid metric: 'low'"),
        ({**good, "spans": good["spans"][:1]}, "Invalid spans:"),
        ({**good, "extra": 1}, "Invalid controller state key: 'extra'"),
    ]
    for state, message in bad_states:
        with pytest.raises(ValueError, match=message):
            ctl.load_state_dict(state)
        assert ctl.state_dict() == before
    ctl.load_state_dict(good)
    assert ctl.state_dict() == saved.state_dict() and ctl.end_step == 17


def test_observations_must_advance_and_stay_inside_the_plan():
    plan = two_phase_plan(main_steps=10, main_schedule=MAIN, hq_steps=10, hq_schedule=MAIN)
    ctl = AnnealingController(plan)
    ctl.observe_validation(5, 1.0)
    with pytest.raises(ValueError, match=r"Invalid step: 5 \(must be > the previous validation step 5\)"):
        ctl.observe_validation(5, 0.5)
    with pytest.raises(ValueError, match=r"Invalid step: 20 \(the plan finished at step 20: budget\)"):
        ctl.observe_validation(20, 0.5)
    with pytest.raises(ValueError, match=r"Invalid step: -1 \(must be an integer >= 0\)"):
        ctl.lr(-1)


# --- plans as data ------------------------------------------------------------------------------


def _full_plan():
    chain = ScheduleSpec.chain(
        [(5, ScheduleSpec("warmup", {"warmup_steps": 5})), (95, ScheduleSpec("cosine"))]
    )
    return AnnealingPlan(
        (
            Phase("main", "main", 100, schedule=chain),
            Phase("hq-sched", "hq", 50, schedule=ScheduleSpec("exponential"), stop=StopRule(min_lr=0.05)),
            Phase("hq-plateau", "hq", 80, plateau=PlateauSettings(cooldown=2), stop=StopRule(patience=4)),
        ),
        metric_mode="max",
    )


def test_plan_round_trip_through_json():
    plan = _full_plan()
    data = json.loads(json.dumps(plan.to_dict()))
    again = AnnealingPlan.from_dict(data)
    assert again == plan and again.to_dict() == data and hash(again) == hash(plan)
    assert data["version"] == 1 and data["phases"][2]["plateau"]["initial_lr"] is None
    assert plan.total_steps == 230 and plan.planned_boundaries == (100, 150)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AnnealingPlan(()), "Invalid phases: () (must have at least one phase)"),
        (
            lambda: AnnealingPlan((Phase("a", "main", 5, schedule=MAIN), Phase("a", "hq", 5, schedule=MAIN))),
            "Invalid phase name: 'a' (must be unique; used twice)",
        ),
        (
            lambda: Phase("a", "validation", 5, schedule=MAIN),
            "Invalid data_source of phase 'a': 'validation' (must be one of 'main', 'hq')",
        ),
        (lambda: Phase("a", "main", 0, schedule=MAIN), "Invalid steps of phase 'a': 0"),
        (lambda: Phase("a", "main", -3, schedule=MAIN), "Invalid steps of phase 'a': -3"),
        (
            lambda: Phase("a", "main", 5),
            "Invalid lr rule of phase 'a': got neither (must give exactly one of schedule, plateau)",
        ),
        (
            lambda: Phase("a", "main", 5, schedule=MAIN, plateau=PlateauSettings()),
            "Invalid lr rule of phase 'a': got both",
        ),
        (lambda: Phase("", "main", 5, schedule=MAIN), "Invalid phase name: ''"),
        (
            lambda: AnnealingPlan((Phase("a", "hq", 5, plateau=PlateauSettings()),)),
            "Invalid plateau.initial_lr of phase 'a': None (the first phase has no previous lr",
        ),
        (
            lambda: Phase("a", "hq", 5, plateau=PlateauSettings(min_lr=1e-3), stop=StopRule(min_lr=1e-4)),
            "Invalid stop.min_lr of phase 'a': 0.0001 (must be >= plateau.min_lr=0.001",
        ),
        (
            lambda: Phase("a", "hq", 5, schedule=ScheduleSpec("warmup"), stop=StopRule(min_lr=1e-4)),
            "Invalid stop.min_lr of phase 'a': 0.0001 (must be < the phase's first lr 0.0",
        ),
        (
            lambda: Phase("a", "hq", 5, plateau=PlateauSettings(initial_lr=1e-4), stop=StopRule(min_lr=1e-4)),
            "Invalid stop.min_lr of phase 'a': 0.0001 (must be < the phase's first lr",
        ),
        (lambda: StopRule(), "Invalid stop rule: min_lr=None, patience=None (must set min_lr or patience)"),
        (lambda: StopRule(patience=0), "Invalid stop.patience: 0"),
        (lambda: StopRule(min_lr=-1.0), "Invalid stop.min_lr: -1.0"),
        (lambda: StopRule(patience=3, threshold_mode="x"), "Invalid stop.threshold_mode: 'x'"),
        (lambda: PlateauSettings(factor=1.5), "Invalid plateau.factor: 1.5 (must be in [0, 1))"),
        (lambda: PlateauSettings(initial_lr=-0.1), "Invalid plateau.initial_lr: -0.1"),
        (
            lambda: AnnealingPlan((Phase("a", "main", 5, schedule=MAIN),), metric_mode="lowest"),
            "Invalid metric_mode: 'lowest' (must be one of 'min', 'max')",
        ),
        (lambda: Phase("a", "main", 5, schedule={"name": "cosine"}), "Invalid schedule of phase 'a'"),
    ],
)
def test_invalid_plans_are_refused_with_the_reason(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=2), "Invalid version: 2 (must be 1)"),
        (lambda d: d.update(extra=1), "Invalid annealing plan key: 'extra'"),
        (lambda d: d.update(phases={}), "Invalid phases: {} (must be a list)"),
        (lambda d: d["phases"][0].update(colour="red"), "Invalid phase key: 'colour'"),
        (lambda d: d["phases"][0].pop("steps"), "Invalid phase: "),
        (
            lambda d: d["phases"][1]["stop"].update(min_lr=10.0),
            "Invalid stop.min_lr of phase 'hq-sched': 10.0",
        ),
        (lambda d: d["phases"][2]["plateau"].update(mode="min"), "Invalid plateau settings key: 'mode'"),
        (
            lambda d: d["phases"][0]["schedule"]["segments"][0].update(steps=0),
            "Invalid num_steps of segment 0",
        ),
        (lambda d: d["phases"][1]["schedule"]["params"].update(gamma=2), "Invalid gamma: 2"),
    ],
)
def test_from_dict_refuses_invalid_data(edit, message):
    data = _full_plan().to_dict()
    edit(data)
    with pytest.raises(ValueError) as err:
        AnnealingPlan.from_dict(data)
    assert str(err.value).startswith(message)


def test_plateau_phase_inheriting_an_lr_at_the_floor_is_empty():
    first = Phase("main", "main", 10, schedule=ScheduleSpec("constant", {"base_lr": 1e-4}))
    second = Phase("anneal", "hq", 10, plateau=PlateauSettings(), stop=StopRule(min_lr=1e-3))
    ctl = AnnealingController(AnnealingPlan((first, second)))
    assert (ctl.end_step, ctl.end_reason, ctl.boundary_steps) == (10, MIN_LR_REACHED, (10,))
    assert ctl.finished(10)
