"""Annealing-lab figures: the traces, shapes and tables they promise, checked against their inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dgs_core.schedules import SCHEDULES, build, sample
from dgs_core.schedules.curves import curve, schedule_curves
from dgs_core.schedules.plateau import plateau_demo
from dgs_core.studies.annealing import (
    VARIANTS,
    TwoPhaseSettings,
    effective_lr_config,
    two_phase_configs,
)
from dgs_core.studies.trainers import TrainerStudy
from dgs_core.viz import annealing as viz

SMALL = {"n_samples": 200, "label_noise": 0.3, "hq_fraction": 0.3}


def _run(configs) -> TrainerStudy:
    runs = TrainerStudy(configs)
    for _ in runs.run():
        pass
    return runs


@pytest.fixture(scope="module")
def two_phase():
    # patience 0 with a slow floor: the plateau variant cuts, and one variant stops early
    settings = TwoPhaseSettings(
        task_params=SMALL,
        model_size="tiny",
        main_steps=30,
        anneal_steps=30,
        eval_every=5,
        plateau_patience=0,
        stop_patience=2,
    )
    return settings, _run(two_phase_configs(settings))


def _named(fig, name):
    return [t for t in fig.data if t.name == name]


def test_every_schedule_has_a_plain_text_formula():
    assert set(viz.SCHEDULE_FORMULAS) == set(SCHEDULES)
    assert all(f.strip() for f in viz.SCHEDULE_FORMULAS.values())


def test_overlay_draws_each_curve_with_its_formula():
    curves = [
        curve("warmup_cosine", base_lr=0.1, warmup_steps=20, total_steps=100, min_lr=0.01),
        curve("step_decay", warmup_before=10, base_lr=0.05, step_size=30, gamma=0.5),
    ]
    fig = viz.schedule_overlay_figure(schedule_curves(curves, 100), curves, log_y=True)
    assert [t.name for t in fig.data] == ["Warmup + cosine", "Warmup 10 → Step decay"]
    for trace, c in zip(fig.data, curves, strict=True):
        np.testing.assert_array_equal(trace.y, sample(build(c.spec(100)), 100))
        assert trace.customdata[0] == viz.curve_formula(c)
        assert "%{customdata}" in trace.hovertemplate
    assert viz.curve_formula(curves[1]).startswith("η_t = η₀·t/10 for t < 10")
    assert viz.SCHEDULE_FORMULAS["step_decay"] in viz.curve_formula(curves[1])
    # the prefix warmup's end is marked; the schedule's own warmup is part of its formula
    assert [shape.x0 for shape in fig.layout.shapes] == [10]
    assert fig.layout.yaxis.type == "log"


def test_plateau_figure_marks_every_reduction():
    demo = plateau_demo(factor=0.5, patience=5)
    assert len(demo.events) >= 2
    fig = viz.plateau_demo_figure(demo)
    (cuts,) = _named(fig, viz.REDUCTION)
    assert list(cuts.x) == [e.step for e in demo.events]
    assert list(cuts.y) == [demo.frame["metric"][e.step] for e in demo.events]
    assert [list(c) for c in cuts.customdata] == [[e.old_lr, e.new_lr] for e in demo.events]
    assert sorted({shape.x0 for shape in fig.layout.shapes}) == [e.step for e in demo.events]
    (lr,) = _named(fig, "lr")
    np.testing.assert_array_equal(lr.y, demo.frame["lr"])
    table = viz.plateau_events_table(demo.events)
    assert table["evaluation"].tolist() == [e.step for e in demo.events]


def test_effective_lr_figure_and_table_side_by_side_per_optimizer():
    spec = curve("cosine", base_lr=1.0, total_steps=30, min_lr=0.1).spec(30)
    config = effective_lr_config(
        schedule=spec,
        optimizers=[("sgd", {"lr": 0.05}), ("dgs", {})],
        steps=30,
        task_params=SMALL,
        model_size="tiny",
    )
    results = _run({"effective": config}).all_results("effective")
    fig = viz.effective_lr_figure(results)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["SGD", "DGS (interpretation)"]
    table = viz.effective_lr_table(results).set_index("optimizer")
    # plain SGD applies exactly the schedule's lr to every parameter: Δθ = η g
    assert table.loc["SGD", "median η_eff / η_t"] == pytest.approx(1.0, rel=1e-4)
    lr = table.loc["SGD", "schedule lr (last)"]
    assert lr == pytest.approx(0.05 * build(spec)(29))  # the last record is step 30, lr index 29
    # the band's edges too, up to float32 round-off in Δθ = θ_t − θ_{t+1}
    assert table.loc["SGD", "η_eff 5 % (last)"] == pytest.approx(lr, rel=1e-2)
    assert table.loc["SGD", "η_eff 95 % (last)"] == pytest.approx(lr, rel=1e-2)
    assert table.loc["DGS (interpretation)", "records"] == len(results["dgs"].quantile_band("lr_eff"))


def test_two_phase_figure_marks_the_phase_boundary(two_phase):
    settings, runs = two_phase
    results = runs.results
    reductions = {name: runs.reductions(name) for name in results}
    fig = viz.two_phase_figure(results, settings, reductions=reductions)
    boundary = settings.main_steps
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert [(s.x0, s.x1) for s in lines] == [(boundary, boundary)] * 2  # both panels
    rects = sorted((s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect")
    assert rects == [(0, boundary)] * 2 + [(boundary, settings.total_steps)] * 2
    texts = [a.text for a in fig.layout.annotations]
    assert "main phase: 30% label noise" in texts and "annealing phase" in texts
    (legend,) = _named(fig, f"{viz.PHASE_BOUNDARY} (step {boundary})")
    assert legend.meta == {"boundary": boundary}
    for name, label in VARIANTS.items():
        (curve,) = _named(fig, label)
        evals = results[name].evaluations
        np.testing.assert_array_equal(curve.x, evals["step"])
        np.testing.assert_array_equal(curve.y, evals["val_loss"])
    cuts = reductions["plateau_hq"]
    assert cuts, "patience 0 cuts on the first validation without improvement"
    (markers,) = _named(fig, viz.REDUCTION)
    lr = results["plateau_hq"].metrics.set_index("step")["lr"]
    # at the validation that decided the cut: trained at the old lr, the next step at the new one
    assert list(markers.x) == [e.step + 1 for e in cuts] and list(markers.y) == [e.new_lr for e in cuts]
    assert [lr[x] for x in markers.x] == [e.old_lr for e in cuts]
    assert [lr.get(x + 1, e.new_lr) for x, e in zip(markers.x, cuts, strict=True)] == [e.new_lr for e in cuts]
    stopped = [t for t in fig.data if t.name and t.name.endswith(": stopped")]
    early = [n for n, r in results.items() if r.steps_done < settings.total_steps]
    assert early, "stop patience 2 ends some annealing phase early"
    assert sorted(t.name for t in stopped) == sorted(f"{VARIANTS[n]}: stopped" for n in early)


def test_two_phase_figure_in_accuracy_draws_accuracy(two_phase):
    settings, runs = two_phase
    fig = viz.two_phase_figure(runs.results, settings.replace(metric="val_accuracy"))
    (curve,) = _named(fig, VARIANTS["anneal_hq"])
    np.testing.assert_array_equal(curve.y, runs.results["anneal_hq"].evaluations["val_metric"])
    assert fig.layout.annotations[0].text == "validation accuracy"


def test_two_phase_table_reads_the_last_evaluation(two_phase):
    settings, runs = two_phase
    table = viz.two_phase_table(runs.results, settings)
    assert table["variant"].tolist() == list(VARIANTS.values())
    none = table.set_index("variant").loc["No annealing"]
    assert (none["steps"], none["end"], none["Δ val accuracy"]) == (settings.total_steps, "budget", 0.0)
    for row, (name, result) in zip(table.itertuples(), runs.results.items(), strict=True):
        last = result.evaluations.iloc[-1]
        assert row.steps == result.steps_done
        assert row._5 == last["val_loss"]  # "val loss"
        assert row._6 == last["val_metric"]  # "val accuracy"
        assert row._4 == result.metrics["lr"].iloc[-1]  # "final lr"
        assert row.end == (result.reason or "budget"), name
