"""Claim 5: adaptive batch sizes keep the small batch's accuracy in fewer steps.

AdAdaGrad-Norm and AdAdaGrad grow their batch from b to at most B by their batch-size tests;
AdaGrad-Norm runs at a fixed b and at a fixed B. All see the same number of examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import dgs_core.claims.common as common
from dgs_core.claims.base import Arm, Claim, FigureSpec, Plan, Source, Tables, Tuning
from dgs_core.claims.verdicts import Finding, Interval, Verdict, at_least, interval, paired, under

NAME = "adaptive_batches"
MARGIN = 0.01  # "keeps the accuracy": within one accuracy point
SETTINGS = {
    "smoke": {
        "task": "spirals",
        "task_params": {"n_samples": 200},
        "model": {"size": "small"},
        "small_batch": 8,
        "large_batch": 64,
        "epochs": 3.0,
        "trials": 2,
        "seeds": 2,
    },
    "full": {
        "task": "spirals",
        "task_params": {},
        "model": {"size": "small"},
        "small_batch": 8,
        "large_batch": 256,
        "epochs": 30.0,
        "trials": 6,
        "seeds": 5,
    },
}
# The update rule each adaptive method shares with a fixed-batch optimizer, whose lr it takes.
ADAPTIVE = {"adadagrad_norm": "adagrad_norm", "adadagrad": "adagrad"}


def _label(optimizer: str, small: int, large: int | None = None) -> str:
    return f"{optimizer} · batch {small}" + ("" if large is None else f" → {large}")


def _n_train(settings: Mapping[str, Any]) -> int:
    from dgs_core.training.tasks import make_task

    return make_task(settings["task"], seed=common.TUNING_SEED, **settings["task_params"]).n_train


def plan(budget: str) -> Plan:
    settings = SETTINGS[budget]
    small, large = settings["small_batch"], settings["large_batch"]
    samples = math.ceil(settings["epochs"] * _n_train(settings))
    specs = {}
    for key, batch, optimizers in (
        ("small batch", small, ("adagrad_norm", "adagrad")),
        ("large batch", large, ("adagrad_norm",)),
    ):
        steps = math.ceil(samples / batch)
        specs[key] = Tuning(
            key,
            common.training_spec(
                settings["task"],
                optimizers,
                trials=settings["trials"],
                steps=steps,
                batch_size=batch,
                eval_every=max(1, steps // 20),
                task_params=settings["task_params"],
                model=settings["model"],
            ),
        )
    arms = [
        common.tuned_arm(_label("adagrad_norm", small), specs["small batch"], "adagrad_norm", group="fixed"),
        common.tuned_arm(_label("adagrad_norm", large), specs["large batch"], "adagrad_norm", group="fixed"),
    ]
    base = specs["small batch"].spec
    for name, rule in ADAPTIVE.items():
        config = base.train_config(name, {}, common.TUNING_SEED).replace(
            batch_policy="adaptive", max_batch_size=large, eval_every=1
        )
        arms.append(
            Arm(
                _label(name, small, large),
                config,
                group="adaptive",
                tuned=("small batch", rule),
                samples=samples,
            )
        )
    extra = {"task": settings["task"], "small_batch": small, "large_batch": large, "samples": samples}
    return Plan(NAME, budget, common.seeds(settings["seeds"]), tuple(specs.values()), tuple(arms), extra)


def numbers(tables: Tables, extra: Mapping[str, Any]) -> dict[str, Any]:
    runs = tables["runs"]
    small, large = extra["small_batch"], extra["large_batch"]
    fixed_small, fixed_large = _label("adagrad_norm", small), _label("adagrad_norm", large)
    labels = [fixed_small, fixed_large, *(_label(name, small, large) for name in ADAPTIVE)]
    accuracy = {arm: common.final_accuracy(runs, arm) for arm in labels}
    steps = {arm: common.arm_runs(runs, arm)["steps"].to_numpy(dtype=float) for arm in labels}
    seen = {arm: common.arm_runs(runs, arm)["samples"].to_numpy(dtype=float) for arm in labels}
    adaptive = {}
    for name in ADAPTIVE:
        arm = _label(name, small, large)
        adaptive[name] = {
            "minus_small_batch": paired(accuracy[arm], accuracy[fixed_small]).to_dict(),
            "minus_large_batch": paired(accuracy[arm], accuracy[fixed_large]).to_dict(),
            "steps": interval(steps[arm]).to_dict(),
            "largest_batch": int(common.arm_runs(runs, arm)["max_batch"].max()),
        }
    return {
        "batches": [small, large],
        "samples": extra["samples"],
        "small_batch_steps": float(np.max(steps[fixed_small])),
        "final_val_accuracy": common.intervals(accuracy),
        "steps": common.intervals(steps),
        "samples_seen": common.intervals(seen),
        "adaptive": adaptive,
        "diverged": {arm: common.diverged_count(runs, arm) for arm in labels},
    }


def verdict(values: Mapping[str, Any]) -> Verdict:
    small, large = values["batches"]
    findings = []
    for name, found in values["adaptive"].items():
        kept = Interval.from_dict(found["minus_small_batch"])
        findings.append(
            Finding(
                f"{name} ({small} → {large}) keeps AdaGrad-Norm's accuracy at batch {small} "
                f"(within {MARGIN:g}), at equal examples seen",
                at_least(kept, MARGIN),
                kept.describe(),
            )
        )
        steps = Interval.from_dict(found["steps"])
        findings.append(
            Finding(
                f"{name} takes fewer steps than batch {small} ({values['small_batch_steps']:.0f})",
                under(steps, values["small_batch_steps"]),
                f"{steps.describe(4)}; largest batch {found['largest_batch']}",
            )
        )
    return Verdict.of(findings)


CLAIM = Claim(
    name=NAME,
    number=5,
    title="Adaptive batch sizes keep small-batch accuracy in fewer steps",
    quote=(
        "We introduce AdAdaGrad and its scalar variant AdAdaGrad-Norm, which progressively increase "
        "batch sizes during training, while model updates are performed using AdaGrad and "
        "AdaGrad-Norm. […] We corroborate our theoretical claims by performing image classification "
        "experiments, highlighting the merits of the proposed schemes in terms of both training "
        "efficiency and model generalization."
    ),
    source=Source(
        "Lau, Liu, Kolar: AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods "
        "(arXiv 2402.11215)",
        "https://arxiv.org/abs/2402.11215",
    ),
    experiment=(
        "An MLP on the spirals; every run sees the same number of training examples. AdaGrad-Norm "
        "at a fixed small batch b and at a fixed large batch B, each with its lr tuned at its batch "
        "(equal budgets: a log-spaced lr grid, every trial a full run on seed 0 scored by its final "
        "validation loss). AdAdaGrad-Norm and AdAdaGrad start at b and grow their batch up to B by "
        "their batch-size tests (the registry's test constants), with the lr tuned at b for their "
        "update rule (AdaGrad-Norm's, Adagrad's). An adaptive run stops at the first step at which "
        "it has seen the examples of the fixed runs; its validation accuracy is read there. All "
        "run on held-out seeds (one seed: one data split, initialisation and batch order)."
    ),
    rule=(
        "For each adaptive method, two findings. Generalization: on the 95 % interval of the paired "
        "difference of final validation accuracy (adaptive − AdaGrad-Norm at b): holds if its lower "
        "end is ≥ −0.01 (within one point), does not hold if its upper end is < −0.01, inconclusive "
        "otherwise. Efficiency: on the 95 % interval of its step count: holds if the upper end is "
        "below the small batch's steps, does not hold if the lower end is at or above them (the "
        "batch never grew), inconclusive otherwise. All the same is the verdict; otherwise any "
        "holds gives partly, else any does not hold gives does not hold."
    ),
    note=(
        "AdAdaGrad's coordinate-wise test is an interpretation (docs/algorithms.md#adadagrad); "
        "AdAdaGrad-Norm's norm test follows the paper. The comparison with the fixed large batch "
        "is reported beside the verdict."
    ),
    lab="training",
    figure=FigureSpec(
        "bars", "final_val_accuracy", "Final validation accuracy at equal examples (95 % interval)"
    ),
    plan=plan,
    numbers=numbers,
    verdict=verdict,
)
