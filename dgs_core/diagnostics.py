"""Diagnostics common to every optimizer (SPEC §4), so the UI can show them side by side.

Per parameter tensor, on sampled steps:

    a_t    = |g_t|  (importance="grad")  or  |g_t ⊙ θ_t|  (importance="taylor")
    I_t    = β I_{t-1} + (1-β) a_t,   Î_t = I_t / (1 - β^t)      importance score, every step
    η_eff  = |θ_{t+1} − θ_t| / (|g_t| + 1e-12)                    effective per-element lr
    scaling factor = η_eff / η_t                                  η_t: the schedule's lr

summarised as a mean and quantiles over the tensor's elements, plus the norms ‖g‖, ‖Δθ‖, ‖θ‖,
DGS's own scaling factor s_t (``optimizer.state[p]["scale"]``), whatever the optimizer reports
through a ``tensor_summaries(p)`` method (LARS's trust ratio, AdaGrad-Norm's b_t, Adan's ‖v‖)
and the batch size when the optimizer has a ``batch_size`` attribute (AdAdaGrad).

The importance EMA belongs to the diagnostics, not to the optimizer, so every optimizer gets
one with the same β (DGS's default 0.9) and the optimizers' own states stay untouched.
Where |g| is about 0 but the parameter still moves (momentum, Adam's m), η_eff is huge: the
quantiles are the robust summary, the mean is pulled up by such elements.

Sampling (why the cost stays small): every quantity above is elementwise, so the diagnostics
follow a fixed, seeded random subset of at most ``sample_size`` elements per tensor (every
element of smaller tensors) and compute them exactly there; for larger tensors the mean and
quantiles are estimates from the subset and the norms are extrapolated from it
(‖x‖ ≈ √(numel / tracked) · ‖x_subset‖). The subset is made of random blocks of 16 contiguous
elements (one 64-byte cache line of float32), so reading it touches a small fraction of the
parameters' memory. The cost per step is O(tracked elements), whatever the model's size.
``TensorDiagnostics.tracked`` says how many elements a tensor's summaries come from.

Which gradient: ``before_step()`` reads ``p.grad`` after backward (and after any clipping or
unscaling) and before ``optimizer.step()``: the gradient the step consumes, whatever the step
does to ``p.grad`` afterwards. Closure optimizers (ExtraSGD) compute their gradients inside
``step(closure)``; for them the gradients are read in ``after_step()``, and for ExtraSGD that is
the gradient at the extrapolated point, the one its update applied. ``grads="auto"`` picks
"after" for registry entries with ``needs_closure``; in every mode, a step where no parameter
has a gradient at ``before_step()`` (``zero_grad()`` then ``step(closure)``) reads them after.

Example::

    diag = Diagnostics(opt, model.named_parameters(), every=10, keep=("fc1.weight",))
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        diag.before_step()
        opt.step()
        record = diag.after_step(step, lr=schedule(step))   # None on unsampled steps
        if record is not None:
            records.append(record)
    frame = to_frame(records)   # long format: step, tensor, quantity, statistic, value
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from dgs_core.optim._params import HyperParam

EPS = 1e-12  # SPEC §4: η_eff = |Δθ| / (|g| + 1e-12)
GLOBAL = "*"  # the ``tensor`` of rows that concern the whole step (lr, batch size)
FRAME_COLUMNS = ("step", "tensor", "quantity", "statistic", "value")
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_BLOCK = 16  # elements per sampled block: one 64-byte cache line of float32

_EVERY = HyperParam("every", 1, low=1, integer=True, help="record every k-th step")
_BETA = HyperParam("beta", 0.9, low=0.0, high=1.0, high_open=True, help="importance EMA β")
_IMPORTANCE = HyperParam("importance", "grad", choices=("grad", "taylor"), help="|g| or |g ⊙ θ|")
_GRADS = HyperParam("grads", "auto", choices=("auto", "before", "after"), help="when p.grad is read")
_QUANTILE = HyperParam("quantiles", 0.5, low=0.0, high=1.0, help="quantile levels")
_SAMPLE_SIZE = HyperParam("sample_size", 2048, low=1, integer=True, help="elements tracked per tensor")
_KEEP_MAX = HyperParam("keep_max_elements", 4096, low=1, integer=True, help="per-element copy cap")


@dataclass(frozen=True)
class TensorDiagnostics:
    """One parameter tensor's summaries on one sampled step.

    ``stats[quantity][statistic]``: quantities "importance", "lr_eff", "scaling_factor" and,
    for DGS, "scale" have the statistics "mean" and one per quantile ("q05", "q50", ...);
    "grad_norm", "update_norm", "param_norm" and the optimizer's own values (keys of its
    ``tensor_summaries``) have the single statistic "value".
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    tracked: int
    stats: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class DiagnosticRecord:
    """What :meth:`Diagnostics.after_step` returns on a sampled step.

    Attributes:
        step: the training loop's step label.
        lr: the lr passed to ``after_step`` (else the first parameter group's).
        batch_size: the optimizer's ``batch_size`` attribute (AdAdaGrad) read by ``before_step``:
            the batch size this step used; None when the optimizer has none.
        tensors: one :class:`TensorDiagnostics` per tensor that had a gradient.
        elements: per-element copies of the kept tensors, float32 on the CPU, shaped like
            :attr:`Diagnostics.element_index`'s grid, keyed ``"{tensor}/{quantity}"``
            (importance, lr_eff, scaling_factor, scale): ready for ``safetensors``.
    """

    step: int
    lr: float
    batch_size: int | None
    tensors: tuple[TensorDiagnostics, ...]
    elements: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def rows(self) -> list[tuple[int, str, str, str, float]]:
        """The long-format rows of :meth:`to_frame`."""
        out: list[tuple[int, str, str, str, float]] = [(self.step, GLOBAL, "lr", "value", self.lr)]
        if self.batch_size is not None:
            out.append((self.step, GLOBAL, "batch_size", "value", float(self.batch_size)))
        for tensor in self.tensors:
            for quantity, stats in tensor.stats.items():
                for statistic, value in stats.items():
                    out.append((self.step, tensor.name, quantity, statistic, value))
        return out

    def to_frame(self) -> pd.DataFrame:
        """Long format: columns step, tensor, quantity, statistic, value (tensor "*": global)."""
        return to_frame([self])


