"""MARS — variance reduction for adaptive optimizers (Yuan et al., arXiv 2411.10438), MARS-AdamW."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from dgs_core.optim._compile import (
    as_input,
    check_switches,
    compiled,
    row_ndim,
    row_reduce,
    rows_of,
    use_foreach,
)
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet, check_tuple

HYPERPARAMS = ParamSet(
    (
        Param("lr", 3e-3, low=0.0, high=1e3, log=True, help="learning rate η"),
        Param(
            "beta1",
            0.95,
            low=0.0,
            high=1.0,
            high_open=True,
            help="first-moment EMA β₁ (also in the correction)",
        ),
        Param("beta2", 0.99, low=0.0, high=1.0, high_open=True, help="second-moment EMA β₂"),
        Param(
            "gamma",
            0.025,
            low=0.0,
            high=1e3,
            help="correction strength γ: c = g + γ·β₁/(1 − β₁)·(g − g_prev)",
        ),
        Param("eps", 1e-8, low=0.0, high=1.0, log=True, help="denominator ε"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="decoupled weight decay λ: θ ← θ(1 − ηλ)"),
        Param("optimize_1d", False, help="MARS for tensors with fewer than 2 dimensions too (off: AdamW)"),
        Param("lr_1d_ratio", 1.0, low=0.0, high=1e3, log=True, help="the 1-D AdamW's lr as a multiple of η"),
        Param("beta1_1d", 0.9, low=0.0, high=1.0, high_open=True, help="the 1-D AdamW's β₁"),
        Param("beta2_1d", 0.95, low=0.0, high=1.0, high_open=True, help="the 1-D AdamW's β₂"),
        Param("weight_decay_1d", 0.0, low=0.0, high=10.0, help="the 1-D AdamW's decoupled weight decay"),
    )
)
_BETAS = (HYPERPARAMS["beta1"], HYPERPARAMS["beta2"])
_BETAS_1D = (HYPERPARAMS["beta1_1d"], HYPERPARAMS["beta2_1d"])
_GROUP_PARAMS = HYPERPARAMS.without("beta1", "beta2", "beta1_1d", "beta2_1d")


class MARS(KeepsAttributes, torch.optim.Optimizer):
    r"""MARS-AdamW: AdamW on a variance-reduced gradient, c = g + γ·β₁/(1 − β₁)·(g − g_prev).

    Per tensor with at least 2 dimensions (or every tensor with ``optimize_1d=True``), at step t
    (Yuan et al. 2024, Algorithm 2 with the official code's clipping)::

        c  = g + γ · β₁/(1 − β₁) · (g − g_prev)      g_prev = 0 at t = 1      state["previous_grad"]
        c ← c / max(‖c‖, 1)                           clip the correction to norm 1
        m ← β₁ m + (1 − β₁) c                         state["exp_avg"]
        v ← β₂ v + (1 − β₂) c²                        state["exp_avg_sq"]
        θ ← θ (1 − ηλ) − η · (m / (1 − β₁ᵗ)) / ((√v + ε) / √(1 − β₂ᵗ))

    The correction is a scaled STORM-style variance reduction: it adds the change of the
    gradient since the last step, so that m tracks the current gradient rather than lagging.
    ``state[p]["correction_norm"]`` holds ‖c‖ before clipping (0-d, or (N, 1, …) per row in an
    ``independent_rows`` group); above 1 the correction was clipped.

    Tensors with fewer than 2 dimensions (biases, gains, scalars) take plain AdamW, as the
    authors' code does unless ``optimize_1d``: m ← β₁' m + (1 − β₁') g, v likewise with β₂',
    θ ← θ(1 − η'λ') − η' m̂/(√v + ε)·√(1 − β₂'ᵗ) with η' = η · ``lr_1d_ratio`` (they keep no
    correction norm). In an ``independent_rows`` group a row counts: a row of an (N, d) tensor
    is 1-D.

    Args:
        params: tensors or parameter groups.
        lr: η (3e-3). betas: (β₁, β₂), default (0.95, 0.99). gamma: γ (0.025). eps: ε (1e-8).
        weight_decay: λ (0), decoupled. optimize_1d: False.
        lr_1d_ratio: η'/η (1.0: the reference's lr_1d = lr = 3e-3). betas_1d: (0.9, 0.95).
        weight_decay_1d: λ' (0).
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool.
        fused: compile the per-tensor update with ``torch.compile`` (the first steps compile,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first.

    Departures from the reference (pytorch-optimizer 4.1 ``MARS``, ``mars_type="adamw"``):

    - the 1-D AdamW's λ' defaults to 0 (reference and official code: 0.1), so that an optimizer
      built with weight_decay=0 decays nothing; pass ``weight_decay_1d=0.1`` to match.
    - t is counted per tensor, when it has a gradient (reference: per group, on every step; the
      official code counts per tensor, as we do). They agree when every tensor gets a gradient
      on every step.
    - the 1-D AdamW's lr is a ratio of η, so a schedule that writes η moves both; the
      reference's ``lr_1d`` is the same ratio taken once, at construction (lr_1d / lr).

    Only MARS-AdamW is implemented (the paper's main variant); MARS-Lion and MARS-Shampoo are not.

    Paper: https://arxiv.org/abs/2411.10438 (code: AGI-Arena/MARS)

    Example:
        >>> import torch
        >>> w = torch.zeros(2, 2, requires_grad=True)
        >>> opt = MARS([w], lr=0.1)
        >>> w.grad = torch.full((2, 2), 3.0)
        >>> opt.step()
        >>> round(float(opt.state[w]["correction_norm"]), 2)  # ‖(1 + γβ₁/(1 − β₁))·g‖ = 1.475·6
        8.85
        >>> w.detach()  # Adam's first step: η·sign
        tensor([[-0.1000, -0.1000],
                [-0.1000, -0.1000]])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: Sequence[float] = (0.95, 0.99),
        gamma: float = 0.025,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        optimize_1d: bool = False,
        lr_1d_ratio: float = 1.0,
        betas_1d: Sequence[float] = (0.9, 0.95),
        weight_decay_1d: float = 0.0,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        switches = dict(foreach=foreach, fused=fused, maximize=maximize)
        check_switches(switches)
        hparams = dict(
            lr=lr,
            gamma=gamma,
            eps=eps,
            weight_decay=weight_decay,
            optimize_1d=optimize_1d,
            lr_1d_ratio=lr_1d_ratio,
            weight_decay_1d=weight_decay_1d,
        )
        defaults = {
            **_GROUP_PARAMS.validate(hparams),
            "betas": check_tuple("betas", betas, _BETAS),
            "betas_1d": check_tuple("betas_1d", betas_1d, _BETAS_1D),
            **switches,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One MARS step; ``closure`` (optional) recomputes the loss and gradients."""
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
                raise RuntimeError("MARS does not support sparse gradients")
            rows = rows_of(group)
            (beta1, beta2), (beta1_1d, beta2_1d) = group["betas"], group["betas_1d"]
            params, grads, states, reduced = [], [], [], []
            for leaf in leaves:
                p = real(leaf)  # a complex tensor steps as its real twin
                state = self.state[leaf]
                if not state:
                    state["step"] = 0
                    for key in ("exp_avg", "exp_avg_sq", "previous_grad"):
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                variance_reduced = group["optimize_1d"] or row_ndim(p, rows) >= 2
                if variance_reduced and "correction_norm" not in state:
                    shape = (p.shape[0],) + (1,) * (p.ndim - 1) if rows and p.ndim else ()
                    state["correction_norm"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
                elif not variance_reduced:
                    state.pop("correction_norm", None)  # optimize_1d may have been switched off
                state["step"] += 1
                params.append(p)
                grads.append(-real(leaf.grad) if group["maximize"] else real(leaf.grad))
                states.append(state)
                reduced.append(variance_reduced)
            betas = [(beta1, beta2) if r else (beta1_1d, beta2_1d) for r in reduced]
            _mars_update(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["previous_grad"] for s in states],
                [s.get("correction_norm") for s in states],
                [1.0 - b1 ** s["step"] for (b1, _), s in zip(betas, states, strict=True)],
                [math.sqrt(1.0 - b2 ** s["step"]) for (_, b2), s in zip(betas, states, strict=True)],
                lr=group["lr"],
                betas=group["betas"],
                gamma=group["gamma"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                lr_1d=group["lr"] * group["lr_1d_ratio"],
                betas_1d=group["betas_1d"],
                weight_decay_1d=group["weight_decay_1d"],
                independent_rows=rows,
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss


def _check(group: dict[str, Any]) -> None:
    _GROUP_PARAMS.check(group)
    check_tuple("betas", group["betas"], _BETAS)
    check_tuple("betas_1d", group["betas_1d"], _BETAS_1D)
    check_switches(group)


def _mars_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    correction_norms: list[torch.Tensor | None],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: float,
    betas: tuple[float, float],
    gamma: float,
    eps: float,
    weight_decay: float,
    lr_1d: float,
    betas_1d: tuple[float, float],
    weight_decay_1d: float,
    independent_rows: bool = False,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply one MARS step in place. A tensor with a ``correction_norms`` entry takes MARS (its
    ‖c‖ is written there), one with None the 1-D AdamW; the bias corrections are each tensor's
    own (1 − β₁ᵗ and √(1 − β₂ᵗ) with its path's betas).

    Three paths compute the same numbers: the per-tensor loop (the reference, default on CPU),
    ``foreach`` and ``fused`` (the loop compiled).
    """
    hparams = dict(
        betas=betas,
        gamma=gamma,
        eps=eps,
        weight_decay=weight_decay,
        betas_1d=betas_1d,
        weight_decay_1d=weight_decay_1d,
        independent_rows=independent_rows,
    )
    lists = (
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        previous_grads,
        correction_norms,
        bias_corrections1,
        sqrt_bias_corrections2,
    )
    if foreach and not fused:
        _mars_foreach(*lists, lr=lr, lr_1d=lr_1d, **hparams)
        return
    update = compiled(_mars_single) if fused else _mars_single
    update(*lists, lr=as_input(lr, params[0]), lr_1d=as_input(lr_1d, params[0]), **hparams)


def _mars_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    correction_norms: list[torch.Tensor | None],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: torch.Tensor,
    betas: tuple[float, float],
    gamma: float,
    eps: float,
    weight_decay: float,
    lr_1d: torch.Tensor,
    betas_1d: tuple[float, float],
    weight_decay_1d: float,
    independent_rows: bool,
) -> None:
    for p, g, m, v, prev, norm, bc1, sqrt_bc2 in zip(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        previous_grads,
        correction_norms,
        bias_corrections1,
        sqrt_bias_corrections2,
        strict=True,
    ):
        if norm is not None:  # MARS: the variance-reduced gradient c replaces g
            beta1, beta2 = betas
            c = torch.sub(g, prev).mul_(gamma * beta1 / (1.0 - beta1)).add_(g)
            norm.copy_(row_reduce(torch.linalg.vector_norm, c, independent_rows))
            c.div_(norm.clamp(min=1.0))
            step_lr, decay = lr, weight_decay
        else:  # the 1-D AdamW
            (beta1, beta2), c = betas_1d, g
            step_lr, decay = lr_1d, weight_decay_1d
        m.lerp_(c, 1.0 - beta1)
        v.mul_(beta2).addcmul_(c, c, value=1.0 - beta2)
        denominator = torch.sqrt(v).add_(eps).mul_(bc1 / sqrt_bc2)
        if decay != 0.0:
            p.mul_(1.0 - step_lr * decay)
        # η/denominator by in-place ops, so η is an operand (a 0-d tensor, see _compile.as_input)
        p.addcmul_(m, denominator.reciprocal_().mul_(step_lr), value=-1.0)
        prev.copy_(g)


def _mars_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    correction_norms: list[torch.Tensor | None],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: float,
    betas: tuple[float, float],
    gamma: float,
    eps: float,
    weight_decay: float,
    lr_1d: float,
    betas_1d: tuple[float, float],
    weight_decay_1d: float,
    independent_rows: bool,
) -> None:
    # The same ops as _mars_single, one torch._foreach_* call per op, for each of the two kinds.
    for variance_reduced in (True, False):
        index = [i for i, norm in enumerate(correction_norms) if (norm is not None) == variance_reduced]
        if not index:
            continue
        ps, gs = [params[i] for i in index], [grads[i] for i in index]
        ms, vs = [exp_avgs[i] for i in index], [exp_avg_sqs[i] for i in index]
        if variance_reduced:
            beta1, beta2 = betas
            step_lr, decay = lr, weight_decay
            cs = torch._foreach_sub(gs, [previous_grads[i] for i in index])
            torch._foreach_mul_(cs, gamma * beta1 / (1.0 - beta1))
            torch._foreach_add_(cs, gs)
            norms = [row_reduce(torch.linalg.vector_norm, c, independent_rows) for c in cs]
            # index picks the entries that are not None
            torch._foreach_copy_([correction_norms[i] for i in index], norms)  # type: ignore[misc]  # (reason above)
            torch._foreach_div_(cs, [norm.clamp(min=1.0) for norm in norms])
        else:
            (beta1, beta2), cs = betas_1d, gs
            step_lr, decay = lr_1d, weight_decay_1d
        torch._foreach_lerp_(ms, cs, 1.0 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, cs, cs, value=1.0 - beta2)
        denominators = torch._foreach_sqrt(vs)
        torch._foreach_add_(denominators, eps)
        torch._foreach_mul_(denominators, [bias_corrections1[i] / sqrt_bias_corrections2[i] for i in index])
        if decay != 0.0:
            torch._foreach_mul_(ps, 1.0 - step_lr * decay)
        torch._foreach_addcdiv_(ps, ms, denominators, value=-step_lr)
        torch._foreach_copy_([previous_grads[i] for i in index], gs)
