"""Muon — orthogonalized momentum for weight matrices, AdamW for the rest (Jordan et al. 2024)."""

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

#: The quintic Newton–Schulz coefficients (a, b, c) of Keller Jordan's Muon:
#: x ← a x + b (x xᵀ) x + c (x xᵀ)² x.
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
#: Lower bound of the norm the iteration's input is divided by (the authors' 1e-7).
NEWTON_SCHULZ_EPS = 1e-7

HYPERPARAMS = ParamSet(
    (
        Param("lr", 0.02, low=0.0, high=1e3, log=True, help="learning rate η of the weight matrices"),
        Param("momentum", 0.95, low=0.0, high=1.0, high_open=True, help="momentum μ: b ← μb + (1 − μ)g"),
        Param("nesterov", True, help="orthogonalize (1 − μ)g + μb instead of b"),
        Param("ns_steps", 5, low=1, high=100, integer=True, help="Newton–Schulz iterations"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="the matrices' decoupled decay λ: θ ← θ(1 − ηλ)"),
        Param(
            "adamw_lr_ratio",
            0.015,
            low=0.0,
            high=1e3,
            log=True,
            help="the AdamW fallback's lr as a multiple of η (3e-4 / 0.02)",
        ),
        Param("adamw_beta1", 0.9, low=0.0, high=1.0, high_open=True, help="the AdamW fallback's β₁"),
        Param("adamw_beta2", 0.95, low=0.0, high=1.0, high_open=True, help="the AdamW fallback's β₂"),
        Param("adamw_eps", 1e-10, low=0.0, high=1.0, log=True, help="the AdamW fallback's ε"),
        Param("adamw_weight_decay", 0.0, low=0.0, high=10.0, help="the AdamW fallback's decoupled decay"),
    )
)
_ADAMW_BETAS = (HYPERPARAMS["adamw_beta1"], HYPERPARAMS["adamw_beta2"])
_GROUP_PARAMS = HYPERPARAMS.without("adamw_beta1", "adamw_beta2")


def newton_schulz(matrix: torch.Tensor, steps: int = 5, eps: float = NEWTON_SCHULZ_EPS) -> torch.Tensor:
    """The quintic Newton–Schulz iteration of Muon: about the orthogonal polar factor U Vᵀ of
    ``matrix`` = U Σ Vᵀ (shape (…, m, n), batched over the leading dimensions).

    x₀ = M/max(‖M‖_F, eps) (transposed when m > n), then ``steps`` times
    x ← a x + (b A + c A²) x with A = x xᵀ and (a, b, c) = :data:`NEWTON_SCHULZ_COEFFICIENTS`.
    The coefficients trade exactness for speed: singular values end between about 0.7 and 1.2,
    not at 1. Computed in float32 at least (float64 stays float64), returned in the input's dtype.
    """
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.to(torch.promote_types(matrix.dtype, torch.float32))
    transpose = x.size(-2) > x.size(-1)
    if transpose:  # x xᵀ on the smaller side
        x = x.mT
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transpose:
        x = x.mT
    return x.to(matrix.dtype)


def split_tensors(
    named: Iterable[tuple[str, torch.Tensor]],
) -> tuple[list[tuple[str, torch.Size]], list[tuple[str, torch.Size]]]:
    """Which tensors :class:`Muon` orthogonalizes and which take its AdamW fallback, by the rule
    its step applies (a tensor, as its real twin, with at least 2 dimensions is a matrix):
    ``(matrices, others)``, each a list of (name, shape).

    >>> split_tensors(torch.nn.Linear(3, 2).named_parameters())
    ([('weight', torch.Size([2, 3]))], [('bias', torch.Size([2]))])
    """
    matrices, others = [], []
    for name, tensor in named:
        (matrices if real(tensor).ndim >= 2 else others).append((name, tensor.shape))
    return matrices, others


