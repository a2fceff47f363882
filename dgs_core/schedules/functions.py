"""Learning-rate schedules as pure functions of the step (docs/algorithms.md#schedules).

Every schedule is a pure function ``f(step, *, base_lr, ...) -> float`` with the step counted
from 0 and no hidden ``last_epoch`` state. The functions do no validation:
:func:`dgs_core.schedules.make_schedule` (or :class:`~dgs_core.schedules.ScheduleSpec`)
validates once, names the bad argument and value, and returns a callable ``schedule(step) -> lr``.

>>> round(cosine(50, base_lr=0.1, total_steps=100, min_lr=0.001), 6)
0.0505
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from dgs_core.params import invalid

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
