"""The schedule registry: one :class:`ScheduleInfo` per schedule, with its parameters as Param specs.

:data:`SCHEDULES` drives the factory (:func:`dgs_core.schedules.make_schedule`), the docs and the
schedule composer of the Annealing lab.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dgs_core.params import Param, ParamSet, invalid, lr_param
from dgs_core.schedules.functions import (
    _DECAY_SHAPES,
    constant,
    cosine,
    cosine_restarts,
    exponential,
    linear,
    multistep,
    one_cycle,
    polynomial,
    step_decay,
    warmup,
    warmup_cosine,
    wsd,
)

# ---------------------------------------------------------------------------------------------
# Hyperparameter specs and the registry
# ---------------------------------------------------------------------------------------------


_MAX_STEPS = 1e9


def _lr_param(name: str, default: float, help: str) -> Param:
    return lr_param(default, name, help)


def _steps_param(name: str, default: int, help: str, low: int = 1) -> Param:
    return Param(name, default, low=low, high=_MAX_STEPS, integer=True, help=help)


_BASE_LR = _lr_param("base_lr", 0.1, "base learning rate η₀")
_MIN_LR = _lr_param("min_lr", 0.0, "lowest learning rate η_min (at most base_lr)")
_TOTAL = _steps_param("total_steps", 1000, "length of the schedule T in steps")
_WARMUP = _steps_param("warmup_steps", 100, "linear warmup length W in steps", low=0)
_DECAY_GAMMA = Param(
    "gamma", 0.1, low=0.0, high=1.0, low_open=True, log=True, help="multiplicative decay factor γ"
)


def _lr_at_most_base(name: str) -> Callable[[Mapping[str, Any]], None]:
    def check(p: Mapping[str, Any]) -> None:
        if p[name] > p["base_lr"]:
            raise ValueError(f"Invalid {name}: {p[name]!r} (must be <= base_lr={p['base_lr']!r})")

    return check


def _check_warmup_cosine(p: Mapping[str, Any]) -> None:
    if p["warmup_steps"] > p["total_steps"]:
        raise invalid("warmup_steps", p["warmup_steps"], f"<= total_steps={p['total_steps']!r}")
    _lr_at_most_base("min_lr")(p)


@dataclass(frozen=True)
class ScheduleInfo:
    """Everything DGS Lab knows about one schedule; drives the factory, docs and the composer UI.

    Attributes:
        name: registry key ("warmup_cosine").
        label: display name ("Warmup + cosine").
        fn: the pure function ``fn(step, **params) -> lr``.
        hyperparams: its parameters with defaults and valid ranges (``base_lr`` first).
        formula: the rule in LaTeX (``st.latex`` renders it).
        description: one line for tables and selectors.
        torch_equivalent: the matching ``torch.optim.lr_scheduler`` class, if any.
        check: cross-parameter rules on the validated values; raises ``ValueError``.
    """

    name: str
    label: str
    fn: Callable[..., float]
    hyperparams: ParamSet
    formula: str
    description: str
    torch_equivalent: str = ""
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hyperparams", ParamSet(self.hyperparams))

    @property
    def defaults(self) -> dict[str, Any]:
        return self.hyperparams.defaults()

    def hyperparam(self, name: str) -> Param:
        return self.hyperparams[name]

    def resolve(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``params``, validated; ``ParamError`` names the bad argument."""
        resolved = self.hyperparams.resolve(params, what=f"parameter for {self.name}")
        if self.check is not None:
            self.check(resolved)
        return resolved


