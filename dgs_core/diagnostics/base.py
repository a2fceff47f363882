"""What both implementations of the diagnostics share: their arguments, the tensors they observe,
the kept grids and the flat-gradient contract. No math here (see ``reference.py``)."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from dgs_core.diagnostics.records import DEFAULT_QUANTILES, quantile_name
from dgs_core.optim import registry
from dgs_core.params import Param, invalid

_EVERY = Param("every", 1, low=1, integer=True, help="record every k-th step")
_BETA = Param("beta", 0.9, low=0.0, high=1.0, high_open=True, help="importance EMA β")
_IMPORTANCE = Param("importance", "grad", choices=("grad", "taylor"), help="|g| or |g ⊙ θ|")
_GRADS = Param("grads", "auto", choices=("auto", "before", "after"), help="when p.grad is read")
_QUANTILE = Param("quantiles", 0.5, low=0.0, high=1.0, help="quantile levels")
_SAMPLE_SIZE = Param("sample_size", 2048, low=1, integer=True, help="elements tracked per tensor")
_KEEP_MAX = Param("keep_max_elements", 4096, low=1, integer=True, help="per-element copy cap")
_GRAD = operator.attrgetter("grad")

NamedParams = Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class Observed:
    """One observed parameter tensor."""

    name: str
    group: int  # its index in optimizer.param_groups
    param: torch.Tensor
    grid: tuple[int, int] | None  # kept: rows × columns of its per-element copy; else None


class DiagnosticsBase:
    """Importance, effective lr and scaling factors for any ``torch.optim.Optimizer``.

    Args:
        optimizer: the optimizer whose steps are observed (never modified).
        named_params: ``(name, tensor)`` pairs or a mapping, e.g. ``model.named_parameters()``;
            the optimizer's tensors not named there are called "group{g}.param{i}".
        every: record on step 1 and every ``every`` steps after (the importance EMA is updated
            on every step).
        beta: the importance EMA's β (DGS's default 0.9).
        importance: "grad" for |g|, "taylor" for |g ⊙ θ| (θ before the step).
        quantiles: the quantile levels reported per tensor.
        sample_size: the fast path tracks at most this many elements per tensor (a fixed
            random subset, drawn from ``seed``); smaller tensors are tracked whole. The
            reference tracks every element.
        keep: names of tensors whose per-element values go into ``DiagnosticRecord.elements``
            (for heatmaps), or "all". A kept tensor's copy is a regular grid of rows and
            columns (its 2-D view: first dimension × the rest) of at most
            ``keep_max_elements`` elements; the fast path tracks a kept tensor on that grid
            instead of a random subset.
        keep_max_elements: cap on each kept tensor's per-element copy.
        grads: "before" reads the gradients in ``before_step``, "after" in ``after_step``
            (closure optimizers), "auto" chooses (see the package docstring).
        seed: seed of the fast path's random subsets.
        lazy: the fast path computes a record's summaries when the record is first read (the
            reference on its step); the numbers are the same.
        flat_grads: a 1-D tensor whose consecutive slices are the gradients of the optimizer's
            tensors, in ``optimizer.param_groups`` order: every ``p.grad`` must be a view of
            it now and stay that view (zero the buffer instead of ``zero_grad()``). The fast
            path then reads the buffer in one call instead of gathering each ``p.grad``
            (where every tensor is tracked whole). A ``p.grad`` replaced later raises
            ``RuntimeError`` at the next read.

    Raises ``ValueError`` naming the argument for an invalid value or an unknown ``keep`` name.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        named_params: NamedParams | None = None,
        *,
        every: int = 1,
        beta: float = 0.9,
        importance: str = "grad",
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        sample_size: int = 2048,
        keep: Iterable[str] | str = (),
        keep_max_elements: int = 4096,
        grads: str = "auto",
        seed: int = 0,
        lazy: bool = False,
        flat_grads: torch.Tensor | None = None,
    ) -> None:
        self.optimizer = optimizer
        # Param.validate returns the Value union; each Param here fixes one type (int, float, choice)
        self.every: int = _EVERY.validate(every)  # type: ignore[assignment]  # (reason above)
        self.beta: float = _BETA.validate(beta)  # type: ignore[assignment]  # (reason above)
        self.importance: str = _IMPORTANCE.validate(importance)  # type: ignore[assignment]  # (reason above)
        self.quantiles: tuple[float, ...] = tuple(_QUANTILE.validate(q) for q in quantiles)  # type: ignore[misc]  # (reason above)
        self.sample_size: int = _SAMPLE_SIZE.validate(sample_size)  # type: ignore[assignment]  # (reason above)
        self.keep_max_elements: int = _KEEP_MAX.validate(keep_max_elements)  # type: ignore[assignment]  # (reason above)
        grads = _GRADS.validate(grads)  # type: ignore[assignment]  # (reason above)
        if grads == "auto":
            grads = "after" if _needs_closure(optimizer) else "before"
        self.grads = grads
        self.seed, self.lazy = int(seed), bool(lazy)
        self.statistics = ("mean", *(quantile_name(q) for q in self.quantiles))
        self._observed = _observed(optimizer, named_params, keep, self.keep_max_elements)
        self._flat_grads: torch.Tensor | None = None
        self._flat_params: list[torch.Tensor] = []  # every tensor of the optimizer, in order
        self._flat_views: list[torch.Tensor] = []  # their p.grad when the Diagnostics were built
        if flat_grads is not None:
            self._flat_grads = flat_grads
            self._flat_params = [p for group in optimizer.param_groups for p in group["params"]]
            self._flat_views = _flat_views(flat_grads, self._flat_params, self._observed)
        self._t = 0  # steps seen
        self._build()

    def _build(self) -> None:
        """The implementation's own state, made once the arguments are checked."""
        raise NotImplementedError

    @property
    def names(self) -> list[str]:
        """The observed tensors' names, in the optimizer's order."""
        return [o.name for o in self._observed]

    @property
    def element_index(self) -> dict[str, torch.Tensor]:
        """Where the kept copies come from: ``"{tensor}/rows"`` and ``"{tensor}/cols"`` hold the
        row and column indices (int64) into the tensor's 2-D view (first dimension × the rest)."""
        out = {}
        for o in self._observed:
            if o.grid is not None:
                out[f"{o.name}/rows"], out[f"{o.name}/cols"] = grid_axes(o.param, o.grid)
        return out

    def _sampled(self, record: bool | None) -> bool:
        """Whether step ``self._t`` is recorded: step 1 and every ``every``-th after, unless
        ``record`` (``before_step``'s argument) says."""
        return (self._t - 1) % self.every == 0 if record is None else bool(record)

    def _batch_size(self) -> int | None:
        """The optimizer's ``batch_size`` (AdAdaGrad), read before its step moves it on."""
        batch_size = getattr(self.optimizer, "batch_size", None)
        return None if batch_size is None else int(batch_size)

    def _check_flat_grads(self) -> None:
        """``RuntimeError`` when a ``p.grad`` is no longer its view of ``flat_grads``."""
        if not all(map(operator.is_, map(_GRAD, self._flat_params), self._flat_views)):
            raise RuntimeError(
                "flat_grads: a p.grad is no longer a view of the buffer (zero the buffer instead of "
                "calling zero_grad(), or build the Diagnostics without flat_grads)"
            )


