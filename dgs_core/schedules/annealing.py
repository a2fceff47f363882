"""Annealing plans: phases of training, each with its data source, lr rule and stop rule.

See docs/algorithms.md#annealing-plan.

The "iterative learning-rate reduction" recipe has two phases: train on the main data with a
base schedule, then switch the data source to the high-quality subset and decay the lr — by a
schedule or by plateau events — until the lr reaches ``min_lr`` or the validation metric stops
improving. An :class:`AnnealingPlan` describes it as data (saved with the run as plain JSON);
an :class:`AnnealingController` answers the trainer's questions step by step without owning
the loop.

>>> from dgs_core.schedules import ScheduleSpec
>>> plan = two_phase_plan(
...     main_steps=100,
...     main_schedule=ScheduleSpec("warmup_cosine", {"base_lr": 0.1, "warmup_steps": 10, "total_steps": 100}),
...     hq_steps=50,
...     hq_plateau=PlateauSettings(patience=2, initial_lr=0.01),
...     min_lr=1e-4,
... )
>>> ctl = AnnealingController(plan)
>>> ctl.data_source(99), ctl.data_source(100), ctl.boundary_steps
('main', 'hq', (100,))
>>> step = 0
>>> while not ctl.finished(step):
...     lr, source = ctl.lr(step), ctl.data_source(step)   # train one step with these
...     if step >= 100 and step % 5 == 0:
...         ctl.observe_validation(step, 1.0)              # a metric that never improves
...     step += 1
>>> ctl.end_step, ctl.end_reason
(131, 'min_lr reached')

Semantics (the controller is a pure function of the plan and the validations observed):
    * steps count from 0; phase k runs over [start_k, end_k); the next phase starts at end_k.
    * a phase ends at its budget (``steps``), or earlier by its :class:`StopRule`:
      - ``min_lr``: before the first step whose lr would be <= min_lr (no step trains at it;
        see :func:`reaches` for the comparison);
        for a schedule this is known in advance, for plateau settings it follows a cut;
      - ``patience``: after that many validations in a row without improvement
        (the improvement test of ``ReduceLROnPlateau``, counted from the phase's own start).
    * a validation at step s is the metric measured after training step s; what it decides
      (a plateau cut, a stop) applies from step s + 1.
    * a schedule phase sees its local step (0 at the phase start); a plateau phase starts at
      ``initial_lr``, or, when that is None, at the lr of the previous phase's last step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dgs_core.params import Param, check_keys, check_step, invalid
from dgs_core.schedules.plateau import (
    PLATEAU_HYPERPARAMS,
    PlateauAnnealer,
    ReductionEvent,
    _float_from_json,
    _float_to_json,
    is_improvement,
)
from dgs_core.schedules.spec import ChainSchedule, Schedule, ScheduleSpec, build

DATA_SOURCES = ("main", "hq")
"""``main``: the full training data; ``hq``: the high-quality subset."""

METRIC_MODES = ("min", "max")

MIN_LR_REACHED = "min_lr reached"
NO_IMPROVEMENT = "validation stopped improving"
BUDGET = "budget"

PLAN_VERSION = 1

_LR = Param("lr", 0.1, low=0.0, high=1e3, log=True)
_STEPS = Param("steps", 1000, low=1, high=1e9, integer=True)
_PATIENCE = Param("patience", 5, low=1, high=1e6, integer=True)
_THRESHOLD = Param("threshold", 1e-4, low=0.0, high=1e6)
_THRESHOLD_MODE = Param("threshold_mode", "rel", choices=("rel", "abs"))
_PLATEAU_SPECS = {s.name: s for s in PLATEAU_HYPERPARAMS if s.name != "mode"}


def reaches(lr: float, min_lr: float) -> bool:
    """lr <= min_lr, up to 1e-9 relative round-off (so 0.01 · 0.1 · 0.1 reaches 1e-4)."""
    return lr <= min_lr or math.isclose(lr, min_lr, rel_tol=1e-9)


def _named(spec: Param, name: str) -> Param:
    """``spec`` reporting errors under ``name`` (e.g. "stop.min_lr of phase 'hq'")."""
    return Param(
        name,
        spec.default,
        low=spec.low,
        high=spec.high,
        low_open=spec.low_open,
        high_open=spec.high_open,
        choices=spec.choices,
        integer=spec.integer,
        log=spec.log,
    )


def _from_mapping(data: Any, what: str, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"Invalid {what}: {data!r} (must be a mapping)")
    check_keys(data, fields, what)
    return dict(data)


@dataclass(frozen=True)
class PlateauSettings:
    """``ReduceLROnPlateau`` settings for a phase (the metric's mode is the plan's).

    ``initial_lr`` None continues from the lr of the previous phase's last step.
    """

    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8
    initial_lr: float | None = None

    def __post_init__(self) -> None:
        for name, spec in _PLATEAU_SPECS.items():
            object.__setattr__(self, name, _named(spec, f"plateau.{name}").validate(getattr(self, name)))
        if self.initial_lr is not None:
            lr = _named(_LR, "plateau.initial_lr").validate(self.initial_lr)
            object.__setattr__(self, "initial_lr", lr)

    def annealer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`PlateauAnnealer` (without the lr and mode)."""
        return {name: getattr(self, name) for name in _PLATEAU_SPECS}

    def to_dict(self) -> dict[str, Any]:
        return {**self.annealer_kwargs(), "initial_lr": self.initial_lr}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlateauSettings:
        return cls(**_from_mapping(data, "plateau settings", (*_PLATEAU_SPECS, "initial_lr")))