class Muon(KeepsAttributes, torch.optim.Optimizer):
    r"""Muon: momentum SGD whose step on a weight matrix is its momentum, orthogonalized.

    Per weight matrix W (a tensor with at least 2 dimensions, viewed as (rows, the rest))::

        W ← W (1 − ηλ)                                decoupled weight decay
        b ← μ b + (1 − μ) g                           state["momentum_buffer"]
        u = (1 − μ) g + μ b   (nesterov)   or   b
        O = NewtonSchulz₅(u)                          ≈ U Vᵀ for u = U Σ Vᵀ    ‖O‖_F: state["update_norm"]
        W ← W − η · √max(1, rows/cols) · O

    Orthogonalizing gives every direction of the update (singular vector pair) about the same
    size, so rarely used directions move as much as dominant ones: steepest descent in the
    spectral norm. :func:`newton_schulz` does it in a few matrix products.

    **Everything that is not a matrix** — biases, gains, scalars (ndim < 2) — takes AdamW, as the
    authors do: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ(1 − η'λ') − η'·m̂/(√v̂ + ε')
    with η' = η · ``adamw_lr_ratio`` (3e-4 at the defaults) and its own β₁', β₂', ε', λ'. In an
    ``independent_rows`` group a row counts: a row of an (N, d) tensor is a vector, so on the 2-D
    surfaces (one point per row) Muon runs this AdamW fallback.

    ``state[p]["update_norm"]`` holds ‖O‖_F of the last step (0-d, or (N, 1, …) per row), before
    the learning rate: about √min(rows, cols) when O is nearly orthogonal.

    Args:
        params: tensors or parameter groups.
        lr: η (0.02). momentum: μ (0.95). nesterov: True. ns_steps: 5. weight_decay: λ (0).
        adamw_lr_ratio: η'/η (0.015). adamw_betas: (0.9, 0.95). adamw_eps: ε' (1e-10).
        adamw_weight_decay: λ' (0).
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool; the
            foreach path orthogonalizes matrices of one shape in one batched iteration.
        fused: compile the per-tensor update with ``torch.compile`` (the first steps compile,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first.

    Departures from the reference (pytorch-optimizer 4.1 ``Muon``, and the authors' code):

    - Newton–Schulz in the parameter's precision, float32 at least (reference and authors:
      bfloat16, about three significant digits, which is what makes it fast on GPUs).
    - Which tensors are matrices is decided by shape (ndim ≥ 2); the reference asks for
      parameter groups flagged ``use_muon``, and the authors put embeddings and the classifier
      head on AdamW too (put such matrices in a group of their own with a small η).
    - The AdamW fallback's lr is a ratio of η, so a schedule that writes η moves both; its t is
      counted per tensor (reference: per group).
    - Complex parameters step as their real twins (the reference refuses them).

    Paper: https://kellerjordan.github.io/posts/muon/ (code: KellerJordan/Muon)

    Example:
        >>> import torch
        >>> w = torch.zeros(2, 3, requires_grad=True)
        >>> opt = Muon([w], lr=0.1, momentum=0.0, ns_steps=20)
        >>> w.grad = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
        >>> opt.step()
        >>> (w.detach() / -0.1).abs().round(decimals=1)  # both directions alike, whatever |g| (≈ 1)
        tensor([[1.1000, 0.0000, 0.0000],
                [0.0000, 1.1000, 0.0000]])
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        adamw_lr_ratio: float = 0.015,
        adamw_betas: Sequence[float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        switches = dict(foreach=foreach, fused=fused, maximize=maximize)
        check_switches(switches)
        hparams = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            weight_decay=weight_decay,
            adamw_lr_ratio=adamw_lr_ratio,
            adamw_eps=adamw_eps,
            adamw_weight_decay=adamw_weight_decay,
        )
        defaults = {
            **_GROUP_PARAMS.validate(hparams),
            "adamw_betas": check_tuple("adamw_betas", adamw_betas, _ADAMW_BETAS),
            **switches,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One Muon step; ``closure`` (optional) recomputes the loss and gradients."""
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
                raise RuntimeError("Muon does not support sparse gradients")
            rows = rows_of(group)
            beta1, beta2 = group["adamw_betas"]
            params, grads, buffers, norms = [], [], [], []  # the matrices: Muon
            others, other_grads, exp_avgs, exp_avg_sqs, corrections1, corrections2 = [], [], [], [], [], []
            for leaf in leaves:
                p = real(leaf)  # a complex tensor steps as its real twin
                g = -real(leaf.grad) if group["maximize"] else real(leaf.grad)
                state = self.state[leaf]
                if row_ndim(p, rows) >= 2:
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        shape = (p.shape[0],) + (1,) * (p.ndim - 1) if rows else ()
                        state["update_norm"] = torch.zeros(shape, dtype=p.dtype, device=p.device)
                    params.append(p)
                    grads.append(g)
                    buffers.append(state["momentum_buffer"])
                    norms.append(state["update_norm"])
                else:  # the AdamW fallback
                    if "exp_avg" not in state:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["step"] += 1
                    others.append(p)
                    other_grads.append(g)
                    exp_avgs.append(state["exp_avg"])
                    exp_avg_sqs.append(state["exp_avg_sq"])
                    corrections1.append(1.0 - beta1 ** state["step"])
                    corrections2.append(math.sqrt(1.0 - beta2 ** state["step"]))
            _muon_update(
                params,
                grads,
                buffers,
                norms,
                others,
                other_grads,
                exp_avgs,
                exp_avg_sqs,
                corrections1,
                corrections2,
                lr=group["lr"],
                momentum=group["momentum"],
                nesterov=group["nesterov"],
                ns_steps=group["ns_steps"],
                weight_decay=group["weight_decay"],
                adamw_lr=group["lr"] * group["adamw_lr_ratio"],
                adamw_betas=group["adamw_betas"],
                adamw_eps=group["adamw_eps"],
                adamw_weight_decay=group["adamw_weight_decay"],
                independent_rows=rows,
                foreach=use_foreach(group["foreach"], params + others),
                fused=group["fused"],
            )
        return loss


