"""AdAdaGrad and AdAdaGrad-Norm: adaptive batch sizes by batch-size tests.

See docs/algorithms.md#batch-size-tests.

Lau, Liu, Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient Methods"
(https://arxiv.org/abs/2402.11215), docs/algorithms.md#batch-size-tests. On the current batch B (b = |B|) with
per-sample gradients ∇f_i, g_B = mean_i ∇f_i and unbiased variances over i (divisor b − 1),
each test returns the candidate next batch size b':

    norm:                    b' = ⌈ Σ_j Var_i(∂_j f_i) / (η² ‖g_B‖²) ⌉
    inner product:           b' = ⌈ Var_i(⟨∇f_i, g_B⟩) / (θ² ‖g_B‖⁴) ⌉
    orthogonality:           b' = ⌈ Σ_j Var_i([∇f_i − (⟨∇f_i, g_B⟩/‖g_B‖²) g_B]_j) / (ν² ‖g_B‖²) ⌉
    augmented inner product: max(inner product, orthogonality)
    coordinate-wise:         b' = ⌈ Σ_j P_j Var_i(∂_j f_i) / (η² Σ_j P_j (g_B)_j²) ⌉,
                             P = diag(1/(√G + ε)) (interpretation, see coordinatewise_test)

and the controller grows the batch: b_{k+1} = min(b_max, max(b_k, b')), never shrinking.

Departures from the authors' code (timlautk/AdAdaGrad, ``tests.py``), deliberate:

- inner product and orthogonality: ⟨∇f_i, g_B⟩ and the component orthogonal to g_B are taken
  over the whole model, j running over every parameter of every tensor, as the paper (and
  Bollapragada et al. 2018, whose tests these are) define them. The authors' code computes them
  tensor by tensor, projecting each tensor's per-sample gradients on that tensor's g_B, and adds
  up the per-tensor variances; the two differ whenever the tensors' inner products covary. The
  norm test is the same either way (its variances and squared norms add up over tensors).
- coordinate-wise: the authors' code has no such test (it runs AdaGrad with the norm or
  inner-product tests); this one is DGS Lab's reading of the paper's coordinate-wise variant.

The tests are pure functions of the per-sample gradient matrix G (n × d, one row per example,
flattened over all parameters). Given G of shape (N, n, d) they treat each of the N rows as an
independent problem and return a LongTensor of N batch sizes (the 2-D lab's batched simulator).

Training loop with :class:`AdAdaGrad` or :class:`AdAdaGradNorm` (per-sample gradients only on
the steps that test; ``x, y`` is this step's batch of ``optimizer.batch_size`` examples)::

    loss_fn(model(x), y).backward()
    if optimizer.test_due:
        optimizer.propose_batch_size(per_sample_grads(model, loss_fn, x, y))  # dgs_core.training.batching
    optimizer.step()                      # applies the proposal
    next_batch_size = optimizer.batch_size

Propose *before* ``step()``: the per-sample gradients belong to the parameters the batch
gradient was taken at. A ``step()`` without a proposal is an ordinary optimizer step and the
batch size stays; ``optimizer.batch_size_history`` holds the batch size of every step.

Edge cases: a ratio of 0/0 (no variance and a zero mean gradient) gives b' = 1, a positive
variance over a zero mean gradient asks for an unbounded batch, returned as
:data:`UNBOUNDED_BATCH` (the controller caps it at ``max_batch``).

>>> G = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # two samples, mean (2, 1)
>>> norm_test(G, 1.0)  # Σ_j Var = 2 + 2 = 4 over ‖g_B‖² = 5
1
>>> norm_test(G, 0.5)  # 4 / (0.25 · 5) = 3.2
4
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from dgs_core.optim import adagrad_norm
from dgs_core.optim._compile import MAXIMIZE
from dgs_core.optim._contract import KeepsAttributes, real, unhooked
from dgs_core.optim.adagrad_norm import AdaGradNorm
from dgs_core.params import Param, ParamSet, invalid

#: b' for a positive variance over a zero mean gradient ("no finite batch suffices").
UNBOUNDED_BATCH = 2**62

PAPER = "https://arxiv.org/abs/2402.11215"


def flatten_per_sample(grads: Mapping[str, Tensor] | Iterable[Tensor]) -> Tensor:
    """Per-sample gradients as the matrix G (n × d), tensors concatenated in iteration order."""
    tensors = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    if not tensors:
        raise ValueError("Invalid grads: empty (no per-sample gradient to flatten)")
    n = tensors[0].shape[0]
    return torch.cat([t.reshape(n, -1) for t in tensors], dim=1)


# -- the tests ---------------------------------------------------------------------------------


def _check_matrix(G: Tensor) -> Tensor:
    if not isinstance(G, Tensor) or G.ndim not in (2, 3):
        shape = tuple(G.shape) if isinstance(G, Tensor) else type(G).__name__
        raise ValueError(f"Invalid G: {shape} (must be a tensor of shape (n, d) or (N, n, d))")
    if G.shape[-2] < 2:
        raise ValueError(f"Invalid G: {G.shape[-2]} sample(s) (the variance needs n >= 2)")
    if not G.is_floating_point():
        raise ValueError(f"Invalid G: dtype {G.dtype} (must be floating point)")
    # statistics in at least float32: half-precision sums of squares lose the variance
    return G.to(torch.promote_types(G.dtype, torch.float32))


def _check_constant(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
    return float(value)


def _mean_and_variance(G: Tensor) -> tuple[Tensor, Tensor]:
    """g_B (…, d) and the unbiased per-coordinate variance over samples (…, d)."""
    return G.mean(dim=-2), G.var(dim=-2, unbiased=True)


def _batch_size(numerator: Tensor, denominator: Tensor) -> int | Tensor:
    """⌈numerator / denominator⌉ as a batch size: 0/0 → 1, x/0 → UNBOUNDED_BATCH, at least 1."""
    ratio = (numerator / denominator).to(torch.float64)
    ratio = torch.nan_to_num(ratio, nan=1.0, posinf=float(UNBOUNDED_BATCH))
    size = ratio.clamp(1.0, float(UNBOUNDED_BATCH)).ceil().to(torch.int64)
    return int(size) if size.ndim == 0 else size


def norm_test(G: Tensor, eta: float) -> int | Tensor:
    """Norm test: b' = ⌈ Σ_j Var_i(G_ij) / (η² ‖g_B‖²) ⌉ (Byrd et al. 2012; Lau et al. 2024)."""
    G, eta = _check_matrix(G), _check_constant("eta", eta)
    mean, var = _mean_and_variance(G)
    return _batch_size(var.sum(-1), eta**2 * mean.square().sum(-1))


