"""Claim 6: annealing the learning rate at the end of training on high-quality data.

The Annealing lab's two-phase recipe (docs/algorithms.md#annealing-plan) at its default
settings, :func:`~dgs_core.studies.annealing.two_phase_configs`: constant lr, annealing on the
same (noisy) data, annealing on the clean high-quality subset, and plateau cuts on it; the
final validation loss on the clean validation set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dgs_core.claims.common as common
from dgs_core.claims.base import Arm, Claim, FigureSpec, Plan, Source, Tables
from dgs_core.claims.verdicts import Finding, Interval, Verdict, below, paired
from dgs_core.studies.annealing import TwoPhaseSettings, two_phase_configs

NAME = "annealing_hq"
VARIANTS = ("none", "anneal_main", "anneal_hq", "plateau_hq")
LABELS = {
    "none": "constant lr",
    "anneal_main": "annealing, same data",
    "anneal_hq": "annealing, high-quality data",
    "plateau_hq": "plateau cuts, high-quality data",
}
SETTINGS = {
    "smoke": (
        TwoPhaseSettings(main_steps=20, anneal_steps=10, task_params={"n_samples": 200, "label_noise": 0.3}),
        2,
    ),
    "full": (TwoPhaseSettings(), 10),  # the Annealing lab's defaults
}


def plan(budget: str) -> Plan:
    settings, count = SETTINGS[budget]
    configs = two_phase_configs(settings)
    arms = tuple(Arm(LABELS[name], configs[name].replace(diag_every=0), group=name) for name in VARIANTS)
    extra = {
        "settings": settings.to_dict(),
        "experiments": [{"label": "two-phase recipe", "lab": "annealing", "config": settings.to_dict()}],
    }
    return Plan(NAME, budget, common.seeds(count), (), arms, extra)


def numbers(tables: Tables, extra: Mapping[str, Any]) -> dict[str, Any]:
    runs = tables["runs"]
    loss = {name: common.final_loss(runs, LABELS[name]) for name in VARIANTS}
    return {
        "final_val_loss": common.intervals({LABELS[n]: v for n, v in loss.items()}),
        "final_val_accuracy": common.intervals(
            {LABELS[n]: common.final_accuracy(runs, LABELS[n]) for n in VARIANTS}
        ),
        "hq_minus_constant": paired(loss["anneal_hq"], loss["none"]).to_dict(),
        "hq_minus_same_data": paired(loss["anneal_hq"], loss["anneal_main"]).to_dict(),
        "plateau_hq_minus_constant": paired(loss["plateau_hq"], loss["none"]).to_dict(),
        "steps": common.intervals(
            {LABELS[n]: common.arm_runs(runs, LABELS[n])["steps"].to_numpy(float) for n in VARIANTS}
        ),
    }


def verdict(values: Mapping[str, Any]) -> Verdict:
    constant = Interval.from_dict(values["hq_minus_constant"])
    same = Interval.from_dict(values["hq_minus_same_data"])
    return Verdict.of(
        [
            Finding(
                "annealing on high-quality data ends below constant lr (final validation loss)",
                below(constant),
                constant.describe(),
            ),
            Finding(
                "annealing on high-quality data ends below annealing on the same data",
                below(same),
                same.describe(),
            ),
        ]
    )


CLAIM = Claim(
    name=NAME,
    number=6,
    title="Annealing on high-quality data improves the final model",
    quote=(
        "Empirically, we find that annealing [...] on small amounts of high-quality code and "
        "mathematical data can boost the performance of pre-trained models on key benchmarks."
    ),
    source=Source(
        "Llama Team, AI @ Meta (Dubey et al.), The Llama 3 Herd of Models, arXiv 2024",
        "https://arxiv.org/abs/2407.21783",
        where="§3.1.3, Annealing Data",
    ),
    experiment=(
        "The Annealing lab's two-phase demo at its default settings: SGD + momentum at η₀ on two "
        "moons whose training labels are 30 % noisy; a main phase at η₀, then an annealing phase "
        "that decays the lr (cosine to 1 % of η₀, stopped early at the floor or after 8 "
        "validations without improvement). Four variants with the same seed, initialisation, data "
        "order and step budget: constant lr throughout, annealing on the same noisy data, "
        "annealing on the clean high-quality subset (20 % of the training set), plateau cuts on "
        "it. Each variant runs on several seeds; the quantity is the final validation loss on "
        "the clean validation set. Nothing is tuned: the claim compares schedules of one "
        "optimizer at one η₀."
    ),
    rule=(
        "Two findings on 95 % intervals of paired differences of final validation loss (seed by "
        "seed). Against constant lr: holds if the interval of (annealing on high-quality data − "
        "constant lr) lies below 0, does not hold if above 0, inconclusive if it contains 0. "
        "Against annealing on the same data: the same with that variant. All the same is the "
        "verdict; otherwise any holds gives partly, else any does not hold gives does not hold."
    ),
    note=(
        "The paper anneals a 405B language model on a small high-quality mix at the end of "
        "pre-training; here the same recipe runs at toy scale (two-phase annealing, "
        "docs/algorithms.md#annealing-plan), with noisy labels standing for the lower-quality "
        "main data and the clean subset for the high-quality data. The plateau variant is "
        "reported beside the verdict."
    ),
    lab="annealing",
    figure=FigureSpec(
        "curves", "val_loss", "Validation loss (clean set) of the four variants", log_y=True, one_panel=True
    ),
    plan=plan,
    numbers=numbers,
    verdict=verdict,
)