def _observed(
    optimizer: torch.optim.Optimizer, named_params: NamedParams | None, keep: Iterable[str] | str, cap: int
) -> list[Observed]:
    """The optimizer's non-empty tensors, named, with the grid of the kept ones."""
    names = {}
    if named_params is not None:
        pairs = named_params.items() if isinstance(named_params, Mapping) else named_params
        names = {id(p): name for name, p in pairs}
    entries = [
        (names.get(id(p), f"group{g}.param{i}"), g, p)
        for g, group in enumerate(optimizer.param_groups)
        for i, p in enumerate(group["params"])
        if p.numel() > 0
    ]
    all_names = [name for name, _, _ in entries]
    if keep == "all":
        keep = all_names
    keep = set([keep] if isinstance(keep, str) else keep)
    unknown = sorted(keep - set(all_names))
    if unknown:
        raise invalid("keep", unknown[0], f"one of {', '.join(all_names)}")
    return [Observed(name, g, p, grid_shape(p, cap) if name in keep else None) for name, g, p in entries]


def _flat_views(
    flat: torch.Tensor, params: list[torch.Tensor], observed: list[Observed]
) -> list[torch.Tensor]:
    """Check the ``flat_grads`` contract now; the ``p.grad`` views of ``params``."""
    total = sum(p.numel() for p in params)
    if (
        not isinstance(flat, torch.Tensor)
        or flat.dim() != 1
        or not flat.is_contiguous()
        or flat.requires_grad
        or flat.numel() != total
    ):
        raise invalid(
            "flat_grads",
            flat if not isinstance(flat, torch.Tensor) else f"tensor of shape {tuple(flat.shape)}",
            f"a contiguous 1-D tensor of {total} elements (the optimizer's) that requires no grad",
        )
    names = {id(o.param): o.name for o in observed}
    for p, view in zip(params, flat.split([p.numel() for p in params]), strict=True):
        g = p.grad
        if p.numel() and (
            g is None or g.shape != p.shape or not g.is_contiguous() or g.data_ptr() != view.data_ptr()
        ):
            raise ValueError(
                f"Invalid flat_grads: the gradient of {names.get(id(p))} is not its slice of the buffer "
                "(every p.grad must be a view of it, in the optimizer's order)"
            )
    # views of flat, checked above (empty parameters aside)
    return [p.grad for p in params]  # type: ignore[misc]  # (reason above)


def view_2d(p: torch.Tensor) -> tuple[int, int]:
    """The shape of ``p``'s 2-D view, first dimension × the rest (a vector is one row)."""
    rows = p.shape[0] if p.dim() >= 2 else 1
    return rows, p.numel() // rows


def grid_shape(p: torch.Tensor, cap: int) -> tuple[int, int]:
    """Rows and columns of a kept tensor's grid: its 2-D view when it fits, else a regular
    subgrid of at most ``cap`` elements with about the view's aspect ratio."""
    rows, cols = view_2d(p)
    if rows * cols <= cap:
        return rows, cols
    shrink = math.sqrt(cap / (rows * cols))
    r = max(1, min(rows, int(rows * shrink)))
    return r, max(1, min(cols, cap // r))


def grid_axes(p: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's row and column indices into ``p``'s 2-D view, evenly spaced."""
    (rows, cols), (r, c) = view_2d(p), grid
    return (
        torch.linspace(0, rows - 1, r, dtype=torch.float64).round().long(),
        torch.linspace(0, cols - 1, c, dtype=torch.float64).round().long(),
    )


def grid_index(p: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
    """The grid's flat indices into ``p`` (row by row); None when the grid is all of ``p``."""
    if grid[0] * grid[1] == p.numel():
        return None
    row_index, col_index = grid_axes(p, grid)
    cols = view_2d(p)[1]
    return (row_index[:, None] * cols + col_index[None, :]).reshape(-1).to(p.device)


def _needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """True when the registry says this optimizer's step computes its own gradients (ExtraSGD;
    for others, e.g. torch's LBFGS, pass grads="after")."""
    return any(info.cls is type(optimizer) and info.needs_closure for info in registry.infos())