def to_frame(records: Iterable[DiagnosticRecord]) -> pd.DataFrame:
    """Many records as one long-format DataFrame (see :meth:`DiagnosticRecord.to_frame`)."""
    rows = [row for record in records for row in record.rows()]
    frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
    return frame.astype({"step": "int64", "value": "float64"})


def quantile_name(q: float) -> str:
    """The statistic's name for quantile ``q``: 0.05 → "q05", 0.5 → "q50", 0.999 → "q99.9"."""
    percent = round(q * 100, 6)
    return f"q{int(percent):02d}" if percent == int(percent) else f"q{percent:g}"


_BUFFERS = ("importance", "grad", "before", "after")


@dataclass(eq=False, slots=True)
class _Tracked:
    """Bookkeeping for one parameter tensor; its buffers hold the tracked elements only and are
    views into its bank's flat buffers."""

    param: torch.Tensor
    name: str
    group: int
    index: torch.Tensor | None  # flat indices of the tracked elements; None = all of them
    grid: tuple[int, int] | None  # the kept copy's (rows, cols), None when not kept
    tracked: int
    bank: _Bank | None = None
    importance: torch.Tensor | None = None  # I_t
    grad: torch.Tensor | None = None  # |g_t|, then |g_t| + ε
    before: torch.Tensor | None = None  # θ_t, then θ_t − θ_{t+1}, then η_eff (sampled steps)
    after: torch.Tensor | None = None  # θ_{t+1} (sampled steps)
    count: int = 0  # gradients seen, for the bias correction


