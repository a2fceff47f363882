"""AdaScale SGD — the learning rate scaled by the batch's gain ratio (Johnson et al., arXiv 2007.05105)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dgs_core.optim._compile import check_switches, compiled, row_count, rows_of, rows_view, use_foreach
from dgs_core.optim._contract import KeepsAttributes, real
from dgs_core.params import Param, ParamSet, invalid

SCALE = Param(
    "scale", 4, low=1, high=4096, integer=True, help="S: each step's batch is S groups of b examples"
)
HYPERPARAMS = ParamSet(
    (
        Param("lr", 0.01, low=0.0, high=1e3, log=True, help="learning rate η of the base batch size b"),
        Param("momentum", 0.0, low=0.0, high=1.0, high_open=True, help="momentum μ (as torch's SGD)"),
        Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ (coupled: g ← g + λθ)"),
        SCALE,
        Param(
            "smoothing",
            0.99,
            low=0.0,
            high=1.0,
            high_open=True,
            help="θ of the EMAs of σ² and μ² (bias-corrected)",
        ),
    )
)
_GROUP_PARAMS = HYPERPARAMS.without("scale")


class AdaScaleSGD(KeepsAttributes, torch.optim.Optimizer):
    r"""AdaScale SGD: SGD on a batch S times the base size b, with η multiplied by the gain ratio r_t.

    Each step's batch holds S·b examples in S groups of b; g_i is group i's mean gradient and
    ḡ = mean_i g_i (what backward gives on the whole batch: ``p.grad``). Per parameter group, at
    step t (Johnson et al. 2020, Algorithm 1 and Appendix B.3; docs/algorithms.md#adascale)::

        σ̂²_t = Σ_i ‖g_i − ḡ‖² / (S − 1)              the variance of one group's gradient
        μ̂²_t = max(‖ḡ‖² − σ̂²_t / S, 0)              the squared norm of the true gradient
        σ², μ² ← EMAs of σ̂², μ̂² with smoothing θ, bias-corrected
        r_t  = (σ² + μ²) / (σ²/S + μ²)    ∈ [1, S]   state["gain_ratio"]
        b   ← μ b + (g + λθ)                          momentum as torch's SGD (μ = 0: b = g + λθ)
        θ   ← θ − r_t · η · b
        τ   ← τ + r_t                                 state["tau"]: scale-invariant iterations

    A large batch helps as much as its gradient is less noisy: r_t ≈ S while noise dominates
    (σ² ≫ S μ²), r_t ≈ 1 when it does not, and a step at scale S then counts as r_t steps of the
    base run: τ is the base run's step count that the training so far is worth. η is the base
    run's schedule, meant to be read at ⌊τ⌋ (the trainer does); training at scale S is over when
    τ reaches the base run's budget. S = 1 is plain SGD (r = 1).

    The norms run over every tensor of the group; the paper's model has one group. The S group
    gradients come from :meth:`measure_gain`, called before :meth:`step` (the Training lab's
    trainer computes them with ``dgs_core.training.batching.group_grads``). A step without a
    measurement keeps the estimates it has (r = 1 before the first). ``state[first parameter of
    the group]`` holds ``gain_ratio`` r_t and ``tau`` after each step (0-d, or (N,) per row in
    an ``independent_rows`` group), which the diagnostics report for every tensor of the group
    (``dgs_core.diagnostics.summaries``).

    Training loop (``x, y`` is a batch of ``scale`` · b examples)::

        optimizer.measure_gain(group_grads(model, loss_fn, x, y, optimizer.scale))
        optimizer.zero_grad(); loss_fn(model(x), y).backward()
        optimizer.step()

    Args:
        params: tensors or parameter groups.
        lr: η (0.01), the base batch size's. momentum: μ (0). weight_decay: λ (0), coupled.
        scale: S (4), for the whole optimizer (it sets the batch). smoothing: θ (0.99).
        foreach: None (multi-tensor ops on CUDA, the per-tensor loop elsewhere) or a bool.
        fused: compile the per-tensor update with ``torch.compile`` (the first step compiles,
            see :mod:`dgs_core.optim._compile`).
        maximize: False; True ascends the objective: every gradient is negated first.

    No reference implementation is tested against: the authors released no code, and
    pytorch-optimizer has no AdaScale. The tests write the paper's equations out.
    **Interpretation.** θ = 0.99 by default: the paper leaves the smoothing open (fairscale's
    AdaScale uses max(1 − S/1000, 0), 0.996 at S = 4, tuned for long runs; the lab's runs are
    short), and its appendix averages the first 1/(1 − θ) estimates where we bias-correct the
    EMA, as fairscale does by default.

    Paper: https://arxiv.org/abs/2007.05105

    Example:
        >>> import torch
        >>> w = torch.zeros(2, requires_grad=True)
        >>> opt = AdaScaleSGD([w], lr=0.1, scale=2)
        >>> opt.measure_gain([torch.tensor([[1.0, 0.0], [-1.0, 0.0]])])  # pure noise: ḡ = 0
        >>> w.grad = torch.zeros(2)
        >>> opt.step()
        >>> opt.state[w]["gain_ratio"].item(), opt.state[w]["tau"].item()  # r = S
        (2.0, 2.0)
    """

    _attributes = ("scale", "_pending")  # copies and pickles keep them (KeepsAttributes)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        scale: int = 4,
        smoothing: float = 0.99,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        switches = dict(foreach=foreach, fused=fused, maximize=maximize)
        check_switches(switches)
        hparams = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "smoothing": smoothing}
        # SCALE is an integer Param: validate gives an int
        self.scale: int = SCALE.validate(scale)  # type: ignore[assignment]  # (reason above)
        # per parameter group: this step's (σ̂², μ̂²), from measure_gain, until step() uses it
        self._pending: list[tuple[Tensor, Tensor] | None] = []
        super().__init__(params, {**_GROUP_PARAMS.validate(hparams), **switches})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _check({**self.defaults, **param_group})  # before it joins: a refused group is not kept
        super().add_param_group(param_group)

    @property
    def tau(self) -> float:
        """τ, the scale-invariant iteration count of the first parameter group (its mean over
        rows in an ``independent_rows`` group); 0 before the first step."""
        tau = self.state.get(self.param_groups[0]["params"][0], {}).get("tau")
        return 0.0 if tau is None else float(tau.mean())

    @torch.no_grad()
    def measure_gain(self, group_grads: Mapping[str, Tensor] | Sequence[Tensor]) -> None:
        """Estimate σ̂² and μ̂² of this step from its S group gradients; :meth:`step` folds them
        into the EMAs. Call it before ``step()``, at the parameters the gradients were taken at.

        ``group_grads``: one tensor per parameter that requires grad, in the optimizer's order
        (a ``{name: tensor}`` dict as ``group_grads`` returns, or a sequence), each of shape
        (S, *param.shape): row i is group i's mean gradient. A complex parameter counts as its
        ``view_as_real`` twin. With ``scale`` = 1 there is no variance to measure: nothing
        happens. A second call before ``step()`` replaces the first.
        """
        tensors = list(group_grads.values()) if isinstance(group_grads, Mapping) else list(group_grads)
        expected = [(p, group) for group in self.param_groups for p in group["params"] if p.requires_grad]
        shapes = [tuple(t.shape) for t in tensors]
        wanted = [(self.scale, *p.shape) for p, _ in expected]
        if shapes != wanted:
            raise invalid(
                "group_grads", f"shapes {shapes}", f"one (scale, *param.shape) tensor per parameter: {wanted}"
            )
        if self.scale == 1:
            return
        given = iter(tensors)
        self._pending = []
        for group in self.param_groups:
            rows = rows_of(group)
            spread: Tensor | float = 0.0  # Σ_i ‖g_i − ḡ‖² over the group's tensors (per row)
            signal: Tensor | float = 0.0  # ‖ḡ‖²
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                x = real(next(given)).to(torch.promote_types(real(p).dtype, torch.float32))
                x = x.reshape(self.scale, x.shape[1], -1) if rows else x.reshape(self.scale, 1, -1)
                mean = x.mean(dim=0)
                spread = spread + (x - mean).square().sum(dim=(0, 2))
                signal = signal + mean.square().sum(dim=-1)
            if isinstance(spread, float):  # no trainable parameter in this group
                self._pending.append(None)
                continue
            variance = spread / (self.scale - 1)
            if not rows:
                # signal is a Tensor too: the group had a trainable tensor
                variance, signal = variance.reshape(()), signal.reshape(())  # type: ignore[union-attr]  # (reason above)
            self._pending.append((variance, (signal - variance / self.scale).clamp(min=0.0)))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One AdaScale step with ``p.grad`` as ḡ; ``closure`` (optional) recomputes the loss and
        gradients. Uses (and clears) the measurement of :meth:`measure_gain`, if any."""
        for group in self.param_groups:
            _check(group)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pending, self._pending = self._pending, []
        for index, group in enumerate(self.param_groups):
            leaves = [p for p in group["params"] if p.grad is not None]
            if not leaves:
                continue
            if any(p.grad.is_sparse for p in leaves):
                raise RuntimeError("AdaScaleSGD does not support sparse gradients")
            params = [real(p) for p in leaves]  # a complex tensor steps as its real twin
            grads = [-real(p.grad) if group["maximize"] else real(p.grad) for p in leaves]
            rows = rows_of(group)
            gain = self._gain_state(group, rows)
            measured = pending[index] if index < len(pending) else None
            if measured is not None:
                _fold(gain, *measured, smoothing=group["smoothing"])
            gain["gain_ratio"].copy_(_gain_ratio(gain, self.scale))
            gain["tau"].add_(gain["gain_ratio"])
            buffers = None
            if group["momentum"] != 0.0:
                for leaf, p in zip(leaves, params, strict=True):
                    if "momentum_buffer" not in self.state[leaf]:
                        self.state[leaf]["momentum_buffer"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                buffers = [self.state[leaf]["momentum_buffer"] for leaf in leaves]
            step_lrs = [
                (rows_view(gain["gain_ratio"], p) if rows and gain["gain_ratio"].ndim else gain["gain_ratio"])
                * group["lr"]
                for p in params
            ]
            _adascale_update(
                params,
                grads,
                buffers,
                step_lrs,
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                foreach=use_foreach(group["foreach"], params),
                fused=group["fused"],
            )
        return loss

    def _gain_state(self, group: dict[str, Any], rows: bool) -> dict[str, Tensor]:
        """The group's gain estimates, in the state of its first parameter (created at zero)."""
        anchor = group["params"][0]
        state = self.state[anchor]
        if "tau" not in state:
            shape = (row_count(group["params"]),) if rows else ()
            like = real(anchor)
            dtype = torch.promote_types(like.dtype, torch.float32)
            for key in ("variance_ema", "signal_ema", "ema_weight", "tau"):
                state[key] = torch.zeros(shape, dtype=dtype, device=like.device)
            state["gain_ratio"] = torch.ones(shape, dtype=dtype, device=like.device)
        return state

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["gain_measurement"] = list(self._pending)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        pending = state_dict.pop("gain_measurement", [])
        super().load_state_dict(state_dict)
        self._pending = list(pending)


def _check(group: dict[str, Any]) -> None:
    _GROUP_PARAMS.check(group)
    check_switches(group)


def _fold(gain: dict[str, Tensor], variance: Tensor, signal: Tensor, *, smoothing: float) -> None:
    """σ² and μ² EMAs: x ← θx + (1 − θ)x̂, with the weight 1 − θᵏ for the bias correction."""
    gain["variance_ema"].mul_(smoothing).add_(variance.to(gain["variance_ema"].dtype), alpha=1.0 - smoothing)
    gain["signal_ema"].mul_(smoothing).add_(signal.to(gain["signal_ema"].dtype), alpha=1.0 - smoothing)
    gain["ema_weight"].mul_(smoothing).add_(1.0 - smoothing)


def _gain_ratio(gain: dict[str, Tensor], scale: int) -> Tensor:
    """r = (σ² + μ²)/(σ²/S + μ²) from the bias-corrected EMAs; 1 before any estimate and at 0/0."""
    weight = gain["ema_weight"]
    measured = weight > 0
    safe = torch.where(measured, weight, 1.0)
    variance, signal = gain["variance_ema"] / safe, gain["signal_ema"] / safe
    denominator = variance / scale + signal
    ratio = (variance + signal) / torch.where(denominator > 0, denominator, 1.0)
    return torch.where(measured & (denominator > 0), ratio, 1.0)


def _adascale_update(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    step_lrs: list[Tensor],
    *,
    momentum: float,
    weight_decay: float,
    foreach: bool = False,
    fused: bool = False,
) -> None:
    """Apply b ← μb + (g + λθ); θ ← θ − (r η) b in place (``momentum_buffers`` None: μ = 0).

    ``step_lrs[i]`` is r·η for tensor i (0-d, or (N, 1, …) per row). Three paths compute the
    same numbers: the per-tensor loop (the reference, default on CPU), ``foreach`` and ``fused``
    (the loop compiled).
    """
    if foreach and not fused:
        _adascale_foreach(
            params, grads, momentum_buffers, step_lrs, momentum=momentum, weight_decay=weight_decay
        )
        return
    update = compiled(_adascale_single) if fused else _adascale_single
    step_lrs = [lr.to(p.dtype) for lr, p in zip(step_lrs, params, strict=True)]
    update(params, grads, momentum_buffers, step_lrs, momentum=momentum, weight_decay=weight_decay)


def _adascale_single(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    step_lrs: list[Tensor],
    *,
    momentum: float,
    weight_decay: float,
) -> None:
    for i, (p, g, lr) in enumerate(zip(params, grads, step_lrs, strict=True)):
        if weight_decay != 0.0:
            g = g.add(p, alpha=weight_decay)
        if momentum_buffers is not None:
            g = momentum_buffers[i].mul_(momentum).add_(g)
        p.addcmul_(g, lr, value=-1.0)


def _adascale_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    step_lrs: list[Tensor],
    *,
    momentum: float,
    weight_decay: float,
) -> None:
    # The same ops as _adascale_single, one torch._foreach_* call per op over all tensors.
    if weight_decay != 0.0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum_buffers is not None:
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_add_(momentum_buffers, grads)
        grads = momentum_buffers
    torch._foreach_addcmul_(
        params, grads, [lr.to(p.dtype) for lr, p in zip(step_lrs, params, strict=True)], value=-1.0
    )
