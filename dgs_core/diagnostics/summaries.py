"""Optimizer-specific summaries: what the diagnostics report about an optimizer's own state.

See docs/algorithms.md#diagnostics.

The optimizer files in :mod:`dgs_core.optim` hold the update math only. What the diagnostics
show about an optimizer's state beside the common quantities (importance, effective lr,
scaling factor, norms) is declared here, as data: :data:`SUMMARIES` maps an optimizer class to
a function

    summary(optimizer, group, param, state, sample) -> {name: value}

called on every record for every tensor that had a gradient:

- ``optimizer``: the optimizer; ``group``: ``param``'s parameter group (its hyperparameters);
- ``state``: ``optimizer.state[param]``, empty before the tensor's first step;
- ``sample(tensor)``: the elements of a tensor shaped like ``param`` that the diagnostics
  track, flat. The reference implementation tracks every element; the fast one a fixed subset
  of large tensors, so a value computed from ``sample`` costs O(tracked elements), not a pass
  over the state. A norm of the sample estimates the tensor's norm after multiplying by
  √(numel / tracked), as the diagnostics do for ‖g‖ and ‖θ‖ (exact when every element is
  tracked).

Each value is a number or a tensor (a tensor of several elements reports its mean, e.g.
AdaGrad-Norm's b_t per row with ``independent_rows``; the diagnostics convert all of a record's
tensors in one transfer). Each name becomes a quantity with the single statistic "value".
Return ``{}`` when there is nothing to report yet.

The lookup follows the class's MRO: a subclass reports its base's values (AdAdaGrad-Norm
reports AdaGrad-Norm's b_t) unless it has its own entry.

**Adding summaries for a new optimizer**: write one function below and add
``YourOptimizer: your_function`` to :data:`SUMMARIES`; a test computes the value by hand (in
``tests/diagnostics/test_summaries.py`` or the optimizer's own tests). For example::

    def _lamb(optimizer, group, param, state, sample):
        ratio = state.get("trust_ratio")          # the update keeps it in its state
        return {} if ratio is None else {"trust_ratio": ratio}

A value that needs a quantity the update does not keep should be kept by the update in its
state under a name from the math (like LARS's ``state["trust_ratio"]``), not recomputed here.

The fast path asks for every tensor on every record, and each torch call on a small sample
costs a few µs: a function that makes several per tensor can get a batched twin in
:data:`SUMMARIES_MANY`, ``many(optimizer, groups, params, states, samples) -> [dict, …]``,
which the fast path uses instead and a test holds equal to the per-tensor entry.

Besides these per-tensor values, a per-element state named :data:`SCALE_STATE` (DGS's s_t)
is summarised like the importance (mean and quantiles) as the quantity "scale", and kept per
element for heatmaps, for any optimizer that keeps one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dgs_core.optim.adagrad_norm import AdaGradNorm
from dgs_core.optim.adan import Adan
from dgs_core.optim.adascale import AdaScaleSGD
from dgs_core.optim.dgs import DGS
from dgs_core.optim.lamb import LAMB
from dgs_core.optim.lars import LARS
from dgs_core.optim.lion import Lion
from dgs_core.optim.mars import MARS
from dgs_core.optim.muon import Muon
from dgs_core.optim.schedule_free import ScheduleFreeAdamW

Group = Mapping[str, Any]  # a parameter group: its hyperparameters and "params"
State = Mapping[str, Any]  # optimizer.state[param]
Sample = Callable[[Tensor], Tensor]  # the tracked elements of a tensor shaped like param, flat
Summary = Callable[[torch.optim.Optimizer, Group, Tensor, State, Sample], dict[str, Any]]
SummaryMany = Callable[
    [torch.optim.Optimizer, Sequence[Group], Sequence[Tensor], Sequence[State], Sequence[Sample]],
    list[dict[str, Any]],
]

SCALE_STATE = "scale"  # DGS's s_t: summarised and kept per element as the quantity "scale"


def _dgs(optimizer: DGS, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``t``: the step count of the bias correction (a hard reset sets it back to 0);
    ``clipped``: the fraction of (tracked) elements whose scale s_t sits at s_min or s_max."""
    if not state:
        return {}
    scale = sample(state["scale"])
    at_bound = (scale <= group["s_min"]) | (scale >= group["s_max"])
    return {"t": float(state["step"]), "clipped": at_bound.double().mean()}


