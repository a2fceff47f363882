"""AdaGrad-Norm: one adaptive scalar step size per parameter group (Ward, Wu, Bottou 2019).

    b_t² = b_{t−1}² + ‖g_t‖²        (norm over every tensor of the group; b_0 given)
    θ    ← θ − η g_t / b_t

Paper: https://arxiv.org/abs/1806.01811 (used by Lau, Liu, Kolar 2024 for AdAdaGrad-Norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from dgs_core.optim._compile import check_switches, compiled, use_foreach
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


class AdaGradNorm(torch.optim.Optimizer):
    r"""AdaGrad-Norm: θ ← θ − η g / b_t with b_t² = b_{t−1}² + ‖g_t‖², one b per group.

    The norm ‖g_t‖ runs over every tensor of the parameter group (with coupled weight decay,
    g ← g + λθ first), so the whole group shares one step size η / b_t, which shrinks as
    squared gradient norms accumulate. That makes the method robust to the choice of η.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default 1.0).
        b0: initial accumulator b₀ > 0 (default 0.01); read when a group's accumulator is
            created (its first step), later changes have no effect.
        weight_decay: coupled weight decay λ (default 0).
        independent_rows: keep one accumulator per row instead of per group (shape (N,)):
            every tensor of the group has N rows (leading dimension), and row r only ever sees
            the gradients of row r. The 2-D surface lab stacks N independent problems this
            way; each row then behaves exactly like its own AdaGrad-Norm.
        foreach: use torch's multi-tensor kernels (None: on when every parameter is on CUDA).
        fused: compile the per-tensor update with ``torch.compile`` (the first step compiles,
            see :mod:`dgs_core.optim._compile`).

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

    Notes:
        The authors' AdAdaGrad repository keeps one accumulator per row of each weight;
        that is not AdaGrad-Norm, and this class does not copy it (SPEC §1.6).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        b0: float = 0.01,
        weight_decay: float = 0.0,
        *,
        independent_rows: bool = False,
        foreach: bool | None = None,
        fused: bool = False,
    ) -> None:
        values = HYPERPARAMS.validate({"lr": lr, "b0": b0, "weight_decay": weight_decay})
        switches = {"foreach": foreach, "fused": fused, "independent_rows": independent_rows}
        check_switches(switches)
        super().__init__(params, {**values, **switches})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        HYPERPARAMS.check(group)
        check_switches(group)
        if group["independent_rows"]:
            _rows(group["params"])  # fail early on mismatched row counts

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        for group in self.param_groups:
            HYPERPARAMS.check(group)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdaGradNorm does not support sparse gradients")
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = [g.add(p, alpha=group["weight_decay"]) for g, p in zip(grads, params, strict=True)]
            _adagrad_norm_update(
                params, grads, self._accumulator(group), lr=group["lr"],
                independent_rows=group["independent_rows"],
                foreach=use_foreach(group["foreach"], params), fused=group["fused"],
            )  # fmt: skip
        return loss

    def _accumulator(self, group: dict[str, Any]) -> Tensor:
        """The group's b_t² (created at b₀² on first use)."""
        anchor = group["params"][0]
        state = self.state[anchor]
        if "b_squared" not in state:
            shape = (_rows(group["params"]),) if group["independent_rows"] else ()
            state["b_squared"] = torch.full(shape, group["b0"] ** 2, dtype=anchor.dtype, device=anchor.device)
        return state["b_squared"]


def _rows(params: list[Tensor]) -> int:
    rows = {p.shape[0] if p.ndim else None for p in params}
    if len(rows) != 1 or None in rows:
        shapes = ", ".join(str(tuple(p.shape)) for p in params)
        raise ValueError(
            f"Invalid independent_rows: True needs every tensor of a group to share its leading "
            f"dimension (got shapes {shapes})"
        )
    return rows.pop()  # type: ignore[return-value]


def _squared_norm(grads: list[Tensor], *, independent_rows: bool) -> Tensor:
    if independent_rows:
        return sum(g.reshape(g.shape[0], -1).square().sum(dim=1) for g in grads)  # type: ignore[return-value]
    return sum(g.square().sum() for g in grads)  # type: ignore[return-value]


def _row_view(b: Tensor, g: Tensor) -> Tensor:
    """Broadcast a per-row b (shape (N,)) against a gradient of shape (N, ...)."""
    return b.reshape(b.shape + (1,) * (g.ndim - 1))


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
        # torch 2.13's compiled code drops in-place updates of 0-dim inputs (the scalar b² and
        # scalar parameters): hand them over as 1-element views, which it writes back.
        params, grads = ([t.view(1) if t.ndim == 0 else t for t in ts] for ts in (params, grads))
        b_squared = b_squared.view(1) if b_squared.ndim == 0 else b_squared
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
        p.sub_(g.div(_row_view(b, g) if independent_rows else b).mul_(lr))


def _adagrad_norm_foreach(
    params: list[Tensor], grads: list[Tensor], b_squared: Tensor, *, lr: float, independent_rows: bool
) -> None:
    if independent_rows:
        b_squared.add_(_squared_norm(grads, independent_rows=True))
        b = b_squared.sqrt()
        steps = torch._foreach_div(grads, [_row_view(b, g) for g in grads])
    else:
        norms = torch._foreach_norm(grads)
        b_squared.add_(torch.stack(norms).square().sum())
        steps = torch._foreach_div(grads, b_squared.sqrt())
    torch._foreach_mul_(steps, lr)
    torch._foreach_sub_(params, steps)