def inner_product_test(G: Tensor, theta: float) -> int | Tensor:
    """Inner-product test: b' = ⌈ Var_i(⟨∇f_i, g_B⟩) / (θ² ‖g_B‖⁴) ⌉ (Bollapragada et al. 2018).

    ⟨∇f_i, g_B⟩ runs over the whole model (every column of G); the authors' code sums
    per-tensor variances instead (module docstring, departures).
    """
    G, theta = _check_matrix(G), _check_constant("theta", theta)
    mean = G.mean(dim=-2)
    inner = (G @ mean.unsqueeze(-1)).squeeze(-1)  # ⟨∇f_i, g_B⟩, shape (…, n)
    return _batch_size(inner.var(dim=-1, unbiased=True), theta**2 * mean.square().sum(-1) ** 2)


def orthogonality_test(G: Tensor, nu: float) -> int | Tensor:
    """Orthogonality test: the variance of ∇f_i's component orthogonal to g_B, over ν²‖g_B‖².

    b' = ⌈ Σ_j Var_i([∇f_i − (⟨∇f_i, g_B⟩/‖g_B‖²) g_B]_j) / (ν² ‖g_B‖²) ⌉
    (Bollapragada et al. 2018). With g_B = 0 nothing is projected out. The projection is on
    the whole model's g_B; the authors' code projects tensor by tensor (module docstring,
    departures).
    """
    G, nu = _check_matrix(G), _check_constant("nu", nu)
    mean = G.mean(dim=-2)
    norm_sq = mean.square().sum(-1)
    inner = (G @ mean.unsqueeze(-1)).squeeze(-1)
    # g_B = 0 exactly makes every inner product 0: dividing by a tiny number keeps it 0
    coefficient = inner / norm_sq.clamp_min(torch.finfo(G.dtype).tiny).unsqueeze(-1)
    orthogonal = G - coefficient.unsqueeze(-1) * mean.unsqueeze(-2)
    return _batch_size(orthogonal.var(dim=-2, unbiased=True).sum(-1), nu**2 * norm_sq)