def _adan(optimizer: Adan, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``diff_norm``: ‖v‖, the norm of the gradient-difference EMA (Adan's Nesterov term);
    ``t``: the step count of the bias corrections (a restart sets it back to 0)."""
    if not state:
        return {}
    v = state["exp_avg_diff"]
    tracked = sample(v)
    extrapolate = math.sqrt(v.numel() / max(1, tracked.numel()))
    return {"diff_norm": torch.linalg.vector_norm(tracked).item() * extrapolate, "t": float(state["step"])}


def _lars(optimizer: LARS, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``trust_ratio`` of the last step: 0-d, or (N, 1, …) per row with ``independent_rows``;
    none for tensors that ``exclude_1d`` leaves without one."""
    trust_ratio = state.get("trust_ratio")
    return {} if trust_ratio is None else {"trust_ratio": trust_ratio}


def _adagrad_norm(
    optimizer: AdaGradNorm, group: Group, param: Tensor, state: State, sample: Sample
) -> dict[str, Any]:
    """``b``: b_t of ``param``'s group, kept as b_t² in the state of the group's first tensor
    (shape (N,) with ``independent_rows``); none before the group's first step."""
    b_squared = optimizer.state.get(group["params"][0], {}).get("b_squared")
    return {} if b_squared is None else {"b": b_squared.sqrt()}


def _lamb(optimizer: LAMB, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``trust_ratio`` φ(‖θ‖)/‖r + λθ‖ of the last step: 0-d, or (N, 1, …) per row."""
    trust_ratio = state.get("trust_ratio")
    return {} if trust_ratio is None else {"trust_ratio": trust_ratio}


def _adascale(
    optimizer: AdaScaleSGD, group: Group, param: Tensor, state: State, sample: Sample
) -> dict[str, Any]:
    """``gain_ratio`` r_t and ``tau`` (τ, the scale-invariant iteration count) of ``param``'s
    group, kept in the state of the group's first tensor ((N,) per row); none before its first
    step."""
    gain = optimizer.state.get(group["params"][0], {})
    return {"gain_ratio": gain["gain_ratio"], "tau": gain["tau"]} if "tau" in gain else {}


def _mars(optimizer: MARS, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``correction_norm``: ‖c_t‖ of the variance-reduced gradient before its clipping to norm
    1; none for the tensors that take the AdamW path."""
    norm = state.get("correction_norm")
    return {} if norm is None else {"correction_norm": norm}


def _lion(optimizer: Lion, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``sign_agreement``: the fraction of coordinates where the last step went against the
    gradient's sign, sign(c)·g > 0, as plain sign descent would (kept by the update)."""
    agreement = state.get("sign_agreement")
    return {} if agreement is None else {"sign_agreement": agreement}


def _muon(optimizer: Muon, group: Group, param: Tensor, state: State, sample: Sample) -> dict[str, Any]:
    """``update_norm``: ‖O_t‖_F of the orthogonalized momentum of the last step (≈ √min(m, n));
    none for the tensors that take the AdamW fallback."""
    norm = state.get("update_norm")
    return {} if norm is None else {"update_norm": norm}


def _schedule_free(
    optimizer: ScheduleFreeAdamW, group: Group, param: Tensor, state: State, sample: Sample
) -> dict[str, Any]:
    """``interpolation_weight``: c_t, the weight of the newest iterate z in the average x (the
    evaluation point) after the last step."""
    return {"interpolation_weight": state["interpolation_weight"]} if "z" in state else {}


SUMMARIES: dict[type[torch.optim.Optimizer], Summary] = {
    DGS: _dgs,
    Adan: _adan,
    LARS: _lars,
    AdaGradNorm: _adagrad_norm,
    LAMB: _lamb,
    AdaScaleSGD: _adascale,
    MARS: _mars,
    Lion: _lion,
    Muon: _muon,
    ScheduleFreeAdamW: _schedule_free,
}


def _dgs_many(
    optimizer: DGS,
    groups: Sequence[Group],
    params: Sequence[Tensor],
    states: Sequence[State],
    samples: Sequence[Sample],
) -> list[dict[str, Any]]:
    """:func:`_dgs` of many tensors: every sample of s_t compared in one numpy pass. At 40
    tensors of 2048 tracked elements ~0.1 ms a record, against ~1.7 ms for one torch comparison
    per tensor (bench/diagnostics_overhead.py's setting, on the shared 2-core machine)."""
    out: list[dict[str, Any]] = [{} for _ in params]
    live = [k for k, state in enumerate(states) if state]
    if not live:
        return out
    scales = [samples[k](states[k]["scale"]).cpu().numpy() for k in live]
    # the bounds in each sample's dtype, as torch compares them: a float32 s_t clipped to s_min
    # holds float32(s_min), which is not <= the float64 s_min
    lows = np.concatenate(
        [np.full(len(s), groups[k]["s_min"], s.dtype) for k, s in zip(live, scales, strict=True)]
    )
    highs = np.concatenate(
        [np.full(len(s), groups[k]["s_max"], s.dtype) for k, s in zip(live, scales, strict=True)]
    )
    values = np.concatenate(scales)
    sizes = [len(s) for s in scales]
    starts = np.cumsum([0, *sizes[:-1]])
    counts = np.add.reduceat((values <= lows) | (values >= highs), starts, dtype=np.int64).tolist()
    for k, count, size in zip(live, counts, sizes, strict=True):
        out[k] = {"t": float(states[k]["step"]), "clipped": count / size}
    return out


SUMMARIES_MANY: dict[type[torch.optim.Optimizer], SummaryMany] = {DGS: _dgs_many}


def summary_for(cls: type) -> Summary | None:
    """The entry of :data:`SUMMARIES` for an optimizer class, along its MRO; None if none."""
    return next((SUMMARIES[base] for base in cls.__mro__ if base in SUMMARIES), None)


def summaries_many_for(cls: type) -> SummaryMany | None:
    """All of a record's tensors at once: the entry of :data:`SUMMARIES_MANY` for the class
    that :func:`summary_for` finds, else that entry called per tensor; None if none."""
    owner = next((base for base in cls.__mro__ if base in SUMMARIES), None)
    if owner is None:
        return None
    if owner in SUMMARIES_MANY:
        return SUMMARIES_MANY[owner]
    summary = SUMMARIES[owner]
    return lambda optimizer, groups, params, states, samples: [
        summary(optimizer, *arguments) for arguments in zip(groups, params, states, samples, strict=True)
    ]


def tensor_summaries(
    optimizer: torch.optim.Optimizer, param: Tensor, *, sample: Sample | None = None
) -> dict[str, Any]:
    """The optimizer's own values for ``param`` (computed on every element unless ``sample``
    says which); ``ValueError`` when ``param`` is not one of the optimizer's tensors.

    >>> from dgs_core.optim import LARS
    >>> w = torch.ones(2, 2, requires_grad=True)
    >>> opt = LARS([w], lr=0.1)
    >>> w.grad = torch.ones(2, 2)
    >>> opt.step()
    >>> round(tensor_summaries(opt, w)["trust_ratio"].item(), 9)  # τ‖θ‖/(‖g‖ + ε), τ = 1e-3
    0.001
    """
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            summary = summary_for(type(optimizer))
            if summary is None:
                return {}
            state = optimizer.state.get(param, {})
            return summary(optimizer, group, param, state, sample or _every_element)
    raise ValueError("Invalid param: not one of this optimizer's parameters")


def _every_element(tensor: Tensor) -> Tensor:
    return tensor.reshape(-1)