@dataclass(eq=False)
class _Bank:
    """The tracked tensors of one device and dtype, their buffers laid end to end, so that an
    elementwise update of every tensor is one kernel instead of one per tensor (CPU foreach
    ops loop over the tensors)."""

    members: list[_Tracked]
    buffers: dict[str, torch.Tensor]
    starts: np.ndarray  # where each member's elements start, for per-tensor sums

    @classmethod
    def build(cls, members: list[_Tracked], dtype: torch.dtype, device: torch.device) -> _Bank:
        sizes = [s.tracked for s in members]
        buffers = {key: torch.zeros(sum(sizes), dtype=dtype, device=device) for key in _BUFFERS}
        bank = cls(members, buffers, np.cumsum([0, *sizes[:-1]]))
        for key, flat in bank.buffers.items():
            for s, view in zip(members, flat.split(sizes), strict=True):
                setattr(s, key, view)
        for s in members:
            s.bank = bank
        return bank

    def operands(self, key: str, live: set[int]) -> list[torch.Tensor]:
        """The flat buffer when every member is live, else the live members' views."""
        if all(id(s) in live for s in self.members):
            return [self.buffers[key]]
        return [getattr(s, key) for s in self.members if id(s) in live]

    def norms(self, keys: Sequence[str]) -> np.ndarray:
        """‖buffer‖ of each member (columns) for each key (rows), in float64.

        numpy's segment sum (``reduceat``) is ~20x faster here than torch's CPU index_add_.
        """
        sums = [
            np.add.reduceat(np.square(self.buffers[key].cpu().numpy(), dtype=np.float64), self.starts)
            for key in keys
        ]
        return np.sqrt(np.stack(sums))


@dataclass(slots=True)
class _Pending:
    """What before_step hands to after_step."""

    sampled: bool
    read_after: bool
    live: list[_Tracked]
    batch_size: int | None


