"""Schedule-Free AdamW: train at an interpolation, evaluate at an average (arXiv 2405.15682)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from dgs_core.optim._compile import as_input, check_switches, compiled, use_foreach
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet, check_tuple

HYPERPARAMS = ParamSet(
    (
        Param("lr", 2.5e-3, low=0.0, high=1e3, log=True, help="learning rate γ"),
        Param(
            "beta1",
            0.9,
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
            help="interpolation β₁: gradients are taken at y = (1 − β₁)z + β₁x",
        ),
        Param("beta2", 0.999, low=0.0, high=1.0, high_open=True, help="second-moment EMA β₂"),
        Param("eps", 1e-8, low=0.0, high=1.0, log=True, help="denominator ε"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ, taken at y"),
        Param(
            "warmup_steps", 0, low=0, high=10**9, integer=True, help="linear warmup of γ over this many steps"
        ),
        Param("r", 0.0, low=0.0, high=10.0, help="polynomial weighting of the average: w_t ∝ tʳ"),
        Param(
            "weight_lr_power", 2.0, low=0.0, high=10.0, help="w_t ∝ max γ^p: later, larger steps weigh more"
        ),
    )
)
_BETAS = (HYPERPARAMS["beta1"], HYPERPARAMS["beta2"])
_GROUP_PARAMS = HYPERPARAMS.without("beta1", "beta2")
_TRAIN_MODE = Param("train_mode", True, help="the parameters hold y (training) rather than x (evaluation)")


class ScheduleFreeAdamW(KeepsAttributes, torch.optim.Optimizer):
    r"""Schedule-Free AdamW: no lr schedule; the point to evaluate is an average of the iterates.

    Three sequences per parameter: z (the AdamW-like iterate, ``state["z"]``), x (a weighted
    average of the z's: the point to evaluate and to keep) and y (where gradients are taken,
    which the parameter holds while training); all three start at the parameter's value. Per
    step t = 1, 2, … (Defazio et al. 2024, Algorithm 1)::

        γ_t = γ · min(1, t / warmup_steps)
        v   ← β₂ v + (1 − β₂) g²                       g taken at y        state["exp_avg_sq"]
        ĝ   = g / (√(v / (1 − β₂ᵗ)) + ε) + λ y
        w_t = tʳ · (max_{s≤t} γ_s)^p ;  c_t = w_t / Σ_{s≤t} w_s            state["interpolation_weight"]
        z  ← z − γ_t ĝ
        x  ← (1 − c_t) x + c_t z                       (x is implicit: x = (y − (1 − β₁) z)/β₁)
        y  ← (1 − β₁) z + β₁ x

    With r = 0 and a constant γ, c_t = 1/t: x is the plain average of z_1 … z_t, which plays
    the role an annealed schedule would. ``state[p]["interpolation_weight"]`` is c_t, the
    weight of the current iterate z in the average x after the step.

    Evaluate at x: call :meth:`eval` before evaluating (or saving the model) and :meth:`train`
    before the next training step, as the authors' code requires; :meth:`step` refuses to run in
    eval mode. ``param_groups[i]["train_mode"]`` says which point the parameters hold, and
    travels in ``state_dict()``.

    Args:
        params: tensors or parameter groups.
        lr: γ (2.5e-3). betas: (β₁, β₂), default (0.9, 0.999). eps: ε (1e-8).
        weight_decay: λ (0), taken at y and added to the normalised gradient.
        warmup_steps: 0. r: 0. weight_lr_power: p = 2.
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool.
        fused: compile the per-tensor update with ``torch.compile`` (the first steps compile,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first.

    Departures from the official code (facebookresearch/schedule_free ``AdamWScheduleFree``):

    - The second moment is bias-corrected in the denominator, as pytorch-optimizer 4.1's
      ``ScheduleFreeAdamW`` (the reference) does. The official code (and the paper) fold
      √(1 − β₂ᵗ) into γ_t instead, so the averaging weights w_t ∝ γ_t² also grow with it and
      give the first ~1/(1 − β₂) iterates less weight; here, as in the reference, a constant γ
      averages uniformly from the start.
    - t, Σw and max γ are counted per tensor, when it has a gradient (reference and official:
      per group, on every step). They agree when every tensor gets a gradient on every step.

    Paper: https://arxiv.org/abs/2405.15682 (code: facebookresearch/schedule_free)

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0], requires_grad=True)
        >>> opt = ScheduleFreeAdamW([w], lr=0.1)
        >>> for _ in range(3):
        ...     opt.zero_grad(); (w ** 2).sum().backward(); opt.step()
        >>> opt.state[w]["interpolation_weight"]  # c_3 = 1/3 at r = 0 and a constant γ
        0.3333333333333333
        >>> opt.eval()  # w now holds x, the average, for evaluation
        >>> opt.train()  # and y again, to train on
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 2.5e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
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
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
        )
        defaults = {
            **_GROUP_PARAMS.validate(hparams),
            "betas": check_tuple("betas", betas, _BETAS),
            "train_mode": True,
            **switches,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @torch.no_grad()
    def eval(self) -> None:
        """Move every parameter to x, the average to evaluate at: p ← p + (1 − 1/β₁)(z − p)."""
        for group in self.param_groups:
            _check(group)
            if group["train_mode"]:
                beta1 = group["betas"][0]
                for p in self._stepped(group):
                    real(p).lerp_(self.state[p]["z"], 1.0 - 1.0 / beta1)
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        """Move every parameter back to y, where gradients are taken: p ← p + (1 − β₁)(z − p)."""
        for group in self.param_groups:
            _check(group)
            if not group["train_mode"]:
                beta1 = group["betas"][0]
                for p in self._stepped(group):
                    real(p).lerp_(self.state[p]["z"], 1.0 - beta1)
                group["train_mode"] = True

    def _stepped(self, group: dict[str, Any]) -> list[torch.Tensor]:
        return [p for p in group["params"] if "z" in self.state.get(p, {})]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step at y; ``closure`` (optional) recomputes the loss and gradients there.

        Raises RuntimeError in eval mode (call :meth:`train` first).
        """
        for group in self.param_groups:
            _check(group)
            if not group["train_mode"]:
                raise RuntimeError(
                    "ScheduleFreeAdamW.step() in eval mode: the parameters hold x, not y; "
                    "call optimizer.train() first"
                )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            leaves = [p for p in group["params"] if p.grad is not None]
            if not leaves:
                continue
            if any(p.grad.is_sparse for p in leaves):
                raise RuntimeError("ScheduleFreeAdamW does not support sparse gradients")
            params = [real(p) for p in leaves]  # a complex tensor steps as its real twin
            grads = [-real(p.grad) if group["maximize"] else real(p.grad) for p in leaves]
            beta1, beta2 = group["betas"]
            states, lrs, weights, sqrt_bias_corrections2 = [], [], [], []
            for leaf, p in zip(leaves, params, strict=True):
                state = self.state[leaf]
                if not state:
                    state["step"] = 0
                    state["z"] = p.clone(memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["weight_sum"] = 0.0
                    state["lr_max"] = -1.0
                state["step"] += 1
                t, warmup = state["step"], group["warmup_steps"]
                lr = group["lr"] * (t / warmup if t < warmup else 1.0)
                state["lr_max"] = max(lr, state["lr_max"])
                weight = t ** group["r"] * state["lr_max"] ** group["weight_lr_power"]
                state["weight_sum"] += weight
                state["interpolation_weight"] = weight / state["weight_sum"] if state["weight_sum"] else 0.0
                states.append(state)
                lrs.append(lr)
                weights.append(state["interpolation_weight"])
                sqrt_bias_corrections2.append(math.sqrt(1.0 - beta2**t))
            _schedule_free_update(
                params,
                grads,
                [s["z"] for s in states],
                [s["exp_avg_sq"] for s in states],
                lrs,
                weights,
                sqrt_bias_corrections2,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss


def _check(group: dict[str, Any]) -> None:
    _GROUP_PARAMS.check(group)
    check_tuple("betas", group["betas"], _BETAS)
    _TRAIN_MODE.validate(group["train_mode"])
    check_switches(group)


def _schedule_free_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    zs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lrs: list[float],
    interpolation_weights: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply one Schedule-Free AdamW step in place to y (``params``), z and v.

    ``lrs[i]`` = γ_t, ``interpolation_weights[i]`` = c_{t+1} and ``sqrt_bias_corrections2[i]`` =
    √(1 − β₂ᵗ) of tensor i. Three paths compute the same numbers: the per-tensor loop (the
    reference, default on CPU), ``foreach`` and ``fused`` (the loop compiled).
    """
    if not params:
        return
    lists = (params, grads, zs, exp_avg_sqs)
    hparams = dict(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    if foreach and not fused:
        _schedule_free_foreach(*lists, lrs, interpolation_weights, sqrt_bias_corrections2, **hparams)
        return
    # γ_t and c_{t+1} as 0-d tensors: they change every step (see _compile.as_input)
    like = params[0]
    update = compiled(_schedule_free_single) if fused else _schedule_free_single
    update(
        *lists,
        [as_input(lr, like) for lr in lrs],
        [as_input(c, like) for c in interpolation_weights],
        sqrt_bias_corrections2,
        **hparams,
    )


def _schedule_free_single(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    zs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lrs: list[torch.Tensor],
    interpolation_weights: list[torch.Tensor],
    sqrt_bias_corrections2: list[float],
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    for y, g, z, v, lr, c, sqrt_bc2 in zip(
        params, grads, zs, exp_avg_sqs, lrs, interpolation_weights, sqrt_bias_corrections2, strict=True
    ):
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        normalized = torch.sqrt(v).div_(sqrt_bc2).add_(eps)  # then ĝ, in place
        torch.div(g, normalized, out=normalized)
        if weight_decay != 0.0:
            normalized.add_(y, alpha=weight_decay)
        # y ← (1 − c) y + c z − γ(1 − β₁(1 − c)) ĝ is x's and y's update in one (the authors' form)
        y.lerp_(z, c)
        y.addcmul_(normalized, lr * (beta1 * (1.0 - c) - 1.0))
        z.addcmul_(normalized, lr, value=-1.0)


def _schedule_free_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    zs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    lrs: list[float],
    interpolation_weights: list[float],
    sqrt_bias_corrections2: list[float],
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    # The same ops as _schedule_free_single, one torch._foreach_* call per op over all tensors.
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denominators, sqrt_bias_corrections2)
    torch._foreach_add_(denominators, eps)
    normalized = torch._foreach_div(grads, denominators)
    if weight_decay != 0.0:
        torch._foreach_add_(normalized, params, alpha=weight_decay)
    torch._foreach_lerp_(params, zs, interpolation_weights)
    y_steps = [lr * (beta1 * (1.0 - c) - 1.0) for lr, c in zip(lrs, interpolation_weights, strict=True)]
    torch._foreach_add_(params, torch._foreach_mul(normalized, y_steps))
    torch._foreach_mul_(normalized, lrs)
    torch._foreach_sub_(zs, normalized)
