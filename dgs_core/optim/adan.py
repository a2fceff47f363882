"""Adan — adaptive Nesterov momentum (Xie et al., arXiv 2208.06677), following the official code."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from dgs_core.optim._compile import (
    check_switches,
    compiled,
    row_count,
    row_reduce,
    rows_of,
    rows_view,
    use_foreach,
)
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet, invalid

HYPERPARAMS = ParamSet(
    (
        Param("lr", 1e-3, low=0.0, high=1e3, log=True, help="learning rate η"),
        Param("beta1", 0.98, low=0.0, high=1.0, high_open=True, help="gradient EMA b1 (= 1 − paper's β1)"),
        Param("beta2", 0.92, low=0.0, high=1.0, high_open=True, help="difference EMA b2 (= 1 − paper's β2)"),
        Param(
            "beta3", 0.99, low=0.0, high=1.0, high_open=True, help="second-moment EMA b3 (= 1 − paper's β3)"
        ),
        Param("eps", 1e-8, low=0.0, high=1.0, log=True, help="denominator ε"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ (proximal unless no_prox)"),
        Param("max_grad_norm", 0.0, low=0.0, high=1e6, help="global gradient-norm clip (0 = off)"),
        Param("no_prox", False, help="decay as θ(1 − ηλ) instead of the proximal θ/(1 + ηλ)"),
        Param("restart_every", 0, low=0, high=1e9, integer=True, help="restart every N steps (0 = never)"),
    )
)
_BETAS = HYPERPARAMS[1:4]


class Adan(KeepsAttributes, torch.optim.Optimizer):
    r"""Adan: Adam-style moments plus an EMA of gradient differences (Nesterov look-ahead).

    Follows the official implementation (sail-sg/Adan), whose betas are 1 − the paper's β.
    Per element, step t = 1, 2, … (docs/algorithms.md#adan)::

        d_t = g_t − g_{t−1}             (d_1 = 0)         state["previous_grad"] keeps g_{t−1}
        m   = b1 m + (1 − b1) g                           state["exp_avg"]
        v   = b2 v + (1 − b2) d                           state["exp_avg_diff"]
        n   = b3 n + (1 − b3)(g + b2 d)²                  state["exp_avg_sq"]
        u   = (m/(1 − b1^t) + b2 v/(1 − b2^t)) / (√n/√(1 − b3^t) + ε)    t: this tensor's state["step"]
        no_prox=False:  θ ← (θ − η u)/(1 + ηλ)            (proximal decay, the default)
        no_prox=True:   θ ← θ(1 − ηλ) − η u

    Departure (step counts): t counts the steps of each parameter, as torch's Adam does; the
    official code counts the steps of the group. The two differ for a parameter whose gradient
    is None on some steps (frozen for a while, a branch not taken): here its first update is a
    first step (d = 0, bias corrections from t = 1); there its moments start at zero under the
    group's larger t, so its first updates are scaled down by about 1 − b1 (0.02). We keep the
    per-parameter count for that reason; with every gradient present at every step the two agree.

    ``max_grad_norm > 0`` first scales every gradient by min(1, max_grad_norm/(‖g‖ + ε)), with
    ‖g‖ the norm over all tensors of all groups.

    Departure (clipping): each group clips with its own max_grad_norm and ε, and a group with
    max_grad_norm = 0 is not clipped. The official code clips every group by
    ``defaults["max_grad_norm"]`` with the ε of the last group (and sums ‖g‖² in float32).
    They agree whenever the groups share max_grad_norm and ε, the usual case; per-group values
    are what a parameter group's settings mean everywhere else in torch.optim.

    :meth:`restart` zeroes m, v, n and t; the next step is then a first step again (d = 0, bias
    corrections from t = 1), which equals the paper's restart state m = g, v = 0, n = g².
    ``restart_every = N`` restarts before the step after every N steps.

    Args:
        params: tensors or parameter groups.
        lr: η (1e-3). betas: (b1, b2, b3), default (0.98, 0.92, 0.99). eps: ε (1e-8).
        weight_decay: λ (0). max_grad_norm: clip threshold (0 = off). no_prox: False.
        restart_every: N (0 = never).
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool.
        fused: compile the per-tensor update with ``torch.compile`` (the first two steps
            compile, see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first, so
            maximizing f takes the steps that minimizing −f takes (torch.optim's convention).

    A parameter group with ``independent_rows=True`` (set by ``registry.create``, for the batched
    2-D simulator) treats row i of every tensor as a separate problem. Adan is elementwise, so
    this only changes ``max_grad_norm``: each row is clipped by its own norm (every tensor must
    then have the same number of rows).

    Paper: https://arxiv.org/abs/2208.06677 (code: https://github.com/sail-sg/Adan)

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = Adan([w], lr=0.1)
        >>> (w ** 2).sum().backward()
        >>> opt.step()
        >>> w.detach()  # the first step moves every element by about η
        tensor([ 0.9000, -1.9000])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        no_prox: bool = False,
        restart_every: int = 0,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        _check_betas(betas)
        hparams = dict(
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            no_prox=no_prox,
            restart_every=restart_every,
        )
        switches = dict(foreach=foreach, fused=fused, maximize=maximize)
        check_switches(switches)
        defaults = {
            **HYPERPARAMS.validate(hparams),
            "betas": tuple(float(b) for b in betas),
            **switches,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Adan step; ``closure`` (optional) recomputes the loss and gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            _check(group)
        global_norms: dict[bool, torch.Tensor] = {}  # by independent_rows, computed once per step
        for group in self.param_groups:
            leaves = [p for p in group["params"] if p.grad is not None]
            if not leaves:
                continue
            if any(p.grad.is_sparse for p in leaves):
                raise RuntimeError("Adan does not support sparse gradients")
            params = [real(p) for p in leaves]  # a complex tensor steps as its real twin
            grads = [-real(p.grad) if group["maximize"] else real(p.grad) for p in leaves]
            rows = rows_of(group)
            if group["max_grad_norm"] > 0.0:
                if rows not in global_norms:
                    global_norms[rows] = self._global_grad_norm(rows)
                coef = (group["max_grad_norm"] / (global_norms[rows] + group["eps"])).clamp_(max=1.0)
                grads = [g * (rows_view(coef, g) if rows else coef) for g in grads]
            states, steps = [], []
            for leaf, p, g in zip(leaves, params, grads, strict=True):
                state = self.state[leaf]
                if not state:
                    state["step"] = 0
                    for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq", "previous_grad"):
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif group["restart_every"] and state["step"] >= group["restart_every"]:
                    _restart_state(state)
                if state["step"] == 0:
                    state["previous_grad"].copy_(g)  # d_1 = 0
                state["step"] += 1
                states.append(state)
                steps.append(state["step"])
            beta1, beta2, beta3 = group["betas"]
            _adan_update(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_diff"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["previous_grad"] for s in states],
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                beta3=beta3,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                no_prox=group["no_prox"],
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss

    def restart(self) -> None:
        """Zero m, v, n and t of every parameter: the next step is a first step again."""
        for state in self.state.values():
            if state:
                _restart_state(state)

    def _global_grad_norm(self, rows: bool) -> torch.Tensor:
        """‖g‖ over every gradient of every group: 0-d, or shape (N,) per row with ``rows``."""
        grads = [real(p.grad) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if rows:
            row_count(grads)  # every tensor has N rows
        norms = [row_reduce(torch.linalg.vector_norm, g, rows).reshape(-1) for g in grads]
        total = torch.linalg.vector_norm(torch.stack(norms), dim=0)
        return total if rows else total.reshape(())


def _check_betas(betas: Any) -> None:
    if not isinstance(betas, Sequence) or len(betas) != 3:
        raise invalid("betas", betas, "three values (beta1, beta2, beta3)")
    for spec, beta in zip(_BETAS, betas, strict=True):
        spec.validate(beta)


def _check(group: dict[str, Any]) -> None:
    HYPERPARAMS.check(group)
    _check_betas(group["betas"])
    check_switches(group)


def _restart_state(state: dict[str, Any]) -> None:
    for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq"):
        state[key].zero_()
    state["step"] = 0


def _adan_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_diffs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    steps: list[int],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    eps: float,
    weight_decay: float,
    no_prox: bool,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply one Adan step in place to ``params`` and the state lists (see :class:`Adan`).

    ``grads`` are already clipped; ``previous_grads[i]`` holds g_{t−1} (at t = 1 the caller sets
    it to g, so d_1 = 0) and holds g_t afterwards; ``steps[i]`` is t after this step.
    ``foreach`` picks the multi-tensor implementation, ``fused`` the compiled per-tensor one;
    all three compute the same numbers.
    """
    if fused:
        update = compiled(_adan_single)
    elif foreach:
        update = _adan_foreach
    else:
        update = _adan_single
    # Bias corrections are computed here, not in the update: compiled, a pow of the step there
    # would run once per element. Flat lists of floats: dynamo makes them inputs after one
    # recompile, where floats nested in tuples would recompile at every step.
    update(
        params,
        grads,
        exp_avgs,
        exp_avg_diffs,
        exp_avg_sqs,
        previous_grads,
        [1.0 - beta1**t for t in steps],
        [1.0 - beta2**t for t in steps],
        [math.sqrt(1.0 - beta3**t) for t in steps],
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        eps=eps,
        weight_decay=weight_decay,
        no_prox=no_prox,
    )


def _adan_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_diffs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    bias_corrections1: list[float],
    bias_corrections2: list[float],
    sqrt_bias_corrections3: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    eps: float,
    weight_decay: float,
    no_prox: bool,
) -> None:
    for p, g, m, v, n, prev, bc1, bc2, sqrt_bc3 in zip(
        params,
        grads,
        exp_avgs,
        exp_avg_diffs,
        exp_avg_sqs,
        previous_grads,
        bias_corrections1,
        bias_corrections2,
        sqrt_bias_corrections3,
        strict=True,
    ):
        # previous_grad is the scratch buffer of this step: d, then g + b2·d, then the
        # denominator and step size, and g_t at the end. No temporary tensor is allocated.
        d = torch.sub(g, prev, out=prev)
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(d, 1.0 - beta2)
        w = d.mul_(beta2).add_(g)
        n.mul_(beta3).addcmul_(w, w, value=1.0 - beta3)
        denom = torch.sqrt(n, out=prev).div_(sqrt_bc3).add_(eps)
        if weight_decay != 0.0 and no_prox:
            p.mul_(1.0 - lr * weight_decay)
        # η/(bc·denom) by in-place multiplies, so lr and the bias corrections are operands, not
        # value= arguments (see _compile.as_input)
        step_size = denom.reciprocal_().mul_(lr / bc1)
        p.addcmul_(m, step_size, value=-1.0)
        p.addcmul_(v, step_size.mul_(beta2 * bc1 / bc2), value=-1.0)
        if weight_decay != 0.0 and not no_prox:
            p.div_(1.0 + lr * weight_decay)
        prev.copy_(g)


def _adan_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_diffs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    previous_grads: list[torch.Tensor],
    bias_corrections1: list[float],
    bias_corrections2: list[float],
    sqrt_bias_corrections3: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    eps: float,
    weight_decay: float,
    no_prox: bool,
) -> None:
    # The same ops as _adan_single, one torch._foreach_* call per op over all tensors.
    prev = previous_grads
    torch._foreach_sub_(prev, grads)
    torch._foreach_neg_(prev)  # d = g − g_{t−1}, bit for bit what torch.sub(g, prev) gives
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_lerp_(exp_avg_diffs, prev, 1.0 - beta2)
    torch._foreach_mul_(prev, beta2)
    torch._foreach_add_(prev, grads)
    torch._foreach_mul_(exp_avg_sqs, beta3)
    torch._foreach_addcmul_(exp_avg_sqs, prev, prev, value=1.0 - beta3)
    torch._foreach_copy_(prev, exp_avg_sqs)
    torch._foreach_sqrt_(prev)
    torch._foreach_div_(prev, sqrt_bias_corrections3)
    torch._foreach_add_(prev, eps)
    if weight_decay != 0.0 and no_prox:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_reciprocal_(prev)
    torch._foreach_mul_(prev, [lr / bc1 for bc1 in bias_corrections1])
    torch._foreach_addcmul_(params, exp_avgs, prev, value=-1.0)
    bias_ratios = zip(bias_corrections1, bias_corrections2, strict=True)
    torch._foreach_mul_(prev, [beta2 * bc1 / bc2 for bc1, bc2 in bias_ratios])
    torch._foreach_addcmul_(params, exp_avg_diffs, prev, value=-1.0)
    if weight_decay != 0.0 and not no_prox:
        torch._foreach_div_(params, 1.0 + lr * weight_decay)
    torch._foreach_copy_(prev, grads)