def augmented_inner_product_test(G: Tensor, theta: float, nu: float) -> int | Tensor:
    """Augmented inner-product test: the larger of the inner-product and orthogonality tests."""
    inner, orthogonal = inner_product_test(G, theta), orthogonality_test(G, nu)
    return max(inner, orthogonal) if isinstance(inner, int) else torch.maximum(inner, orthogonal)


def coordinatewise_test(
    G: Tensor, eta: float, accumulator: Tensor, eps: float | Tensor = 1e-10
) -> int | Tensor:
    """Coordinate-wise test for AdaGrad: the norm test in AdaGrad's metric.

    b' = ⌈ Σ_j P_j Var_i(G_ij) / (η² Σ_j P_j (g_B)_j²) ⌉,  P = diag(1/(√G_acc + ε))

    **Interpretation** (docs/algorithms.md#batch-size-tests): the paper introduces a
    coordinate-wise variant for AdaGrad without fixing this form; we measure the norm test in
    the preconditioner AdaGrad steps with. ``accumulator`` is AdaGrad's sum of squared
    gradients G_acc for the step being tested (shape (d,), or (N, d) for a batched G); ``eps``
    is AdaGrad's ε (a float, or a tensor of shape (d,) when parameter groups differ). A uniform
    P reduces to the norm test.
    """
    G, eta = _check_matrix(G), _check_constant("eta", eta)
    if not isinstance(accumulator, Tensor) or accumulator.shape[-1:] != G.shape[-1:]:
        shape = tuple(accumulator.shape) if isinstance(accumulator, Tensor) else type(accumulator).__name__
        raise ValueError(
            f"Invalid accumulator: {shape} (must be a tensor whose last dimension is d = {G.shape[-1]})"
        )
    if isinstance(eps, int | float) and (isinstance(eps, bool) or not math.isfinite(eps) or eps < 0):
        raise invalid("eps", eps, "a finite number >= 0")
    metric = 1.0 / (accumulator.to(G.dtype).sqrt() + eps)
    mean, var = _mean_and_variance(G)
    return _batch_size((metric * var).sum(-1), eta**2 * (metric * mean.square()).sum(-1))


def _augmented_with_one_constant(G: Tensor, constant: float) -> int | Tensor:
    return augmented_inner_product_test(G, constant, constant)


#: Tests by name, each called as ``test(G, constant, **extra)``.
TESTS: dict[str, Callable[..., int | Tensor]] = {
    "norm": norm_test,
    "inner_product": inner_product_test,
    "orthogonality": orthogonality_test,
    "augmented_inner_product": _augmented_with_one_constant,
    "coordinatewise": coordinatewise_test,
}


# -- the controller ----------------------------------------------------------------------------

# Batch sizes start at 2: the tests need a variance over at least two samples.
BATCH_HYPERPARAMS = ParamSet(
    (
        Param(
            "initial_batch_size", 16, low=2, high=2**20, integer=True, help="batch size b₀ of the first step"
        ),
        Param("max_batch_size", 1024, low=2, high=2**20, integer=True, help="cap b_max on the batch size"),
        Param("test_interval", 1, low=1, high=10**6, integer=True, help="run the test every this many steps"),
        Param(
            "test_constant",
            0.1,
            low=0.0,
            high=1e3,
            low_open=True,
            log=True,
            help="test constant (η_n, θ, ν): smaller demands less noise, so batches grow faster",
        ),
    )
)