_INFOS: tuple[ScheduleInfo, ...] = (
    ScheduleInfo(
        name="constant",
        label="Constant",
        fn=constant,
        hyperparams=(_BASE_LR,),
        formula=r"\eta_t = \eta_0",
        description="The same learning rate at every step.",
        torch_equivalent="ConstantLR(factor=1)",
    ),
    ScheduleInfo(
        name="step_decay",
        label="Step decay",
        fn=step_decay,
        hyperparams=(_BASE_LR, _steps_param("step_size", 300, "steps between decays"), _DECAY_GAMMA),
        formula=r"\eta_t = \eta_0\,\gamma^{\lfloor t / s \rfloor}",
        description="Multiply the lr by γ every step_size steps.",
        torch_equivalent="StepLR",
    ),
    ScheduleInfo(
        name="multistep",
        label="Multi-step decay",
        fn=multistep,
        hyperparams=(
            _BASE_LR,
            Param(
                "milestones", (500, 750), low=1, high=_MAX_STEPS, step_list=True, help="steps where γ applies"
            ),
            _DECAY_GAMMA,
        ),
        formula=r"\eta_t = \eta_0\,\gamma^{|\{m \in M : m \le t\}|}",
        description="Multiply the lr by γ at each milestone step.",
        torch_equivalent="MultiStepLR",
    ),
    ScheduleInfo(
        name="exponential",
        label="Exponential decay",
        fn=exponential,
        hyperparams=(
            _BASE_LR,
            Param("gamma", 0.999, low=0.0, high=1.0, low_open=True, help="per-step decay factor γ"),
        ),
        formula=r"\eta_t = \eta_0\,\gamma^{t}",
        description="Multiply the lr by γ every step.",
        torch_equivalent="ExponentialLR",
    ),
    ScheduleInfo(
        name="linear",
        label="Linear",
        fn=linear,
        hyperparams=(
            _BASE_LR,
            _TOTAL,
            Param("start_factor", 1.0, low=0.0, high=1.0, help="lr factor at step 0"),
            Param("end_factor", 0.0, low=0.0, high=1.0, help="lr factor from step T on"),
        ),
        formula=r"\eta_t = \eta_0\left(f_s + (f_e - f_s)\,\tfrac{\min(t,T)}{T}\right)",
        description="Interpolate the lr factor linearly from start_factor to end_factor over T steps.",
        torch_equivalent="LinearLR",
    ),
    ScheduleInfo(
        name="cosine",
        label="Cosine",
        fn=cosine,
        hyperparams=(_BASE_LR, _TOTAL, _MIN_LR),
        formula=r"\eta_t = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})"
        r"\left(1 + \cos\tfrac{\pi \min(t,T)}{T}\right)",
        description="Half a cosine from base_lr down to min_lr over T steps, then min_lr.",
        torch_equivalent="CosineAnnealingLR",
        check=_lr_at_most_base("min_lr"),
    ),
    ScheduleInfo(
        name="warmup_cosine",
        label="Warmup + cosine",
        fn=warmup_cosine,
        hyperparams=(_BASE_LR, _WARMUP, _TOTAL, _MIN_LR),
        formula=r"\eta_t = \begin{cases} \eta_0\,t/W & t < W \\ \eta_{\min} + \tfrac12(\eta_0 - "
        r"\eta_{\min})\left(1 + \cos\tfrac{\pi (t - W)}{T - W}\right) & W \le t < T \\ \eta_{\min} & t \ge T"
        r"\end{cases}",
        description="Linear warmup from 0 over W steps, then cosine down to min_lr at step T.",
        check=_check_warmup_cosine,
    ),
    ScheduleInfo(
        name="cosine_restarts",
        label="Cosine with warm restarts (SGDR)",
        fn=cosine_restarts,
        hyperparams=(
            _BASE_LR,
            _steps_param("first_cycle", 200, "length T₀ of the first cycle"),
            Param("cycle_mult", 1, low=1, high=10, integer=True, help="each cycle is m times longer"),
            _MIN_LR,
        ),
        formula=r"\eta_t = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})\left(1 + \cos\tfrac{\pi T_{cur}}"
        r"{T_i}\right),\ T_i = T_0 m^i",
        description="Cosine cycles that restart at base_lr, each cycle_mult times longer.",
        torch_equivalent="CosineAnnealingWarmRestarts",
        check=_lr_at_most_base("min_lr"),
    ),
    ScheduleInfo(
        name="one_cycle",
        label="One-cycle",
        fn=one_cycle,
        hyperparams=(
            lr_param(0.1, "base_lr", "peak learning rate (max_lr)"),
            _TOTAL,
            Param("pct_start", 0.3, low=0.0, high=1.0, help="fraction of the run spent rising"),
            Param("div_factor", 25.0, low=1.0, high=1e6, log=True, help="initial lr = peak / div_factor"),
            Param("final_div_factor", 1e4, low=1.0, high=1e9, log=True, help="final lr = initial / this"),
        ),
        formula=r"\eta_t = \mathrm{cos\_anneal}(\eta_0/d \to \eta_0)\ \text{for } t \le pT - 1,\ "
        r"\mathrm{cos\_anneal}(\eta_0 \to \eta_0/(d\,d_f))\ \text{to } t = T - 1",
        description="Cosine up from base_lr/div_factor to the peak, then cosine far below the start.",
        torch_equivalent="OneCycleLR(anneal_strategy='cos', three_phase=False)",
    ),
    ScheduleInfo(
        name="polynomial",
        label="Polynomial (LARS)",
        fn=polynomial,
        hyperparams=(
            _BASE_LR,
            _TOTAL,
            Param("power", 2.0, low=0.0, high=10.0, low_open=True, help="exponent p (LARS: 2)"),
            _lr_param("end_lr", 0.0, "lr from step T on (at most base_lr)"),
        ),
        formula=r"\eta_t = (\eta_0 - \eta_{end})\left(1 - \tfrac{\min(t,T)}{T}\right)^{p} + \eta_{end}",
        description="Polynomial decay; power 2 to zero is LARS's η₀(1 − t/T)².",
        torch_equivalent="PolynomialLR",
        check=_lr_at_most_base("end_lr"),
    ),
    ScheduleInfo(
        name="warmup",
        label="Linear warmup",
        fn=warmup,
        hyperparams=(
            _BASE_LR,
            _steps_param("warmup_steps", 100, "warmup length W"),
            _lr_param("start_lr", 0.0, "lr at step 0 (at most base_lr)"),
        ),
        formula=r"\eta_t = \eta_{start} + (\eta_0 - \eta_{start})\,\tfrac{\min(t,W)}{W}",
        description="Rise linearly from start_lr to base_lr over W steps, then stay.",
        check=_lr_at_most_base("start_lr"),
    ),
    ScheduleInfo(
        name="wsd",
        label="Warmup-stable-decay",
        fn=wsd,
        hyperparams=(
            _BASE_LR,
            _WARMUP,
            _steps_param("stable_steps", 700, "steps at base_lr after warmup", low=0),
            _steps_param("decay_steps", 200, "decay length D", low=0),
            Param("decay_shape", "linear", choices=_DECAY_SHAPES, help="shape of the decay"),
            _MIN_LR,
        ),
        formula=r"\eta_t = \begin{cases} \eta_0\,t/W & t < W \\ \eta_0 & t < W + S \\ \eta_{\min} + "
        r"(\eta_0 - \eta_{\min})\,c\!\left(\tfrac{t - W - S}{D}\right) & t < W + S + D \\ \eta_{\min} & "
        r"\text{after} \end{cases},\ c(p) \in \{1 - p,\ \tfrac12(1 + \cos\pi p),\ 1 - \sqrt{p}\}",
        description="Warm up, hold base_lr, then decay (linear, cosine or 1−sqrt) to min_lr.",
        check=_lr_at_most_base("min_lr"),
    ),
)

SCHEDULES: Mapping[str, ScheduleInfo] = MappingProxyType({info.name: info for info in _INFOS})
"""Every schedule by name, in display order."""


def names() -> list[str]:
    """Schedule names, in display order (``"chain"`` is not one: see :func:`chain`)."""
    return list(SCHEDULES)


def get(name: str) -> ScheduleInfo:
    """The record for ``name``; ``ValueError`` naming it when unknown."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise invalid("schedule", name, f"one of {', '.join(SCHEDULES)}") from None