@dataclass(frozen=True)
class StopRule:
    """When a phase ends before its budget: lr <= ``min_lr``, or ``patience`` validations in a
    row without improvement (improvement: ``threshold`` in ``threshold_mode``, as
    ``ReduceLROnPlateau``). At least one of ``min_lr`` and ``patience`` must be set.
    """

    min_lr: float | None = None
    patience: int | None = None
    threshold: float = 1e-4
    threshold_mode: str = "rel"

    def __post_init__(self) -> None:
        if self.min_lr is None and self.patience is None:
            raise ValueError("Invalid stop rule: min_lr=None, patience=None (must set min_lr or patience)")
        if self.min_lr is not None:
            object.__setattr__(self, "min_lr", _named(_LR, "stop.min_lr").validate(self.min_lr))
        if self.patience is not None:
            object.__setattr__(self, "patience", _named(_PATIENCE, "stop.patience").validate(self.patience))
        object.__setattr__(self, "threshold", _named(_THRESHOLD, "stop.threshold").validate(self.threshold))
        mode = _named(_THRESHOLD_MODE, "stop.threshold_mode").validate(self.threshold_mode)
        object.__setattr__(self, "threshold_mode", mode)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_lr": self.min_lr,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StopRule:
        return cls(**_from_mapping(data, "stop rule", ("min_lr", "patience", "threshold", "threshold_mode")))