class BatchSizeController:
    """Grows the batch size by a batch-size test: b_{k+1} = min(b_max, max(b_k, b')).

    Per step k, in the training loop's order:

    1. draw a batch of ``controller.batch_size`` examples; forward, backward;
    2. if ``controller.test_due``: ``controller.propose(G, **extra)`` with the per-sample
       gradients G of that batch (a test every ``interval`` steps: k = 0, interval, …);
    3. after the optimizer step: ``controller.record_step()`` records the batch size used at
       step k in ``history`` and applies the proposal, so ``batch_size`` is b_{k+1}.

    Args:
        test: a name in :data:`TESTS` or a callable ``test(G, constant, **extra) -> int``.
        initial: b₀ (≥ 1).
        max_batch: b_max (≥ initial).
        interval: test every this many steps (default 1).
        constant: the test's constant η_n / θ / ν (default 0.1).
    """

    def __init__(
        self,
        test: str | Callable[..., int | Tensor],
        *,
        initial: int,
        max_batch: int,
        interval: int = 1,
        constant: float = 0.1,
    ) -> None:
        if isinstance(test, str):
            if test not in TESTS:
                raise invalid("test", test, f"one of {', '.join(TESTS)}")
            self.test_name, self._test = test, TESTS[test]
        elif callable(test):
            self.test_name, self._test = getattr(test, "__name__", "custom"), test
        else:
            raise invalid("test", test, "a test name or a callable")
        values = BATCH_HYPERPARAMS.validate(
            {
                "initial_batch_size": initial,
                "max_batch_size": max_batch,
                "test_interval": interval,
                "test_constant": constant,
            },
        )
        if values["initial_batch_size"] > values["max_batch_size"]:
            raise invalid("initial_batch_size", initial, f"<= max_batch_size = {max_batch!r}")
        self.max_batch: int = values["max_batch_size"]
        self.interval: int = values["test_interval"]
        self.constant: float = values["test_constant"]
        self._batch_size: int = values["initial_batch_size"]
        self.history: list[int] = []
        self._pending: int | None = None

    @property
    def batch_size(self) -> int:
        """The batch size to draw for the next step."""
        return self._batch_size

    @property
    def test_due(self) -> bool:
        """Whether the current step runs the test (so the loop computes per-sample gradients)."""
        return len(self.history) % self.interval == 0 and self._pending is None

    def propose(self, G: Tensor | Mapping[str, Tensor], **extra: Any) -> int | None:
        """Run the test on this step's per-sample gradients; applied by :meth:`record_step`.

        ``G`` is the matrix (n × d) or a ``{name: (n, …)}`` dict as returned by
        :func:`per_sample_grads`. Returns the candidate b', or None when no test is due.
        """
        if not self.test_due:
            return None
        if not isinstance(G, Tensor):
            G = flatten_per_sample(G)
        candidate = int(self._test(G, self.constant, **extra))
        self._pending = candidate
        return candidate

    def record_step(self) -> int:
        """Record the batch size this step used; apply a pending proposal; return b_{k+1}."""
        self.history.append(self._batch_size)
        if self._pending is not None:
            self._batch_size = min(self.max_batch, max(self._batch_size, self._pending))
            self._pending = None
        return self._batch_size

    def state_dict(self) -> dict[str, Any]:
        return {"batch_size": self._batch_size, "history": list(self.history), "pending": self._pending}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._batch_size = int(state["batch_size"])
        self.history = [int(b) for b in state["history"]]
        self._pending = None if state["pending"] is None else int(state["pending"])


# -- the optimizers ----------------------------------------------------------------------------