def _check(group: dict[str, Any]) -> None:
    _GROUP_PARAMS.check(group)
    check_tuple("adamw_betas", group["adamw_betas"], _ADAMW_BETAS)
    check_switches(group)


def _matrix_shape(p: torch.Tensor, rows: bool) -> tuple[int, ...]:
    """The shape Muon orthogonalizes ``p`` as: (rows, rest), or (N, rows, rest) per row."""
    if rows:
        return (p.shape[0], p.shape[1], math.prod(p.shape[2:]))
    return (p.shape[0], math.prod(p.shape[1:]))


def _lr_factor(shape: tuple[int, ...]) -> float:
    """√max(1, rows/cols): Keller Jordan's scale for tall matrices."""
    return math.sqrt(max(1.0, shape[-2] / shape[-1]))


def _muon_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    update_norms: list[torch.Tensor],
    adamw_params: list[torch.Tensor],
    adamw_grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    weight_decay: float,
    adamw_lr: float,
    adamw_betas: tuple[float, float],
    adamw_eps: float,
    adamw_weight_decay: float,
    independent_rows: bool = False,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply one Muon step in place: the matrices (``params`` …, their ‖O‖_F written into
    ``update_norms``) and the AdamW tensors (``adamw_params`` …, with each tensor's 1 − β₁ᵗ and
    √(1 − β₂ᵗ)).

    Three paths compute the same numbers: the per-tensor loop (the reference, default on CPU),
    ``foreach`` (batched Newton–Schulz per shape) and ``fused`` (the loop compiled).
    """
    lists = (
        params,
        grads,
        momentum_buffers,
        update_norms,
        adamw_params,
        adamw_grads,
        exp_avgs,
        exp_avg_sqs,
        bias_corrections1,
        sqrt_bias_corrections2,
    )
    hparams = dict(
        momentum=momentum,
        nesterov=nesterov,
        ns_steps=ns_steps,
        weight_decay=weight_decay,
        adamw_betas=adamw_betas,
        adamw_eps=adamw_eps,
        adamw_weight_decay=adamw_weight_decay,
        independent_rows=independent_rows,
    )
    if foreach and not fused:
        _muon_foreach(*lists, lr=lr, adamw_lr=adamw_lr, **hparams)
        return
    like = params[0] if params else adamw_params[0]
    update = compiled(_muon_single) if fused else _muon_single
    update(*lists, lr=as_input(lr, like), adamw_lr=as_input(adamw_lr, like), **hparams)


def _muon_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    update_norms: list[torch.Tensor],
    adamw_params: list[torch.Tensor],
    adamw_grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: torch.Tensor,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    weight_decay: float,
    adamw_lr: torch.Tensor,
    adamw_betas: tuple[float, float],
    adamw_eps: float,
    adamw_weight_decay: float,
    independent_rows: bool,
) -> None:
    for p, g, buf, norm in zip(params, grads, momentum_buffers, update_norms, strict=True):
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)
        buf.lerp_(g, 1.0 - momentum)
        u = torch.lerp(g, buf, momentum) if nesterov else buf
        shape = _matrix_shape(p, independent_rows)
        orthogonal = newton_schulz(u.reshape(shape), ns_steps).view(p.shape)
        norm.copy_(row_reduce(torch.linalg.vector_norm, orthogonal, independent_rows))
        p.addcmul_(orthogonal, lr * _lr_factor(shape), value=-1.0)  # lr: a 0-d tensor
    beta1, beta2 = adamw_betas
    for p, g, m, v, bc1, sqrt_bc2 in zip(
        adamw_params,
        adamw_grads,
        exp_avgs,
        exp_avg_sqs,
        bias_corrections1,
        sqrt_bias_corrections2,
        strict=True,
    ):
        if adamw_weight_decay != 0.0:
            p.mul_(1.0 - adamw_lr * adamw_weight_decay)
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(g.square(), 1.0 - beta2)
        denominator = torch.sqrt(v).div_(sqrt_bc2).add_(adamw_eps).mul_(bc1)
        # η'/denominator by in-place ops, so η' is an operand (a 0-d tensor, see _compile.as_input)
        p.addcmul_(m, denominator.reciprocal_().mul_(adamw_lr), value=-1.0)


def _muon_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    update_norms: list[torch.Tensor],
    adamw_params: list[torch.Tensor],
    adamw_grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    bias_corrections1: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    weight_decay: float,
    adamw_lr: float,
    adamw_betas: tuple[float, float],
    adamw_eps: float,
    adamw_weight_decay: float,
    independent_rows: bool,
) -> None:
    # The same ops as _muon_single, one torch._foreach_* call per op; the matrices of one shape
    # are orthogonalized as one batch.
    if params:
        if weight_decay != 0.0:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        torch._foreach_lerp_(momentum_buffers, grads, 1.0 - momentum)
        updates = torch._foreach_lerp(grads, momentum_buffers, momentum) if nesterov else momentum_buffers
        shapes = [_matrix_shape(p, independent_rows) for p in params]
        orthogonal: list[torch.Tensor] = [torch.empty(0)] * len(params)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, shape in enumerate(shapes):
            by_shape.setdefault(shape, []).append(i)
        for shape, index in by_shape.items():
            stacked = torch.stack([updates[i].reshape(shape) for i in index])
            for i, result in zip(index, newton_schulz(stacked, ns_steps).unbind(), strict=True):
                orthogonal[i] = result.view(params[i].shape)
        norms = [row_reduce(torch.linalg.vector_norm, o, independent_rows) for o in orthogonal]
        torch._foreach_copy_(update_norms, norms)
        torch._foreach_mul_(orthogonal, [-lr * _lr_factor(shape) for shape in shapes])
        torch._foreach_add_(params, orthogonal)
    if adamw_params:
        beta1, beta2 = adamw_betas
        if adamw_weight_decay != 0.0:
            torch._foreach_mul_(adamw_params, 1.0 - adamw_lr * adamw_weight_decay)
        torch._foreach_lerp_(exp_avgs, adamw_grads, 1.0 - beta1)
        torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(adamw_grads, adamw_grads), 1.0 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, sqrt_bias_corrections2)
        torch._foreach_add_(denominators, adamw_eps)
        torch._foreach_mul_(denominators, bias_corrections1)
        torch._foreach_addcdiv_(adamw_params, exp_avgs, denominators, value=-adamw_lr)