class Diagnostics:
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
        sample_size: at most this many elements per tensor are tracked (a fixed random subset,
            drawn from ``seed``); smaller tensors are tracked whole.
        keep: names of tensors whose per-element values go into ``DiagnosticRecord.elements``
            (for heatmaps), or "all". A kept tensor is tracked on a regular grid of rows and
            columns (its 2-D view: first dimension × the rest) of at most ``keep_max_elements``
            elements instead of a random subset.
        keep_max_elements: cap on each kept tensor's per-element copy.
        grads: "before" reads ``p.grad`` in :meth:`before_step`, "after" in :meth:`after_step`
            (closure optimizers), "auto" chooses (see the module docstring).
        seed: seed of the random subsets.

    Raises ``ValueError`` naming the argument for an invalid value or an unknown ``keep`` name.

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = torch.optim.SGD([w], lr=0.1)
        >>> diag = Diagnostics(opt, [("w", w)])
        >>> w.grad = torch.tensor([0.5, 2.0])
        >>> diag.before_step()
        >>> _ = opt.step()
        >>> record = diag.after_step(1)
        >>> stats = record.tensors[0].stats
        >>> round(stats["lr_eff"]["q50"], 6), round(stats["scaling_factor"]["q50"], 6)  # SGD: η
        (0.1, 1.0)
        >>> round(stats["importance"]["mean"], 6)  # Î_1 = |g_1|
        1.25
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        named_params: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor] | None = None,
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
    ) -> None:
        self.optimizer = optimizer
        self.every = _EVERY.validate(every)
        self.beta = _BETA.validate(beta)
        self.importance = _IMPORTANCE.validate(importance)
        self.quantiles = tuple(_QUANTILE.validate(q) for q in quantiles)
        self.sample_size = _SAMPLE_SIZE.validate(sample_size)
        self.keep_max_elements = _KEEP_MAX.validate(keep_max_elements)
        grads = _GRADS.validate(grads)
        if grads == "auto":
            grads = "after" if _needs_closure(optimizer) else "before"
        self.grads = grads
        self._statistics = ("mean", *(quantile_name(q) for q in self.quantiles))
        self._buffers: dict[tuple[tuple[int, int], torch.dtype], torch.Tensor] = {}  # _summarise's

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
            raise ValueError(f"Invalid keep: {unknown[0]!r} (must be one of {', '.join(all_names)})")

        generator = torch.Generator().manual_seed(seed)
        self._tracked: list[_Tracked] = []
        by_bank: dict[tuple[torch.dtype, torch.device], list[_Tracked]] = defaultdict(list)
        for name, group, p in entries:
            grid = _grid_shape(p, self.keep_max_elements) if name in keep else None
            index = (
                _grid_index(p, grid) if grid is not None else _random_index(p, self.sample_size, generator)
            )
            s = _Tracked(p, name, group, index, grid, p.numel() if index is None else index.numel())
            self._tracked.append(s)
            dtype = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
            by_bank[(dtype, p.device)].append(s)
        self._banks = [_Bank.build(members, *key) for key, members in by_bank.items()]
        self._t = 0
        self._pending: _Pending | None = None

    @property
    def names(self) -> list[str]:
        """The observed tensors' names, in the optimizer's order."""
        return [s.name for s in self._tracked]

    @property
    def element_index(self) -> dict[str, torch.Tensor]:
        """Where the kept copies come from: ``"{tensor}/rows"`` and ``"{tensor}/cols"`` hold the
        row and column indices (int64) into the tensor's 2-D view (first dimension × the rest)."""
        out = {}
        for s in self._tracked:
            if s.grid is not None:
                rows, cols = _grid_axes(s.param, s.grid)
                out[f"{s.name}/rows"], out[f"{s.name}/cols"] = rows, cols
        return out

    def reset(self) -> None:
        """Forget the importance EMA and the step count (e.g. when the run restarts)."""
        torch._foreach_zero_([bank.buffers["importance"] for bank in self._banks])
        for s in self._tracked:
            s.count = 0
        self._t = 0
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        """The importance EMA and the step counts, to resume a run with identical records
        (the tracked elements follow from ``seed``, so rebuild with the same arguments)."""
        return {
            "step": self._t,
            "importance": {s.name: s.importance.detach().cpu().clone() for s in self._tracked},
            "count": {s.name: s.count for s in self._tracked},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; ``ValueError`` when it belongs to other tensors or sizes."""
        importance, count = state["importance"], state["count"]
        if set(importance) != set(self.names):
            raise ValueError(f"Invalid state: tensors {sorted(importance)} (must be {sorted(self.names)})")
        for s in self._tracked:
            if importance[s.name].shape != s.importance.shape:
                raise ValueError(
                    f"Invalid state: {s.name} tracks {tuple(importance[s.name].shape)} elements "
                    f"(must be {tuple(s.importance.shape)}: same sample_size, keep and seed)"
                )
        with torch.no_grad():
            for s in self._tracked:
                s.importance.copy_(importance[s.name])
                s.count = int(count[s.name])
        self._t = int(state["step"])
        self._pending = None

    @torch.no_grad()
    def before_step(self, *, record: bool | None = None) -> None:
        """Call after backward (and clipping), just before ``optimizer.step()``.

        Reads the gradients (unless they are read after the step), updates the importance EMA
        and, on sampled steps, remembers θ_t. ``record`` forces (True) or skips (False) the
        record of this step instead of the ``every`` rule.
        """
        if self._pending is not None:
            raise RuntimeError("before_step() called twice: call after_step() after every optimizer.step()")
        self._t += 1
        sampled = (self._t - 1) % self.every == 0 if record is None else bool(record)
        read_after = self.grads == "after" or all(s.param.grad is None for s in self._tracked)
        if sampled or self.importance == "taylor":
            for s in self._tracked:
                _gather_into(s.param, s.index, s.before)
        live = [] if read_after else self._read_grads()
        # AdAdaGrad's step() moves batch_size on to the next step's: read the one used now
        batch_size = getattr(self.optimizer, "batch_size", None) if sampled else None
        self._pending = _Pending(sampled, read_after, live, None if batch_size is None else int(batch_size))

    @torch.no_grad()
    def after_step(self, step: int, lr: float | None = None) -> DiagnosticRecord | None:
        """Call just after ``optimizer.step()``; returns the record on sampled steps, else None.

        ``step`` labels the record; ``lr`` is the schedule's η_t (default: each tensor's
        parameter-group lr, read now) that the scaling factor divides by.
        """
        pending = self._pending
        if pending is None:
            raise RuntimeError("after_step() without before_step(): call it before optimizer.step()")
        self._pending = None
        if pending.read_after:
            pending.live = self._read_grads()
        if not pending.sampled:
            return None
        return self._record(int(step), lr, pending.live, pending.batch_size)

    def _operands(self, key: str, live: list[_Tracked]) -> list[torch.Tensor]:
        """The ``key`` buffers of the live tensors, as few tensors as possible (see _Bank)."""
        ids = {id(s) for s in live}
        return [t for bank in self._banks for t in bank.operands(key, ids)]

    def _read_grads(self) -> list[_Tracked]:
        """|g| into the grad buffers and the importance EMA update; the tensors that had one."""
        live = [s for s in self._tracked if s.param.grad is not None]
        if not live:
            return live
        for s in live:
            _gather_into(s.param.grad, s.index, s.grad)
            s.count += 1
        abs_grads = self._operands("grad", live)
        torch._foreach_abs_(abs_grads)
        scores = abs_grads
        if self.importance == "taylor":
            scores = torch._foreach_mul(abs_grads, self._operands("before", live))
            torch._foreach_abs_(scores)
        torch._foreach_lerp_(self._operands("importance", live), scores, 1.0 - self.beta)
        return live

    def _record(
        self, step: int, lr: float | None, live: list[_Tracked], batch_size: int | None
    ) -> DiagnosticRecord:
        groups = self.optimizer.param_groups
        lrs = [float(lr if lr is not None else groups[s.group]["lr"]) for s in live]
        record_lr = float(lr if lr is not None else groups[0]["lr"])
        if not live:
            return DiagnosticRecord(step, record_lr, batch_size, ())

        # On the tracked elements: before ← θ_t − θ_{t+1} → |Δθ| → η_eff = |Δθ| / (|g| + ε).
        for s in live:
            _gather_into(s.param, s.index, s.after)
        abs_grads, lr_eff = self._operands("grad", live), self._operands("before", live)
        torch._foreach_sub_(lr_eff, self._operands("after", live))
        # per bank: rows ‖g‖, ‖Δθ‖, ‖θ_{t+1}‖; columns: members (the non-live ones are ignored)
        bank_norms = {id(bank): bank.norms(("grad", "before", "after")).T.tolist() for bank in self._banks}
        torch._foreach_abs_(lr_eff)
        torch._foreach_add_(abs_grads, EPS)
        torch._foreach_div_(lr_eff, abs_grads)
        scales = [_state_scale(self.optimizer, s) for s in live]
        # Î = I / (1 − β^t): a positive factor, so it multiplies the mean and the quantiles too.
        corrections = [1.0 / (1.0 - self.beta**s.count) for s in live]

        rows: list[tuple[int, str, torch.Tensor]] = []
        for i, s in enumerate(live):
            rows += [(i, "importance", s.importance), (i, "lr_eff", s.before)]
            if scales[i] is not None:
                rows.append((i, "scale", scales[i]))
        summaries = self._summarise([row for _, _, row in rows])
        extras = [_optimizer_summaries(self.optimizer, s.param) for s in live]
        extra_values = iter(_to_floats([v for summary in extras for v in summary.values()]))

        stats: list[dict[str, dict[str, float]]] = [{} for _ in live]
        for (i, quantity, _), values in zip(rows, summaries, strict=True):
            factor = corrections[i] if quantity == "importance" else 1.0
            stats[i][quantity] = {k: v * factor for k, v in zip(self._statistics, values, strict=True)}
            if quantity == "lr_eff":
                stats[i]["scaling_factor"] = {
                    k: _ratio(v, lrs[i]) for k, v in zip(self._statistics, values, strict=True)
                }
        for i, s in enumerate(live):
            extrapolate = math.sqrt(s.param.numel() / s.tracked)
            tensor_norms = bank_norms[id(s.bank)][s.bank.members.index(s)]
            for quantity, norm in zip(("grad_norm", "update_norm", "param_norm"), tensor_norms, strict=True):
                stats[i][quantity] = {"value": norm * extrapolate}
            for key in extras[i]:
                stats[i][str(key)] = {"value": next(extra_values)}

        tensors = tuple(
            TensorDiagnostics(s.name, tuple(s.param.shape), s.param.numel(), s.tracked, stats[i])
            for i, s in enumerate(live)
        )
        elements: dict[str, torch.Tensor] = {}
        for i, s in enumerate(live):
            if s.grid is None:
                continue
            copies = {
                "importance": s.importance * corrections[i],
                "lr_eff": s.before,
                "scaling_factor": s.before * _ratio(1.0, lrs[i]),
            }
            if scales[i] is not None:
                copies["scale"] = scales[i]
            for quantity, values in copies.items():
                # a copy: the buffers (and DGS's state) change on the next step
                elements[f"{s.name}/{quantity}"] = values.reshape(s.grid).to("cpu", torch.float32, copy=True)
        return DiagnosticRecord(step, record_lr, batch_size, tensors, elements)

    def _summarise(self, rows: list[torch.Tensor]) -> list[list[float]]:
        """[mean, quantiles...] of each row; rows of one length and dtype are done together.

        On the CPU with numpy, whose vectorised sort is ~20x faster than torch's CPU sort here,
        in reused buffers (a fresh megabyte-sized allocation costs page faults on every step).
        """
        by_shape: dict[tuple[int, torch.dtype], list[int]] = defaultdict(list)
        for k, row in enumerate(rows):
            by_shape[(row.numel(), row.dtype)].append(k)
        out: list[list[float]] = [[] for _ in rows]
        for (length, dtype), members in by_shape.items():
            shape = (len(members), length)
            buffer = self._buffers.get((shape, dtype))
            if buffer is None:
                buffer = self._buffers[(shape, dtype)] = torch.empty(shape, dtype=dtype)
            stacked = [rows[k] for k in members]
            if all(row.device.type == "cpu" for row in stacked):
                torch.stack(stacked, out=buffer)
            else:
                buffer.copy_(torch.stack(stacked))
            matrix = buffer.numpy()
            means = matrix.mean(axis=1, dtype=np.float64)
            matrix.sort(axis=1)
            table = np.concatenate([means[:, None], _sorted_row_quantiles(matrix, self.quantiles)], axis=1)
            for k, values in zip(members, table.tolist(), strict=True):
                out[k] = values
        return out


def _sorted_row_quantiles(ordered: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles of each row of an ordered matrix with linear interpolation, as
    ``torch.quantile`` computes them."""
    position = np.asarray(levels, dtype=np.float64) * (ordered.shape[1] - 1)
    low, high = np.floor(position).astype(np.int64), np.ceil(position).astype(np.int64)
    below, above = ordered[:, low].astype(np.float64), ordered[:, high].astype(np.float64)
    return below + (position - low) * (above - below)