class _AdaptiveBatchSize(KeepsAttributes):
    """Shared part of AdAdaGrad and AdAdaGrad-Norm: a controller that ``step()`` advances.

    The training loop is in the module docstring.
    """

    _attributes = ("batch_controller",)  # copies and pickles keep it (KeepsAttributes)
    batch_controller: BatchSizeController
    # group hyperparameters that the base class's step() does not re-validate itself
    _unchecked_hyperparams: ParamSet = ParamSet()

    def _init_batching(self, test: str, initial: int, max_batch: int, interval: int, constant: float) -> None:
        self.batch_controller = BatchSizeController(
            test, initial=initial, max_batch=max_batch, interval=interval, constant=constant
        )

    @property
    def batch_size(self) -> int:
        """The batch size to draw for the next step."""
        return self.batch_controller.batch_size

    @property
    def batch_size_history(self) -> list[int]:
        """The batch size used at each step so far."""
        return self.batch_controller.history

    @property
    def test_due(self) -> bool:
        """Whether this step's test is due (compute per-sample gradients only then)."""
        return self.batch_controller.test_due

    def propose_batch_size(self, per_sample: Tensor | Mapping[str, Tensor]) -> int | None:
        """Run the batch-size test on this step's per-sample gradients (call before ``step()``).

        ``per_sample``: the dict from :func:`per_sample_grads` or the matrix G (n × d),
        listing the optimizer's parameters (those with ``requires_grad``) in order; a complex
        parameter counts as its ``view_as_real`` twin (d counts its real numbers). Returns
        the candidate b', or None when no test is due this step.
        """
        if not self.batch_controller.test_due:
            return None
        G = self._per_sample_matrix(per_sample)
        return self.batch_controller.propose(G, **self._test_extras(G))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # checked before it joins: a refused group is not kept
        # mixin: defaults is the torch optimizer's
        self._unchecked_hyperparams.check({**self.defaults, **param_group})  # type: ignore[attr-defined]  # (reason above)
        # mixin: super() is the concrete torch optimizer
        super().add_param_group(param_group)  # type: ignore[misc]  # (reason above)

    def _test_extras(self, G: Tensor) -> dict[str, Any]:
        return {}

    def _trainable(self) -> list[Tensor]:
        # mixin: param_groups is the torch optimizer's
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]  # type: ignore[attr-defined]  # (reason above)

    def _per_sample_matrix(self, per_sample: Tensor | Mapping[str, Tensor]) -> Tensor:
        params = self._trainable()
        if isinstance(per_sample, Mapping):
            shapes = [tuple(t.shape[1:]) for t in per_sample.values()]
            expected = [tuple(p.shape) for p in params]
            if shapes != expected:
                raise ValueError(
                    f"Invalid per_sample: parameter shapes {shapes} (must list the optimizer's "
                    f"parameters in order: {expected})"
                )
            per_sample = flatten_per_sample([real(t) for t in per_sample.values()])
        d = sum(real(p).numel() for p in params)
        if per_sample.ndim != 2 or per_sample.shape[1] != d:
            raise ValueError(f"Invalid per_sample: shape {tuple(per_sample.shape)} (must be (n, {d}))")
        return per_sample

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        # mixin: param_groups is the torch optimizer's
        for group in self.param_groups:  # type: ignore[attr-defined]  # (reason above)
            self._unchecked_hyperparams.check(group)
        # mixin: super() is the concrete torch optimizer
        loss = unhooked(super().step)(closure)  # type: ignore[misc]  # (reason above)
        self.batch_controller.record_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]  # mixin: super() is the concrete torch optimizer
        state["batch_size_controller"] = self.batch_controller.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        controller = state_dict.pop("batch_size_controller", None)
        # mixin: super() is the concrete torch optimizer
        super().load_state_dict(state_dict)  # type: ignore[misc]  # (reason above)
        if controller is not None:
            self.batch_controller.load_state_dict(controller)


_BASELINE_WD = Param("weight_decay", 0.0, low=0.0, high=10.0, help="weight decay λ (coupled: g ← g + λθ)")
# AdAdaGrad's update is torch's Adagrad: these are torch.optim.Adagrad's arguments (the
# registry's "adagrad" entry uses them too).
ADAGRAD_HYPERPARAMS = ParamSet(
    (
        Param("lr", 0.01, low=0.0, high=1e3, log=True, help="learning rate η"),
        Param("lr_decay", 0.0, low=0.0, high=1.0, help="lr ← lr/(1 + (t−1)·decay)"),
        _BASELINE_WD,
        Param("eps", 1e-10, low=0.0, high=1.0, log=True, help="denominator ε"),
        Param("initial_accumulator_value", 0.0, low=0.0, high=1e3, help="G₀"),
    )
)
_ADAGRAD_HYPERPARAMS = ADAGRAD_HYPERPARAMS
ADADAGRAD_HYPERPARAMS = ADAGRAD_HYPERPARAMS + BATCH_HYPERPARAMS
ADADAGRAD_NORM_HYPERPARAMS = adagrad_norm.HYPERPARAMS + BATCH_HYPERPARAMS


