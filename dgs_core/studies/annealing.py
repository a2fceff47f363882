"""The Annealing lab's training studies: the two-phase recipe and the schedule against the effective lr.

:func:`two_phase_configs` builds the four variants of the two-phase ("iterative learning-rate
reduction") demo with the same seed, budget, initialisation and data order, and
:class:`TwoPhaseStudy` trains them (a :class:`~dgs_core.studies.trainers.TrainerStudy`, in turns);
:func:`effective_lr_config` the run that compares a schedule's lr with the per-parameter
effective lr of several optimizers (a TrainerStudy of one run).

>>> settings = TwoPhaseSettings(main_steps=20, anneal_steps=10, eval_every=5,
...                             task_params={"n_samples": 200, "label_noise": 0.2})
>>> study = TwoPhaseStudy(settings)
>>> _ = list(study.run())
>>> sorted(study.results) == sorted(VARIANTS), study.progress()
(True, (120, 120))
>>> study.results["anneal_hq"].metrics["data_source"].iloc[[19, 20]].tolist()
['main', 'hq']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from dgs_core.optim import registry
from dgs_core.params import Param, ParamError, invalid
from dgs_core.schedules import ScheduleSpec
from dgs_core.schedules.annealing import AnnealingPlan, Phase, PlateauSettings, StopRule, two_phase_plan
from dgs_core.studies.trainers import TrainerStudy
from dgs_core.training.config import OptimizerSpec, TrainConfig
from dgs_core.training.tasks import get_task_info

MAX_TRAIN_STEPS = 5_000
"""The steps cap of every training run started from the Annealing lab."""


# ---------------------------------------------------------------------------------------------
# The two-phase demo
# ---------------------------------------------------------------------------------------------

VARIANTS: Mapping[str, str] = MappingProxyType(
    {
        "none": "No annealing",
        "anneal_main": "Annealing, same data",
        "anneal_hq": "Annealing + HQ data",
        "plateau_hq": "Plateau annealing + HQ data",
    }
)
"""The four variants of the two-phase demo, key → display label."""

SCHEDULE_FREE = "schedule_free"
"""The optional fifth variant: Schedule-Free AdamW at a constant lr (its point: no schedule)."""
VARIANT_LABELS: Mapping[str, str] = MappingProxyType(
    {**VARIANTS, SCHEDULE_FREE: "Schedule-Free AdamW, constant lr"}
)
"""Every variant a two-phase study can train, key → display label."""

ANNEAL_SHAPES = ("cosine", "linear", "exponential")
METRICS = {"val_loss": "min", "val_accuracy": "max"}

_SETTINGS_SPECS = {
    "model_size": Param("model_size", "small", choices=("tiny", "small", "medium")),
    "seed": Param("seed", 0, low=0, high=2**63 - 1, integer=True),
    "batch_size": Param("batch_size", 32, low=1, high=4096, integer=True),
    "main_steps": Param("main_steps", 150, low=1, high=MAX_TRAIN_STEPS, integer=True),
    "anneal_steps": Param("anneal_steps", 100, low=1, high=MAX_TRAIN_STEPS, integer=True),
    "eval_every": Param("eval_every", 5, low=1, high=MAX_TRAIN_STEPS, integer=True),
    "anneal_shape": Param("anneal_shape", "cosine", choices=ANNEAL_SHAPES),
    "min_lr_ratio": Param("min_lr_ratio", 0.01, low=0.0, high=1.0, low_open=True, high_open=True, log=True),
    "plateau_factor": Param("plateau_factor", 0.5, low=0.0, high=1.0, low_open=True, high_open=True),
    "plateau_patience": Param("plateau_patience", 2, low=0, high=1000, integer=True),
    "stop_patience": Param("stop_patience", 8, low=0, high=1000, integer=True),
    "metric": Param("metric", "val_loss", choices=tuple(METRICS)),
    "schedule_free": Param("schedule_free", False),
    "schedule_free_lr": Param(
        "schedule_free_lr",
        float(registry.get(SCHEDULE_FREE).defaults["lr"]),
        low=0.0,
        high=10.0,
        low_open=True,
        log=True,
        help="Schedule-Free AdamW's constant lr γ",
    ),
}
# Off by default and left out of to_dict at their defaults, so settings made before they existed
# (the Claims page's shipped results, saved records) keep their serialisation and config hash.
_OPTIONAL = ("schedule_free", "schedule_free_lr")


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TwoPhaseSettings:
    """The two-phase demo: plain values, validated (``ValueError`` names the field).

    Main phase: ``main_steps`` at the optimizer's lr η₀ on the training data, whose labels carry
    ``task_params["label_noise"]``. Annealing phase: at most ``anneal_steps`` more, the lr
    decaying from η₀ to ``min_lr_ratio``·η₀ (``anneal_shape``, or plateau cuts by
    ``plateau_factor`` after ``plateau_patience`` bad evaluations), stopped early once the lr
    reaches the floor or ``metric`` has not improved for ``stop_patience`` evaluations
    (0: never). Validation every ``eval_every`` steps.

    With ``schedule_free`` a fifth run trains Schedule-Free AdamW at the constant lr
    ``schedule_free_lr`` on the main data for the whole budget (no schedule: its averaging is
    meant to replace one), evaluated at its averaged point x like every run of the trainer.

    Attributes:
        task, task_params: the task (label_noise and hq_fraction among the parameters).
        optimizer, hparams: a registry name and its hyperparameters (``lr`` is η₀).
    """

    task: str = "moons"
    task_params: Mapping[str, Any] = field(
        default_factory=lambda: _frozen({"n_samples": 600, "label_noise": 0.3, "hq_fraction": 0.2})
    )
    optimizer: str = "momentum"
    hparams: Mapping[str, Any] = field(default_factory=lambda: _frozen({"lr": 0.1}))
    model_size: str = "small"
    seed: int = 0
    batch_size: int = 32
    main_steps: int = 150
    anneal_steps: int = 100
    eval_every: int = 5
    anneal_shape: str = "cosine"
    min_lr_ratio: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    stop_patience: int = 8
    metric: str = "val_loss"
    schedule_free: bool = False
    schedule_free_lr: float = float(_SETTINGS_SPECS["schedule_free_lr"].default)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.task_params, Mapping):
            raise invalid("task_params", self.task_params, "a mapping")
        get_task_info(self.task).resolve(self.task_params)  # names a bad task or parameter
        set_(self, "task_params", _frozen(self.task_params))
        spec = OptimizerSpec(self.optimizer, self.hparams)  # names a bad optimizer or hyperparameter
        set_(self, "hparams", spec.hparams)
        for name, param in _SETTINGS_SPECS.items():
            set_(self, name, param.validate(getattr(self, name)))
        if self.main_steps + self.anneal_steps > MAX_TRAIN_STEPS:
            raise ParamError(
                "anneal_steps",
                self.anneal_steps,
                f"Invalid anneal_steps: {self.anneal_steps!r} (main_steps + anneal_steps must be <= "
                f"{MAX_TRAIN_STEPS}, the lab's steps cap)",
            )

    @property
    def base_lr(self) -> float:
        """η₀: the optimizer's lr (its registry default when not given)."""
        return float(registry.get(self.optimizer).resolve(self.hparams)["lr"])

    @property
    def min_lr(self) -> float:
        return self.base_lr * self.min_lr_ratio

    @property
    def total_steps(self) -> int:
        return self.main_steps + self.anneal_steps

    @property
    def boundary(self) -> int:
        """The last main-phase step (metrics row ``step``); the annealing phase starts after it."""
        return self.main_steps

    def replace(self, **changes: Any) -> TwoPhaseSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["task_params"], out["hparams"] = dict(self.task_params), dict(self.hparams)
        for name in _OPTIONAL:
            if out[name] == _SETTINGS_SPECS[name].default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TwoPhaseSettings:
        if not isinstance(data, Mapping):
            raise invalid("settings", data, "a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            allowed = ", ".join(sorted(known))
            raise ValueError(f"Invalid settings key: {unknown[0]!r} (must be one of {allowed})")
        return cls(**data)


def anneal_schedule(settings: TwoPhaseSettings) -> ScheduleSpec:
    """The annealing phase's decay from η₀ to the floor over ``anneal_steps`` (local steps)."""
    base, floor, steps = settings.base_lr, settings.min_lr, settings.anneal_steps
    if settings.anneal_shape == "cosine":
        return ScheduleSpec("cosine", {"base_lr": base, "total_steps": steps, "min_lr": floor})
    if settings.anneal_shape == "linear":
        ratio = settings.min_lr_ratio
        return ScheduleSpec("linear", {"base_lr": base, "total_steps": steps, "end_factor": ratio})
    # exponential: γ^steps = floor / η₀, so the floor is reached at the end of the budget
    return ScheduleSpec("exponential", {"base_lr": base, "gamma": settings.min_lr_ratio ** (1.0 / steps)})


def two_phase_plans(settings: TwoPhaseSettings) -> dict[str, AnnealingPlan]:
    """The annealing plan of each variant (:data:`VARIANTS`), all with the same budget.

    * none: one phase at η₀ on the main data for the whole budget;
    * anneal_main / anneal_hq: η₀ for ``main_steps``, then :func:`anneal_schedule` on the main
      data / on the high-quality subset;
    * plateau_hq: η₀, then plateau cuts on the high-quality subset;
    * schedule_free (only with ``settings.schedule_free``): one phase at ``schedule_free_lr`` on
      the main data for the whole budget, for Schedule-Free AdamW.
    Every annealing phase stops at the floor ``min_lr`` or after ``stop_patience`` evaluations
    without improvement.
    """
    base = settings.base_lr
    constant = ScheduleSpec("constant", {"base_lr": base})
    mode = METRICS[settings.metric]
    patience = settings.stop_patience or None
    plans = {"none": AnnealingPlan((Phase("main", "main", settings.total_steps, schedule=constant),), mode)}
    for name, source in (("anneal_main", "main"), ("anneal_hq", "hq")):
        plans[name] = AnnealingPlan(
            (
                Phase("main", "main", settings.main_steps, schedule=constant),
                Phase(
                    "anneal",
                    source,
                    settings.anneal_steps,
                    schedule=anneal_schedule(settings),
                    stop=StopRule(min_lr=settings.min_lr, patience=patience),
                ),
            ),
            mode,
        )
    plans["plateau_hq"] = two_phase_plan(
        main_steps=settings.main_steps,
        main_schedule=constant,
        hq_steps=settings.anneal_steps,
        hq_plateau=PlateauSettings(
            factor=settings.plateau_factor, patience=settings.plateau_patience, min_lr=settings.min_lr
        ),
        min_lr=settings.min_lr,
        patience=patience,
        metric_mode=mode,
    )
    if settings.schedule_free:
        steady = ScheduleSpec("constant", {"base_lr": settings.schedule_free_lr})
        plans[SCHEDULE_FREE] = AnnealingPlan(
            (Phase("main", "main", settings.total_steps, schedule=steady),), mode
        )
    return plans


def two_phase_configs(settings: TwoPhaseSettings) -> dict[str, TrainConfig]:
    """One :class:`TrainConfig` per variant: same task, seed (so initialisation and data
    order), optimizer and budget; only the annealing plan differs (and the optimizer of the
    optional Schedule-Free run)."""
    if not isinstance(settings, TwoPhaseSettings):
        raise invalid("settings", settings, "TwoPhaseSettings")
    schedule_free = OptimizerSpec(SCHEDULE_FREE, {"lr": settings.schedule_free_lr})
    return {
        name: TrainConfig(
            task=settings.task,
            task_params=settings.task_params,
            model={"size": settings.model_size},
            optimizers=(
                schedule_free
                if name == SCHEDULE_FREE
                else OptimizerSpec(settings.optimizer, settings.hparams),
            ),
            annealing=plan,
            batch_size=settings.batch_size,
            max_batch_size=max(settings.batch_size, 1024),
            steps=settings.total_steps,
            seed=settings.seed,
            eval_every=settings.eval_every,
            # sparse diagnostics, no per-element copies: the cost is negligible and a variant's
            # snapshot (dgs_core.snapshots) carries the usual diagnostics tables
            diag_every=max(1, settings.total_steps // 50),
            diag_keep="none",
            max_steps=MAX_TRAIN_STEPS,
            device="cpu",  # the default run is tiny; also keeps "same seed → same numbers" exact
        )
        for name, plan in two_phase_plans(settings).items()
    }


class TwoPhaseStudy(TrainerStudy):
    """The four variants of :func:`two_phase_configs` (keyed as :data:`VARIANTS`), trained in
    turns; ``settings`` are kept with them (the page draws from them, the record saves them)."""

    def __init__(self, settings: TwoPhaseSettings) -> None:
        super().__init__(two_phase_configs(settings))
        self.settings = settings


def two_phase_record(settings: TwoPhaseSettings, study: TrainerStudy | None = None) -> dict[str, Any]:
    """The demo's record as plain JSON: the settings, every variant's plan (phases, planned
    boundaries, schedules) and, once run, what each plan did (spans, end reason, cuts)."""
    plans = two_phase_plans(settings)
    record: dict[str, Any] = {
        "kind": "two_phase",
        "settings": settings.to_dict(),
        "variants": {
            name: {
                "label": VARIANT_LABELS[name],
                "plan": plan.to_dict(),
                "planned_boundaries": list(plan.planned_boundaries),
            }
            for name, plan in plans.items()
        },
    }
    if study is not None:
        for name, run in study.record()["runs"].items():
            for lane in run["lanes"].values():
                record["variants"][name]["run"] = lane
    return record


def settings_from_record(record: Mapping[str, Any]) -> TwoPhaseSettings:
    """The settings of a saved :func:`two_phase_record`; the saved plans must match them."""
    if not isinstance(record, Mapping) or record.get("kind") != "two_phase":
        raise invalid("record", record, "a two-phase record")
    # from_dict refuses a non-mapping (None too)
    settings = TwoPhaseSettings.from_dict(record.get("settings"))  # type: ignore[arg-type]  # (reason above)
    saved = record.get("variants")
    if not isinstance(saved, Mapping):
        raise invalid("variants", saved, "a mapping")
    for name, plan in two_phase_plans(settings).items():
        entry = saved.get(name)
        if not isinstance(entry, Mapping) or AnnealingPlan.from_dict(entry.get("plan")) != plan:
            raise ValueError(f"Invalid record: the plan of {name!r} differs from its settings' plan")
    return settings


# ---------------------------------------------------------------------------------------------
# Schedule lr against the effective lr
# ---------------------------------------------------------------------------------------------

_EFFECTIVE_STEPS = Param("steps", 300, low=1, high=MAX_TRAIN_STEPS, integer=True)


def effective_lr_config(
    *,
    schedule: ScheduleSpec,
    optimizers: Sequence[OptimizerSpec | str | Sequence[Any]],
    steps: int,
    task: str = "moons",
    task_params: Mapping[str, Any] | None = None,
    model_size: str = "small",
    seed: int = 0,
    batch_size: int = 32,
    diag_every: int | None = None,
) -> TrainConfig:
    """A run that applies ``schedule`` to every optimizer and records the effective lr.

    The trainer scales the schedule to each optimizer: lr_t = lr · schedule(t) / base_lr, so
    each optimizer keeps its own lr scale and the schedule gives the shape. Diagnostics are
    recorded about 60 times over the run (``diag_every``), enough for a smooth band.
    """
    steps = _EFFECTIVE_STEPS.validate(steps)
    if diag_every is None:
        diag_every = max(1, steps // 60)
    return TrainConfig(
        task=task,
        task_params=task_params or {"n_samples": 600},
        model={"size": model_size},
        optimizers=tuple(OptimizerSpec.of(o) for o in optimizers),
        schedule=schedule,
        batch_size=batch_size,
        steps=steps,
        seed=seed,
        eval_every=max(1, steps // 20),
        diag_every=diag_every,
        diag_keep="all",
        device="cpu",
        max_steps=MAX_TRAIN_STEPS,
    )
