"""The Annealing lab's whole state as one schema: :class:`AnnealingLabConfig`, and its link.

The lab's three tabs hold the schedule composer (run length, the schedules and their
parameters, the plateau demo), the effective-lr run (which composed schedule, the task, the
optimizers and their hyperparameters) and the two-phase demo
(:class:`~dgs_core.studies.annealing.TwoPhaseSettings`). One frozen, validated record keeps
them all and the open tab; :meth:`AnnealingLabConfig.to_link` packs it into one URL-safe text
(the page's ``?anneal=``), :meth:`AnnealingLabConfig.from_link` reads it back, validated like
any other input: a bad value raises a ``ParamError`` naming the field.

>>> config = AnnealingLabConfig(tab="two_phase", two_phase=TwoPhaseSettings(main_steps=60))
>>> AnnealingLabConfig.from_link(config.to_link()) == config
True
>>> AnnealingLabConfig.from_dict({"tab": "plots"})
Traceback (most recent call last):
...
dgs_core.params.ParamError: Invalid tab: 'plots' (must be one of 'schedules', 'effective', 'two_phase')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from dgs_core import links
from dgs_core.optim import registry
from dgs_core.params import Param, ParamSet, check_keys, invalid
from dgs_core.schedules import PLATEAU_HYPERPARAMS
from dgs_core.schedules.curves import CurveSpec, check_run_steps, default_params
from dgs_core.schedules.plateau import PLATEAU_DEMO_HYPERPARAMS
from dgs_core.studies.annealing import TwoPhaseSettings
from dgs_core.training.config import OptimizerSpec
from dgs_core.training.tasks import get_task_info

LINK_PARAM = "anneal"
"""The query parameter that carries the lab's link."""

TABS: Mapping[str, str] = MappingProxyType(
    {"schedules": "Schedules", "effective": "Effective learning rate", "two_phase": "Two-phase annealing"}
)
"""The lab's tabs, key → label."""

DEFAULT_RUN_STEPS = 300
DEFAULT_CURVES = ("warmup_cosine", "step_decay", "wsd")
PLATEAU_SHOWN = ("factor", "patience", "threshold", "cooldown", "min_lr")
"""The annealer's settings the plateau demo offers (the rest keep ReduceLROnPlateau's defaults)."""
DEMO_PLATEAU: Mapping[str, Any] = MappingProxyType({"factor": 0.5, "patience": 5})
"""The demo's start: torch's 0.1 / 10 cut rarely in 150 evaluations."""
PLATEAU_SPECS = ParamSet(
    tuple(s for s in PLATEAU_HYPERPARAMS if s.name in PLATEAU_SHOWN) + tuple(PLATEAU_DEMO_HYPERPARAMS)
)
"""Every setting of the plateau demo: the annealer's shown ones, then the toy curve's."""

# The two-phase tab's sliders: their ranges are the link's too (a slider refuses a value
# outside its range, so a link cannot carry one).
LABEL_NOISE = Param("label_noise", 0.3, low=0.0, high=0.8, help="label noise of the main data")
HQ_FRACTION = Param("hq_fraction", 0.2, low=0.05, high=1.0, help="the clean subset's fraction")

_FIELDS = {
    "tab": Param("tab", "schedules", choices=tuple(TABS)),
    "log_y": Param("log_y", False),
}


def default_curves(run_steps: int = DEFAULT_RUN_STEPS) -> tuple[CurveSpec, ...]:
    """The composer's opening curves, their parameters fitted to the run length."""
    return tuple(
        CurveSpec.from_dict({"schedule": {"name": n, "params": default_params(n, run_steps)}})
        for n in DEFAULT_CURVES
    )


def _optimizers(value: Any) -> tuple[OptimizerSpec, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise invalid("optimizers", value, "a list of optimizers")
    specs = tuple(OptimizerSpec.of(v) for v in value)  # names a bad optimizer or hyperparameter
    order = registry.names()  # the picker's order
    specs = tuple(sorted(specs, key=lambda s: order.index(s.name)))
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise invalid("optimizers", names, "at least one, each optimizer once")
    return specs


@dataclass(frozen=True)
class EffectiveSettings:
    """The effective-lr tab: the composed schedule to apply (its name; "" for the first curve),
    the task, and the optimizers (in the registry's order, as the picker lists them) with their
    hyperparameters (only those that differ from the registry's defaults need be given)."""

    schedule: str = ""
    task: str = "moons"
    optimizers: tuple[OptimizerSpec, ...] = field(
        default_factory=lambda: tuple(OptimizerSpec(n) for n in ("sgd", "adam", "dgs"))
    )

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, str):
            raise invalid("schedule", self.schedule, "a schedule's name")
        get_task_info(self.task)  # names an unknown task
        object.__setattr__(self, "optimizers", _optimizers(self.optimizers))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "task": self.task,
            "optimizers": [o.to_dict() for o in self.optimizers],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EffectiveSettings:
        if not isinstance(data, Mapping):
            raise invalid("effective", data, "a mapping")
        check_keys(data, [f.name for f in fields(cls)], "effective")
        return cls(**data)


