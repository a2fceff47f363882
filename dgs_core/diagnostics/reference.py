"""The diagnostics as docs/algorithms.md#diagnostics defines them: every element, plain torch.

Per parameter tensor, on every step t (g_t: the gradient the step consumed, θ_t: the
parameters before it)::

    a_t    = |g_t|  (importance="grad")   or   |g_t ⊙ θ_t|  (importance="taylor")
    I_t    = β I_{t-1} + (1 − β) a_t,   I_0 = 0                importance score (EMA)
    Î_t    = I_t / (1 − β^t)                                    bias-corrected

and on recorded steps::

    η_eff  = |θ_{t+1} − θ_t| / (|g_t| + 1e-12)                  effective lr, per element
    scaling factor = η_eff / η_t                                η_t: the schedule's lr

each summarised over the tensor by its mean and quantiles, with ‖g_t‖, ‖θ_{t+1} − θ_t‖,
‖θ_{t+1}‖, DGS's own scaling factor s_t (``state["scale"]``) summarised the same way, and the
optimizer's own values (:mod:`dgs_core.diagnostics.summaries`). t counts the gradients a tensor
has had, so a tensor without one on some step skips that step.

This is the definition; :class:`dgs_core.diagnostics.fast.Diagnostics` computes the same
records fast (``tests/diagnostics/test_parity.py``). It costs a copy of every parameter per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dgs_core.diagnostics.base import DiagnosticsBase, Observed, grid_axes, view_2d
from dgs_core.diagnostics.records import EPS, DiagnosticRecord, TensorDiagnostics
from dgs_core.diagnostics.summaries import SCALE_STATE, summary_for


@dataclass
class _Step:
    """What ``before_step`` leaves for ``after_step``."""

    sampled: bool
    read_after: bool  # read the gradients after the step (closure optimizers)
    theta: dict[Observed, torch.Tensor]  # θ_t
    abs_grads: dict[Observed, torch.Tensor]  # |g_t| of the tensors that had a gradient
    batch_size: int | None


class ReferenceDiagnostics(DiagnosticsBase):
    """docs/algorithms.md#diagnostics on every element; records computed on their step.

    The arguments are :class:`~dgs_core.diagnostics.base.DiagnosticsBase`'s, the same as the
    fast path's; ``sample_size``, ``seed`` and ``lazy`` change nothing here, and with
    ``flat_grads`` the gradients are still read from ``p.grad`` (views of the buffer).
    """

    def _build(self) -> None:
        """I_t of every element, and per tensor the count of gradients seen."""
        self._importance = {o: torch.zeros_like(_values(o.param)) for o in self._observed}  # I_t
        self._count = dict.fromkeys(self._observed, 0)  # gradients seen: the t of Î_t
        self._pending: _Step | None = None

    def reset(self) -> None:
        """Forget the importance EMA and the step count."""
        for o in self._observed:
            self._importance[o].zero_()
            self._count[o] = 0
        self._t, self._pending = 0, None

    def state_dict(self) -> dict[str, Any]:
        """The importance EMA and the step counts, to resume a run with identical records."""
        return {
            "step": self._t,
            "importance": {o.name: self._importance[o].clone() for o in self._observed},
            "count": {o.name: self._count[o] for o in self._observed},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ``ValueError`` when it belongs to other tensors."""
        if set(state["importance"]) != set(self.names):
            raise ValueError(
                f"Invalid state: tensors {sorted(state['importance'])} (must be {sorted(self.names)})"
            )
        for o in self._observed:
            self._importance[o] = state["importance"][o.name].clone().to(self._importance[o])
            self._count[o] = int(state["count"][o.name])
        self._t, self._pending = int(state["step"]), None

    def before_step(self, *, record: bool | None = None) -> None:
        """Call after backward (and clipping), just before ``optimizer.step()``."""
        if self._pending is not None:
            raise RuntimeError("before_step() called twice: call after_step() after every optimizer.step()")
        self._t += 1
        sampled = self._sampled(record)
        theta = {o: _values(o.param) for o in self._observed}
        read_after = self.grads == "after" or all(o.param.grad is None for o in self._observed)
        abs_grads = {} if read_after else self._read_grads(theta)
        self._pending = _Step(sampled, read_after, theta, abs_grads, self._batch_size() if sampled else None)

    def after_step(self, step: int, lr: float | None = None) -> DiagnosticRecord | None:
        """Call just after ``optimizer.step()``; the record on sampled steps, else None.
        ``lr``: the schedule's η_t (default: each tensor's parameter-group lr)."""
        if self._pending is None:
            raise RuntimeError("after_step() without before_step(): call it before optimizer.step()")
        done, self._pending = self._pending, None
        abs_grads = self._read_grads(done.theta) if done.read_after else done.abs_grads
        if not done.sampled:
            return None
        return self._record(int(step), lr, done.theta, abs_grads, done.batch_size)

    def _read_grads(self, theta: dict[Observed, torch.Tensor]) -> dict[Observed, torch.Tensor]:
        """|g_t| of each tensor that has a gradient, and its importance EMA update."""
        if self._flat_grads is not None:
            self._check_flat_grads()
        abs_grads = {}
        for o in self._observed:
            if o.param.grad is None:
                continue
            abs_grad = _values(o.param.grad).abs()
            score = abs_grad if self.importance == "grad" else (abs_grad * theta[o]).abs()
            self._importance[o] = self.beta * self._importance[o] + (1 - self.beta) * score
            self._count[o] += 1
            abs_grads[o] = abs_grad
        return abs_grads

    def _record(
        self,
        step: int,
        lr: float | None,
        theta: dict[Observed, torch.Tensor],
        abs_grads: dict[Observed, torch.Tensor],
        batch_size: int | None,
    ) -> DiagnosticRecord:
        groups = self.optimizer.param_groups
        summary = summary_for(type(self.optimizer))
        tensors, elements = [], {}
        for o, abs_grad in abs_grads.items():  # the optimizer's order
            theta_next = _values(o.param)
            update = theta[o] - theta_next
            lr_eff = update.abs() / (abs_grad + EPS)
            eta = float(lr if lr is not None else groups[o.group]["lr"])
            per_element = {
                "importance": self._importance[o] / (1 - self.beta ** self._count[o]),
                "lr_eff": lr_eff,
                "scaling_factor": lr_eff / eta if eta != 0 else torch.full_like(lr_eff, math.nan),
            }
            state = self.optimizer.state.get(o.param, {})
            scale = state.get(SCALE_STATE)
            if isinstance(scale, torch.Tensor) and scale.shape == o.param.shape:
                per_element["scale"] = _values(scale)
            stats = {quantity: self._mean_and_quantiles(v) for quantity, v in per_element.items()}
            stats["grad_norm"] = {"value": _norm(abs_grad)}
            stats["update_norm"] = {"value": _norm(update)}
            stats["param_norm"] = {"value": _norm(theta_next)}
            if summary is not None:
                own = summary(self.optimizer, groups[o.group], o.param, state, lambda x: x.reshape(-1))
                stats.update({key: {"value": _number(value)} for key, value in own.items()})
            numel = o.param.numel()
            tensors.append(TensorDiagnostics(o.name, tuple(o.param.shape), numel, numel, stats))
            if o.grid is not None:  # the kept grid of the tensor's 2-D view
                rows, cols = grid_axes(o.param, o.grid)
                for quantity, values in per_element.items():
                    grid = values.reshape(view_2d(o.param))[rows][:, cols]
                    elements[f"{o.name}/{quantity}"] = grid.to("cpu", torch.float32).contiguous()
        record_lr = float(lr if lr is not None else groups[0]["lr"])
        return DiagnosticRecord(step, record_lr, batch_size, tuple(tensors), elements)

    def _mean_and_quantiles(self, values: torch.Tensor) -> dict[str, float]:
        flat = values.reshape(-1).double()
        # linear interpolation, as torch.quantile (which stops at 2^24 elements)
        quantiles = np.quantile(flat.cpu().numpy(), self.quantiles).tolist()
        return {"mean": flat.mean().item(), **dict(zip(self.statistics[1:], quantiles, strict=True))}


def _values(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy, in float32 at least (half-precision parameters are summarised in float32)."""
    return tensor.detach().to(torch.promote_types(tensor.dtype, torch.float32), copy=True)


def _norm(x: torch.Tensor) -> float:
    return torch.linalg.vector_norm(x.double()).item()


def _number(value: float | torch.Tensor) -> float:
    """An optimizer's value as a float: a tensor of several elements gives its mean."""
    if isinstance(value, torch.Tensor):
        return value.detach().double().mean().item()
    return float(value)
