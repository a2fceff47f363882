"""Learning-rate schedules as pure functions of the step, their registry, and a plateau annealer.

Every schedule is a pure function ``f(step, *, base_lr, ...) -> float`` with the step counted
from 0 and no hidden ``last_epoch`` state (SPEC §2). The functions themselves do no validation:
:func:`make_schedule` (or :class:`ScheduleSpec`) validates once, names the bad argument and value,
and returns a callable ``schedule(step) -> lr``.

>>> from dgs_core.schedules import make_schedule, chain, sample
>>> cosine = make_schedule("cosine", base_lr=0.1, total_steps=100, min_lr=0.001)
>>> round(cosine(50), 6)
0.0505
>>> warm = chain([(10, make_schedule("warmup", base_lr=0.1, warmup_steps=10)), (90, cosine)])
>>> [round(lr, 3) for lr in sample(warm, 3)]
[0.0, 0.01, 0.02]

Pieces:
    SCHEDULES        name -> :class:`ScheduleInfo` (function, hyperparameters, formula); the UI's
                     schedule composer reads it.
    make_schedule    validated schedule by name; :func:`chain` concatenates schedules.
    ScheduleSpec     serialisable description (plain JSON via ``to_dict``/``from_dict``);
                     :func:`build` turns it into a callable.
    lambda_lr        adapter to ``torch.optim.lr_scheduler.LambdaLR``.
    PlateauAnnealer  ``ReduceLROnPlateau`` semantics without an optimizer.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from dgs_core.params import Param, ParamSet, invalid

CHAIN = "chain"
"""The :class:`ScheduleSpec` name of a concatenation of schedules."""


# ---------------------------------------------------------------------------------------------
# The schedules. Arguments are keyword-only and unvalidated here (see make_schedule).
# Where torch has an equivalent scheduler, the arithmetic follows its closed form operation by
# operation, so the values agree to the last bit or so.
# ---------------------------------------------------------------------------------------------


def constant(step: int, *, base_lr: float) -> float:
    """η_t = η₀."""
    return base_lr


def step_decay(step: int, *, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """η_t = η₀ · γ^⌊t / step_size⌋ (torch ``StepLR``)."""
    return base_lr * gamma ** (step // step_size)


def multistep(step: int, *, base_lr: float, milestones: Sequence[int], gamma: float = 0.1) -> float:
    """η_t = η₀ · γ^(number of milestones ≤ t) (torch ``MultiStepLR``)."""
    return base_lr * gamma ** bisect.bisect_right(milestones, step)


def exponential(step: int, *, base_lr: float, gamma: float) -> float:
    """η_t = η₀ · γ^t (torch ``ExponentialLR``)."""
    return base_lr * gamma**step


def linear(
    step: int, *, base_lr: float, total_steps: int, start_factor: float = 1.0, end_factor: float = 0.0
) -> float:
    """η_t = η₀ · (f_start + (f_end − f_start) · min(t, T)/T) (torch ``LinearLR``)."""
    return base_lr * (start_factor + (end_factor - start_factor) * min(total_steps, step) / total_steps)


def cosine(step: int, *, base_lr: float, total_steps: int, min_lr: float = 0.0) -> float:
    """η_t = η_min + ½(η₀ − η_min)(1 + cos(π min(t, T)/T)) (torch ``CosineAnnealingLR``).

    Deviation: torch's closed form is periodic past T (the lr climbs back up); here the lr
    stays at ``min_lr`` after ``total_steps``.
    """
    t = min(step, total_steps)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t / total_steps)) / 2


def warmup_cosine(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Linear warmup from 0 to η₀ over W steps, then cosine to ``min_lr`` at step T.

    η_t = η₀ t/W for t < W;  η_min + ½(η₀ − η_min)(1 + cos(π (t−W)/(T−W))) for W ≤ t < T;
    η_min for t ≥ T. (optax's ``warmup_cosine_decay_schedule`` with init_value 0.)
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2


def cosine_restarts(
    step: int, *, base_lr: float, first_cycle: int, cycle_mult: int = 1, min_lr: float = 0.0
) -> float:
    """SGDR: cosine from η₀ to η_min over cycles of length T₀, T₀·m, T₀·m², …, restarting at η₀.

    η_t = η_min + ½(η₀ − η_min)(1 + cos(π T_cur/T_i)) (torch ``CosineAnnealingWarmRestarts``,
    Loshchilov & Hutter, arXiv 1608.03983).
    """
    if cycle_mult == 1:
        t_cur, t_i = step % first_cycle, first_cycle
    else:
        t_cur, t_i = step, first_cycle
        while t_cur >= t_i:  # cycles grow geometrically: O(log step) iterations
            t_cur -= t_i
            t_i *= cycle_mult
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


def one_cycle(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> float:
    """The 1cycle policy, torch ``OneCycleLR`` with ``anneal_strategy="cos"``, ``three_phase=False``.

    ``base_lr`` is the peak (torch's ``max_lr``). With η_init = η₀/div_factor,
    η_end = η_init/final_div_factor and e = pct_start·T − 1:
    cosine from η_init to η₀ over steps 0..e, then cosine from η₀ to η_end over e..T−1
    (Smith & Topin, arXiv 1708.07120; fastai's two-phase variant).

    Deviations: torch raises past ``total_steps``; here the lr stays at its step T−1 value.
    Where torch divides 0 by 0 (pct_start·T = 1 at step 0), this returns the peak.
    """
    initial_lr = base_lr / div_factor
    end_lr = initial_lr / final_div_factor
    step = min(step, total_steps - 1)
    warm_end = float(pct_start * total_steps) - 1
    if step <= warm_end:
        pct = step / warm_end if warm_end > 0 else 1.0
        start, end = initial_lr, base_lr
    else:
        pct = (step - warm_end) / (total_steps - 1 - warm_end)
        start, end = base_lr, end_lr
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def polynomial(
    step: int, *, base_lr: float, total_steps: int, power: float = 2.0, end_lr: float = 0.0
) -> float:
    """η_t = (η₀ − η_end)(1 − min(t, T)/T)^p + η_end.

    p = 2, η_end = 0 is LARS's schedule η₀(1 − t/T)² (You et al., arXiv 1708.03888);
    η_end = 0 is torch ``PolynomialLR``.
    """
    return (base_lr - end_lr) * (1.0 - min(total_steps, step) / total_steps) ** power + end_lr


def warmup(step: int, *, base_lr: float, warmup_steps: int, start_lr: float = 0.0) -> float:
    """Linear warmup: η_t = η_start + (η₀ − η_start) t/W for t < W, then η₀."""
    if step >= warmup_steps:
        return base_lr
    return start_lr + (base_lr - start_lr) * step / warmup_steps


_DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


def wsd(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    stable_steps: int,
    decay_steps: int,
    decay_shape: str = "linear",
    min_lr: float = 0.0,
) -> float:
    """Warmup-stable-decay: linear warmup (W), constant η₀ (S), decay to ``min_lr`` (D), then hold.

    With p = (t − W − S)/D ∈ [0, 1] in the decay, η_t = η_min + (η₀ − η_min)·c(p) where
    c(p) = 1 − p (linear), ½(1 + cos πp) (cosine) or 1 − √p ("1-sqrt", Hägele et al.,
    arXiv 2405.18392).
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_start = warmup_steps + stable_steps
    if step < decay_start:
        return base_lr
    if step >= decay_start + decay_steps:
        return min_lr
    progress = (step - decay_start) / decay_steps
    if decay_shape == "linear":
        remaining = 1.0 - progress
    elif decay_shape == "cosine":
        remaining = (1 + math.cos(math.pi * progress)) / 2
    elif decay_shape == "1-sqrt":
        remaining = 1.0 - math.sqrt(progress)
    else:
        raise invalid("decay_shape", decay_shape, f"one of {', '.join(_DECAY_SHAPES)}")
    return min_lr + (base_lr - min_lr) * remaining


# ---------------------------------------------------------------------------------------------
# Hyperparameter specs and the registry
# ---------------------------------------------------------------------------------------------


_MAX_STEPS = 1e9
_MAX_LR = 1e3


def _lr_param(name: str, default: float, help: str) -> Param:
    return Param(name, default, low=0.0, high=_MAX_LR, log=True, help=help)


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
        raise invalid("warmup_steps", p['warmup_steps'], f"<= total_steps={p['total_steps']!r}")
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
            Param("base_lr", 0.1, low=0.0, high=_MAX_LR, log=True, help="peak learning rate (max_lr)"),
            _TOTAL,
            Param("pct_start", 0.3, low=0.0, high=1.0, help="fraction of the run spent rising"),
            Param(
                "div_factor", 25.0, low=1.0, high=1e6, log=True, help="initial lr = peak / div_factor"
            ),
            Param(
                "final_div_factor", 1e4, low=1.0, high=1e9, log=True, help="final lr = initial / this"
            ),
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


# ---------------------------------------------------------------------------------------------
# Validated callables, composition, and the serialisable spec
# ---------------------------------------------------------------------------------------------


def _check_step(step: Any, name: str = "step") -> int:
    if not isinstance(step, bool):
        try:
            index = operator.index(step)
        except TypeError:
            pass
        else:
            if index >= 0:
                return index
    raise ValueError(f"Invalid {name}: {step!r} (must be an integer >= 0)")


def _freeze(params: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(params))


@dataclass(frozen=True)
class ScheduleSpec:
    """A serialisable schedule: a registered ``name`` with ``params``, or a chain of specs.

    Construction validates (``ValueError`` naming the argument and value) and fills in the
    defaults, so a spec always describes exactly the schedule it builds.

    >>> spec = ScheduleSpec("cosine", {"base_lr": 0.1, "total_steps": 100})
    >>> spec.to_dict()
    {'name': 'cosine', 'params': {'base_lr': 0.1, 'total_steps': 100, 'min_lr': 0.0}}
    >>> two = ScheduleSpec.chain([(10, ScheduleSpec("warmup", {"warmup_steps": 10})), (100, spec)])
    >>> ScheduleSpec.from_dict(two.to_dict()) == two
    True

    Attributes:
        name: a key of :data:`SCHEDULES`, or ``"chain"``.
        params: the schedule's validated parameters (empty for a chain).
        segments: for a chain, ``((num_steps, spec), ...)``; see :func:`chain`.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    segments: tuple[tuple[int, ScheduleSpec], ...] = ()

    def __post_init__(self) -> None:
        if self.name == CHAIN:
            if self.params:
                raise ValueError(f"Invalid params for chain: {dict(self.params)!r} (must be empty)")
            segments = tuple(self.segments) if isinstance(self.segments, Iterable) else None
            if not segments:
                raise invalid("segments", self.segments, "a non-empty list")
            checked = []
            for i, segment in enumerate(segments):
                if not (isinstance(segment, tuple | list) and len(segment) == 2):
                    raise ValueError(f"Invalid segment {i}: {segment!r} (must be (num_steps, ScheduleSpec))")
                steps, spec = segment
                steps = _check_segment_steps(steps, i)
                if not isinstance(spec, ScheduleSpec):
                    raise ValueError(f"Invalid schedule of segment {i}: {spec!r} (must be a ScheduleSpec)")
                checked.append((steps, spec))
            object.__setattr__(self, "segments", tuple(checked))
            object.__setattr__(self, "params", _freeze({}))
            return
        if self.segments:
            raise ValueError(f"Invalid segments for {self.name!r}: {self.segments!r} (only a chain has them)")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"Invalid params for {self.name!r}: {self.params!r} (must be a mapping)")
        object.__setattr__(self, "params", _freeze(get(self.name).resolve(self.params)))

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.params.items()), self.segments))

    def __reduce__(self) -> tuple[Any, ...]:
        # the read-only params view cannot be pickled; rebuild from a plain dict (and re-validate)
        return (type(self), (self.name, dict(self.params), self.segments))

    @classmethod
    def chain(cls, segments: Iterable[tuple[int, ScheduleSpec]]) -> ScheduleSpec:
        """The spec of ``chain(segments)``."""
        return cls(CHAIN, segments=tuple(segments))

    @property
    def total_steps(self) -> int | None:
        """For a chain, the summed segment lengths; else None."""
        return sum(n for n, _ in self.segments) if self.name == CHAIN else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"name", "params"}`` or ``{"name": "chain", "segments": [...]}``."""
        if self.name == CHAIN:
            return {
                "name": CHAIN,
                "segments": [{"steps": n, "schedule": spec.to_dict()} for n, spec in self.segments],
            }
        return {"name": self.name, "params": {k: _to_json(v) for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleSpec:
        """Rebuild (and validate) a spec from :meth:`to_dict`'s output."""
        if not isinstance(data, Mapping):
            raise ValueError(f"Invalid schedule spec: {data!r} (must be a mapping)")
        name = data.get("name")
        allowed = ("name", "segments") if name == CHAIN else ("name", "params")
        _reject_unknown_keys(data, allowed, "schedule spec")
        if name is None:
            raise ValueError(f"Invalid schedule spec: {dict(data)!r} (must have a 'name')")
        if name != CHAIN:
            params = data.get("params", {})
            if not isinstance(params, Mapping):
                raise ValueError(f"Invalid params for {name!r}: {params!r} (must be a mapping)")
            return cls(name, params)
        raw = data.get("segments")
        if not isinstance(raw, list | tuple) or not raw:
            raise invalid("segments", raw, "a non-empty list")
        segments = []
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or set(item) != {"steps", "schedule"}:
                raise ValueError(f"Invalid segment {i}: {item!r} (must have exactly 'steps' and 'schedule')")
            segments.append((item["steps"], cls.from_dict(item["schedule"])))
        return cls.chain(segments)


def _to_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _reject_unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], what: str) -> None:
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"Invalid {what} key: {unknown[0]!r} (must be one of {', '.join(allowed)})")


def _check_segment_steps(steps: Any, index: int) -> int:
    if not isinstance(steps, bool):
        try:
            count = operator.index(steps)
        except TypeError:
            pass
        else:
            if count >= 1:
                return count
    raise ValueError(f"Invalid num_steps of segment {index}: {steps!r} (must be an integer >= 1)")


class Schedule:
    """A validated schedule: ``schedule(step) -> lr``. Build with :func:`make_schedule` or :func:`build`."""

    __slots__ = ("_fn", "_kwargs", "spec")

    def __init__(self, spec: ScheduleSpec) -> None:
        if spec.name == CHAIN:
            raise ValueError("Invalid spec: a chain (use build() or chain())")
        self.spec = spec
        self._fn = get(spec.name).fn
        self._kwargs = dict(spec.params)

    def __call__(self, step: int) -> float:
        return float(self._fn(_check_step(step), **self._kwargs))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"Schedule({self.spec.name}: {args})"


class ChainSchedule:
    """Schedules concatenated in time; each piece sees its local step (see :func:`chain`)."""

    __slots__ = ("_pieces", "_starts", "segments")

    def __init__(self, segments: Iterable[tuple[int, Callable[[int], float]]]) -> None:
        segments = list(segments) if isinstance(segments, Iterable) else None
        if not segments:
            raise invalid("segments", segments, "a non-empty list")
        starts, pieces, lengths, start = [], [], [], 0
        for i, segment in enumerate(segments):
            if not (isinstance(segment, tuple | list) and len(segment) == 2):
                raise ValueError(f"Invalid segment {i}: {segment!r} (must be (num_steps, schedule))")
            steps, piece = segment
            steps = _check_segment_steps(steps, i)
            if not callable(piece):
                raise ValueError(f"Invalid schedule of segment {i}: {piece!r} (must be callable)")
            starts.append(start)
            pieces.append(piece)
            lengths.append(steps)
            start += steps
        self.segments: tuple[tuple[int, Callable[[int], float]], ...] = tuple(
            zip(lengths, pieces, strict=True)
        )
        self._starts = starts
        self._pieces = pieces

    @property
    def total_steps(self) -> int:
        return sum(n for n, _ in self.segments)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """The first step of every segment after the first."""
        return tuple(self._starts[1:])

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        i = bisect.bisect_right(self._starts, step) - 1
        return float(self._pieces[i](step - self._starts[i]))

    @property
    def spec(self) -> ScheduleSpec:
        """The chain's :class:`ScheduleSpec`; ``ValueError`` if a piece is a plain function."""
        specs = []
        for i, (steps, piece) in enumerate(self.segments):
            spec = getattr(piece, "spec", None)
            if not isinstance(spec, ScheduleSpec):
                raise ValueError(
                    f"Invalid schedule of segment {i}: {piece!r} (has no ScheduleSpec; "
                    "build it with make_schedule to save it)"
                )
            specs.append((steps, spec))
        return ScheduleSpec.chain(specs)

    def __repr__(self) -> str:
        return f"ChainSchedule({list(self.segments)!r})"


def make_schedule(name: str, **params: Any) -> Schedule:
    """The validated schedule ``name``; unspecified parameters take the table's defaults.

    Raises ``ValueError`` naming the argument and value, for ranges and cross-parameter rules:
    ``Invalid min_lr: 0.5 (must be <= base_lr=0.1)``.
    """
    return Schedule(ScheduleSpec(name, params))


def chain(segments: Iterable[tuple[int, Callable[[int], float]]]) -> ChainSchedule:
    """Concatenate schedules: segment k runs for ``num_steps`` steps and sees its local step.

    ``chain([(100, warmup), (900, cosine)])(150) == cosine(50)``. Past the last boundary the last
    piece keeps going with its local step (a cosine piece holds its min_lr).
    """
    return ChainSchedule(segments)


def build(spec: ScheduleSpec) -> Schedule | ChainSchedule:
    """The callable a :class:`ScheduleSpec` describes."""
    if not isinstance(spec, ScheduleSpec):
        raise invalid("spec", spec, "a ScheduleSpec")
    if spec.name == CHAIN:
        return ChainSchedule([(n, build(s)) for n, s in spec.segments])
    return Schedule(spec)


def sample(schedule: Callable[[int], float], total_steps: int) -> list[float]:
    """``[schedule(0), ..., schedule(total_steps − 1)]`` for plotting."""
    total_steps = _check_step(total_steps, "total_steps")
    return [float(schedule(step)) for step in range(total_steps)]


def lambda_lr(
    optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that writes ``schedule(step)`` into every parameter group's lr.

    ``LambdaLR`` sets lr = initial_lr · factor(step). To make the group's lr exactly the
    schedule's value (no round-off from dividing and re-multiplying) and to work for groups
    created with lr = 0 (which a factor could never move), each group's ``initial_lr`` is set
    to 1.0 and the factor is the schedule's lr itself. The optimizer's own lrs are therefore
    replaced, as with any scheduler; step it after ``optimizer.step()`` as usual.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    >>> sched = lambda_lr(opt, make_schedule("exponential", base_lr=0.1, gamma=0.5))
    >>> opt.param_groups[0]["lr"]
    0.1
    """
    if not callable(schedule):
        raise invalid("schedule", schedule, "callable")
    for group in optimizer.param_groups:
        group["initial_lr"] = 1.0

    # A plain function (not the schedule object) so that LambdaLR.state_dict() stores nothing
    # for it: torch saves the __dict__ of callable objects, and a frozen spec is no state.
    def factor(step: int) -> float:
        return float(schedule(step))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


PLATEAU_HYPERPARAMS = ParamSet((
    Param("mode", "min", choices=("min", "max"), help="min: lower metric is better; max: higher"),
    Param("factor", 0.1, low=0.0, high=1.0, high_open=True, help="new lr = lr · factor"),
    Param("patience", 10, low=0, high=1e6, integer=True, help="bad evaluations tolerated"),
    Param("threshold", 1e-4, low=0.0, high=1e6, help="improvement needed to count"),
    Param("threshold_mode", "rel", choices=("rel", "abs"), help="relative or absolute threshold"),
    Param("cooldown", 0, low=0, high=1e6, integer=True, help="evaluations ignored after a cut"),
    _lr_param("min_lr", 0.0, "floor of the lr"),
    Param("eps", 1e-8, low=0.0, high=1.0, log=True, help="cuts smaller than eps are skipped"),
))
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
        self.lr = float(_lr_param("lr", 0.1, "").validate(lr))
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
        at = self.num_evaluations if at is None else _check_step(at, "at")
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
        _reject_unknown_keys(state, keys, "PlateauAnnealer state")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"Invalid PlateauAnnealer state: missing {missing[0]!r}")
        if not isinstance(state["hyperparams"], Mapping):
            raise invalid("hyperparams", state['hyperparams'], "a mapping")
        if not isinstance(state["events"], list | tuple):
            raise invalid("events", state['events'], "a list")
        fresh = PlateauAnnealer(state["lr"], **state["hyperparams"])
        fresh.best = _float_from_json(state["best"], "best")
        fresh.num_bad_evaluations = _check_step(state["num_bad_evaluations"], "num_bad_evaluations")
        fresh.cooldown_counter = _check_step(state["cooldown_counter"], "cooldown_counter")
        fresh.num_evaluations = _check_step(state["num_evaluations"], "num_evaluations")
        events = []
        for e in state["events"]:
            if not isinstance(e, Mapping) or set(e) != {"step", "old_lr", "new_lr"}:
                raise ValueError(f"Invalid event: {e!r} (must have step, old_lr, new_lr)")
            events.append(ReductionEvent(_check_step(e["step"]), float(e["old_lr"]), float(e["new_lr"])))
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
