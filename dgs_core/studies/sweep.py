"""Fair comparisons on Ray Tune: an equal tuning budget per optimizer, then the winners over seeds.

A :class:`StudySpec` names the problem (a Training-lab task and model, or a 2-D surface), the
optimizers, each one's search space (the learning rate, log-uniform, by default; other
hyperparameters opt in), the trial budget per optimizer (the same for all), the tuning metric,
the search algorithm (grid, random, or Optuna's TPE through Ray Tune's adapter), optional
early stopping (ASHA), and how many seeds re-run each optimizer's best configuration.

:class:`SweepStudy` runs it (the Study protocol: ``run(stop)`` yields progress events):

1. **Tuning** — one Ray Tune experiment per optimizer, ``trials`` trials, each a full run at the
   spec's seed, scored by ``metric``. A diverging trial is recorded with its step and scores
   as the worst value; the study goes on.
2. **Seeds** — each optimizer's best configuration re-run with seeds ``seed, seed + 1, …``;
   their curves give the bands.

Every trial is deterministic in its configuration and seed (the same numbers as running it in
this process: ``run_trial`` is the function Ray calls). With TPE and several trials at once,
which configurations are tried depends on the order trials finish in; grid and random search
try the same configurations every time.

>>> spec = StudySpec(kind="surface", surface="rosenbrock", optimizers=("sgd", "adam"), trials=4,
...                  seeds=2, steps=200)                                  # doctest: +SKIP
>>> study = SweepStudy(spec)                                           # doctest: +SKIP
>>> for event in study.run():                                          # doctest: +SKIP
...     pass
>>> study.result.best                                                  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from dgs_core import links, metrics
from dgs_core.device import small_tensor_mode
from dgs_core.optim import registry
from dgs_core.params import Param, ParamError, ParamSet, check_keys, invalid
from dgs_core.surfaces.config import DEFAULT_SURFACE
from dgs_core.surfaces.functions import check_starts, get_surface
from dgs_core.surfaces.simulator import simulate
from dgs_core.training.config import TrainConfig
from dgs_core.training.tasks import get_task_info
from dgs_core.training.trainer import Trainer

KINDS = ("training", "surface")
SEARCHES = ("random", "grid", "tpe")
EARLY_STOPPING = ("none", "asha")
# metric → (what it reads, "min" or "max"); training metrics come from the evaluations
METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "best_val_loss": ("training", "min"),
        "final_val_loss": ("training", "min"),
        "best_val_accuracy": ("training", "max"),
        "final_val_accuracy": ("training", "max"),
        "final_gap": ("surface", "min"),
        "steps_to_tolerance": ("surface", "min"),
    }
)
DEFAULT_METRIC = {"training": "best_val_loss", "surface": "final_gap"}
LR_DECADES = 2.0  # the default lr range: default × 10^(±2), inside the Param's bounds
TUNE, SEEDS = "tune", "seeds"

FIELDS = ParamSet(
    (
        Param("kind", "training", choices=KINDS, help="a Training-lab task or a 2-D surface"),
        Param("trials", 8, low=1, high=1000, integer=True, help="tuning trials per optimizer (equal budget)"),
        Param(
            "seeds", 3, low=1, high=100, integer=True, help="seeds for each optimizer's best configuration"
        ),
        Param(
            "seed", 0, low=0, high=2**32 - 1, integer=True, help="seed of the tuning trials and the search"
        ),
        Param("search", "random", choices=SEARCHES, help="how trials are chosen"),
        Param("early_stopping", "none", choices=EARLY_STOPPING, help="ASHA stops poor trials early"),
        Param("steps", 300, low=1, high=20_000, integer=True, help="steps per trial"),
        Param("batch_size", 32, low=1, high=1 << 20, integer=True, help="examples per step (training)"),
        Param("eval_every", 25, low=1, high=20_000, integer=True, help="evaluate every this many steps"),
        Param("noise_std", 0.0, low=0.0, high=1e3, help="gradient noise σ (surface)"),
        Param("max_concurrent", None, low=1, high=4096, integer=True, optional=True, help="trials at once"),
    )
)


@dataclass(frozen=True)
class Range:
    """One hyperparameter's search range: [low, high] (log-uniform when ``log``), or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}

    @classmethod
    def from_dict(cls, data: Any, field_name: str) -> Range:
        if not isinstance(data, Mapping):
            raise invalid(field_name, data, "{'low', 'high', 'log'} or {'choices'}")
        check_keys(data, ("low", "high", "log", "choices"), f"{field_name} range")
        if "choices" in data:
            choices = data["choices"]
            if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
                raise invalid(field_name, choices, "a non-empty list of choices")
            return cls(choices=tuple(choices))
        return cls(low=data.get("low"), high=data.get("high"), log=bool(data.get("log", False)))


