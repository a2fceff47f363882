"""DGS — Dynamic Gradient Scaling (Mann, IJRASET 2024), as DGS Lab interprets it (docs/algorithms.md#dgs)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from dgs_core.metrics import spike_mask
from dgs_core.optim._compile import (
    as_input,
    check_switches,
    compiled,
    row_reduce,
    rows_of,
    use_foreach,
)
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet, invalid

HYPERPARAMS = ParamSet(
    (
        Param("lr", 0.1, low=0.0, high=1e3, log=True, help="base learning rate η"),
        Param("beta", 0.9, low=0.0, high=1.0, high_open=True, help="importance EMA β"),
        Param("gamma", 1.0, low=0.0, high=4.0, help="scaling exponent γ: s = r^(−γ); 0 gives SGD"),
        Param("s_min", 0.1, low=0.0, high=1.0, low_open=True, log=True, help="smallest scale s_min"),
        Param("s_max", 10.0, low=1.0, high=1e3, log=True, help="largest scale s_max"),
        Param("momentum", 0.9, low=0.0, high=1.0, high_open=True, help="momentum μ"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ (coupled: g ← g + λθ)"),
        Param("eps", 1e-12, low=0.0, high=1.0, low_open=True, log=True, help="ε in r and in (r + ε)^(−γ)"),
        Param("importance", "grad", choices=("grad", "taylor"), help="a = |g| or |g ⊙ θ|"),
        Param("reset", "never", choices=("never", "every", "spike"), help="when to reset the state"),
        Param("reset_every", 100, low=1, high=1e9, integer=True, help="N for reset='every'"),
        Param("reset_mode", "soft", choices=("soft", "hard"), help="soft: I, v ← ρ·I, ρ·v; hard: clear"),
        Param("rho", 0.5, low=0.0, high=1.0, help="soft-reset factor ρ"),
        Param(
            "spike_window", 20, low=1, high=1e6, integer=True, help="spike window W (see the spike metric)"
        ),
        Param("spike_threshold", 0.5, low=0.0, high=1e3, help="spike threshold τ (see the spike metric)"),
    )
)
# s_min ≤ 1 ≤ s_max by these ranges, so γ = 0 always gives s = 1: plain SGD with momentum.

_RESET_MODES = ("soft", "hard")


class DGS(KeepsAttributes, torch.optim.Optimizer):
    r"""Dynamic Gradient Scaling: per-parameter learning rates from EMA importance scores.

    The paper states the idea ("parameters with higher gradients receive proportionally smaller
    updates") but publishes no equation and no code. **Interpretation** (docs/algorithms.md#dgs), per tensor,
    elementwise unless said::

        g    ← g + λθ                                   (coupled weight decay)
        a_t  = |g|  (importance="grad")   or   |g ⊙ θ|  (importance="taylor")
        I_t  = β I_{t−1} + (1 − β) a_t,   I_0 = 0       state["importance"]
        Î_t  = I_t / (1 − β^t)
        r_t  = Î_t / (mean(Î_t) + ε)                    mean over the tensor (or the row, below)
                                                        single-element tensor: r_t = 1, s_t = 1
        s_t  = clip((r_t + ε)^(−γ), s_min, s_max)       state["scale"]
        v_t  = μ v_{t−1} + s_t ⊙ g                      state["momentum_buffer"]
        θ    ← θ − η v_t                                η_t = η·s_t: adaptive_lr(p)

    γ = 1 equalises per-element steps within a tensor; γ = 0 is SGD with momentum.

    A single-element tensor (a scalar parameter, or a one-element row in an ``independent_rows``
    group) is its own mean: r_t = Î/(Î + ε) = 1 and s_t = 1 (up to ε), so DGS steps it as plain
    SGD with momentum. Scaling is relative to the rest of the tensor, and there is none; this
    is by design, not a fallback. (Until its first nonzero gradient, I = 0 gives r_t = 0 and
    s_t = s_max, which multiplies a zero gradient.)

    Resets (the paper's "soft" and "hard" reset conditions, read as optimizer-state resets):
    ``hard`` clears I, v and t; ``soft`` multiplies I and v by ρ and keeps t (bias correction
    continues). Triggers, per parameter group:

    - ``reset="never"`` (default);
    - ``reset="every"``: before the step after every ``reset_every``-th step (t = N, 2N, … for
      soft resets; a hard reset restarts t, so it fires whenever t reaches N again);
    - ``reset="spike"``: when the loss spikes, L_t > (1 + τ)·median(L_{t−W}, …, L_{t−1}) with
      the up-to-W losses seen before (docs/algorithms.md#metrics via :func:`dgs_core.metrics.spike_mask`;
      W = ``spike_window``, τ = ``spike_threshold``), once per run of consecutive spikes,
      before that step's update. The optimizer sees the loss through ``step(closure)`` or
      ``observe_loss(loss)``; use one of the two per step.

    ``reset(mode)`` resets by hand. The diagnostics report t and the fraction of scales at s_min
    or s_max (:mod:`dgs_core.diagnostics.summaries`).

    Interpretation details beyond the equations of docs/algorithms.md#dgs: the importance is
    taken of the decayed gradient g + λθ (the gradient the step uses); r_t is computed as
    I_t/(mean(I_t) + ε(1 − β^t)), equal to the formula above without forming Î_t.

    Args:
        params: tensors or parameter groups.
        lr: η (0.1). beta: β (0.9). gamma: γ (1.0). s_min, s_max: scale bounds (0.1, 10).
        momentum: μ (0.9). weight_decay: λ (0). eps: ε (1e-12).
        importance: "grad" or "taylor". reset: "never", "every" or "spike".
        reset_every: N (100). reset_mode: "soft" or "hard". rho: ρ (0.5).
        spike_window: W (20). spike_threshold: τ (0.5).
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool.
        fused: compile the per-tensor update with ``torch.compile`` (the first two steps
            compile, see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first, so
            maximizing f takes the steps that minimizing −f takes (torch.optim's convention).
            The spike test (``reset="spike"``) still reads the closure's value, or
            ``observe_loss``'s, as a loss: spikes are sudden rises of that value.

    A parameter group with ``independent_rows=True`` (set by ``registry.create``, for the batched
    2-D simulator) treats row i of every tensor as a separate problem: the mean in r_t runs over
    each row.

    Paper: https://doi.org/10.22214/ijraset.2024.62669

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = DGS([w], lr=0.1)
        >>> (w ** 2).sum().backward()
        >>> opt.step()
        >>> opt.state[w]["scale"]  # |g| = (2, 4): the larger gradient gets the smaller scale
        tensor([1.5000, 0.7500])
    """

    _attributes = ("_loss_history",)  # the losses observe_loss saw (KeepsAttributes)

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        beta: float = 0.9,
        gamma: float = 1.0,
        s_min: float = 0.1,
        s_max: float = 10.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eps: float = 1e-12,
        importance: str = "grad",
        reset: str = "never",
        reset_every: int = 100,
        reset_mode: str = "soft",
        rho: float = 0.5,
        spike_window: int = 20,
        spike_threshold: float = 0.5,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        hparams = dict(
            lr=lr,
            beta=beta,
            gamma=gamma,
            s_min=s_min,
            s_max=s_max,
            momentum=momentum,
            weight_decay=weight_decay,
            eps=eps,
            importance=importance,
            reset=reset,
            reset_every=reset_every,
            reset_mode=reset_mode,
            rho=rho,
            spike_window=spike_window,
            spike_threshold=spike_threshold,
        )
        switches = dict(foreach=foreach, fused=fused, maximize=maximize)
        check_switches(switches)
        self._loss_history: list[float] = []
        super().__init__(params, {**HYPERPARAMS.validate(hparams), **switches})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One DGS step. ``closure`` (optional) recomputes the loss; DGS observes it for spikes."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            self.observe_loss(loss)
        for group in self.param_groups:
            _check(group)
            params, grads, importances, buffers, scales, bias_corrections = [], [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("DGS does not support sparse gradients")
                x, g = real(p), real(p.grad)  # a complex tensor steps as its real twin
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["importance"] = torch.zeros_like(x, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(x, memory_format=torch.preserve_format)
                    state["scale"] = torch.ones_like(x, memory_format=torch.preserve_format)
                elif (
                    group["reset"] == "every"
                    and state["step"] > 0
                    and state["step"] % group["reset_every"] == 0
                ):
                    _reset_state(state, group["reset_mode"], group["rho"])
                state["step"] += 1
                params.append(x)
                grads.append(-g if group["maximize"] else g)
                importances.append(state["importance"])
                buffers.append(state["momentum_buffer"])
                scales.append(state["scale"])
                bias_corrections.append(1.0 - group["beta"] ** state["step"])
            if not params:
                continue
            _dgs_update(
                params,
                grads,
                importances,
                buffers,
                scales,
                bias_corrections,
                lr=group["lr"],
                beta=group["beta"],
                gamma=group["gamma"],
                s_min=group["s_min"],
                s_max=group["s_max"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                importance=group["importance"],
                independent_rows=rows_of(group),
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss

    def adaptive_lr(self, param: torch.Tensor) -> torch.Tensor:
        """η_t = η·s_t per element of ``param``: its group's lr times its last scale (η before any step).

        For a complex ``param``, per real number: the shape of its ``view_as_real`` twin.
        """
        group = self._group_of(param)
        state = self.state.get(param)
        if not state:
            return torch.full_like(real(param), group["lr"])
        return group["lr"] * state["scale"]

    def _group_of(self, param: torch.Tensor) -> dict[str, Any]:
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise ValueError("Invalid param: not one of this optimizer's parameters")

    def reset(self, mode: str | None = None) -> None:
        """Reset every parameter's state now: "hard" clears I, v and t; "soft" scales I and v by ρ.

        ``mode=None`` uses each group's ``reset_mode``.
        """
        if mode is not None and mode not in _RESET_MODES:
            raise invalid("mode", mode, "one of 'soft', 'hard'")
        for group in self.param_groups:
            _check(group)
            self._reset_group(group, mode or group["reset_mode"])

    def observe_loss(self, loss: float | torch.Tensor) -> bool:
        """Record the loss at the current parameters; True if a ``reset="spike"`` group was reset.

        Called by ``step(closure)``; call it yourself (before ``step()``) when stepping without a
        closure. A group resets at the first step of each run of consecutive spikes.
        """
        value = float(loss)
        history = self._loss_history
        was_reset = False
        for group in self.param_groups:
            _check(group)
            if group["reset"] != "spike":
                continue
            # Is this loss a spike, and was the previous one? (The leading NaN only makes the
            # sequence long enough to unpack; spike_mask leaves non-finite losses out.)
            losses = [math.nan, *history, value]
            *_, previous_was_spike, is_spike = spike_mask(
                losses,
                window=int(group["spike_window"]),
                tau=group["spike_threshold"],
                since=len(losses) - 2,
            )
            if is_spike and not previous_was_spike:
                self._reset_group(group, group["reset_mode"])
                was_reset = True
        history.append(value)
        # one more than the widest window: enough to tell whether the previous loss was a spike
        keep = 1 + max(int(group["spike_window"]) for group in self.param_groups)
        del history[:-keep]
        return was_reset

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["loss_history"] = list(self._loss_history)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        history = state_dict.pop("loss_history", [])
        super().load_state_dict(state_dict)
        self._loss_history = [float(x) for x in history]

    def _reset_group(self, group: dict[str, Any], mode: str) -> None:
        for p in group["params"]:
            state = self.state.get(p)
            if state:
                _reset_state(state, mode, group["rho"])


def _check(group: dict[str, Any]) -> None:
    HYPERPARAMS.check(group)
    check_switches(group)


def _reset_state(state: dict[str, Any], mode: str, rho: float) -> None:
    if mode == "hard":
        state["importance"].zero_()
        state["momentum_buffer"].zero_()
        state["step"] = 0
    else:
        state["importance"].mul_(rho)
        state["momentum_buffer"].mul_(rho)


def _dgs_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    importances: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    scales: list[torch.Tensor],
    bias_corrections: list[float],
    *,
    lr: float,
    beta: float,
    gamma: float,
    s_min: float,
    s_max: float,
    momentum: float,
    weight_decay: float,
    eps: float,
    importance: str,
    independent_rows: bool = False,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply one DGS step in place to ``params`` and the state lists (see :class:`DGS`).

    ``bias_corrections[i]`` is 1 − β^t for tensor i. ``foreach`` picks the multi-tensor
    implementation, ``fused`` the compiled per-tensor one; all three compute the same numbers.
    """
    if foreach and not fused:
        update, step_lr = _dgs_foreach, lr
    else:
        update, step_lr = compiled(_dgs_single) if fused else _dgs_single, as_input(lr, params[0])
    update(
        params,
        grads,
        importances,
        momentum_buffers,
        scales,
        bias_corrections,
        lr=step_lr,
        beta=beta,
        gamma=gamma,
        s_min=s_min,
        s_max=s_max,
        momentum=momentum,
        weight_decay=weight_decay,
        eps=eps,
        importance=importance,
        independent_rows=independent_rows,
    )


def _dgs_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    importances: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    scales: list[torch.Tensor],
    bias_corrections: list[float],
    *,
    lr: torch.Tensor,
    beta: float,
    gamma: float,
    s_min: float,
    s_max: float,
    momentum: float,
    weight_decay: float,
    eps: float,
    importance: str,
    independent_rows: bool,
) -> None:
    for p, g, imp, buf, s, bc in zip(
        params, grads, importances, momentum_buffers, scales, bias_corrections, strict=True
    ):
        if weight_decay != 0.0:
            g = g.add(p, alpha=weight_decay)
        # a_t goes into the scale buffer, which is scratch until s_t is written there
        if importance == "taylor":
            torch.mul(g, p, out=s).abs_()
        else:
            torch.abs(g, out=s)
        imp.lerp_(s, 1.0 - beta)
        # r = Î/(mean Î + ε) with Î = I/bc is I·k with k = 1/(mean I + ε·bc): one pass, no Î tensor
        k = row_reduce(torch.mean, imp, independent_rows).add_(eps * bc).reciprocal_()
        torch.mul(imp, k, out=s).add_(eps).pow_(-gamma).clamp_(s_min, s_max)
        buf.mul_(momentum).addcmul_(s, g)
        p.addcmul_(buf, lr, value=-1.0)  # lr: a 0-d tensor (see _compile.as_input)


def _dgs_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    importances: list[torch.Tensor],
    momentum_buffers: list[torch.Tensor],
    scales: list[torch.Tensor],
    bias_corrections: list[float],
    *,
    lr: float,
    beta: float,
    gamma: float,
    s_min: float,
    s_max: float,
    momentum: float,
    weight_decay: float,
    eps: float,
    importance: str,
    independent_rows: bool,
) -> None:
    # The same ops as _dgs_single, one torch._foreach_* call per op over all tensors.
    if weight_decay != 0.0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_copy_(scales, grads)
    if importance == "taylor":
        torch._foreach_mul_(scales, params)
    torch._foreach_abs_(scales)
    torch._foreach_lerp_(importances, scales, 1.0 - beta)
    ks = [row_reduce(torch.mean, imp, independent_rows) for imp in importances]
    torch._foreach_add_(ks, [eps * bc for bc in bias_corrections])
    torch._foreach_reciprocal_(ks)
    torch._foreach_copy_(scales, importances)
    torch._foreach_mul_(scales, ks)
    torch._foreach_add_(scales, eps)
    torch._foreach_pow_(scales, -gamma)
    torch._foreach_clamp_min_(scales, s_min)
    torch._foreach_clamp_max_(scales, s_max)
    torch._foreach_mul_(momentum_buffers, momentum)
    torch._foreach_addcmul_(momentum_buffers, scales, grads)
    torch._foreach_add_(params, momentum_buffers, alpha=-lr)
