"""The multi-optimizer trainer: determinism, divergence, stop/resume, schedules, annealing,
adaptive batches, bad inputs, the large-batch study, and every optimizer on every task."""

from __future__ import annotations

import copy
import io
import math
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.functional import cross_entropy

from dgs_core import metrics
from dgs_core.device import small_tensor_mode
from dgs_core.diagnostics import to_frame as diagnostics_frame
from dgs_core.optim import registry
from dgs_core.schedules import ScheduleSpec, make_schedule
from dgs_core.schedules.annealing import PlateauSettings, two_phase_plan
from dgs_core.studies.large_batch import (
    LargeBatchStudy,
    large_batch_base,
    large_batch_configs,
    large_batch_gap,
)
from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.training.results import METRIC_COLUMNS
from dgs_core.training.tasks import task_names
from dgs_core.training.trainer import Trainer

MOONS = {"n_samples": 200}


def _config(**changes) -> TrainConfig:
    base = {
        "task": "moons",
        "task_params": MOONS,
        "optimizers": [("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01})],
        "steps": 30,
        "eval_every": 10,
        "diag_every": 5,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


def _run(trainer: Trainer, stop=None) -> list:
    return list(trainer.run(stop))


def _frames(trainer: Trainer) -> dict[str, pd.DataFrame]:
    return {label: r.metrics for label, r in trainer.results.items()}


def _assert_same_frames(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for label in a:
        pd.testing.assert_frame_equal(a[label], b[label], check_exact=True)


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_metrics_and_records() -> None:
    config = _config(optimizers=["sgd", "dgs", ("extrasgd", {"variant": "noise"})])
    first, second = Trainer(config), Trainer(config)
    _run(first), _run(second)
    _assert_same_frames(_frames(first), _frames(second))
    for label in first.results:
        a, b = first.results[label], second.results[label]
        pd.testing.assert_frame_equal(a.diagnostics, b.diagnostics, check_exact=True)
        assert a.checkpoints.keys() == b.checkpoints.keys()
        for step, weights in a.checkpoints.items():
            assert all(torch.equal(w, b.checkpoints[step][k]) for k, w in weights.items())
    other = Trainer(config.replace(seed=1))
    _run(other)
    assert not np.array_equal(other.results["sgd"].losses, first.results["sgd"].losses)


def test_every_optimizer_starts_from_the_same_init_and_sees_the_same_batches() -> None:
    config = _config(optimizers=[("sgd", {"lr": 0.1}), ("sgd", {"lr": 0.1}), ("adam", {})])
    trainer = Trainer(config)
    assert list(trainer.lanes) == ["sgd", "sgd#2", "adam"]
    states = [lane.model.state_dict() for lane in trainer.lanes.values()]
    for state in states[1:]:
        for key, value in state.items():
            assert torch.equal(value, states[0][key])
    first_batch = [lane.batches.next("main", 32) for lane in trainer.lanes.values()]
    assert all(torch.equal(b, first_batch[0]) for b in first_batch)
    run = Trainer(config)
    _run(run)
    frames = _frames(run)
    pd.testing.assert_frame_equal(frames["sgd"], frames["sgd#2"], check_exact=True)


def test_the_global_rng_is_left_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _run(Trainer(_config(steps=5, eval_every=5)))
    assert torch.equal(torch.rand(3), expected)


# -- what is recorded ------------------------------------------------------------------------


def test_metrics_columns_events_and_statuses() -> None:
    trainer = Trainer(_config(steps=25))
    events = _run(trainer)
    assert [e.step for e in events] == [10, 20, 25]
    assert [e.finished for e in events] == [False, False, True]
    assert events[-1].total_steps == 25 and set(events[-1].lanes) == {"sgd", "adam"}
    lane = events[-1].lanes["adam"]
    assert lane.status == "done" and lane.step == 25 and lane.batch_size == 32 and lane.lr == 0.01
    assert math.isfinite(lane.val_loss) and 0 <= lane.val_metric <= 1
    assert lane.diagnostics is not None and lane.diagnostics.step == 25

    result = trainer.results["adam"]
    frame = result.metrics
    assert list(frame.columns) == [*METRIC_COLUMNS, "spike"]
    assert frame["step"].tolist() == list(range(1, 26))
    assert frame["val_loss"].notna().tolist() == [s in (10, 20, 25) for s in range(1, 26)]
    assert (frame["data_source"] == "main").all() and (frame["lr"] == 0.01).all()
    np.testing.assert_allclose(frame["epoch"], np.arange(1, 26) * 32 / trainer.task.n_train)
    assert result.evaluations["step"].tolist() == [10, 20, 25]
    assert [r.step for r in result.records] == [1, 5, 10, 15, 20, 25]
    assert sorted(result.checkpoints) == [10, 20, 25]
    assert result.boundary_at(trainer.task, 9) is None
    step, probs = result.boundary_at(trainer.task, 24, resolution=30)
    assert step == 20 and probs.shape == (30, 30, 2)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)
    # the final checkpoint is the final model: same predictions
    _, last = result.boundary_at(trainer.task, 25, resolution=30)
    with torch.no_grad():
        direct = result.model(trainer.task.grid(30)[2]).softmax(dim=-1).reshape(30, 30, 2).numpy()
    np.testing.assert_allclose(last, direct, rtol=1e-6)


def test_progress_reads_only_complete_rows() -> None:
    """A page reads a result's latest numbers while the trainer appends a row column by column."""
    trainer = Trainer(_config(steps=10))
    result = trainer.results["sgd"]
    before = result.progress()
    assert before.step == 0 and math.isnan(before.loss) and before.batch_size is None
    events = _run(trainer)
    lane = result.progress()
    assert lane == events[-1].lanes["sgd"]
    result.columns["step"].append(11)  # a row half written: the step column only
    result.columns["loss"].append(99.0)
    assert result.progress() == lane


def test_each_event_counts_the_spikes_up_to_its_step() -> None:
    # a large SGD lr on spirals: a spiky loss; an event's count is read after the run went on
    trainer = Trainer(
        TrainConfig(task="spirals", optimizers=[("sgd", {"lr": 2.0})], steps=200, eval_every=20, diag_every=0)
    )
    events = _run(trainer)
    losses = trainer.results["sgd"].losses
    counts = [e.lanes["sgd"].spikes for e in events]
    assert counts == [metrics.count_spikes(losses[: e.step]) for e in events]
    assert counts[-1] > counts[0] > 0


def test_diagnostics_views() -> None:
    trainer = Trainer(_config())
    _run(trainer)
    result = trainer.results["adam"]
    assert result.record_at(0) is None and result.record_at(7).step == 5 and result.record_at(99).step == 30
    table = result.layer_table("importance")
    assert list(table.index) == [name for name, _ in result.model.named_parameters()]
    assert list(table.columns) == [1, 5, 10, 15, 20, 25, 30]
    kept = result.elements_at(12, "importance")
    assert kept["0.weight"].shape == (32, 2)
    band = result.quantile_band("lr_eff")
    assert list(band.columns) == ["step", "q05", "q25", "q50", "q75", "q95"] and len(band) == 7
    assert (band[["q05", "q25", "q50", "q75", "q95"]].diff(axis=1).iloc[:, 1:] >= 0).all().all()
    # plain SGD without a schedule: every element's effective lr is the lr
    sgd_band = trainer.results["sgd"].quantile_band("lr_eff")
    np.testing.assert_allclose(sgd_band[["q05", "q95"]].to_numpy(), 0.1, rtol=1e-3)


def test_diagnostics_can_be_switched_off() -> None:
    trainer = Trainer(_config(diag_every=0))
    _run(trainer)
    assert trainer.results["sgd"].records == [] and trainer.results["sgd"].diagnostics.empty


# -- divergence ------------------------------------------------------------------------------


def test_a_diverging_optimizer_stops_and_the_others_continue() -> None:
    config = _config(
        model={"activation": "relu"},
        optimizers=[("momentum", {"lr": 1000.0}), ("sgd", {"lr": 0.1})],
    )
    trainer = Trainer(config)
    events = _run(trainer)
    diverged = trainer.results["momentum"]
    assert diverged.status.startswith("diverged at step ")
    step = int(diverged.status.rsplit(" ", 1)[1])
    assert diverged.steps_done == step < 30
    assert not math.isfinite(diverged.losses[-1]) and np.isfinite(diverged.losses[:-1]).all()
    assert trainer.results["sgd"].status == "done" and trainer.results["sgd"].steps_done == 30
    assert events[-1].lanes["momentum"].status == diverged.status


# -- stop and resume -------------------------------------------------------------------------


def _resume_config() -> TrainConfig:
    # optimizers with state of every kind: momentum, DGS's importance, ExtraSGD's noise
    # generator, AdAdaGrad-Norm's growing batch (per-sample gradients), a schedule
    return _config(
        optimizers=["momentum", "dgs", ("extrasgd", {"variant": "noise"}), ("adadagrad_norm", {"lr": 0.5})],
        schedule=ScheduleSpec("cosine", {"base_lr": 0.1, "total_steps": 40}),
        batch_policy="adaptive",
        batch_size=8,
        max_batch_size=64,
        steps=40,
    )


def test_stop_keeps_what_was_recorded_and_run_continues_identically() -> None:
    config = _resume_config()
    reference = Trainer(config)
    _run(reference)

    trainer = Trainer(config)
    stop = threading.Event()
    for event in trainer.run(stop):
        if event.step == 20:
            stop.set()
    assert trainer.step == 20
    assert all(r.status == "stopped" and r.steps_done == 20 for r in trainer.results.values())
    partial = _frames(trainer)
    assert all(len(f) == 20 for f in partial.values())
    dgs = trainer.results["dgs"]
    dgs.diagnostics, dgs.quantile_band()  # cached here, extended after the resume
    events = _run(trainer)
    assert events[0].step == 30 and events[-1].finished
    assert all(r.status == "done" for r in trainer.results.values())
    _assert_same_frames(_frames(trainer), _frames(reference))
    pd.testing.assert_frame_equal(dgs.diagnostics, diagnostics_frame(dgs.records))
    pd.testing.assert_frame_equal(dgs.quantile_band(), reference.results["dgs"].quantile_band())


def test_a_half_written_row_is_not_read() -> None:
    trainer = Trainer(_config(steps=5, eval_every=5))
    _run(trainer)
    result = trainer.results["sgd"]
    result.columns["step"].append(6)  # what another thread could see mid-step
    assert result.metrics["step"].tolist() == [1, 2, 3, 4, 5]


def test_closing_the_generator_counts_as_stop() -> None:
    trainer = Trainer(_config())
    events = trainer.run()
    next(events)
    events.close()
    assert all(r.status == "stopped" and r.steps_done == 10 for r in trainer.results.values())


def test_a_paced_run_lasts_about_its_pace_grows_evenly_and_computes_the_same_numbers() -> None:
    reference = Trainer(_config())
    _run(reference)
    trainer = Trainer(_config())  # 30 steps, an event every 10
    start = time.perf_counter()
    seen = [(event.step, time.perf_counter() - start) for event in trainer.run(pace=1.2)]
    took = time.perf_counter() - start
    assert 1.2 <= took < 1.2 + 1.0, took  # never before its pace; late only by the machine's load
    # the steps come spread over the pace, not all at the end: step 10 is due at 0.4 s
    assert [step for step, _ in seen] == [10, 20, 30]
    assert 0.4 <= seen[0][1] < 0.4 + 0.6, seen
    _assert_same_frames(_frames(trainer), _frames(reference))  # the pace changes no number


def test_stop_is_honoured_within_a_tick_while_a_paced_run_waits() -> None:
    trainer = Trainer(_config(steps=10, eval_every=5))  # 60 s over 10 steps: 6 s per step
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.perf_counter()
    events = list(trainer.run(stop, pace=60.0))
    took = time.perf_counter() - start
    assert took < 0.3 + 0.5, took  # the wait looks at the stop request every PACE_TICK_S
    assert trainer.step == 1 and events[-1].finished
    assert all(r.status == "stopped" and r.steps_done == 1 for r in trainer.results.values())
    resumed = list(trainer.run())  # and a resumed run, unpaced, goes on as fast as it can
    assert resumed[-1].step == 10 and trainer.complete


def test_a_resumed_paced_run_takes_its_share_of_the_pace() -> None:
    trainer = Trainer(_config(steps=20, eval_every=10))
    _run(trainer, stop=lambda: trainer.step >= 10)
    start = time.perf_counter()
    list(trainer.run(pace=2.0))  # 10 of the 20 steps left: 1 s of the 2
    took = time.perf_counter() - start
    assert 1.0 <= took < 1.0 + 0.8, took


@pytest.mark.parametrize("pace", [-1.0, float("nan"), 3601.0, "20"])
def test_a_bad_pace_is_refused_naming_it(pace) -> None:
    with pytest.raises(ValueError, match=r"^Invalid pace: "):
        next(Trainer(_config()).run(pace=pace))


def test_resume_from_a_saved_state_equals_an_uninterrupted_run() -> None:
    config = _resume_config()
    reference = Trainer(config)
    _run(reference)
    assert reference.results["adadagrad_norm"].metrics["batch_size"].iloc[-1] > 8, "the batch grew"

    first = Trainer(config)
    _run(first, stop=lambda: first.step >= 20)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)
    resumed = Trainer.from_state_dict(state)
    assert resumed.step == 20 and resumed.results["dgs"].steps_done == 20
    _run(resumed)
    _assert_same_frames(_frames(resumed), _frames(reference))
    for label, result in resumed.results.items():
        for a, b in zip(result.model.parameters(), reference.results[label].model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_resume_from_a_saved_state_reproduces_the_diagnostics() -> None:
    # the importance EMA and its bias correction continue from the saved state: the records
    # after the resume equal the uninterrupted run's, down to the per-element copies. Step 22
    # records nothing (records: 1, 5, 10, …): the resume lands between two records.
    config = _resume_config()
    reference = Trainer(config)
    _run(reference)
    first = Trainer(config)
    _run(first, stop=lambda: first.step >= 22)
    state = first.state_dict()
    assert first.step == 22
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    resumed = Trainer.from_state_dict(torch.load(buffer, weights_only=False))
    _run(resumed)
    for label, result in resumed.results.items():
        expected = reference.results[label]
        assert [r.step for r in result.records] == [r.step for r in expected.records]
        assert result.records[-1].step > 20, "records after the resume are compared"
        pd.testing.assert_frame_equal(result.diagnostics, expected.diagnostics, check_exact=True)
        for record, other in zip(result.records, expected.records, strict=True):
            assert record.elements.keys() == other.elements.keys()
            for key, values in record.elements.items():
                assert torch.equal(values, other.elements[key]), (label, record.step, key)


def test_state_of_another_config_is_refused() -> None:
    trainer = Trainer(_config())
    with pytest.raises(ValueError, match="Invalid state"):
        Trainer(_config(seed=5)).load_state_dict(trainer.state_dict())


# -- schedules, annealing, batches -----------------------------------------------------------


def test_schedule_scales_every_optimizer_lr() -> None:
    spec = ScheduleSpec("warmup_cosine", {"base_lr": 0.1, "warmup_steps": 5, "total_steps": 30})
    trainer = Trainer(_config(schedule=spec, optimizers=[("sgd", {"lr": 0.1}), ("adam", {"lr": 0.002})]))
    _run(trainer)
    schedule = make_schedule("warmup_cosine", base_lr=0.1, warmup_steps=5, total_steps=30)
    expected = np.array([schedule(t) for t in range(30)])
    np.testing.assert_array_equal(trainer.results["sgd"].metrics["lr"], expected)  # lr = base_lr: exact
    np.testing.assert_allclose(trainer.results["adam"].metrics["lr"], expected * 0.02, rtol=1e-12)
    assert trainer.results["adam"].optimizer.param_groups[0]["lr"] == pytest.approx(expected[-1] * 0.02)


def test_a_plain_callable_schedule_is_a_factor() -> None:
    trainer = Trainer(_config(steps=10), schedule=lambda step: 0.5 if step >= 5 else 1.0)
    _run(trainer)
    assert trainer.results["adam"].metrics["lr"].tolist() == [0.01] * 5 + [0.005] * 5


def test_annealing_switches_the_data_source_and_ends_when_the_plan_does() -> None:
    # phase 2 decays 0.1·0.7^t on the HQ subset; 0.1·0.7^7 ≤ min_lr = 0.01 ends it after 7 steps
    plan = two_phase_plan(
        main_steps=20,
        main_schedule=ScheduleSpec("constant", {"base_lr": 0.1}),
        hq_steps=30,
        hq_schedule=ScheduleSpec("exponential", {"base_lr": 0.1, "gamma": 0.7}),
        min_lr=0.01,
    )
    config = _config(
        task_params={**MOONS, "label_noise": 0.2, "hq_fraction": 0.3},
        annealing=plan,
        steps=50,
        eval_every=5,
        optimizers=[("sgd", {"lr": 0.1}), ("adam", {"lr": 0.01})],
    )
    trainer = Trainer(config)
    events = _run(trainer)
    assert events[-1].finished and events[-1].step == 27
    for label, result in trainer.results.items():
        frame = result.metrics
        assert result.status == "done" and result.reason == "min_lr reached"
        assert frame["data_source"].tolist() == ["main"] * 20 + ["hq"] * 7
        scale = result.hparams["lr"] / 0.1  # the plan's lr, relative to each optimizer's own
        np.testing.assert_allclose(
            frame["lr"], scale * np.array([0.1] * 20 + [0.1 * 0.7**t for t in range(7)])
        )
        # validations every 5 steps reach the plan (steps count from 0 there), plus the last one
        assert [s for s, _ in trainer.lanes[label].controller.observations] == [4, 9, 14, 19, 24]


def test_plateau_annealing_is_fed_each_optimizer_own_validation() -> None:
    plan = two_phase_plan(
        main_steps=10,
        main_schedule=ScheduleSpec("constant", {"base_lr": 0.1}),
        hq_steps=20,
        hq_plateau=PlateauSettings(patience=0, factor=0.5),
        metric_mode="max",
    )
    trainer = Trainer(
        _config(annealing=plan, steps=30, eval_every=2, task_params={**MOONS, "hq_fraction": 0.5})
    )
    _run(trainer)
    for label, lane in trainer.lanes.items():
        observed = [metric for _, metric in lane.controller.observations]
        evaluated = trainer.results[label].evaluations["val_metric"].tolist()
        assert observed == evaluated[: len(observed)], "mode 'max' observes the validation accuracy"


def test_adaptive_batches_grow_only_for_batch_test_optimizers() -> None:
    config = _config(
        optimizers=["sgd", ("adadagrad_norm", {"lr": 0.5, "test_constant": 0.05})],
        batch_policy="adaptive",
        batch_size=4,
        max_batch_size=100,
    )
    trainer = Trainer(config)
    _run(trainer)
    sizes = trainer.results["adadagrad_norm"].metrics["batch_size"]
    assert sizes.iloc[0] == 4 and sizes.iloc[-1] > 4 and sizes.is_monotonic_increasing
    assert sizes.max() <= 100
    assert (trainer.results["sgd"].metrics["batch_size"] == 4).all()
    fixed = Trainer(config.replace(batch_policy="fixed"))
    _run(fixed)
    assert (fixed.results["adadagrad_norm"].metrics["batch_size"] == 4).all()


def test_batches_never_exceed_the_data() -> None:
    trainer = Trainer(_config(batch_size=1000, max_batch_size=1000, steps=3, eval_every=3))
    _run(trainer)
    assert (trainer.results["sgd"].metrics["batch_size"] == trainer.task.n_train).all()


# -- every optimizer on every task -----------------------------------------------------------


@pytest.mark.parametrize("task", task_names())
def test_every_registered_optimizer_trains_every_task(task: str) -> None:
    names = registry.names()
    params = {"n_samples": 120} if task in ("moons", "circles", "spirals") else {}
    if task == "modular":
        params = {"modulus": 7}
    config = TrainConfig(
        task=task,
        task_params=params,
        model={"size": "tiny"},
        optimizers=names,
        steps=3,
        eval_every=3,
        diag_every=2,
        batch_size=8,
        batch_policy="adaptive",
        max_batch_size=32,
        device="cpu",
    )
    trainer = Trainer(config)
    initial = {k: v.clone() for k, v in next(iter(trainer.lanes.values())).model.state_dict().items()}
    _run(trainer)
    for name, result in trainer.results.items():
        assert result.status == "done", (name, result.status)
        assert result.steps_done == 3 and np.isfinite(result.losses).all(), name
        assert math.isfinite(result.columns["val_loss"][-1]), name
        moved = any(not torch.equal(v, initial[k]) for k, v in result.model.state_dict().items())
        assert moved, f"{name} did not change the weights"
        assert result.records, name


@pytest.mark.parametrize("task", task_names())
def test_the_flat_gradient_buffer_gives_a_plain_loops_numbers(task: str) -> None:
    """The trainer zeroes one buffer that holds every p.grad instead of setting each to None.
    Every parameter of every task's model gets a gradient on every step (checked), so nothing
    that would have been None is zero instead: the losses and weights equal a plain loop's."""
    params = {"n_samples": 120} if task in ("moons", "circles", "spirals") else {}
    config = TrainConfig(
        task=task, task_params=params, optimizers=["adam"], steps=4, eval_every=2, batch_size=16, device="cpu"
    )
    trainer = Trainer(config)
    lane = next(iter(trainer.lanes.values()))
    assert all(
        p.grad is not None and p.grad.untyped_storage().data_ptr() == lane.grads.data_ptr()
        for p in lane.model.parameters()
    )
    model = copy.deepcopy(lane.model)
    optimizer = registry.create("adam", model.parameters(), **lane.result.hparams)
    batches = copy.deepcopy(lane.batches)
    _run(trainer)
    losses = []
    for _ in range(config.steps):
        index = batches.next("main", config.batch_size)
        x, y = trainer.task.x_train[index], trainer.task.y_train[index]

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = cross_entropy(model(x), y)
            loss.backward()
            missing = [name for name, p in model.named_parameters() if p.grad is None]
            assert not missing, f"{task}: no gradient for {missing}"
            return loss

        with small_tensor_mode():  # as the trainer: one thread, so the same summation order
            losses.append(optimizer.step(closure).item())
    assert trainer.results["adam"].columns["loss"] == losses
    for (name, a), b in zip(model.named_parameters(), lane.model.parameters(), strict=True):
        assert torch.equal(a, b), name


# -- bad inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"optimizers": [("sgd", {"lr": -1.0})]}, r"Invalid lr: -1.0"),
        ({"optimizers": [("sgd", {"momentum": 0.9})]}, r"Invalid hyperparameter for sgd: 'momentum'"),
        ({"optimizers": [("nadam", {})]}, r"Invalid optimizer: 'nadam'"),
        ({"optimizers": []}, r"Invalid optimizers"),
        ({"optimizers": [("sgd", {}, "a"), ("adam", {}, "a")]}, r"Invalid label"),
        ({"task": "mnist"}, r"Invalid task: 'mnist'"),
        ({"task_params": {"label_noise": 2.0}}, r"Invalid label_noise: 2.0"),
        ({"model": {"hidden": -3}}, r"Invalid hidden: -3"),
        ({"steps": 0}, r"Invalid steps: 0"),
        (
            {"steps": 501, "max_steps": 500},
            r"Invalid steps: 501 \(must be an integer in \[1, 500\]; the cap is max_steps=500\)",
        ),
        ({"steps": 30_000}, r"max_steps=20000"),
        ({"batch_size": 0}, r"Invalid batch_size: 0"),
        ({"batch_size": 64, "max_batch_size": 32}, r"Invalid max_batch_size: 32"),
        ({"batch_policy": "grow"}, r"Invalid batch_policy: 'grow'"),
        ({"eval_every": 0}, r"Invalid eval_every: 0"),
        ({"diag_every": -1}, r"Invalid diag_every: -1"),
        ({"seed": -1}, r"Invalid seed: -1"),
        ({"device": "tpu"}, r"Invalid device: 'tpu'"),
        ({"schedule": {"name": "cosine", "params": {"base_lr": -1}}}, r"Invalid base_lr: -1"),
        ({"diag_keep": ["no.such.tensor"]}, None),  # checked when the trainer builds (below)
    ],
)
def test_bad_config_raises_value_error_naming_the_field(changes: dict, message: str | None) -> None:
    if message is None:
        with pytest.raises(ValueError, match=r"Invalid keep: 'no\.such\.tensor'"):
            Trainer(_config(**changes))
        return
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def _constant_plan(main_steps: int, hq_steps: int):
    constant = ScheduleSpec("constant", {"base_lr": 0.1})
    return two_phase_plan(
        main_steps=main_steps, main_schedule=constant, hq_steps=hq_steps, hq_schedule=constant
    )


def test_schedule_and_annealing_exclude_each_other() -> None:
    plan = _constant_plan(5, 5)
    with pytest.raises(ValueError, match="Invalid schedule"):
        _config(schedule=ScheduleSpec("constant", {}), annealing=plan)


def test_an_empty_hq_subset_is_refused_when_the_plan_needs_it() -> None:
    plan = _constant_plan(2, 5)
    with pytest.raises(ValueError, match=r"Invalid hq_fraction: 0\.0"):
        Trainer(_config(task_params={**MOONS, "hq_fraction": 0.0}, annealing=plan, steps=7))


def test_config_round_trips_through_json() -> None:
    plan = _constant_plan(5, 5)
    for config in (
        _config(schedule=ScheduleSpec("cosine", {"total_steps": 30}), diag_keep=["0.weight"]),
        _config(annealing=plan, optimizers=[OptimizerSpec("dgs", {"gamma": 0.5}, "mine")]),
    ):
        text = config.to_json()
        assert TrainConfig.from_json(text) == config and hash(TrainConfig.from_json(text)) == hash(config)
        assert TrainConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    with pytest.raises(ValueError, match="Invalid config field: 'lr'"):
        TrainConfig.from_dict({"lr": 0.1})


# -- the large-batch question ----------------------------------------------------------------


def test_large_batch_configs_have_equal_epochs() -> None:
    base = large_batch_base("moons", task_params=MOONS, device="cpu")
    assert [s.name for s in base.optimizers] == ["sgd", "lars", "extrasgd"]
    configs = large_batch_configs(base, small_batch=10, large_batch=50, epochs=3, lr_scaling="linear")
    n_train = 150
    assert configs[10].steps == 45 and configs[50].steps == 9
    assert configs[10].steps * 10 == configs[50].steps * 50 == 3 * n_train
    assert configs[50].optimizers[0].hparams["lr"] == pytest.approx(
        5 * configs[10].optimizers[0].hparams["lr"]
    )
    with pytest.raises(ValueError, match="max_steps=20"):
        large_batch_configs(base.replace(max_steps=20), small_batch=10, large_batch=50, epochs=3)
    with pytest.raises(ValueError, match="Invalid large_batch: 10"):
        large_batch_configs(base, small_batch=10, large_batch=10)
    with pytest.raises(ValueError, match="Invalid lr_scaling: 'cubic'"):
        large_batch_configs(base, lr_scaling="cubic")


def test_large_batch_study_reports_the_gap_per_optimizer_and_batch() -> None:
    base = large_batch_base("moons", task_params=MOONS, device="cpu", diag_every=0)
    study = LargeBatchStudy(base, small_batch=16, large_batch=64, epochs=2)
    events = list(study.run())
    assert {e.run for e in events} == {16, 64} and events[-1].event.finished
    gap = study.gap()
    assert gap[["optimizer", "batch_size"]].values.tolist() == [
        ["sgd", 16],
        ["sgd", 64],
        ["lars", 16],
        ["lars", 64],
        ["extrasgd", 16],
        ["extrasgd", 64],
    ]
    np.testing.assert_allclose(gap["metric_gap"], gap["train_metric"] - gap["val_metric"])
    np.testing.assert_allclose(gap["loss_gap"], gap["val_loss"] - gap["train_loss"])
    # equal epochs up to one batch (whole steps only)
    assert ((gap["epochs"] - 2.0).abs() <= gap["batch_size"] / 150).all()
    assert (gap["status"] == "done").all()
    assert large_batch_gap({}).empty


def test_large_batch_study_stops_and_resumes() -> None:
    base = large_batch_base("moons", task_params=MOONS, device="cpu", diag_every=0)
    study = LargeBatchStudy(base, small_batch=16, large_batch=64, epochs=1)
    stop = threading.Event()
    for event in study.run(stop):
        if event.run == 16 and event.event.step >= 5:
            stop.set()
    assert study.trainers[16].results["sgd"].status == "stopped"
    assert 5 <= study.trainers[16].step < study.configs[16].steps
    stop.clear()
    list(study.run(stop))
    assert all(r.status == "done" for t in study.trainers.values() for r in t.results.values())
    assert study.trainers[16].step == study.configs[16].steps
