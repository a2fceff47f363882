"""The trainer and the second wave's needs: Schedule-Free AdamW evaluated at its average x
(``eval()`` / ``train()``), AdaScale SGD's S·b batch in S groups, its schedule read at ⌊τ⌋."""

from __future__ import annotations

import math

import torch
from torch.nn.functional import cross_entropy

from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer

MOONS = {"n_samples": 200}


def _config(**changes) -> TrainConfig:
    base = {
        "task": "moons",
        "task_params": MOONS,
        "optimizers": [("schedule_free", {"lr": 0.05}), ("adam", {"lr": 0.01})],
        "steps": 20,
        "eval_every": 5,
        "diag_every": 5,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


def test_schedule_free_is_evaluated_and_checkpointed_at_its_average() -> None:
    trainer = Trainer(_config())
    list(trainer.run())
    lane = trainer.lanes["schedule_free"]
    optimizer, model = lane.optimizer, lane.model
    assert all(group["train_mode"] for group in optimizer.param_groups)  # back at y after evaluating
    columns = lane.result.columns
    with torch.no_grad():
        at_y = float(cross_entropy(model(trainer.task.x_val), trainer.task.y_val))
        optimizer.eval()
        at_x = float(cross_entropy(model(trainer.task.x_val), trainer.task.y_val))
        x_weights = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer.train()
    # (each eval()/train() round trip moves y by float32 rounding: equal to a few ulps)
    assert math.isclose(columns["val_loss"][-1], at_x, rel_tol=1e-6)
    assert not math.isclose(at_x, at_y, rel_tol=1e-3)
    checkpoint = lane.result.checkpoints[20]  # the 2-D task's decision-boundary weights: x's
    for name, value in x_weights.items():
        torch.testing.assert_close(checkpoint[name], value, rtol=1e-5, atol=1e-6)


def test_schedule_free_resumes_identically_from_a_saved_state() -> None:
    config = _config()
    whole = Trainer(config)
    list(whole.run())
    first = Trainer(config)
    events = first.run()
    for event in events:
        if event.step >= 10:
            break
    events.close()
    resumed = Trainer.from_state_dict(first.state_dict())
    list(resumed.run())
    a, b = whole.results["schedule_free"].columns, resumed.results["schedule_free"].columns
    assert a["loss"] == b["loss"] and a["val_loss"] == b["val_loss"]


def test_adascale_draws_s_groups_and_follows_the_schedule_in_scale_invariant_time() -> None:
    calls: list[tuple[int, int]] = []  # (the step the schedule was read at, ⌊τ⌋ then)

    def schedule(step: int) -> float:
        calls.append((step, int(trainer.lanes["adascale"].optimizer.tau)))
        return 0.5 ** (step // 10)

    config = _config(optimizers=[("adascale", {"lr": 0.5, "scale": 4})], batch_size=8, steps=12)
    trainer = Trainer(config, schedule=schedule)
    list(trainer.run())
    lane = trainer.lanes["adascale"]
    columns = lane.result.columns
    assert columns["batch_size"] == [32] * 12  # S·b examples per step
    assert [at for at, _ in calls] == [tau for _, tau in calls]
    optimizer = lane.optimizer
    tau = optimizer.tau
    assert tau > 12  # the groups disagree (noisy labels): r > 1, so τ runs ahead of t
    assert columns["lr"] == [0.5 * 0.5 ** (at // 10) for at, _ in calls]
    first = next(lane.model.parameters())
    assert 1.0 <= float(optimizer.state[first]["gain_ratio"]) <= 4.0