def _default_lr_range(spec: Param, default: float) -> Range:
    low = max(default * 10**-LR_DECADES, spec.low or 0.0, 1e-12)
    high = min(default * 10**LR_DECADES, spec.high if spec.high is not None else math.inf)
    return Range(low=low, high=high, log=True)


@dataclass(frozen=True)
class StudySpec:
    """Everything that defines a study; frozen, validated, plain JSON via :meth:`to_dict`.

    Attributes:
        kind: "training" (task, task_params, model, steps, batch_size, eval_every) or
            "surface" (surface, surface_params, start, steps, noise_std).
        optimizers: registry names, each tuned with the same budget.
        space: ``{optimizer: {hyperparameter: range}}`` — overrides and opt-in hyperparameters;
            every optimizer's ``lr`` is searched by default (log-uniform, its default × 10^±2,
            inside its Param bounds). A range outside the Param's bounds is refused.
        trials: tuning trials per optimizer. metric: see :data:`METRICS`.
        search, early_stopping, seeds, seed, max_concurrent: see the module docstring.
    """

    kind: str = "training"
    task: str = "moons"
    task_params: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=lambda: {"size": "small"})
    surface: str = DEFAULT_SURFACE
    surface_params: Mapping[str, float] = field(default_factory=dict)
    start: tuple[float, float] | None = None
    optimizers: tuple[str, ...] = ("sgd", "adam", "dgs", "adan")
    space: Mapping[str, Mapping[str, Range]] = field(default_factory=dict)
    trials: int = 8
    metric: str = ""
    search: str = "random"
    early_stopping: str = "none"
    seeds: int = 3
    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    eval_every: int = 25
    noise_std: float = 0.0
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for param in FIELDS:
            set_(self, param.name, param.validate(getattr(self, param.name)))
        metric = self.metric or DEFAULT_METRIC[self.kind]
        if metric not in METRICS or METRICS[metric][0] != self.kind:
            allowed = [m for m, (kind, _) in METRICS.items() if kind == self.kind]
            raise invalid("metric", self.metric, f"one of {', '.join(allowed)} for a {self.kind} study")
        set_(self, "metric", metric)
        if (
            isinstance(self.optimizers, str)
            or not isinstance(self.optimizers, Sequence)
            or not self.optimizers
        ):
            raise invalid("optimizers", self.optimizers, "a non-empty list of optimizer names")
        names = tuple(registry.get(name).name for name in self.optimizers)
        if len(set(names)) != len(names):
            raise invalid("optimizers", list(self.optimizers), "each optimizer once")
        set_(self, "optimizers", names)
        if self.kind == "training":
            info = get_task_info(self.task)
            info.resolve(self.task_params)
            TrainConfig(task=self.task, task_params=self.task_params, model=self.model, steps=self.steps)
            set_(self, "task_params", MappingProxyType(dict(self.task_params)))
            set_(self, "model", MappingProxyType(dict(self.model)))
        else:
            surface = get_surface(self.surface, **dict(self.surface_params))
            if self.start is not None:
                check_starts(surface, self.start, outside="raise")
                set_(self, "start", tuple(float(v) for v in self.start))
            set_(self, "surface_params", MappingProxyType(dict(self.surface_params)))
        set_(self, "space", MappingProxyType(self._checked_space()))

    def _checked_space(self) -> dict[str, Mapping[str, Range]]:
        if not isinstance(self.space, Mapping):
            raise invalid("space", self.space, "a mapping {optimizer: {hyperparameter: range}}")
        unknown = [name for name in self.space if name not in self.optimizers]
        if unknown:
            raise invalid(
                "space", unknown[0], f"one of the study's optimizers ({', '.join(self.optimizers)})"
            )
        out = {}
        for name in self.optimizers:
            info = registry.get(name)
            given = self.space.get(name, {})
            if not isinstance(given, Mapping):
                raise invalid("space", given, f"a mapping of {name}'s hyperparameters to ranges")
            ranges: dict[str, Range] = {}
            defaults = info.resolve(surface=self.kind == "surface")
            if "lr" in info.hyperparams.names and "lr" not in given:
                ranges["lr"] = _default_lr_range(info.hyperparam("lr"), float(defaults["lr"]))
            for hp, value in given.items():
                if hp not in info.hyperparams.names:
                    raise invalid(
                        "space", hp, f"a hyperparameter of {name} ({', '.join(info.hyperparams.names)})"
                    )
                ranges[hp] = _check_range(info.hyperparam(hp), value, f"space.{name}.{hp}")
            if not ranges:
                raise invalid("space", name, f"at least one hyperparameter of {name} to search")
            out[name] = MappingProxyType(ranges)
        return out

    # -- derived ---------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """ "min" or "max": how :attr:`metric` ranks trials."""
        return METRICS[self.metric][1]

    @property
    def trials_total(self) -> int:
        return self.trials * len(self.optimizers) + self.seeds * len(self.optimizers)

    def train_config(self, optimizer: str, hparams: Mapping[str, Any], seed: int) -> TrainConfig:
        """The TrainConfig of one training trial."""
        return TrainConfig(
            task=self.task,
            task_params=self.task_params,
            model=self.model,
            optimizers=[(optimizer, dict(hparams))],
            steps=self.steps,
            batch_size=self.batch_size,
            eval_every=min(self.eval_every, self.steps),
            diag_every=0,
            seed=seed,
            device="cpu",
        )

    # -- plain JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["task_params"] = dict(self.task_params)
        out["model"] = dict(self.model)
        out["surface_params"] = dict(self.surface_params)
        out["start"] = None if self.start is None else list(self.start)
        out["optimizers"] = list(self.optimizers)
        out["space"] = {n: {hp: r.to_dict() for hp, r in ranges.items()} for n, ranges in self.space.items()}
        return out

    def to_link(self) -> str:
        """This spec as one URL-safe text for a link's ``study=`` (:func:`dgs_core.links.pack`)."""
        return links.pack(self.to_dict())

    @classmethod
    def from_link(cls, text: str) -> StudySpec:
        """The spec of a link's ``study=`` text, validated like any other input (a ``ParamError``
        naming ``study`` or the bad field)."""
        return cls.from_dict(links.unpack(text, "study"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        """A validated spec from :meth:`to_dict`'s form (a study's ``SPEC.json``)."""
        if not isinstance(data, Mapping):
            raise invalid("spec", data, "a JSON object")
        check_keys(data, [f.name for f in fields(cls)], "study spec")
        values = dict(data)
        if isinstance(values.get("optimizers"), list):
            values["optimizers"] = tuple(values["optimizers"])
        space = values.get("space", {})
        if not isinstance(space, Mapping):
            raise invalid("space", space, "a mapping {optimizer: {hyperparameter: range}}")
        parsed = {}
        for name, ranges in space.items():
            if not isinstance(ranges, Mapping):
                raise invalid("space", ranges, f"a mapping of {name}'s hyperparameters to ranges")
            parsed[name] = {hp: Range.from_dict(r, f"space.{name}.{hp}") for hp, r in ranges.items()}
        values["space"] = parsed
        return cls(**values)


def _check_range(spec: Param, value: Any, where: str) -> Range:
    if not isinstance(value, Range):
        raise invalid(where, value, "a Range")
    if value.choices is not None:
        for choice in value.choices:
            _inside(spec, choice, where)
        return value
    if value.low is None or value.high is None:
        raise invalid(where, value.to_dict(), "a range with low and high")
    low, high = _inside(spec, value.low, where), _inside(spec, value.high, where)
    if not low < high:
        raise invalid(where, value.to_dict(), "low < high")
    if value.log and low <= 0:
        raise invalid(where, value.to_dict(), "low > 0 on a log scale")
    if spec.kind not in ("float", "int"):
        raise invalid(where, value.to_dict(), f"choices: {spec.name} is not a number")
    return Range(low=float(low), high=float(high), log=value.log)


def _inside(spec: Param, value: Any, where: str) -> Any:
    try:
        return spec.validate(value)
    except ParamError:
        raise invalid(where, value, f"inside {spec.name}'s valid range, {spec.describe_range()}") from None


# ---------------------------------------------------------------------------------------------
# One trial: the function Ray calls (and the same numbers in this process)
# ---------------------------------------------------------------------------------------------


def run_trial(
    spec: StudySpec,
    optimizer: str,
    hparams: Mapping[str, Any],
    seed: int,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one trial; ``report`` gets the running metrics at every evaluation; returns the last.

    Keys: ``score`` (the spec's metric so far; the worst value once diverged), ``diverged_at``
    (−1 if not), ``step``, and for training runs the evaluation columns and ``curve`` rows.
    """
    with small_tensor_mode():
        if spec.kind == "surface":
            return _surface_trial(spec, optimizer, hparams, seed, report)
        return _training_trial(spec, optimizer, hparams, seed, report)


def _worst(spec: StudySpec) -> float:
    return math.inf if spec.mode == "min" else -math.inf


def _training_trial(spec, optimizer, hparams, seed, report) -> dict[str, Any]:
    trainer = Trainer(spec.train_config(optimizer, hparams, seed))
    label = trainer.config.labels[0]
    best_loss, best_accuracy = math.inf, -math.inf
    last: dict[str, Any] = {}
    for event in trainer.run():
        lane = event.lanes[label]
        result = trainer.results[label]
        diverged = result.status.startswith("diverged")
        if not diverged:
            best_loss, best_accuracy = min(best_loss, lane.val_loss), max(best_accuracy, lane.val_metric)
        score = {
            "best_val_loss": best_loss,
            "final_val_loss": lane.val_loss,
            "best_val_accuracy": best_accuracy,
            "final_val_accuracy": lane.val_metric,
        }[spec.metric]
        last = {
            "score": _worst(spec) if diverged or not math.isfinite(score) else float(score),
            "diverged_at": int(result.status.rsplit(" ", 1)[-1]) if diverged else -1,
            "step": event.step,
            "val_loss": lane.val_loss,
            "val_accuracy": lane.val_metric,
            "train_loss": lane.loss,
        }
        if report is not None:
            report(last)
        if diverged:
            break
    curve = trainer.results[label].evaluations[
        ["step", "train_loss", "train_metric", "val_loss", "val_metric"]
    ]
    return {**last, "curve": curve.to_dict("list")}


def _surface_trial(spec, optimizer, hparams, seed, report) -> dict[str, Any]:
    surface = get_surface(spec.surface, **dict(spec.surface_params))
    run = simulate(
        surface,
        optimizer,
        dict(hparams),
        start=spec.start,
        steps=spec.steps,
        seed=seed,
        noise_std=spec.noise_std,
    )
    row = run.metrics()
    diverged_at = int(row["diverged_at"][0])
    if spec.metric == "final_gap":
        score = float(row["final_gap"][0])
    else:
        reached = int(row["steps_to_tolerance"][0])
        score = float(reached if reached != metrics.NOT_REACHED else spec.steps + 1)
    out = {
        "score": _worst(spec) if diverged_at >= 0 or not math.isfinite(score) else score,
        "diverged_at": diverged_at,
        "step": spec.steps,
        "curve": {"step": list(range(spec.steps + 1)), "gap": run.gap[:, 0].tolist()},
    }
    if report is not None:
        report({k: v for k, v in out.items() if k != "curve"})
    return out
