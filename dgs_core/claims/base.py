"""The records a claim is made of: its source, its plan at a budget, and the claim itself.

A :class:`Claim` is a frozen record, like an optimizer's ``OptimizerInfo``: the claim quoted
from its paper, the experiment in words and the verdict rule in words (both written before any
result exists), and three functions: :attr:`Claim.plan` builds the experiment at a budget as
configurations in the labs' schemas, :attr:`Claim.numbers` turns the measured tables into the
numbers, and :attr:`Claim.verdict` turns the numbers into the verdict. Nothing else decides a
verdict, so a test can feed the rule synthetic numbers and get every outcome.

A :class:`Plan` is plain data: the tuning (an equal learning-rate budget per optimizer,
:class:`Tuning`), the measured configurations (:class:`Arm`, each run at every measurement
seed) and anything else the experiment needs (``extra``: the 2-D surfaces of the overshoot
claim). Its :attr:`Plan.config_hash` covers every resolved setting, optimizer defaults included,
so results made by other settings are recognised as such.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd

from dgs_core.claims.verdicts import Verdict
from dgs_core.optim import registry
from dgs_core.params import Param
from dgs_core.studies.sweep import StudySpec
from dgs_core.studies.tuner import grid_points
from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.training.models import resolve_model_params
from dgs_core.training.tasks import get_task_info

BUDGETS = ("smoke", "full")
BUDGET = Param(
    "budget",
    "full",
    choices=BUDGETS,
    help="smoke: seconds, for tests; full: the shipped result, minutes on two cores",
)
LABS = ("training", "annealing", "surface")
Tables = Mapping[str, pd.DataFrame]


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Source:
    """Where a claim comes from: the paper (authors, title, venue), its link, and where in it
    the quoted sentence stands."""

    citation: str
    url: str
    where: str = "abstract"

    def to_dict(self) -> dict[str, str]:
        return {"citation": self.citation, "url": self.url, "where": self.where}


@dataclass(frozen=True)
class Tuning:
    """An equal tuning budget: every optimizer of ``spec`` gets ``spec.trials`` trials.

    The trials are exactly those a :class:`~dgs_core.studies.tuner.SweepStudy` with
    ``search="grid"`` would run (:func:`~dgs_core.studies.tuner.grid_points` over
    ``spec.space``, each a :func:`~dgs_core.studies.sweep.run_trial` at ``spec.seed``), and the
    best is chosen the same way (the first best score in grid order; no finite score: the
    optimizer's defaults). ``fixed`` adds hyperparameters every trial of an optimizer keeps
    (LARS's trust coefficient); ``tied`` names hyperparameters that equal each trial's lr
    (ExtraSGD's documented γ̂ = η).
    """

    key: str
    spec: StudySpec
    fixed: Mapping[str, Mapping[str, Any]] = field(default_factory=_frozen)
    tied: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen)

    def __post_init__(self) -> None:
        if self.spec.search != "grid":
            raise ValueError(f"Invalid tuning {self.key!r}: search {self.spec.search!r} (must be 'grid')")
        object.__setattr__(self, "fixed", _frozen({k: _frozen(v) for k, v in self.fixed.items()}))
        object.__setattr__(self, "tied", _frozen({k: tuple(v) for k, v in self.tied.items()}))

    def trials(self, optimizer: str) -> list[dict[str, Any]]:
        """The hyperparameters of each trial of ``optimizer``, in grid order."""
        return [
            self.complete(optimizer, point)
            for point in grid_points(self.spec.space[optimizer], self.spec.trials)
        ]

    def complete(self, optimizer: str, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """``hparams`` with the fixed values and the tied ones (= lr) filled in."""
        out = {**self.fixed.get(optimizer, {}), **hparams}
        for name in self.tied.get(optimizer, ()):
            if "lr" in out:
                out[name] = out["lr"]
        return out

    @property
    def count(self) -> int:
        return sum(len(self.trials(name)) for name in self.spec.optimizers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "spec": self.spec.to_dict(),
            "fixed": {k: dict(v) for k, v in self.fixed.items()},
            "tied": {k: list(v) for k, v in self.tied.items()},
            "trials": {name: self.trials(name) for name in self.spec.optimizers},
            "resolved": _resolved_task(self.spec.task, self.spec.task_params, self.spec.model),
            "defaults": {name: registry.get(name).resolve() for name in self.spec.optimizers},
        }


@dataclass(frozen=True)
class Arm:
    """One measured configuration, run at every measurement seed of the plan.

    Attributes:
        label: the arm's name in the tables ("digits · adan", "sgd (large batch)").
        config: a one-optimizer :class:`TrainConfig` (its seed is replaced by each seed).
        group: what the arm belongs to (a task, a scaling), for the figures and the numbers.
        tuned: ``(tuning key, optimizer)`` whose best hyperparameters replace the config's,
            or None to run the config as it is.
        lr_factor: the tuned lr is multiplied by this (a scaled learning rate).
        samples: stop at the first step at which this many examples have been seen (the
            config then evaluates every step), or None to run all its steps.
    """

    label: str
    config: TrainConfig
    group: str = ""
    tuned: tuple[str, str] | None = None
    lr_factor: float = 1.0
    samples: int | None = None

    def __post_init__(self) -> None:
        if len(self.config.optimizers) != 1:
            raise ValueError(
                f"Invalid arm {self.label!r}: {len(self.config.optimizers)} optimizers (must be 1)"
            )
        if not (math.isfinite(self.lr_factor) and self.lr_factor > 0):
            raise ValueError(f"Invalid lr_factor: {self.lr_factor!r} (must be > 0)")
        if self.samples is not None and self.config.eval_every != 1:
            raise ValueError(f"Invalid arm {self.label!r}: a samples budget needs eval_every = 1")

    @property
    def optimizer(self) -> str:
        return self.config.optimizers[0].name

    def configure(self, tuned: Mapping[str, Any] | None, tuning: Tuning | None, seed: int) -> TrainConfig:
        """The config run at ``seed``: the tuned hyperparameters (lr × ``lr_factor``) if any."""
        spec = self.config.optimizers[0]
        hparams = dict(spec.hparams)
        if tuned:
            hparams.update(tuned)
        if self.lr_factor != 1.0:
            hparams["lr"] = registry.get(spec.name).resolve(hparams)["lr"] * self.lr_factor
            if tuning is not None:
                hparams = tuning.complete(spec.name, hparams)
        return self.config.replace(optimizers=(OptimizerSpec(spec.name, hparams, spec.label),), seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "group": self.group,
            "config": self.config.to_dict(),
            "tuned": list(self.tuned) if self.tuned else None,
            "lr_factor": self.lr_factor,
            "samples": self.samples,
            "resolved": _resolved_task(self.config.task, self.config.task_params, self.config.model),
            "defaults": registry.get(self.optimizer).resolve(self.config.optimizers[0].hparams),
        }


def _resolved_task(task: str, task_params: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """Every default a task and model fill in: a change to one changes the hash."""
    return {
        "task_params": get_task_info(task).resolve(task_params),
        "model": resolve_model_params(task, model),
    }


@dataclass(frozen=True)
class Plan:
    """A claim's experiment at one budget (see the module docstring)."""

    claim: str
    budget: str
    seeds: tuple[int, ...]
    tunings: tuple[Tuning, ...] = ()
    arms: tuple[Arm, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=_frozen)
    extra_units: int = 0  # progress units of the extra work (the surfaces)

    def __post_init__(self) -> None:
        keys = [t.key for t in self.tunings]
        if len(set(keys)) != len(keys):
            raise ValueError(f"Invalid tunings: {keys} (keys must be unique)")
        labels = [a.label for a in self.arms]
        if len(set(labels)) != len(labels):
            raise ValueError(f"Invalid arms: {labels} (labels must be unique)")
        for arm in self.arms:
            if arm.tuned is not None and arm.tuned[0] not in keys:
                raise ValueError(f"Invalid arm {arm.label!r}: no tuning {arm.tuned[0]!r}")
        object.__setattr__(self, "extra", _frozen(self.extra))

    def tuning(self, key: str) -> Tuning:
        return next(t for t in self.tunings if t.key == key)

    @property
    def total(self) -> int:
        """Progress units: every tuning trial, every measured run, and the extra work."""
        return sum(t.count for t in self.tunings) + len(self.arms) * len(self.seeds) + self.extra_units

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "budget": self.budget,
            "seeds": list(self.seeds),
            "tunings": [t.to_dict() for t in self.tunings],
            "arms": [a.to_dict() for a in self.arms],
            "extra": _plain(self.extra),
        }

    @property
    def config_hash(self) -> str:
        """12 hex digits of the SHA-256 of :meth:`to_dict` (resolved defaults included)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class FigureSpec:
    """What a card draws from the stored tables (:mod:`dgs_core.viz.claims`).

    ``kind``: "curves" (a quantity of ``curves.csv`` against the step, mean and 95 % band per
    arm, one panel per group) or "bars" (a quantity of ``runs.csv`` per arm with its 95 %
    interval, one panel per group) or "overshoot" (the overshoot claim's surfaces and spikes).
    """

    kind: str
    quantity: str
    title: str
    log_y: bool = False
    one_panel: bool = False  # curves: every arm in one panel (arms of one optimizer, e.g. schedules)


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, the experiment that tests it, and its verdict rule.

    Attributes:
        name: key in the CLI and the assets folder ("adan_half_steps").
        number: its place on the page (1–7).
        title: one line.
        quote: the claim, quoted exactly from ``source``.
        source: the paper.
        experiment: what is run, in words.
        rule: the verdict rule, in words, stated before any result.
        note: what a reader must know besides (an interpretation, a reading of the claim).
        lab: where its configurations open: "training", "annealing" or "surface".
        figure: what the card draws.
        plan: budget name → :class:`Plan`.
        numbers: the stored tables (and the plan's extra settings) → the numbers (plain JSON).
        verdict: the numbers → :class:`~dgs_core.claims.verdicts.Verdict`.
        extra: the plan's extra work in this process (the surfaces): yields, per piece, a
            progress label and the rows it adds to named tables; None if there is none.
        lab_configs: (plan, tables) → more configurations to open in the labs (the surfaces
            at their tuned learning rates); None if the arms say it all.
    """

    name: str
    number: int
    title: str
    quote: str
    source: Source
    experiment: str
    rule: str
    note: str
    lab: str
    figure: FigureSpec
    plan: Callable[[str], Plan]
    numbers: Callable[[Tables, Mapping[str, Any]], dict[str, Any]]
    verdict: Callable[[Mapping[str, Any]], Verdict]
    extra: Callable[[Plan], Iterator[tuple[str, dict[str, list[dict[str, Any]]]]]] | None = None
    lab_configs: Callable[[Plan, Tables], list[dict[str, Any]]] | None = None

    def __post_init__(self) -> None:
        if self.lab not in LABS:
            raise ValueError(f"Invalid lab: {self.lab!r} (must be one of {', '.join(LABS)})")

    def plan_for(self, budget: str) -> Plan:
        """The plan at ``budget``; a ``ParamError`` names an unknown budget."""
        return self.plan(BUDGET.validate(budget))

    def describe(self) -> dict[str, Any]:
        """The card's text as plain JSON."""
        return {
            "name": self.name,
            "number": self.number,
            "title": self.title,
            "quote": self.quote,
            "source": self.source.to_dict(),
            "experiment": self.experiment,
            "rule": self.rule,
            "note": self.note,
            "lab": self.lab,
        }
