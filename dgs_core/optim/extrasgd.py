"""ExtraSGD: the EXTRAP-SGD family of Lin, Kong, Stich and Jaggi (ICML 2020).

Each step moves to an extrapolated point, takes the gradient there on the same batch, and
applies it from the current point with Nesterov momentum (docs/algorithms.md#extrasgd):

    δ   = −γ̂ g(x_t)                 variant "extragradient" (two gradients per step)
        = −γ̂ ĝ_{t−1}                variant "past" (reuses last step's gradient; δ = 0 at first)
        = σ ξ,  ξ ~ N(0, I)          variant "noise" (a seeded generator of its own)
    ĝ_t = g(x_t + δ)                 the gradient at the extrapolated point, same batch
    m   ← μ m + ĝ_t
    x   ← x − η (ĝ_t + μ m)          (μ = 0: plain x ← x − η ĝ_t)

Weight decay is coupled and belongs to the objective f + ½λ‖x‖², so every gradient is taken
with it at the point where it is evaluated: g(y) means ∇f(y) + λy, both for the extragradient
look-ahead and for ĝ_t.

Paper: https://arxiv.org/abs/2006.05720 (no code was released; the structure follows the
paper's framework, so the registry marks this optimizer as an interpretation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from dgs_core.optim._compile import check_switches, compiled, use_foreach
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet

VARIANTS = ("extragradient", "past", "noise")

HYPERPARAMS = ParamSet(
    (
        Param("lr", 0.1, low=0.0, high=1e3, log=True, help="learning rate η"),
        # The documented default is γ̂ = η. A Param needs a concrete default, so this is a float equal
        # to lr's default (0.1); when you change lr, set extrapolation_lr with it.
        Param(
            "extrapolation_lr",
            0.1,
            low=0.0,
            high=1e3,
            log=True,
            help="extrapolation step γ̂ of the 'extragradient' and 'past' variants (documented default γ̂ = η)",
        ),
        Param("momentum", 0.9, low=0.0, high=1.0, high_open=True, help="Nesterov momentum μ (0 = plain)"),
        Param(
            "variant",
            "extragradient",
            choices=VARIANTS,
            help="extrapolation δ: −γ̂·g(x) (2 gradients/step), −γ̂·last step's gradient, or N(0, σ²) noise",
        ),
        Param("noise_std", 0.01, low=0.0, high=1e3, log=True, help="σ of the 'noise' variant"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ (coupled: g ← g + λθ)"),
        Param("seed", 0, low=0, high=2**32 - 1, integer=True, help="seed of the 'noise' variant's generator"),
    )
)


class ExtraSGD(KeepsAttributes, torch.optim.Optimizer):
    r"""SGD with the gradient taken at an extrapolated point (EXTRAP-SGD), Nesterov momentum.

    Update (docs/algorithms.md#extrasgd), with g(y) = ∇f(y; B_t) + λy on the step's batch B_t:

        δ = −γ̂ g(x_t)  |  −γ̂ ĝ_{t−1}  |  σξ
        ĝ_t = g(x_t + δ);   m ← μm + ĝ_t;   x_{t+1} = x_t − η(ĝ_t + μm)

    ``step(closure)`` is required: the closure zeroes the gradients, recomputes the loss on the
    *same* batch at the current parameters, calls ``backward()`` and returns the loss (torch's
    closure convention). The step moves the parameters to x_t + δ, calls the closure there,
    restores x_t and applies the update. "extragradient" calls the closure twice (first at x_t
    for δ), "past" and "noise" once.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default 0.1).
        extrapolation_lr: extrapolation step γ̂ (default 0.1). The documented default is γ̂ = η; a
            hyperparameter needs a concrete default, so this one equals lr's default. Set
            both together (0 turns extrapolation off: plain Nesterov SGD).
        momentum: Nesterov momentum μ in [0, 1) (default 0.9; 0 is plain SGD at x_t + δ).
        variant: "extragradient" (default), "past" or "noise".
        noise_std: σ of the "noise" variant (default 0.01).
        weight_decay: coupled weight decay λ (default 0).
        seed: seed of the "noise" variant's generator (default 0). One generator per device,
            saved in ``state_dict()`` so a resumed run draws the same noise.
        foreach: use torch's multi-tensor kernels (None: on when every parameter is on CUDA).
        fused: compile the per-tensor update with ``torch.compile`` (the first step compiles,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient (the look-ahead's
            too) is negated first, so
            maximizing f takes the steps that minimizing −f takes (torch.optim's convention).

    After a step, ``state[p]["extrapolated"]`` holds x_t + δ (the 2-D lab draws it),
    ``state[p]["momentum_buffer"]`` holds m, and with variant "past" ``state[p]["past_grad"]``
    holds ĝ_t. ``p.grad`` holds ∇f at the extrapolated point (without the decay term).

    Returns the loss the closure computed at the extrapolated point x_t + δ: the loss whose
    gradient drives the step (for "extragradient" it is one gradient step ahead of x_t).

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ExtraSGD([w], lr=0.1, extrapolation_lr=0.1, momentum=0.0)
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> loss = opt.step(closure)
        >>> w.detach()  # x − η·2(x − γ̂·2x) = x·(1 − 0.2·0.8)
        tensor([ 0.8400, -1.6800])

    Notes (interpretation):
        The paper released no code. Its framework fixes what is computed (a local
        extragradient on the same batch, Nesterov momentum on top); the names, the coupled
        decay at the point of evaluation and the per-device noise generator are ours.
    """

    _attributes = ("seed", "_generators")  # the noise generators, one per device (KeepsAttributes)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.1,
        extrapolation_lr: float = 0.1,
        momentum: float = 0.9,
        variant: str = "extragradient",
        noise_std: float = 0.01,
        weight_decay: float = 0.0,
        seed: int = 0,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        values = HYPERPARAMS.validate(
            {
                "lr": lr,
                "extrapolation_lr": extrapolation_lr,
                "momentum": momentum,
                "variant": variant,
                "noise_std": noise_std,
                "weight_decay": weight_decay,
                "seed": seed,
            },
        )
        switches = {"foreach": foreach, "fused": fused, "maximize": maximize}
        check_switches(switches)
        # the seed belongs to the optimizer's noise generator, not to a parameter group
        self.seed: int = values.pop("seed")
        self._generators: dict[str, torch.Generator] = {}
        super().__init__(params, {**values, **switches})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = {**self.defaults, **param_group}  # checked before it joins: a refused group is not kept
        HYPERPARAMS.check(group)
        check_switches(group)
        super().add_param_group(param_group)

    # -- noise generator: one per device, seeded once, saved with the state ------------------

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[key] = gen
        return gen

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["noise_generators"] = {key: gen.get_state() for key, gen in self._generators.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generators = state_dict.pop("noise_generators", {})
        super().load_state_dict(state_dict)
        self._generators = {}
        for key, gen_state in generators.items():
            self._generator(torch.device(key)).set_state(gen_state)

    # -- the step ------------------------------------------------------------------------------

    # one signature for torch's closure overloads
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]  # (reason above)
        if closure is None:
            raise ValueError(
                "Invalid closure: None (ExtraSGD.step needs a closure that zeroes the grads, "
                "recomputes the loss on the same batch and calls backward())"
            )
        for group in self.param_groups:
            HYPERPARAMS.check(group)
            check_switches(group)

        if any(group["variant"] == "extragradient" for group in self.param_groups):
            with torch.enable_grad():
                closure()  # gradients at x_t, for δ = −γ̂ g(x_t)

        # Move every parameter to x_t + δ, keeping x_t to come back to.
        moved: list[tuple[Tensor, Tensor]] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            moved.extend(zip(params, self._extrapolate(group, params), strict=True))

        with torch.enable_grad():
            loss = closure()  # gradients at x_t + δ, same batch

        updates = [self._gather(group) for group in self.param_groups]
        for p, original in moved:
            p.copy_(original)
        for group, (params, grads, bufs) in zip(self.param_groups, updates, strict=True):
            if params:
                _extrasgd_update(
                    params,
                    grads,
                    bufs,
                    lr=group["lr"],
                    momentum=group["momentum"],
                    foreach=use_foreach(group["foreach"], params),
                    fused=group["fused"],
                )
        return loss

    def _gather(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Parameters with a gradient at x_t + δ, their ĝ_t and momentum buffers.

        Runs while the parameters still hold x_t + δ: the decay term is λ(x_t + δ).
        """
        params, grads, bufs = [], [], []
        decay = group["weight_decay"]
        for p in group["params"]:
            if p.grad is None or not p.requires_grad:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("ExtraSGD does not support sparse gradients")
            state = self.state[p]
            x = real(p)  # a complex tensor steps as its real twin
            grad = -real(p.grad) if group["maximize"] else real(p.grad)
            grad = grad.add(x, alpha=decay) if decay != 0 else grad
            if group["variant"] == "past":
                state["past_grad"] = grad.clone()
            params.append(x)
            grads.append(grad)
            if group["momentum"] != 0:
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(x)
                bufs.append(state["momentum_buffer"])
        return params, grads, bufs

    def _extrapolate(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        """Move ``params`` to x_t + δ in place; record it; return copies of x_t."""
        originals = [p.detach().clone() for p in params]
        variant, gamma = group["variant"], group["extrapolation_lr"]
        for p in params:
            state = self.state[p]
            x = real(p)  # a complex tensor moves as its real twin (noise too)
            if variant == "extragradient":
                if p.grad is not None:
                    # x_t − γ̂(∇f(x_t) + λx_t), or + γ̂∇f(x_t) when maximizing
                    ascent = -gamma if not group["maximize"] else gamma
                    x.mul_(1.0 - gamma * group["weight_decay"]).add_(real(p.grad), alpha=ascent)
            elif variant == "past":
                if "past_grad" in state:
                    x.add_(state["past_grad"], alpha=-gamma)
            else:
                noise = torch.randn(
                    x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype
                )
                x.add_(noise, alpha=group["noise_std"])
            if "extrapolated" in state:
                state["extrapolated"].copy_(p)
            else:
                state["extrapolated"] = p.detach().clone()
        return originals


def _extrasgd_update(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    *,
    lr: float,
    momentum: float,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply m ← μm + ĝ; x ← x − η(ĝ + μm) in place (``bufs`` empty when μ = 0: x ← x − ηĝ).

    ``foreach`` picks the multi-tensor implementation, ``fused`` the compiled per-tensor one;
    all three compute the same numbers.
    """
    if fused:
        compiled(_extrasgd_single)(params, grads, bufs, lr=lr, momentum=momentum)
    elif foreach:
        _extrasgd_foreach(params, grads, bufs, lr=lr, momentum=momentum)
    else:
        _extrasgd_single(params, grads, bufs, lr=lr, momentum=momentum)


def _extrasgd_single(
    params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: float, momentum: float
) -> None:
    # Plain arithmetic with lr and μ (no ``alpha=``): compiled, they become graph inputs after
    # their first change instead of forcing a recompile for every scheduled lr.
    if not bufs:
        for p, g in zip(params, grads, strict=True):
            p.sub_(g * lr)
        return
    for p, g, m in zip(params, grads, bufs, strict=True):
        m.mul_(momentum).add_(g)
        p.sub_((g + momentum * m) * lr)


def _extrasgd_foreach(
    params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: float, momentum: float
) -> None:
    if not bufs:
        torch._foreach_sub_(params, torch._foreach_mul(grads, lr))
        return
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, grads)
    steps = torch._foreach_add(grads, torch._foreach_mul(bufs, momentum))
    torch._foreach_mul_(steps, lr)
    torch._foreach_sub_(params, steps)
