"""Plateau annealing: lower the lr when the validation metric stops improving.

:class:`PlateauAnnealer` has ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s semantics (mode,
factor, patience, threshold, cooldown, min_lr, eps) without an optimizer: feed it validation
values, read its lr. :func:`is_improvement` is the one comparison every plateau rule of DGS Lab
uses (the annealer, the annealing plan's stop rule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from dgs_core.params import Param, ParamSet, check_keys, check_step, invalid, lr_param

# ---------------------------------------------------------------------------------------------
# Plateau annealing
# ---------------------------------------------------------------------------------------------


def is_improvement(value: float, best: float, *, mode: str, threshold: float, threshold_mode: str) -> bool:
    """True when ``value`` beats ``best`` by the threshold, exactly as ``ReduceLROnPlateau``.

    rel: value < best·(1 − threshold) (min) or value > best·(1 + threshold) (max);
    abs: value < best − threshold (min) or value > best + threshold (max). NaN never improves.
    """
    if mode == "min":
        return value < (best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold)
    return value > (best * (threshold + 1.0) if threshold_mode == "rel" else best + threshold)


PLATEAU_HYPERPARAMS = ParamSet(
    (
        Param("mode", "min", choices=("min", "max"), help="min: lower metric is better; max: higher"),
        Param("factor", 0.1, low=0.0, high=1.0, high_open=True, help="new lr = lr · factor"),
        Param("patience", 10, low=0, high=1e6, integer=True, help="bad evaluations tolerated"),
        Param("threshold", 1e-4, low=0.0, high=1e6, help="improvement needed to count"),
        Param("threshold_mode", "rel", choices=("rel", "abs"), help="relative or absolute threshold"),
        Param("cooldown", 0, low=0, high=1e6, integer=True, help="evaluations ignored after a cut"),
        lr_param(0.0, "min_lr", "floor of the lr"),
        Param("eps", 1e-8, low=0.0, high=1.0, log=True, help="cuts smaller than eps are skipped"),
    )
)
"""``ReduceLROnPlateau``'s arguments with torch's defaults, for validation and the UI."""


@dataclass(frozen=True)
class ReductionEvent:
    """One lr cut: at ``step`` (the annealer's evaluation index or the caller's step)."""

    step: int
    old_lr: float
    new_lr: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "old_lr": self.old_lr, "new_lr": self.new_lr}


class PlateauAnnealer:
    """``ReduceLROnPlateau`` without an optimizer: feed metrics, read the lr.

    After each ``step(metric)``: if the metric improved on the best by the threshold
    (see :func:`is_improvement`) the bad count resets, else it grows; during cooldown bad
    evaluations are ignored; once the bad count exceeds ``patience`` the lr becomes
    max(lr · factor, min_lr) — skipped if that changes it by no more than ``eps`` — and the
    cooldown starts. Identical to torch's ``ReduceLROnPlateau`` on one parameter group.

    Args:
        lr: starting learning rate.
        mode, factor (0.1), patience (10), threshold (1e-4), threshold_mode ("rel"),
        cooldown (0), min_lr (0), eps (1e-8): as torch's; see :data:`PLATEAU_HYPERPARAMS`.

    >>> annealer = PlateauAnnealer(0.1, patience=1)
    >>> [annealer.step(m) for m in (1.0, 1.0, 1.0)]
    [0.1, 0.1, 0.010000000000000002]
    >>> annealer.events
    [ReductionEvent(step=2, old_lr=0.1, new_lr=0.010000000000000002)]
    """

    def __init__(self, lr: float, **hyperparams: Any) -> None:
        self.lr = float(lr_param(0.1).validate(lr))
        known = [s.name for s in PLATEAU_HYPERPARAMS]
        unknown = sorted(set(hyperparams) - set(known))
        if unknown:
            raise ValueError(
                f"Invalid hyperparameter for PlateauAnnealer: {unknown[0]!r} "
                f"(must be one of {', '.join(known)})"
            )
        values = PLATEAU_HYPERPARAMS.defaults()
        values.update(hyperparams)
        checked = {s.name: s.validate(values[s.name]) for s in PLATEAU_HYPERPARAMS}
        self.mode: str = checked["mode"]
        self.factor: float = checked["factor"]
        self.patience: int = checked["patience"]
        self.threshold: float = checked["threshold"]
        self.threshold_mode: str = checked["threshold_mode"]
        self.cooldown: int = checked["cooldown"]
        self.min_lr: float = checked["min_lr"]
        self.eps: float = checked["eps"]
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_evaluations = 0
        self.cooldown_counter = 0
        self.num_evaluations = 0
        self.events: list[ReductionEvent] = []

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The validated hyperparameters, keyed as :data:`PLATEAU_HYPERPARAMS`."""
        return {s.name: getattr(self, s.name) for s in PLATEAU_HYPERPARAMS}

    def step(self, metric: float, *, at: int | None = None) -> float:
        """Record one evaluation of the metric; return the lr to use from now on.

        ``at`` is the position recorded with a cut (e.g. the training step); by default the
        index of this evaluation (0, 1, ...).
        """
        current = float(metric)
        at = self.num_evaluations if at is None else check_step(at, "at")
        self.num_evaluations += 1
        if is_improvement(
            current, self.best, mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode
        ):
            self.best = current
            self.num_bad_evaluations = 0
        else:
            self.num_bad_evaluations += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_evaluations = 0  # bad evaluations during cooldown do not count (as torch)
        if self.num_bad_evaluations > self.patience:
            old_lr = self.lr
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.lr = new_lr
                self.events.append(ReductionEvent(at, old_lr, new_lr))
            self.cooldown_counter = self.cooldown
            self.num_bad_evaluations = 0
        return self.lr

    def apply_to(self, optimizer: torch.optim.Optimizer) -> None:
        """Write the current lr into every parameter group of ``optimizer``."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON: hyperparameters, counters, best (a string when infinite) and the cuts."""
        return {
            "lr": self.lr,
            "hyperparams": self.hyperparams,
            "best": _float_to_json(self.best),
            "num_bad_evaluations": self.num_bad_evaluations,
            "cooldown_counter": self.cooldown_counter,
            "num_evaluations": self.num_evaluations,
            "events": [e.to_dict() for e in self.events],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (validated; hyperparameters included)."""
        if not isinstance(state, Mapping):
            raise ValueError(f"Invalid PlateauAnnealer state: {state!r} (must be a mapping)")
        keys = (
            "lr",
            "hyperparams",
            "best",
            "num_bad_evaluations",
            "cooldown_counter",
            "num_evaluations",
            "events",
        )
        check_keys(state, keys, "PlateauAnnealer state")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"Invalid PlateauAnnealer state: missing {missing[0]!r}")
        if not isinstance(state["hyperparams"], Mapping):
            raise invalid("hyperparams", state["hyperparams"], "a mapping")
        if not isinstance(state["events"], list | tuple):
            raise invalid("events", state["events"], "a list")
        fresh = PlateauAnnealer(state["lr"], **state["hyperparams"])
        fresh.best = _float_from_json(state["best"], "best")
        fresh.num_bad_evaluations = check_step(state["num_bad_evaluations"], "num_bad_evaluations")
        fresh.cooldown_counter = check_step(state["cooldown_counter"], "cooldown_counter")
        fresh.num_evaluations = check_step(state["num_evaluations"], "num_evaluations")
        events = []
        for e in state["events"]:
            if not isinstance(e, Mapping) or set(e) != {"step", "old_lr", "new_lr"}:
                raise ValueError(f"Invalid event: {e!r} (must have step, old_lr, new_lr)")
            events.append(ReductionEvent(check_step(e["step"]), float(e["old_lr"]), float(e["new_lr"])))
        fresh.events = events
        self.__dict__.update(fresh.__dict__)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams.items())
        return f"PlateauAnnealer(lr={self.lr!r}, {args})"


def _float_to_json(x: float) -> float | str:
    # JSON has no infinities; "best" starts at ±inf (nothing seen yet), like torch's.
    return x if math.isfinite(x) else str(x)


def _float_from_json(x: Any, name: str) -> float:
    if isinstance(x, str) and x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"Invalid {name}: {x!r} (must be a number or 'inf', '-inf', 'nan')")
    return float(x)


# ---------------------------------------------------------------------------------------------
# The plateau demo
# ---------------------------------------------------------------------------------------------

_DEMO_EVALUATIONS = Param("evaluations", 150, low=1, high=10_000, integer=True, help="validations")
_DEMO_LR = Param("lr", 0.1, low=0.0, high=1e3, low_open=True, log=True, help="starting lr")
_DEMO_NOISE = Param("noise", 0.05, low=0.0, high=1.0, help="relative noise of each validation")
_DEMO_SEED = Param("seed", 0, low=0, high=2**32 - 1, integer=True, help="seed of the noise")
PLATEAU_DEMO_HYPERPARAMS = ParamSet((_DEMO_LR, _DEMO_EVALUATIONS, _DEMO_NOISE, _DEMO_SEED))
"""The toy curve's settings of :func:`plateau_demo` (the annealer's are ``PLATEAU_HYPERPARAMS``)."""

# The toy validation curve (a noisy quadratic model, Zhang et al. 2019, arXiv 1907.04164, in
# one line): SGD on a quadratic contracts the excess loss e by a rate ∝ lr towards a noise
# floor ∝ lr, so each lr reduction lowers the floor and slows the approach.
_TOY_FLOOR = 0.3  # excess loss floor at the starting lr (the floor is FLOOR · lr / lr₀)
_TOY_RATE = 0.15  # contraction per evaluation at the starting lr
_TOY_OFFSET = 0.1  # irreducible loss


@dataclass(frozen=True)
class PlateauDemo:
    """A plateau annealer run on the toy validation curve.

    Attributes:
        frame: one row per evaluation: ``evaluation`` (0, 1, …), ``metric``, ``lr`` (the lr the
            metric was measured under) and ``best`` (the best metric so far).
        events: the reductions; a reduction at evaluation k applies from evaluation k + 1.
        hyperparams: the annealer's validated settings (ReduceLROnPlateau's names).
    """

    frame: pd.DataFrame
    events: tuple[ReductionEvent, ...]
    hyperparams: dict[str, Any]


def plateau_demo(
    *, evaluations: int = 150, lr: float = 0.1, noise: float = 0.05, seed: int = 0, **plateau: Any
) -> PlateauDemo:
    """Closed loop: validate the toy curve, let the annealer answer with the next lr, repeat.

    Excess loss e₀ = 1; for evaluation k at lr η_k (r = η_k / η₀):
    ``metric_k = offset + e_k · (1 + noise · z_k)``, then ``e_{k+1} = f + (e_k − f)·exp(−κ r)``
    with the floor ``f = FLOOR · r``, and ``η_{k+1} = annealer.step(metric_k)``.
    ``plateau`` takes ReduceLROnPlateau's arguments (mode must stay "min": it is a loss).
    """
    evaluations = _DEMO_EVALUATIONS.validate(evaluations)
    lr = _DEMO_LR.validate(lr)
    noise = _DEMO_NOISE.validate(noise)
    seed = _DEMO_SEED.validate(seed)
    if plateau.get("mode", "min") != "min":
        raise invalid("mode", plateau["mode"], "'min': the demo's metric is a loss")
    annealer = PlateauAnnealer(lr, **plateau)
    z = np.random.default_rng(seed).standard_normal(evaluations)
    excess, best = 1.0, math.inf
    rows = []
    for k in range(evaluations):
        current = annealer.lr
        metric = _TOY_OFFSET + excess * (1.0 + noise * z[k])
        best = min(best, metric)
        rows.append((k, metric, current, best))
        ratio = current / lr
        floor = _TOY_FLOOR * ratio
        excess = floor + (excess - floor) * math.exp(-_TOY_RATE * ratio)
        annealer.step(metric)
    frame = pd.DataFrame(rows, columns=["evaluation", "metric", "lr", "best"])
    return PlateauDemo(frame, tuple(annealer.events), annealer.hyperparams)
