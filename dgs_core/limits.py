"""The server's limits: how much work one request may start, checked before the work starts.

A link, a form, an uploaded bundle or a study spec can ask for any amount of work; a server
shared by a class refuses what exceeds these limits with a ``ParamError`` naming the field
and the limit, before anything is allocated. Every limit is an environment variable with a
safe default (documented in the README's "Running a server for a class"):

    DGS_LAB_MAX_STEPS          20000   steps of one training run (a resumed run included)
    DGS_LAB_MAX_OPTIMIZERS     8       optimizers in one training run or bundle
    DGS_LAB_MAX_RECORDS        1000    diagnostic records per optimizer (diag_every is refused below)
    DGS_LAB_MAX_DIAGNOSTICS_MB 512     megabytes the diagnostic records of one training run may hold
    DGS_LAB_MAX_SURFACE_WORK   20000000  point-steps one Surface-lab view may simulate
    DGS_LAB_MAX_TRIALS         512     trials of one study
    DGS_LAB_MAX_JOBS           8       runs at once on the server
    DGS_LAB_MAX_SESSION_JOBS   2       runs at once per browser session
    DGS_LAB_MAX_SESSION_RUNS   20      stored runs per browser session
    DGS_LAB_MAX_SESSION_MB     256     stored megabytes per browser session

A point-step is one 2-D point advanced one step; a gradient with per-sample noise (the
AdAdaGrad family under noise) costs one point-step per sample. At the defaults the largest
Surface view takes a few seconds and a few hundred MB: a 100 × 100 basin map of 5000 steps
(5 × 10⁷ point-steps, about 1.2 GB) is refused, the same map of 2000 steps allowed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from dgs_core.params import ParamError

_ENV = {
    "max_steps": "DGS_LAB_MAX_STEPS",
    "max_optimizers": "DGS_LAB_MAX_OPTIMIZERS",
    "max_records": "DGS_LAB_MAX_RECORDS",
    "max_diagnostics_mb": "DGS_LAB_MAX_DIAGNOSTICS_MB",
    "max_surface_work": "DGS_LAB_MAX_SURFACE_WORK",
    "max_trials": "DGS_LAB_MAX_TRIALS",
    "max_jobs": "DGS_LAB_MAX_JOBS",
    "max_session_jobs": "DGS_LAB_MAX_SESSION_JOBS",
    "max_session_runs": "DGS_LAB_MAX_SESSION_RUNS",
    "max_session_mb": "DGS_LAB_MAX_SESSION_MB",
}


@dataclass(frozen=True)
class ServerLimits:
    """The limits in force (see the module docstring for each one's variable and default)."""

    max_steps: int = 20_000
    max_optimizers: int = 8
    max_records: int = 1_000
    max_diagnostics_mb: int = 512
    max_surface_work: int = 20_000_000
    max_trials: int = 512
    max_jobs: int = 8
    max_session_jobs: int = 2
    max_session_runs: int = 20
    max_session_mb: int = 256

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerLimits:
        """The defaults, overridden by the environment; a malformed variable is named."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = _ENV[f.name]
            text = environ.get(variable)
            if text is None or not text.strip():
                continue
            try:
                number = int(text.strip())
            except ValueError:
                number = 0
            if number < 1:
                raise ParamError(variable, text, f"Invalid {variable}: {text!r} (must be an integer >= 1)")
            values[f.name] = number
        return cls(**values)


def server_limits() -> ServerLimits:
    """The limits of this process, from its environment."""
    return ServerLimits.from_env()


def _over(field: str, value: Any, requirement: str, variable: str) -> ParamError:
    return ParamError(
        field, value, f"Invalid {field}: {value!r} (must be {requirement}; this server's limit, ${variable})"
    )


def check_training(config: Any, limits: ServerLimits | None = None) -> None:
    """A :class:`~dgs_core.training.config.TrainConfig` within the limits (run, resume, import)."""
    limits = limits or server_limits()
    if config.steps > limits.max_steps:
        raise _over("steps", config.steps, f"<= {limits.max_steps}", _ENV["max_steps"])
    if len(config.optimizers) > limits.max_optimizers:
        raise _over(
            "optimizers",
            len(config.optimizers),
            f"at most {limits.max_optimizers} optimizers",
            _ENV["max_optimizers"],
        )
    if config.diag_every and math.ceil(config.steps / config.diag_every) > limits.max_records:
        least = math.ceil(config.steps / limits.max_records)
        raise _over(
            "diag_every",
            config.diag_every,
            f">= {least} for {config.steps} steps (0: off)",
            _ENV["max_records"],
        )


def check_surface_work(*, points: int, steps: int, field: str, limits: ServerLimits | None = None) -> None:
    """``points`` 2-D points advanced ``steps`` steps within the Surface lab's work limit."""
    limits = limits or server_limits()
    work = int(points) * int(steps)
    if work > limits.max_surface_work:
        raise ParamError(
            field,
            work,
            f"Invalid {field}: {points} points × {steps} steps = {work} point-steps "
            f"(at most {limits.max_surface_work}; this server's limit, ${_ENV['max_surface_work']})",
        )


def check_study(spec: Any, limits: ServerLimits | None = None) -> None:
    """A :class:`~dgs_core.studies.sweep.StudySpec` within the limits."""
    limits = limits or server_limits()
    if spec.trials_total > limits.max_trials:
        raise _over(
            "trials", spec.trials_total, f"at most {limits.max_trials} trials in all", _ENV["max_trials"]
        )
    if spec.steps > limits.max_steps:
        raise _over("steps", spec.steps, f"<= {limits.max_steps}", _ENV["max_steps"])


def check_diagnostics(
    *, record_bytes: int, records: int, optimizers: int, diag_every: int, limits: ServerLimits | None = None
) -> None:
    """A training run's diagnostic records within the memory limit: ``records`` per optimizer
    of about ``record_bytes`` each (measured on the first one: it depends on the model)."""
    limits = limits or server_limits()
    total = record_bytes * records * optimizers
    if total > limits.max_diagnostics_mb * 2**20:
        least = math.ceil(diag_every * total / (limits.max_diagnostics_mb * 2**20))
        raise ParamError(
            "diag_every",
            diag_every,
            f"Invalid diag_every: {diag_every} (the diagnostics would hold about {total / 2**20:.0f} MB: "
            f"{records} records × {optimizers} optimizers × {record_bytes / 2**10:.0f} KB; at most "
            f"{limits.max_diagnostics_mb} MB, so diag_every >= {least} or 0 for off; this server's limit, "
            f"${_ENV['max_diagnostics_mb']})",
        )