@dataclass(frozen=True)
class AnnealingLabConfig:
    """Everything the Annealing lab shows: the open tab and each tab's settings.

    Attributes:
        tab: "schedules", "effective" or "two_phase" (:data:`TABS`).
        run_steps: the composer's run length.
        curves: the composer's schedules, each schedule at most once.
        log_y: the composer's log lr axis.
        plateau: the plateau demo's settings (:data:`PLATEAU_SPECS`); kept are those that differ
            from its start (:data:`DEMO_PLATEAU`, else the spec's default).
        effective: the effective-lr tab (its schedule one of ``curves``; "" is the first).
        two_phase: the two-phase demo (its label noise and clean fraction within the sliders').
    """

    tab: str = "schedules"
    run_steps: int = DEFAULT_RUN_STEPS
    curves: tuple[CurveSpec, ...] = field(default_factory=default_curves)
    log_y: bool = False
    plateau: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    effective: EffectiveSettings = field(default_factory=EffectiveSettings)
    two_phase: TwoPhaseSettings = field(default_factory=TwoPhaseSettings)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name, spec in _FIELDS.items():
            set_(self, name, spec.validate(getattr(self, name)))
        set_(self, "run_steps", check_run_steps(self.run_steps))
        curves = self.curves
        if isinstance(curves, str | bytes | Mapping) or not isinstance(curves, Sequence):
            raise invalid("curves", curves, "a list of schedules")
        curves = tuple(c if isinstance(c, CurveSpec) else CurveSpec.from_dict(c) for c in curves)
        names = [c.schedule.name for c in curves]
        if len(set(names)) != len(names):
            raise invalid("curves", names, "each schedule at most once")
        for curve in curves:
            curve.check_run(self.run_steps)  # names the warmup that does not fit
        set_(self, "curves", curves)
        if not isinstance(self.plateau, Mapping):
            raise invalid("plateau", self.plateau, "a mapping")
        check_keys(self.plateau, PLATEAU_SPECS.names, "plateau")
        specs = {s.name: s for s in PLATEAU_SPECS}
        plateau = {k: specs[k].validate(v) for k, v in self.plateau.items()}
        start = {k: DEMO_PLATEAU.get(k, specs[k].default) for k in plateau}
        set_(self, "plateau", MappingProxyType({k: v for k, v in plateau.items() if v != start[k]}))
        effective = self.effective
        if isinstance(effective, Mapping):
            effective = EffectiveSettings.from_dict(effective)
        if not isinstance(effective, EffectiveSettings):
            raise invalid("effective", effective, "the effective-lr tab's settings")
        if effective.schedule and effective.schedule not in names:
            raise invalid(
                "schedule", effective.schedule, f"one of the composed schedules ({', '.join(names)})"
            )
        if not effective.schedule and names:  # "": the first curve, named
            effective = replace(effective, schedule=names[0])
        set_(self, "effective", effective)
        two_phase = self.two_phase
        if isinstance(two_phase, Mapping):
            two_phase = TwoPhaseSettings.from_dict(two_phase)
        if not isinstance(two_phase, TwoPhaseSettings):
            raise invalid("two_phase", two_phase, "the two-phase demo's settings")
        for spec in (LABEL_NOISE, HQ_FRACTION):
            spec.validate(two_phase.task_params.get(spec.name, spec.default))
        set_(self, "two_phase", two_phase)

    @property
    def effective_curve(self) -> CurveSpec | None:
        """The composed curve the effective-lr tab applies (None: no curve)."""
        chosen = [c for c in self.curves if c.schedule.name == self.effective.schedule]
        return (chosen or list(self.curves) or [None])[0]

    def replace(self, **changes: Any) -> AnnealingLabConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, the inverse of :meth:`from_dict` (curves without their default labels)."""
        return {
            "tab": self.tab,
            "run_steps": self.run_steps,
            "curves": [
                {"schedule": c.schedule.to_dict(), "warmup_before": c.warmup_before} for c in self.curves
            ],
            "log_y": self.log_y,
            "plateau": dict(self.plateau),
            "effective": self.effective.to_dict(),
            "two_phase": self.two_phase.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnnealingLabConfig:
        if not isinstance(data, Mapping):
            raise invalid(LINK_PARAM, data, "a mapping")
        check_keys(data, [f.name for f in fields(cls)], "Annealing lab")
        return cls(**data)

    def to_link(self) -> str:
        """This configuration as one URL-safe text (:func:`dgs_core.links.pack`) for ``anneal=``."""
        return links.pack(self.to_dict())

    @classmethod
    def from_link(cls, text: str) -> AnnealingLabConfig:
        """The configuration of an ``anneal=`` text; a damaged or oversized text raises a
        ``ParamError`` naming ``anneal``, an invalid setting one naming its field."""
        return cls.from_dict(links.unpack(text, LINK_PARAM))


FIGURE_TABS: Mapping[str, str] = MappingProxyType(
    {"schedules": "schedules", "effective_lr": "effective", "two_phase": "two_phase"}
)
"""The tab that draws each figure a lesson step or a claim names."""


def annealing_lab_config(figure: str, config: Any) -> AnnealingLabConfig:
    """The lab opened on ``figure``'s tab with ``config``: the composer's ``(curves, run_steps)``
    or the two-phase demo's :class:`TwoPhaseSettings` (or its dict), the rest at the lab's start.

    >>> annealing_lab_config("two_phase", {"main_steps": 60}).two_phase.main_steps
    60
    """
    if figure not in FIGURE_TABS:
        raise invalid("figure", figure, f"one of {', '.join(FIGURE_TABS)}")
    tab = FIGURE_TABS[figure]
    if isinstance(config, Mapping):
        config = TwoPhaseSettings.from_dict(config)
    if isinstance(config, TwoPhaseSettings):
        return AnnealingLabConfig(tab=tab, two_phase=config)
    if isinstance(config, tuple) and len(config) == 2:
        curves, run_steps = config
        return AnnealingLabConfig(tab=tab, run_steps=run_steps, curves=tuple(curves))
    raise invalid("config", config, "(curves, run_steps) or two-phase settings")