class AdAdaGrad(_AdaptiveBatchSize, torch.optim.Adagrad):
    r"""AdaGrad with adaptive batch sizes by the coordinate-wise test (Lau, Liu, Kolar 2024).

    Updates are ``torch.optim.Adagrad``'s (G ← G + g², θ ← θ − η g/(√G + ε)). Every
    ``test_interval`` steps the coordinate-wise test (:func:`coordinatewise_test`,
    an **interpretation**) measures the batch gradient's noise in AdaGrad's metric
    P = diag(1/(√G + ε)), with G including this step's g_B², and the batch size grows to
    b_{k+1} = min(b_max, max(b_k, b')). The training loop is in the module docstring.

    Args:
        params, lr, lr_decay, weight_decay, initial_accumulator_value, eps: as Adagrad
            (weight decay acts on the update, not on the tested per-sample gradients).
        initial_batch_size: b₀ (default 16). max_batch_size: b_max (default 1024).
        test_interval: steps between tests (default 1). test_constant: η_n (default 0.1).
        foreach, fused, maximize: as Adagrad (maximize negates the step's gradient; the test,
            which looks at variances and squares, is the same either way).

    Paper: https://arxiv.org/abs/2402.11215. ``batch_size``, ``batch_size_history`` and the
    pending proposal travel in ``state_dict()``.

    >>> w = torch.zeros(3, requires_grad=True)
    >>> opt = AdAdaGrad([w], initial_batch_size=4, max_batch_size=64)
    >>> w.grad = torch.ones(3)
    >>> # Var_i = (2, 0, 2), g_B = (1, 1, 1), P uniform: 4 / (0.1² · 3) = 133.3
    >>> opt.propose_batch_size(torch.tensor([[0.0, 1, 2], [2, 1, 0]]))
    134
    >>> opt.step(); opt.batch_size, opt.batch_size_history
    (64, [4])
    """

    # torch's Adagrad checks its arguments in __init__ only
    _unchecked_hyperparams = ParamSet((*_ADAGRAD_HYPERPARAMS, MAXIMIZE))

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        initial_batch_size: int = 16,
        max_batch_size: int = 1024,
        test_interval: int = 1,
        test_constant: float = 0.1,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
    ) -> None:
        MAXIMIZE.validate(maximize)
        _ADAGRAD_HYPERPARAMS.validate(
            {
                "lr": lr,
                "lr_decay": lr_decay,
                "weight_decay": weight_decay,
                "initial_accumulator_value": initial_accumulator_value,
                "eps": eps,
            },
        )
        super().__init__(
            params,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )
        self._init_batching(
            "coordinatewise", initial_batch_size, max_batch_size, test_interval, test_constant
        )

    def _test_extras(self, G: Tensor) -> dict[str, Any]:
        # AdaGrad's accumulator for the step about to be taken: G_{k−1} + g_B², g_B from G.
        # A new group's sum does not exist before its first step: torch's Adagrad starts it
        # there at defaults["initial_accumulator_value"] (its _init_group).
        start = self.defaults["initial_accumulator_value"]
        sums, eps = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    state, n = self.state[p], real(p).numel()
                    if "sum" in state:
                        sums.append(real(state["sum"]).reshape(-1).to(G.dtype))
                    else:
                        sums.append(torch.full((n,), start, dtype=G.dtype))
                    eps.append(torch.full((n,), group["eps"], dtype=G.dtype, device=G.device))
        accumulator = torch.cat(sums).to(G.device) + G.mean(dim=0).square()
        return {"accumulator": accumulator, "eps": torch.cat(eps)}


class AdAdaGradNorm(_AdaptiveBatchSize, AdaGradNorm):
    r"""AdaGrad-Norm with adaptive batch sizes by the norm test (Lau, Liu, Kolar 2024).

    Updates are :class:`~dgs_core.optim.adagrad_norm.AdaGradNorm`'s (b_t² = b_{t−1}² + ‖g‖²,
    θ ← θ − η g/b_t). Every ``test_interval`` steps the norm test (:func:`norm_test`)
    proposes b', and the batch size grows to b_{k+1} = min(b_max, max(b_k, b')).
    The training loop is in the module docstring. The update departs from the authors' code
    where AdaGradNorm does (b₀ = 0.01, one accumulator per group: see its docstring); the norm
    test is theirs.

    Args:
        params, lr, b0, weight_decay: as AdaGradNorm (defaults 1.0, 0.01, 0).
        initial_batch_size: b₀ (default 16). max_batch_size: b_max (default 1024).
        test_interval: steps between tests (default 1). test_constant: η_n (default 0.1).
        foreach, fused, maximize: as AdaGradNorm. An ``independent_rows`` group (the 2-D lab) keeps
            one batch size for all rows: the per-row tests are the batched forms of the test
            functions.

    Paper: https://arxiv.org/abs/2402.11215 (the method analysed there, with its convergence
    proof). ``batch_size``, ``batch_size_history`` and the pending proposal travel in
    ``state_dict()``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        b0: float = 0.01,
        weight_decay: float = 0.0,
        initial_batch_size: int = 16,
        max_batch_size: int = 1024,
        test_interval: int = 1,
        test_constant: float = 0.1,
        *,
        foreach: bool | None = None,
        fused: bool = False,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params, lr=lr, b0=b0, weight_decay=weight_decay, foreach=foreach, fused=fused, maximize=maximize
        )
        self._init_batching("norm", initial_batch_size, max_batch_size, test_interval, test_constant)
