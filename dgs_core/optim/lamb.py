"""LAMB — layer-wise adaptive moments for large batches (You et al., arXiv 1904.00962)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from dgs_core.optim._compile import as_input, check_switches, compiled, row_reduce, rows_of, use_foreach
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet, check_tuple

HYPERPARAMS = ParamSet(
    (
        Param("lr", 1e-3, low=0.0, high=1e3, log=True, help="learning rate η"),
        Param("beta1", 0.9, low=0.0, high=1.0, high_open=True, help="first-moment EMA β₁"),
        Param("beta2", 0.999, low=0.0, high=1.0, high_open=True, help="second-moment EMA β₂"),
        Param("eps", 1e-6, low=0.0, high=10.0, help="ε in the Adam denominator and in the trust ratio's"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ, inside the trust ratio: r + λθ"),
        Param(
            "bias_correction", True, help="bias-correct m and v (the paper); off: pytorch-optimizer's LAMB"
        ),
        Param("trust_norm_min", 0.0, low=0.0, high=1e6, help="γ_l of φ(‖θ‖) = min(max(‖θ‖, γ_l), γ_u)"),
        # 10: the cap of pytorch-optimizer's Lamb.clamp (and of the cybertronai code it follows)
        Param(
            "trust_norm_max",
            10.0,
            low=0.0,
            high=1e6,
            low_open=True,
            help="γ_u of φ(‖θ‖) = min(max(‖θ‖, γ_l), γ_u)",
        ),
    )
)
_BETAS = (HYPERPARAMS["beta1"], HYPERPARAMS["beta2"])


class LAMB(KeepsAttributes, torch.optim.Optimizer):
    r"""LAMB: Adam's direction, rescaled per tensor so that the step is η·‖θ‖ long.

    Per tensor θ with gradient g, at step t (You et al. 2020, Algorithm 2)::

        m ← β₁ m + (1 − β₁) g                   state["exp_avg"]
        v ← β₂ v + (1 − β₂) g²                  state["exp_avg_sq"]
        r = m̂ / (√v̂ + ε)                        m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)
        u = r + λθ
        φ  = min(max(‖θ‖, γ_l), γ_u)            γ_l = 0, γ_u = 10 by default
        tr = φ / (‖u‖ + ε)                      tr = 1 if φ = 0 or ‖u‖ = 0       state["trust_ratio"]
        θ ← θ − η · tr · u

    So each tensor moves by η·φ(‖θ‖) in Adam's direction, whatever the size of its gradient:
    LARS's layer-wise trust ratio on top of Adam. Only ε breaks that: where ‖u‖ ≪ ε (Adam's
    direction is small, e.g. near a minimum where v̂ remembers larger gradients) the step is
    about η·φ/ε · u, Adam's with lr η·φ/ε. ``state[p]["trust_ratio"]`` holds tr after each step
    (0-d, or (N, 1, …) per row in an ``independent_rows`` group).

    Args:
        params: tensors or parameter groups.
        lr: η (1e-3). betas: (β₁, β₂), default (0.9, 0.999). eps: ε (1e-6).
        weight_decay: λ (0), inside the trust ratio. bias_correction: True (the paper).
        trust_norm_min: γ_l (0). trust_norm_max: γ_u (10).
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool.
        fused: compile the per-tensor update with ``torch.compile`` (the first steps compile,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first.

    A parameter group with ``independent_rows=True`` (the batched 2-D simulator) takes the norms
    and the trust ratio per row.

    Departures from the reference (pytorch-optimizer 4.1 ``Lamb``; the paper released no code):

    - m̂, v̂: bias-corrected, as the paper's Algorithm 2; the reference does not correct them
      ("version 3 of the paper"). ``bias_correction=False`` matches it. The trust ratio cancels
      any common scale of r, so the two differ only through ε and λθ, and on tensors where
      tr = 1.
    - The step is η·tr·u, η·φ long, as the paper's; the reference's default divides it by
      1 − β₁ᵗ outside the trust ratio (``adam_debias=False``), so its first steps are up to
      1/(1 − β₁) = 10 times longer. Its ``adam_debias=True`` is our step.
    - λθ inside the trust ratio, as the paper; the reference's default (``weight_decouple=True``)
      shrinks θ ← θ(1 − ηλ) outside it. Its ``weight_decouple=False`` is our rule.

    Interpretation: the paper leaves its scaling function φ's bounds γ_l, γ_u open; the
    defaults 0 and 10 are the reference's (its weight norm is clamped to [0, 10]). ε also sits
    in the trust ratio's denominator, as in the reference (the paper's ratio has none).

    Paper: https://arxiv.org/abs/1904.00962

    Example:
        >>> import torch
        >>> w = torch.tensor([[3.0, 4.0]], requires_grad=True)  # ‖θ‖ = 5
        >>> opt = LAMB([w], lr=0.1)
        >>> w.grad = torch.tensor([[1.0, -1.0]])
        >>> opt.step()
        >>> round(float((w.detach() - torch.tensor([[3.0, 4.0]])).norm()), 4)  # the step: η‖θ‖
        0.5
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        trust_norm_min: float = 0.0,
        trust_norm_max: float = 10.0,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        switches = dict(foreach=foreach, fused=fused, maximize=maximize)
        check_switches(switches)
        hparams = dict(
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            trust_norm_min=trust_norm_min,
            trust_norm_max=trust_norm_max,
        )
        _check_bounds(hparams)
        defaults = {
            **_GROUP_PARAMS.validate(hparams),
            "betas": check_tuple("betas", betas, _BETAS),
            **switches,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One LAMB step; ``closure`` (optional) recomputes the loss and gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            _check(group)
            leaves = [p for p in group["params"] if p.grad is not None]
            if not leaves:
                continue
            if any(p.grad.is_sparse for p in leaves):
                raise RuntimeError("LAMB does not support sparse gradients")
            params = [real(p) for p in leaves]  # a complex tensor steps as its real twin
            grads = [-real(p.grad) if group["maximize"] else real(p.grad) for p in leaves]
            rows = rows_of(group)
            beta1, beta2 = group["betas"]
            states = []
            for leaf, p in zip(leaves, params, strict=True):
                state = self.state[leaf]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    shape = (p.shape[0],) + (1,) * (p.ndim - 1) if rows and p.ndim else ()
                    state["trust_ratio"] = torch.ones(shape, dtype=p.dtype, device=p.device)
                state["step"] += 1
                states.append(state)
            corrected = group["bias_correction"]
            _lamb_update(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["trust_ratio"] for s in states],
                [1.0 - beta1 ** s["step"] if corrected else 1.0 for s in states],
                [math.sqrt(1.0 - beta2 ** s["step"]) if corrected else 1.0 for s in states],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                trust_norm_min=group["trust_norm_min"],
                trust_norm_max=group["trust_norm_max"],
                independent_rows=rows,
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss


_GROUP_PARAMS = HYPERPARAMS.without("beta1", "beta2")


def _check(group: dict[str, Any]) -> None:
    _GROUP_PARAMS.check(group)
    _check_bounds(group)
    check_tuple("betas", group["betas"], _BETAS)
    check_switches(group)


def _check_bounds(values: dict[str, Any]) -> None:
    low, high = _GROUP_PARAMS["trust_norm_min"], _GROUP_PARAMS["trust_norm_max"]
    # both float-range Params: validate gives floats
    if low.validate(values["trust_norm_min"]) > high.validate(values["trust_norm_max"]):  # type: ignore[operator]  # (reason above)
        raise low.error(values["trust_norm_min"], f"<= trust_norm_max = {values['trust_norm_max']!r}")


def _lamb_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    trust_ratios: list[torch.Tensor],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    trust_norm_min: float = 0.0,
    trust_norm_max: float = 10.0,
    independent_rows: bool = False,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply one LAMB step in place; each tensor's tr is written into ``trust_ratios``.

    ``bias_corrections1[i]`` = 1 − β₁ᵗ and ``sqrt_bias_corrections2[i]`` = √(1 − β₂ᵗ) of tensor
    i (1.0 without bias correction). Three paths compute the same numbers: the per-tensor loop
    (the reference, default on CPU), ``foreach`` and ``fused`` (the loop compiled).
    """
    lists = (params, grads, exp_avgs, exp_avg_sqs, trust_ratios, bias_corrections1, sqrt_bias_corrections2)
    hparams = dict(
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        trust_norm_min=trust_norm_min,
        trust_norm_max=trust_norm_max,
        independent_rows=independent_rows,
    )
    if foreach and not fused:
        _lamb_foreach(*lists, lr=lr, **hparams)
        return
    update = compiled(_lamb_single) if fused else _lamb_single
    update(*lists, lr=as_input(lr, params[0]), **hparams)


def _trust_ratio(
    param_norm: torch.Tensor, update_norm: torch.Tensor, *, eps: float, low: float, high: float
) -> torch.Tensor:
    """φ/(‖u‖ + ε) with φ = min(max(‖θ‖, γ_l), γ_u); 1 where φ = 0 or ‖u‖ = 0. Elementwise on norms."""
    phi = param_norm.clamp(min=low, max=high)
    return torch.where((phi > 0) & (update_norm > 0), phi / (update_norm + eps), 1.0)


def _lamb_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    trust_ratios: list[torch.Tensor],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    trust_norm_min: float,
    trust_norm_max: float,
    independent_rows: bool,
) -> None:
    for p, g, m, v, tr, bc1, sqrt_bc2 in zip(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        trust_ratios,
        bias_corrections1,
        sqrt_bias_corrections2,
        strict=True,
    ):
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        # u = (m/bc1)/(√v/√bc2 + ε) + λθ: one new tensor, written in place from here on
        u = torch.sqrt(v).div_(sqrt_bc2).add_(eps).mul_(bc1)
        torch.div(m, u, out=u)
        if weight_decay != 0.0:
            u.add_(p, alpha=weight_decay)
        param_norm = row_reduce(torch.linalg.vector_norm, p, independent_rows)
        update_norm = row_reduce(torch.linalg.vector_norm, u, independent_rows)
        tr.copy_(_trust_ratio(param_norm, update_norm, eps=eps, low=trust_norm_min, high=trust_norm_max))
        p.addcmul_(u, tr * lr, value=-1.0)  # lr: a 0-d tensor (see _compile.as_input)


def _lamb_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    trust_ratios: list[torch.Tensor],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    trust_norm_min: float,
    trust_norm_max: float,
    independent_rows: bool,
) -> None:
    # The same ops as _lamb_single, one torch._foreach_* call per op over all tensors.
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denominators, sqrt_bias_corrections2)
    torch._foreach_add_(denominators, eps)
    torch._foreach_mul_(denominators, bias_corrections1)
    updates = torch._foreach_div(exp_avgs, denominators)
    if weight_decay != 0.0:
        torch._foreach_add_(updates, params, alpha=weight_decay)
    if independent_rows:
        param_norms = [row_reduce(torch.linalg.vector_norm, p, True) for p in params]
        update_norms = [row_reduce(torch.linalg.vector_norm, u, True) for u in updates]
        ratios = [
            _trust_ratio(a, b, eps=eps, low=trust_norm_min, high=trust_norm_max)
            for a, b in zip(param_norms, update_norms, strict=True)
        ]
    else:  # every ratio in one vector op
        param_norms = torch.stack(torch._foreach_norm(params))
        update_norms = torch.stack(torch._foreach_norm(updates))
        ratios = list(
            _trust_ratio(param_norms, update_norms, eps=eps, low=trust_norm_min, high=trust_norm_max).unbind()
        )
    torch._foreach_copy_(trust_ratios, ratios)
    torch._foreach_mul_(updates, ratios)
    torch._foreach_add_(params, updates, alpha=-lr)