def _ratio(value: float, lr: float) -> float:
    return value / lr if lr != 0 else math.nan


def _gather(t: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    return flat if index is None else flat.index_select(0, index)


def _gather_into(t: torch.Tensor, index: torch.Tensor | None, out: torch.Tensor) -> None:
    flat = t.detach().reshape(-1)
    if index is None or out.dtype != flat.dtype:
        out.copy_(_gather(flat, index))
    else:
        torch.index_select(flat, 0, index, out=out)


def _random_index(p: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor | None:
    """At most ``size`` flat indices of ``p`` in random blocks of contiguous elements, sorted
    (memory order); None when ``p`` has no more than ``size`` elements.

    Blocks, not single elements: a random element per cache line would make the gather read
    about as many cache lines as the whole tensor has. The last ``numel % block`` elements
    are never drawn.
    """
    n = p.numel()
    if n <= size:
        return None
    block = min(_BLOCK, size)
    starts = _distinct(n // block, size // block, generator) * block
    index = (starts[:, None] + torch.arange(block)).reshape(-1)
    return index.sort().values.to(p.device)


def _distinct(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct integers of ``range(n)``, uniformly at random (``k <= n``)."""
    if n <= 1 << 24:
        return torch.randperm(n, generator=generator)[:k]
    # no randperm of a huge range: draw with replacement until enough are distinct
    drawn = torch.empty(0, dtype=torch.long)
    while drawn.numel() < k:
        drawn = torch.cat([drawn, torch.randint(n, (2 * k,), generator=generator)]).unique()
    return drawn[torch.randperm(drawn.numel(), generator=generator)[:k]]  # unique sorted them


def _view_2d(p: torch.Tensor) -> tuple[int, int]:
    rows = p.shape[0] if p.dim() >= 2 else 1
    return rows, p.numel() // rows


def _grid_shape(p: torch.Tensor, cap: int) -> tuple[int, int]:
    """Rows and columns of the kept grid: the 2-D view when it fits, else a regular subgrid of
    at most ``cap`` elements with about the view's aspect ratio."""
    rows, cols = _view_2d(p)
    if rows * cols <= cap:
        return rows, cols
    shrink = math.sqrt(cap / (rows * cols))
    r = max(1, min(rows, int(rows * shrink)))
    return r, max(1, min(cols, cap // r))


def _grid_axes(p: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    (rows, cols), (r, c) = _view_2d(p), grid
    return (
        torch.linspace(0, rows - 1, r, dtype=torch.float64).round().long(),
        torch.linspace(0, cols - 1, c, dtype=torch.float64).round().long(),
    )


def _grid_index(p: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
    if grid[0] * grid[1] == p.numel():
        return None
    row_index, col_index = _grid_axes(p, grid)
    cols = _view_2d(p)[1]
    return (row_index[:, None] * cols + col_index[None, :]).reshape(-1).to(p.device)


def _state_scale(optimizer: torch.optim.Optimizer, s: _Tracked) -> torch.Tensor | None:
    """DGS's s_t on the tracked elements: ``state[p]["scale"]`` when it is per-element."""
    scale = optimizer.state.get(s.param, {}).get("scale")
    if not isinstance(scale, torch.Tensor) or scale.numel() != s.param.numel():
        return None
    return _gather(scale, s.index).to(s.importance.dtype)


def _optimizer_summaries(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> Mapping[str, object]:
    summaries: Callable[[torch.Tensor], Mapping[str, object]] | None = getattr(
        optimizer, "tensor_summaries", None
    )
    return {} if summaries is None else summaries(p)


def _to_floats(values: list) -> list[float]:
    """Python floats, with one device transfer per device for the tensors among ``values``
    (a tensor of several elements, e.g. AdaGrad-Norm's per-row b_t, gives its mean)."""
    out: list[float | None] = [None if isinstance(v, torch.Tensor) else float(v) for v in values]
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for k, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device[v.device].append(k)
    for members in by_device.values():
        stacked = torch.stack([values[k].detach().to(torch.float64).mean() for k in members])
        for k, value in zip(members, stacked.tolist(), strict=True):
            out[k] = value
    return out  # type: ignore[return-value]


def _needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """True when the registry says this optimizer's step computes its own gradients.

    Only DGS Lab's own classes are looked up: the registry imports every optimizer module,
    which a run of torch's optimizers has no reason to pay for (torch's LBFGS: grads="after").
    """
    if not type(optimizer).__module__.startswith("dgs_core."):
        return False
    from dgs_core.optim import registry

    return any(info.cls is type(optimizer) and info.needs_closure for info in registry.infos())
