"""Claim 1: Adan reaches the loss of the state-of-the-art optimizer in half the training.

Adan, AdamW and Adam with equal tuning budgets on two tasks (the residual CNN on the 8×8
digits, the causal transformer on modular addition); per seed, the steps Adan needs to reach
AdamW's final validation loss at the budget T, as a fraction of T.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dgs_core.claims.common as common
from dgs_core.claims.base import Claim, FigureSpec, Plan, Source, Tables, Tuning
from dgs_core.claims.verdicts import Finding, Interval, Verdict, between

NAME = "adan_half_steps"
OPTIMIZERS = ("adamw", "adam", "adan")
# Per budget: task → (task parameters, model, steps T, batch size, evaluation interval).
# Modular arithmetic holds out 20 % of the 23² pairs (the task's default of 50 % leaves too
# little to learn from in a few hundred steps: the validation loss only rises).
TASKS: Mapping[str, Mapping[str, tuple[dict, dict, int, int, int]]] = {
    "smoke": {
        "digits": ({}, {"size": "tiny"}, 30, 32, 10),
        "modular": ({"val_fraction": 0.2}, {"size": "tiny"}, 40, 64, 5),
    },
    "full": {
        "digits": ({}, {"size": "tiny"}, 300, 32, 10),
        "modular": ({"val_fraction": 0.2}, {"size": "tiny"}, 600, 64, 20),
    },
}
TRIALS = {"smoke": 2, "full": 6}
SEEDS = {"smoke": 2, "full": 5}
HALF, ALL = 0.5, 1.0


def _arm(task: str, optimizer: str) -> str:
    return f"{task} · {optimizer}"


def plan(budget: str) -> Plan:
    tunings, arms, steps = [], [], {}
    for task, (task_params, model, total, batch, every) in TASKS[budget].items():
        tuning = Tuning(
            task,
            common.training_spec(
                task,
                OPTIMIZERS,
                trials=TRIALS[budget],
                steps=total,
                batch_size=batch,
                eval_every=every,
                task_params=task_params,
                model=model,
            ),
        )
        tunings.append(tuning)
        arms.extend(common.tuned_arm(_arm(task, name), tuning, name, group=task) for name in OPTIMIZERS)
        steps[task] = total
    return Plan(NAME, budget, common.seeds(SEEDS[budget]), tuple(tunings), tuple(arms), {"steps": steps})


def numbers(tables: Tables, extra: Mapping[str, Any]) -> dict[str, Any]:
    runs, curves = tables["runs"], tables["curves"]
    tasks = {}
    for task, total in extra["steps"].items():
        adan = _arm(task, "adan")
        fractions = {
            f"fraction_vs_{rival}": common.fraction_to_reach(
                runs, curves, adan, _arm(task, rival), steps=total
            )
            for rival in ("adamw", "adam")
        }
        tasks[task] = {
            "steps": total,
            **{key: value.to_dict() for key, value in fractions.items()},
            "final_val_loss": common.intervals(
                {n: common.final_loss(runs, _arm(task, n)) for n in OPTIMIZERS}
            ),
            "final_val_accuracy": common.intervals(
                {n: common.final_accuracy(runs, _arm(task, n)) for n in OPTIMIZERS}
            ),
            "diverged": {n: common.diverged_count(runs, _arm(task, n)) for n in OPTIMIZERS},
        }
    return {"tasks": tasks}


def verdict(values: Mapping[str, Any]) -> Verdict:
    findings = []
    for task, found in values["tasks"].items():
        fraction = Interval.from_dict(found["fraction_vs_adamw"])
        findings.append(
            Finding(
                f"{task}: steps Adan needs to reach AdamW's final validation loss, as a fraction of "
                f"T = {found['steps']}",
                between(fraction, holds_at_most=HALF, fails_at_least=ALL),
                fraction.describe(),
            )
        )
    return Verdict.of(findings)


CLAIM = Claim(
    name=NAME,
    number=1,
    title="Adan reaches AdamW's loss in half the steps",
    quote=(
        "More surprisingly, Adan can use half of the training cost (epochs) of SoTA optimizers to "
        "achieve higher or comparable performance on ViT, GPT-2, MAE, e.t.c., and also shows great "
        "tolerance to a large range of minibatch size, e.g., from 1k to 32k."
    ),
    source=Source(
        "Xie, Zhou, Li, Lin, Yan: Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing "
        "Deep Models (arXiv 2208.06677)",
        "https://arxiv.org/abs/2208.06677",
    ),
    experiment=(
        "Two Training-lab tasks: the residual CNN on scikit-learn's 8×8 digits and the causal "
        "transformer on modular addition. AdamW, Adam and Adan each get the same tuning budget: "
        "a log-spaced grid of learning rates around each one's default (× 10^±2), every trial a "
        "full run on seed 0 scored by its final validation loss at the budget T. Each tuned "
        "optimizer is then trained on held-out seeds (for one seed, the three share the data "
        "split, the initialisation and the batch order). Per seed: the first evaluated step at "
        "which Adan's validation loss is at or below AdamW's final validation loss at T, divided "
        "by T (a seed where Adan never gets there counts as one evaluation past T). The same "
        "fraction against Adam is reported beside it."
    ),
    rule=(
        "Per task, on the 95 % interval of Adan's step fraction over the seeds: holds if its "
        "upper end is ≤ 0.5 (half the steps or fewer); does not hold if its lower end is ≥ 1 "
        "(Adan needs all of T or more); partly if the whole interval lies strictly between 0.5 and "
        "1 (faster, but not twice as fast); inconclusive if it straddles 0.5 or 1. The two tasks "
        "combine: the same outcome on both is the verdict; otherwise any holds or partly gives "
        "partly, else any does not hold gives does not hold."
    ),
    note=(
        "The paper counts epochs of large models (ViT, GPT-2, MAE) at their published settings; "
        "here the cost is steps of small models at a fixed batch size, which is the same measure "
        "of training cost. Both methods use the same batch, so a step costs the same data."
    ),
    lab="training",
    figure=FigureSpec("curves", "val_loss", "Validation loss of the tuned optimizers", log_y=True),
    plan=plan,
    numbers=numbers,
    verdict=verdict,
)
