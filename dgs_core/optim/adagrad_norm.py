"""AdaGrad-Norm: one adaptive scalar step size per parameter group (Ward, Wu, Bottou 2019).

    b_t² = b_{t−1}² + ‖g_t‖²        (norm over every tensor of the group; b_0 = 0.01 by default)
    θ    ← θ − η g_t / b_t

Paper: https://arxiv.org/abs/1806.01811 (used by Lau, Liu, Kolar 2024 for AdAdaGrad-Norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

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
from dgs_core.params import Param, ParamSet

HYPERPARAMS = ParamSet(
    (
        Param("lr", 1.0, low=0.0, high=1e3, log=True, help="learning rate η"),
        Param(
            "b0",
            0.01,
            low=0.0,
            high=1e3,
            low_open=True,
            log=True,
            help="initial accumulator b₀ (b₀² is the start)",
        ),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ (coupled: g ← g + λθ)"),
    )
)


class AdaGradNorm(KeepsAttributes, torch.optim.Optimizer):
    r"""AdaGrad-Norm: θ ← θ − η g / b_t with b_t² = b_{t−1}² + ‖g_t‖², one b per group.

    The norm ‖g_t‖ runs over every tensor of the parameter group (with coupled weight decay,
    g ← g + λθ first), so the whole group shares one step size η / b_t, which shrinks as
    squared gradient norms accumulate. That makes the method robust to the choice of η.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default 1.0).
        b0: initial accumulator b₀ > 0 (default 0.01, so b₀² = 1e-4); read when a group's
            accumulator is created (its first step), later changes have no effect.
        weight_decay: coupled weight decay λ (default 0).
        foreach: use torch's multi-tensor kernels (None: on when every parameter is on CUDA).
        fused: compile the per-tensor update with ``torch.compile`` (the first step compiles,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first, so
            maximizing f takes the steps that minimizing −f takes (torch.optim's convention).

    A parameter group with ``independent_rows=True`` (set by ``registry.create``, for the batched
    2-D simulator) keeps one accumulator per row instead of one per group (shape (N,)): every
    tensor of the group has N rows (leading dimension), and row r only ever sees the gradients
    of row r, so each row behaves exactly like its own AdaGrad-Norm.

    The accumulator b_t² of a group lives in ``state[p]["b_squared"]`` of the group's first
    parameter, so ``state_dict()`` / ``load_state_dict()`` carry it like any other state.
    The diagnostics report b_t (:mod:`dgs_core.diagnostics.summaries`).

    Example:
        >>> import torch
        >>> w = torch.tensor([3.0, 4.0], requires_grad=True)
        >>> opt = AdaGradNorm([w], lr=1.0, b0=0.0001)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> opt.step()
        >>> w.detach()  # b₁ ≈ ‖g‖ = 5, so θ − g/5
        tensor([2.4000, 3.2000])

    Departures from the authors' code (timlautk/AdAdaGrad, ``Adagradnorm``), both deliberate:

    - b₀: our b₀ = 0.01 (docs/algorithms.md#adagrad_norm) is b itself, so the accumulator starts
      at b₀² = 1e-4. The
      authors' code starts its accumulator (b²) at ``initial_accumulator_value=1e-2``, which is
      b₀ = 0.1; pass ``b0=0.1`` to reproduce their runs. b₀ only matters while Σ‖g‖² is small
      against b₀²; the smaller value lets the first step be close to η·g/‖g‖, and the 2-D
      surface defaults are tuned with it.
    - one accumulator per parameter group, as Ward, Wu and Bottou define the method; the
      authors' code keeps one per row of each weight (per output channel), which is not
      AdaGrad-Norm (docs/algorithms.md#adagrad_norm).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        b0: float = 0.01,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        values = HYPERPARAMS.validate({"lr": lr, "b0": b0, "weight_decay": weight_decay})
        switches = {"foreach": foreach, "fused": fused, "maximize": maximize}
        check_switches(switches)
        super().__init__(params, {**values, **switches})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # checked before it joins: a refused group is not kept
        params = param_group["params"]
        param_group = {**param_group, "params": [params] if isinstance(params, Tensor) else list(params)}
        group = {**self.defaults, **param_group}
        HYPERPARAMS.check(group)
        check_switches(group)
        if rows_of(group):
            row_count(group["params"])  # fail early on mismatched row counts
        super().add_param_group(param_group)

    # one signature for torch's closure overloads
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]  # (reason above)
        for group in self.param_groups:
            HYPERPARAMS.check(group)
            check_switches(group)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            leaves = [p for p in group["params"] if p.grad is not None]
            if not leaves:
                continue
            if any(p.grad.is_sparse for p in leaves):
                raise RuntimeError("AdaGradNorm does not support sparse gradients")
            params = [real(p) for p in leaves]  # a complex tensor steps as its real twin
            grads = [-real(p.grad) if group["maximize"] else real(p.grad) for p in leaves]
            if group["weight_decay"] != 0:
                grads = [g.add(p, alpha=group["weight_decay"]) for g, p in zip(grads, params, strict=True)]
            _adagrad_norm_update(
                params,
                grads,
                self._accumulator(group),
                lr=group["lr"],
                independent_rows=rows_of(group),
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss

    def _accumulator(self, group: dict[str, Any]) -> Tensor:
        """The group's b_t² (created at b₀² on first use)."""
        anchor = group["params"][0]
        state = self.state[anchor]
        if "b_squared" not in state:
            shape = (row_count(group["params"]),) if rows_of(group) else ()
            dtype = real(anchor).dtype  # a real b² for a complex parameter too
            state["b_squared"] = torch.full(shape, group["b0"] ** 2, dtype=dtype, device=anchor.device)
        return state["b_squared"]


def _sum_of_squares(x: Tensor, dim: int | None = None) -> Tensor:
    return x.square().sum() if dim is None else x.square().sum(dim=dim)


def _squared_norm(grads: list[Tensor], *, independent_rows: bool) -> Tensor:
    """Σ‖g‖² over the group's tensors: 0-d, or one per row (shape (N,)) with ``independent_rows``."""
    if independent_rows:
        # sum's start 0 + Tensors: a Tensor
        return sum(row_reduce(_sum_of_squares, g, True).reshape(-1) for g in grads)  # type: ignore[return-value]  # (reason above)
    # sum's start 0 + Tensors: a Tensor
    return sum(_sum_of_squares(g) for g in grads)  # type: ignore[return-value]  # (reason above)


def _adagrad_norm_update(
    params: list[Tensor],
    grads: list[Tensor],
    b_squared: Tensor,
    *,
    lr: float,
    independent_rows: bool,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply b² ← b² + ‖g‖²; θ ← θ − η g / b in place (b² per row with ``independent_rows``).

    ``foreach`` picks the multi-tensor implementation, ``fused`` the compiled per-tensor one;
    all three compute the same numbers.
    """
    if fused:
        update = compiled(_adagrad_norm_single)
    else:
        update = _adagrad_norm_foreach if foreach else _adagrad_norm_single
    update(params, grads, b_squared, lr=lr, independent_rows=independent_rows)


def _adagrad_norm_single(
    params: list[Tensor], grads: list[Tensor], b_squared: Tensor, *, lr: float, independent_rows: bool
) -> None:
    b_squared.add_(_squared_norm(grads, independent_rows=independent_rows))
    b = b_squared.sqrt()
    for p, g in zip(params, grads, strict=True):
        p.sub_(g.div(rows_view(b, g) if independent_rows else b).mul_(lr))


def _adagrad_norm_foreach(
    params: list[Tensor], grads: list[Tensor], b_squared: Tensor, *, lr: float, independent_rows: bool
) -> None:
    if independent_rows:
        b_squared.add_(_squared_norm(grads, independent_rows=True))
        b = b_squared.sqrt()
        steps = torch._foreach_div(grads, [rows_view(b, g) for g in grads])
    else:
        norms = torch._foreach_norm(grads)
        b_squared.add_(torch.stack(norms).square().sum())
        steps = torch._foreach_div(grads, b_squared.sqrt())
    torch._foreach_mul_(steps, lr)
    torch._foreach_sub_(params, steps)
