"""The Annealing lab's one schema and its link; Schedule-Free AdamW beside the annealed schedules."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
import torch

from dgs_core import links
from dgs_core.claims import annealing_hq
from dgs_core.optim import registry
from dgs_core.params import ParamError
from dgs_core.schedules.curves import curve
from dgs_core.studies.annealing import (
    SCHEDULE_FREE,
    VARIANT_LABELS,
    VARIANTS,
    TwoPhaseSettings,
    TwoPhaseStudy,
    two_phase_configs,
)
from dgs_core.studies.annealing_lab import (
    AnnealingLabConfig,
    EffectiveSettings,
    annealing_lab_config,
)
from dgs_core.training.config import OptimizerSpec
from dgs_core.training.trainer import _loss_and_accuracy

CHANGED = AnnealingLabConfig(
    tab="effective",
    run_steps=500,
    curves=(
        curve("cosine", warmup_before=50, base_lr=0.2, total_steps=450, min_lr=0.01),
        curve("multistep", base_lr=0.1, milestones=(200, 400), gamma=0.5),
    ),
    log_y=True,
    plateau={"factor": 0.3, "patience": 3, "noise": 0.1, "evaluations": 80},
    effective=EffectiveSettings(
        "multistep", "digits", (OptimizerSpec("adam", {"lr": 0.003}), OptimizerSpec("lion"))
    ),
    two_phase=TwoPhaseSettings(
        main_steps=80, anneal_steps=40, anneal_shape="linear", schedule_free=True, schedule_free_lr=0.004
    ),
)


def _link(data: object) -> str:
    packed = zlib.compress(json.dumps(data).encode())
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


@pytest.mark.parametrize("config", [AnnealingLabConfig(), CHANGED], ids=["start", "changed"])
def test_the_link_round_trips_every_setting(config) -> None:
    text = config.to_link()
    assert len(text) < 2000 and text.replace("-", "").replace("_", "").isalnum()  # URL-safe
    back = AnnealingLabConfig.from_link(text)
    assert back == config
    assert back.to_dict() == config.to_dict()
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()  # plain JSON


def test_the_changed_config_keeps_what_it_was_given() -> None:
    back = AnnealingLabConfig.from_link(CHANGED.to_link())
    assert back.tab == "effective" and back.run_steps == 500 and back.log_y
    assert [c.label for c in back.curves] == ["Warmup 50 → Cosine", "Multi-step decay"]
    assert back.curves[1].schedule.params["milestones"] == (200, 400)
    assert back.effective_curve == back.curves[1]
    assert back.effective.optimizers[0].hparams == {"lr": 0.003}
    assert back.two_phase.schedule_free and back.two_phase.schedule_free_lr == 0.004


def _with(**changes) -> dict:
    data = AnnealingLabConfig().to_dict()
    for key, value in changes.items():
        part, _, field = key.partition("__")
        if field:
            data[part][field] = value
        else:
            data[part] = value
    return data


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (_with(tab="plots"), "tab", "Invalid tab: 'plots'"),
        (_with(run_steps=0), "run_steps", "Invalid run_steps: 0"),
        (_with(log_y="yes"), "log_y", "Invalid log_y"),
        (_with(surprise=1), "surprise", "Invalid Annealing lab key: 'surprise'"),
        (
            _with(
                curves=[{"schedule": {"name": "cosine", "params": {"base_lr": 0.1, "total_steps": 300}}}] * 2
            ),
            "curves",
            "each schedule at most once",
        ),
        (
            _with(curves=[{"schedule": {"name": "cosine", "params": {"base_lr": -1.0}}}]),
            "base_lr",
            "Invalid base_lr: -1.0",
        ),
        (
            _with(
                curves=[{"schedule": {"name": "constant", "params": {"base_lr": 0.1}}, "warmup_before": 300}]
            ),
            "warmup_before",
            "Invalid warmup_before: 300",
        ),
        (_with(plateau={"factor": 1.5}), "factor", "Invalid factor: 1.5"),
        (_with(plateau={"mode": "max"}), "mode", "Invalid plateau key: 'mode'"),
        (_with(effective__schedule="cosine"), "schedule", "Invalid schedule: 'cosine'"),
        (_with(effective__task="mnist-9000"), "task", "mnist-9000"),
        (_with(effective__optimizers=["sgd", "sgd"]), "optimizers", "each optimizer once"),
        (_with(effective__optimizers=[{"name": "adam", "hparams": {"lr": -2}}]), "lr", "Invalid lr: -2"),
        (_with(two_phase__main_steps=-5), "main_steps", "Invalid main_steps: -5"),
        (_with(two_phase__schedule_free_lr=0), "schedule_free_lr", "Invalid schedule_free_lr: 0"),
        (
            _with(two_phase__task_params={"label_noise": 0.85, "hq_fraction": 0.1}),
            "label_noise",
            "Invalid label_noise: 0.85",
        ),
    ],
)
def test_a_bad_link_value_is_refused_naming_its_field(data, field, message) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        AnnealingLabConfig.from_link(_link(data))
    error = caught.value
    if isinstance(error, ParamError):
        assert error.field == field
    else:
        assert field in str(error)


@pytest.mark.parametrize(
    "text", ["", "not a link!", _link(AnnealingLabConfig().to_dict())[:-12], "A" * (links.MAX_CHARS + 1)]
)
def test_a_damaged_or_oversized_link_names_the_anneal_field(text) -> None:
    with pytest.raises(ParamError) as caught:
        AnnealingLabConfig.from_link(text)
    assert caught.value.field == "anneal" and "Invalid anneal" in str(caught.value)


def test_a_link_that_unpacks_to_something_huge_is_refused() -> None:
    huge = _link({"tab": "schedules", "pad": "x" * 200_000})
    assert len(huge) < links.MAX_CHARS
    with pytest.raises(ParamError, match="too large"):
        AnnealingLabConfig.from_link(huge)


def test_claim_6s_experiment_opens_the_two_phase_tab_with_the_claims_settings() -> None:
    for budget in ("smoke", "full"):
        (experiment,) = annealing_hq.plan(budget).extra["experiments"]
        assert experiment["lab"] == "annealing"
        opened = AnnealingLabConfig.from_link(
            annealing_lab_config("two_phase", experiment["config"]).to_link()
        )
        settings, _ = annealing_hq.SETTINGS[budget]
        assert opened.tab == "two_phase" and opened.two_phase == settings
        assert opened.two_phase.task_params["n_samples"] == settings.task_params["n_samples"]


def test_an_unknown_figure_is_refused() -> None:
    with pytest.raises(ParamError, match="Invalid figure"):
        annealing_lab_config("histogram", TwoPhaseSettings())


# ---------------------------------------------------------------------------------------------
# Schedule-Free AdamW beside the annealed schedules
# ---------------------------------------------------------------------------------------------


def test_schedule_free_is_off_by_default_and_leaves_the_serialisation_alone() -> None:
    settings = TwoPhaseSettings()
    assert "schedule_free" not in settings.to_dict() and "schedule_free_lr" not in settings.to_dict()
    assert list(two_phase_configs(settings)) == list(VARIANTS)
    on = settings.replace(schedule_free=True)
    assert on.to_dict()["schedule_free"] is True
    assert TwoPhaseSettings.from_dict(on.to_dict()) == on
    assert TwoPhaseSettings.from_dict(settings.to_dict()) == settings


def test_the_claims_shipped_plan_is_unchanged_by_the_new_settings() -> None:
    # the hashes of the shipped results' plans (assets/claims/annealing_hq), made before
    # Schedule-Free joined the two-phase settings
    assert annealing_hq.plan("full").config_hash == "6eb44317d884"
    assert annealing_hq.plan("smoke").config_hash == "c1bb45f95728"


def test_schedule_free_trains_at_a_constant_lr_and_is_evaluated_at_its_average() -> None:
    settings = TwoPhaseSettings(
        main_steps=20,
        anneal_steps=10,
        eval_every=5,
        task_params={"n_samples": 200, "label_noise": 0.2},
        schedule_free=True,
        schedule_free_lr=0.01,
    )
    configs = two_phase_configs(settings)
    assert list(configs) == [*VARIANTS, SCHEDULE_FREE]
    sf = configs[SCHEDULE_FREE]
    assert [o.name for o in sf.optimizers] == [SCHEDULE_FREE] and sf.schedule is None
    assert [p.schedule.name for p in sf.annealing.phases] == ["constant"]  # one phase, no schedule
    # same seed, data and budget as the annealed variants
    assert (sf.seed, sf.steps, sf.task_params) == (
        configs["anneal_hq"].seed,
        30,
        configs["anneal_hq"].task_params,
    )

    study = TwoPhaseStudy(settings)
    for _ in study.run():
        pass
    result = study.results[SCHEDULE_FREE]
    assert result.steps_done == 30
    assert result.metrics["lr"].tolist() == [0.01] * 30  # constant from the first step to the last
    annealed = study.results["anneal_main"].metrics["lr"]
    assert annealed.iloc[-1] < annealed.iloc[0]  # beside a schedule that does decay

    trainer = study.trainers[SCHEDULE_FREE]
    lane = next(iter(trainer.lanes.values()))
    recorded = float(result.evaluations["val_loss"].iloc[-1])
    with torch.no_grad():
        at_y = _loss_and_accuracy(lane.model, trainer.task.x_val, trainer.task.y_val)[0]
        with registry.at_evaluation_point(lane.optimizer):
            at_x = _loss_and_accuracy(lane.model, trainer.task.x_val, trainer.task.y_val)[0]
    assert recorded == pytest.approx(at_x, rel=1e-6)  # evaluated at the average x …
    assert abs(at_x - at_y) > 1e-4  # … which is not where it trains (y)
    assert VARIANT_LABELS[SCHEDULE_FREE] == "Schedule-Free AdamW, constant lr"
