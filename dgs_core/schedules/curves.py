"""The schedule composer's curves: an optional linear warmup before any registered schedule.

:class:`CurveSpec` is one curve of the Annealing lab's composer (a chain of a warmup and a
schedule of :data:`~dgs_core.schedules.SCHEDULES`); :func:`schedule_curves` samples several over
a run, as a long frame (step, curve, lr).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dgs_core.params import Param, invalid
from dgs_core.schedules import (
    ScheduleSpec,
    build,
    get,
    sample,
)

# The trainer's models are tiny: one intra-op thread is an order of magnitude faster on a busy
# CPU (measured: 3 optimizers × 300 steps, 3.4 s with 1 thread against 52 s with 2 threads
# under load). The surface lab's context manager does exactly that and restores the count.

MAX_CURVE_STEPS = 100_000
"""The longest run the composer samples (pure Python, about 0.1 s per curve)."""


_RUN_STEPS = Param("run_steps", 300, low=1, high=MAX_CURVE_STEPS, integer=True, help="length of the run")
_PREFIX_WARMUP = Param(
    "warmup_before", 0, low=0, high=MAX_CURVE_STEPS, integer=True, help="warmup steps before the schedule"
)


# ---------------------------------------------------------------------------------------------
# The schedule composer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveSpec:
    """One composer curve: ``warmup_before`` of linear warmup from 0, then ``schedule``.

    The warmup rises to the schedule's ``base_lr`` (its peak) and the schedule then starts at
    its own step 0. With ``warmup_before = 0`` the curve is the schedule itself.

    Attributes:
        schedule: a registered schedule (not a chain).
        warmup_before: length of the warmup prefix, 0 for none.
        label: the curve's name in the legend; defaults to the schedule's label.
    """

    schedule: ScheduleSpec
    warmup_before: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.schedule, Mapping):
            object.__setattr__(self, "schedule", ScheduleSpec.from_dict(self.schedule))
        if not isinstance(self.schedule, ScheduleSpec) or self.schedule.segments:
            raise invalid("schedule", self.schedule, "a registered schedule's spec")
        object.__setattr__(self, "warmup_before", _PREFIX_WARMUP.validate(self.warmup_before))
        if not isinstance(self.label, str):
            raise invalid("label", self.label, "a string")
        if not self.label:
            info = get(self.schedule.name)
            name = info.label if not self.warmup_before else f"Warmup {self.warmup_before} → {info.label}"
            object.__setattr__(self, "label", name)

    @property
    def base_lr(self) -> float:
        return float(self.schedule.params["base_lr"])

    def check_run(self, run_steps: int) -> None:
        """Refuse a curve whose warmup does not fit in a run of ``run_steps`` steps."""
        run_steps = check_run_steps(run_steps)
        if self.warmup_before >= run_steps:
            raise ValueError(
                f"Invalid warmup_before: {self.warmup_before!r} (must be < the run length {run_steps}: "
                "the warmup would fill the whole run)"
            )
        inner = self.schedule.params.get("warmup_steps")
        if inner is not None and self.warmup_before + inner > run_steps:
            raise ValueError(
                f"Invalid warmup_steps: {inner!r} (must be <= the run length {run_steps}"
                + (f" minus the {self.warmup_before} warmup steps before it" if self.warmup_before else "")
                + ")"
            )

    def spec(self, run_steps: int) -> ScheduleSpec:
        """The curve as one :class:`ScheduleSpec` (a chain when there is a warmup), checked
        against the run length."""
        self.check_run(run_steps)
        if not self.warmup_before:
            return self.schedule
        warmup = ScheduleSpec("warmup", {"base_lr": self.base_lr, "warmup_steps": self.warmup_before})
        rest = run_steps - self.warmup_before
        return ScheduleSpec.chain([(self.warmup_before, warmup), (rest, self.schedule)])

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "warmup_before": self.warmup_before, "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurveSpec:
        if not isinstance(data, Mapping) or "schedule" not in data:
            raise invalid("curve", data, "a mapping with a 'schedule'")
        unknown = sorted(set(data) - {"schedule", "warmup_before", "label"})
        if unknown:
            raise ValueError(f"Invalid curve key: {unknown[0]!r} (must be schedule, warmup_before or label)")
        schedule = ScheduleSpec.from_dict(data["schedule"])
        return cls(schedule, data.get("warmup_before", 0), data.get("label", ""))


def curve(name: str, *, warmup_before: int = 0, label: str = "", **params: Any) -> CurveSpec:
    """Shorthand: ``curve("cosine", warmup_before=20, base_lr=0.1, total_steps=280)``."""
    return CurveSpec(ScheduleSpec(name, params), warmup_before, label)


def check_run_steps(run_steps: Any) -> int:
    """The composer's run length, validated (an integer in [1, MAX_CURVE_STEPS])."""
    return int(_RUN_STEPS.validate(run_steps))


def default_params(name: str, run_steps: int) -> dict[str, Any]:
    """Starting values for schedule ``name`` that fit a run of ``run_steps`` steps.

    Lengths scale with the run (warmup 10 %, WSD's stable phase 70 % and decay 20 %, step
    decay every quarter, milestones at 50 % and 75 %, SGDR cycles of a third, exponential decay
    to 1 % at the end); the rest are the registry's defaults.
    """
    run_steps = check_run_steps(run_steps)
    params = get(name).defaults
    tenth = max(1, run_steps // 10)
    scaled = {
        "total_steps": run_steps,
        "warmup_steps": tenth,
        "step_size": max(1, run_steps // 4),
        "milestones": tuple(sorted({max(1, run_steps // 2), max(2, 3 * run_steps // 4)})),
        "first_cycle": max(1, run_steps // 3),
        "stable_steps": max(0, 7 * run_steps // 10),
        "decay_steps": max(0, run_steps - tenth - 7 * run_steps // 10),
    }
    params.update({k: v for k, v in scaled.items() if k in params})
    if name == "exponential":  # down to 1 % of base_lr at the end of the run
        params["gamma"] = 0.01 ** (1.0 / run_steps)
    return params


def parse_step_list(text: Any, name: str = "milestones") -> tuple[int, ...]:
    """``"100, 200"`` → ``(100, 200)``; a ``ParamError`` naming ``name`` when a part is no integer."""
    if not isinstance(text, str):
        raise invalid(name, text, "integers separated by commas")
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise invalid(name, text, "integers separated by commas") from None


def schedule_curves(curves: Sequence[CurveSpec], run_steps: int) -> pd.DataFrame:
    """Every curve sampled at steps 0 … run_steps − 1, long format: curve, step, lr.

    Labels must be unique (they key the legend). Raises ``ValueError`` naming a curve's bad
    value (see :meth:`CurveSpec.check_run`).
    """
    run_steps = check_run_steps(run_steps)
    labels = [c.label for c in curves]
    if len(set(labels)) != len(labels):
        raise invalid("labels", labels, "unique")
    frames = []
    steps = np.arange(run_steps)
    for c in curves:
        lrs = sample(build(c.spec(run_steps)), run_steps)
        frames.append(pd.DataFrame({"curve": c.label, "step": steps, "lr": lrs}))
    if not frames:
        return pd.DataFrame({"curve": pd.Series(dtype=str), "step": pd.Series(dtype="int64"), "lr": []})
    return pd.concat(frames, ignore_index=True)