@dataclass(frozen=True)
class Phase:
    """One phase of a plan.

    Attributes:
        name: unique within the plan ("main", "anneal").
        data_source: "main" or "hq".
        steps: the phase's budget: its length unless the stop rule ends it earlier.
        schedule: the lr by a schedule of the phase's local step, or
        plateau: the lr by plateau events (exactly one of the two).
        stop: the early-stop rule, or None to always run the whole budget.
    """

    name: str
    data_source: str
    steps: int
    schedule: ScheduleSpec | None = None
    plateau: PlateauSettings | None = None
    stop: StopRule | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Invalid phase name: {self.name!r} (must be a non-empty string)")
        where = f"of phase {self.name!r}"
        if self.data_source not in DATA_SOURCES:
            raise ValueError(
                f"Invalid data_source {where}: {self.data_source!r} (must be one of 'main', 'hq')"
            )
        object.__setattr__(self, "steps", _named(_STEPS, f"steps {where}").validate(self.steps))
        if (self.schedule is None) == (self.plateau is None):
            got = "neither" if self.schedule is None else "both"
            raise ValueError(
                f"Invalid lr rule {where}: got {got} (must give exactly one of schedule, plateau)"
            )
        if self.schedule is not None and not isinstance(self.schedule, ScheduleSpec):
            raise ValueError(f"Invalid schedule {where}: {self.schedule!r} (must be a ScheduleSpec)")
        if self.plateau is not None and not isinstance(self.plateau, PlateauSettings):
            raise ValueError(f"Invalid plateau {where}: {self.plateau!r} (must be PlateauSettings)")
        if self.stop is not None and not isinstance(self.stop, StopRule):
            raise ValueError(f"Invalid stop {where}: {self.stop!r} (must be a StopRule)")
        if self.stop is not None and self.stop.min_lr is not None:
            self._check_min_lr_reachable(self.stop.min_lr, where)

    def _check_min_lr_reachable(self, min_lr: float, where: str) -> None:
        if self.plateau is not None:
            if self.plateau.min_lr > min_lr:
                raise ValueError(
                    f"Invalid stop.min_lr {where}: {min_lr!r} (must be >= plateau.min_lr="
                    f"{self.plateau.min_lr!r}: the lr never goes below its floor)"
                )
            first = self.plateau.initial_lr
        else:
            # no plateau: exactly one of the two, so a schedule
            first = build(self.schedule)(0)  # type: ignore[arg-type]  # (reason above)
        if first is not None and reaches(first, min_lr):
            raise ValueError(
                f"Invalid stop.min_lr {where}: {min_lr!r} (must be < the phase's first lr {first!r}, "
                "or the phase is empty)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data_source": self.data_source,
            "steps": self.steps,
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "plateau": None if self.plateau is None else self.plateau.to_dict(),
            "stop": None if self.stop is None else self.stop.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Phase:
        fields = ("name", "data_source", "steps", "schedule", "plateau", "stop")
        d = _from_mapping(data, "phase", fields)
        missing = [k for k in ("name", "data_source", "steps") if k not in d]
        if missing:
            raise ValueError(f"Invalid phase: {dict(data)!r} (missing {missing[0]!r})")
        for key, parse in (
            ("schedule", ScheduleSpec.from_dict),
            ("plateau", PlateauSettings.from_dict),
            ("stop", StopRule.from_dict),
        ):
            if d.get(key) is not None:
                d[key] = parse(d[key])
        return cls(**d)


@dataclass(frozen=True)
class AnnealingPlan:
    """Phases run in order; ``metric_mode`` says whether a lower ("min") or higher ("max")
    validation metric is better (for plateau cuts and the patience rule).
    """

    phases: tuple[Phase, ...]
    metric_mode: str = "min"

    def __post_init__(self) -> None:
        phases = tuple(self.phases) if isinstance(self.phases, Iterable) else None
        if not phases:
            raise ValueError(f"Invalid phases: {self.phases!r} (must have at least one phase)")
        for phase in phases:
            if not isinstance(phase, Phase):
                raise invalid("phase", phase, "a Phase")
        object.__setattr__(self, "phases", phases)
        if self.metric_mode not in METRIC_MODES:
            raise invalid("metric_mode", self.metric_mode, "one of 'min', 'max'")
        seen: set[str] = set()
        for phase in phases:
            if phase.name in seen:
                raise ValueError(f"Invalid phase name: {phase.name!r} (must be unique; used twice)")
            seen.add(phase.name)
        first = phases[0]
        if first.plateau is not None and first.plateau.initial_lr is None:
            raise ValueError(
                f"Invalid plateau.initial_lr of phase {first.name!r}: None "
                "(the first phase has no previous lr to continue from)"
            )

    @property
    def total_steps(self) -> int:
        """The whole budget: the plan's length if no stop rule fires."""
        return sum(p.steps for p in self.phases)

    @property
    def planned_boundaries(self) -> tuple[int, ...]:
        """The first step of every phase after the first, if every phase runs its budget."""
        starts, start = [], 0
        for phase in self.phases[:-1]:
            start += phase.steps
            starts.append(start)
        return tuple(starts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, saved with the run."""
        return {
            "version": PLAN_VERSION,
            "metric_mode": self.metric_mode,
            "phases": [p.to_dict() for p in self.phases],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnnealingPlan:
        """Rebuild and validate a plan from :meth:`to_dict`'s output."""
        d = _from_mapping(data, "annealing plan", ("version", "metric_mode", "phases"))
        if d.get("version", PLAN_VERSION) != PLAN_VERSION:
            raise invalid("version", d["version"], f"{PLAN_VERSION}")
        raw = d.get("phases")
        if not isinstance(raw, list | tuple):
            raise invalid("phases", raw, "a list")
        return cls(tuple(Phase.from_dict(p) for p in raw), d.get("metric_mode", "min"))


def two_phase_plan(
    *,
    main_steps: int,
    main_schedule: ScheduleSpec,
    hq_steps: int,
    hq_schedule: ScheduleSpec | None = None,
    hq_plateau: PlateauSettings | None = None,
    min_lr: float | None = None,
    patience: int | None = None,
    metric_mode: str = "min",
) -> AnnealingPlan:
    """The recipe: "main" on the main data with ``main_schedule``, then "anneal" on the
    high-quality subset with ``hq_schedule`` or ``hq_plateau``, stopped by ``min_lr`` and/or
    ``patience`` (or only by its budget ``hq_steps`` when both are None).
    """
    stop = None if min_lr is None and patience is None else StopRule(min_lr=min_lr, patience=patience)
    return AnnealingPlan(
        (
            Phase("main", "main", main_steps, schedule=main_schedule),
            Phase("anneal", "hq", hq_steps, schedule=hq_schedule, plateau=hq_plateau, stop=stop),
        ),
        metric_mode=metric_mode,
    )


@dataclass(frozen=True)
class PhaseSpan:
    """Where a phase runs, [start, end), and why it ends there (as far as is known now)."""

    index: int
    name: str
    data_source: str
    start: int
    end: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data_source": self.data_source,
            "start": self.start,
            "end": self.end,
            "reason": self.reason,
        }


class _PatienceCounter:
    """Validations in a row without improvement, for a :class:`StopRule`'s patience."""

    def __init__(self, mode: str, threshold: float, threshold_mode: str) -> None:
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode
        self.best = float("inf") if mode == "min" else float("-inf")
        self.bad = 0

    def update(self, metric: float) -> int:
        if is_improvement(
            metric, self.best, mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode
        ):
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
        return self.bad


class AnnealingController:
    """Answers, for any step, the lr and data source an :class:`AnnealingPlan` prescribes.

    The trainer keeps the loop; per step it asks :meth:`finished`, :meth:`lr` and
    :meth:`data_source`, and after each validation calls :meth:`observe_validation`.
    Every answer is a deterministic function of the plan and the validations observed so
    far; a later validation can only change answers for later steps. See the module
    docstring for the rules.
    """

    def __init__(self, plan: AnnealingPlan) -> None:
        if not isinstance(plan, AnnealingPlan):
            raise invalid("plan", plan, "an AnnealingPlan")
        self.plan = plan
        self._schedules: list[Schedule | ChainSchedule | None] = [
            None if p.schedule is None else build(p.schedule) for p in plan.phases
        ]
        self._natural: dict[int, tuple[int, str]] = {}  # schedule phases: (length, reason), lazily
        self._reset()

    def _reset(self) -> None:
        self._observations: list[tuple[int, float]] = []
        self._early_ends: dict[int, tuple[int, str]] = {}  # phase index -> (end step, reason)
        self._annealers: dict[int, PlateauAnnealer] = {}
        self._start_lrs: dict[int, float] = {}
        self._patience: dict[int, _PatienceCounter] = {}
        self._spans_cache: tuple[PhaseSpan, ...] | None = None

    # -- the timeline ------------------------------------------------------------------------

    def _natural_length(self, i: int) -> tuple[int, str]:
        """A schedule phase's length without validations: its budget, or up to min_lr."""
        if i not in self._natural:
            phase, schedule = self.plan.phases[i], self._schedules[i]
            length, reason = phase.steps, BUDGET
            if phase.stop is not None and phase.stop.min_lr is not None:
                for t in range(phase.steps):  # O(budget), once per phase
                    # a schedule phase: its _schedules entry is built
                    if reaches(schedule(t), phase.stop.min_lr):  # type: ignore[misc]  # (reason above)
                        length, reason = t, MIN_LR_REACHED
                        break
            self._natural[i] = (length, reason)
        return self._natural[i]

    def spans(self) -> tuple[PhaseSpan, ...]:
        """Every phase's [start, end) and end reason, given the validations so far."""
        if self._spans_cache is not None:
            return self._spans_cache
        spans: list[PhaseSpan] = []
        start = 0
        for i, phase in enumerate(self.plan.phases):
            if i in self._early_ends:
                end, reason = self._early_ends[i]
            elif phase.schedule is not None:
                length, reason = self._natural_length(i)
                end = start + length
            else:
                end, reason = start + phase.steps, BUDGET
                min_lr = None if phase.stop is None else phase.stop.min_lr
                if min_lr is not None and reaches(self._start_lr(i, spans), min_lr):
                    end, reason = start, MIN_LR_REACHED  # inherited an lr already at the floor
            spans.append(PhaseSpan(i, phase.name, phase.data_source, start, end, reason))
            start = end
        self._spans_cache = tuple(spans)
        return self._spans_cache

    def _start_lr(self, i: int, spans: Sequence[PhaseSpan]) -> float:
        """The lr a plateau phase starts at: its initial_lr, or the previous phase's last lr."""
        if i in self._start_lrs:  # fixed when the phase saw its first validation
            return self._start_lrs[i]
        # called for plateau phases only
        initial = self.plan.phases[i].plateau.initial_lr  # type: ignore[union-attr]  # (reason above)
        if initial is not None:
            return initial
        prev = spans[i - 1]
        if prev.end > prev.start:
            return self._lr_in(i - 1, prev, prev.end - 1, spans)
        return self._start_lr(i - 1, spans)  # only a plateau phase can be empty

    def _lr_in(self, i: int, span: PhaseSpan, step: int, spans: Sequence[PhaseSpan]) -> float:
        schedule = self._schedules[i]
        if schedule is not None:
            return schedule(step - span.start)
        lr = self._start_lr(i, spans)
        annealer = self._annealers.get(i)
        if annealer is not None:
            for event in annealer.events:  # a cut at validation step s applies from s + 1
                if event.step < step:
                    lr = event.new_lr
        return lr

    def _span_at(self, step: Any) -> PhaseSpan:
        step = check_step(step)
        spans = self.spans()
        for span in spans:
            if span.start <= step < span.end:
                return span
        last = spans[-1]
        raise ValueError(f"Invalid step: {step!r} (the plan finished at step {last.end}: {last.reason})")

    # -- the trainer's questions ---------------------------------------------------------------

    @property
    def end_step(self) -> int:
        """The number of steps the plan runs, given the validations so far."""
        return self.spans()[-1].end

    @property
    def end_reason(self) -> str:
        """Why the plan ends at :attr:`end_step`: "budget", "min_lr reached" or
        "validation stopped improving"."""
        return self.spans()[-1].reason

    def finished(self, step: int) -> bool:
        """True when ``step`` is at or past the plan's end (do not train it)."""
        return check_step(step) >= self.end_step

    @property
    def boundary_steps(self) -> tuple[int, ...]:
        """The first step of every phase after the first, given the validations so far."""
        return tuple(span.start for span in self.spans()[1:])

    def phase(self, step: int) -> Phase:
        """The phase that trains ``step``."""
        return self.plan.phases[self._span_at(step).index]

    def lr(self, step: int) -> float:
        """The learning rate for training ``step``."""
        span = self._span_at(step)
        return float(self._lr_in(span.index, span, step, self.spans()))

    def data_source(self, step: int) -> str:
        """ "main" or "hq": where the batch for ``step`` comes from."""
        return self._span_at(step).data_source

    def observe_validation(self, step: int, metric: float) -> None:
        """Record the validation metric measured after training ``step``.

        Steps must increase from call to call and lie inside the plan. May cut a plateau
        phase's lr or end the phase (from ``step + 1`` on).
        """
        step = check_step(step)
        if self._observations and step <= self._observations[-1][0]:
            raise invalid("step", step, f"> the previous validation step {self._observations[-1][0]}")
        span = self._span_at(step)
        metric = float(metric)
        i, phase = span.index, self.plan.phases[span.index]
        spans = self.spans()
        self._observations.append((step, metric))
        stop = phase.stop
        if phase.plateau is not None:
            annealer = self._annealers.get(i)
            if annealer is None:
                start_lr = self._start_lr(i, spans)
                kwargs = phase.plateau.annealer_kwargs()
                annealer = PlateauAnnealer(start_lr, mode=self.plan.metric_mode, **kwargs)
                self._annealers[i] = annealer
                self._start_lrs[i] = start_lr
            lr = annealer.step(metric, at=step)
            if stop is not None and stop.min_lr is not None and reaches(lr, stop.min_lr):
                self._early_ends[i] = (step + 1, MIN_LR_REACHED)
        if stop is not None and stop.patience is not None:
            counter = self._patience.setdefault(
                i, _PatienceCounter(self.plan.metric_mode, stop.threshold, stop.threshold_mode)
            )
            if counter.update(metric) >= stop.patience and i not in self._early_ends:
                self._early_ends[i] = (step + 1, NO_IMPROVEMENT)
        self._spans_cache = None

    @property
    def reductions(self) -> list[ReductionEvent]:
        """Every plateau cut so far; ``step`` is the validation step (the new lr starts after it)."""
        return [event for i in sorted(self._annealers) for event in self._annealers[i].events]

    @property
    def observations(self) -> list[tuple[int, float]]:
        """Every (step, metric) observed, in order."""
        return list(self._observations)

    # -- persistence ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON: the plan, the validations (loading replays them) and, for the record, the
        phases' spans they led to."""
        return {
            "plan": self.plan.to_dict(),
            "observations": [[step, _float_to_json(metric)] for step, metric in self._observations],
            "spans": [span.to_dict() for span in self.spans()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the plan must equal this controller's.

        A refused state (``ValueError``) leaves the controller unchanged.
        """
        d = _from_mapping(state, "controller state", ("plan", "observations", "spans"))
        if AnnealingPlan.from_dict(d.get("plan")) != self.plan:
            raise ValueError("Invalid controller state: its plan differs from this controller's plan")
        observations = d.get("observations")
        if not isinstance(observations, list | tuple):
            raise invalid("observations", observations, "a list")
        replayed = type(self)(self.plan)
        for item in observations:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise invalid("observation", item, "[step, metric]")
            replayed.observe_validation(item[0], _float_from_json(item[1], "metric"))
        spans = [span.to_dict() for span in replayed.spans()]
        if "spans" in d and d["spans"] != spans:
            raise ValueError(f"Invalid spans: {d['spans']!r} (replaying the observations gives {spans!r})")
        self.__dict__.update(replayed.__dict__)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> AnnealingController:
        """A controller rebuilt from a saved :meth:`state_dict` (plan included)."""
        if not isinstance(state, Mapping):
            raise ValueError(f"Invalid controller state: {state!r} (must be a mapping)")
        controller = cls(AnnealingPlan.from_dict(state.get("plan")))
        controller.load_state_dict(state)
        return controller
