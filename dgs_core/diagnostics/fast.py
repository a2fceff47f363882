"""Diagnostics common to every optimizer (SPEC §4), so the UI can show them side by side.

Per parameter tensor, on sampled steps:

    a_t    = |g_t|  (importance="grad")  or  |g_t ⊙ θ_t|  (importance="taylor")
    I_t    = β I_{t-1} + (1-β) a_t,   Î_t = I_t / (1 - β^t)      importance score, every step
    η_eff  = |θ_{t+1} − θ_t| / (|g_t| + 1e-12)                    effective per-element lr
    scaling factor = η_eff / η_t                                  η_t: the schedule's lr

summarised as a mean and quantiles over the tensor's elements, plus the norms ‖g‖, ‖Δθ‖, ‖θ‖,
DGS's own scaling factor s_t (``optimizer.state[p]["scale"]``), whatever the optimizer reports
through a ``tensor_summaries(p)`` method (LARS's trust ratio, AdaGrad-Norm's b_t, Adan's ‖v‖;
``tensor_summaries_many(params)``, when the optimizer has it, answers for every tensor at once)
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

The work per step (the EMA) is a few torch calls for the whole model: the tracked elements of
all tensors live end to end in one buffer per dtype and device, tensors tracked whole are
gathered by one ``torch._foreach_copy_`` (subsampled ones by one block gather each) and the EMA
is one ``abs_`` and one ``lerp_`` on that buffer. Where the gradients are views laid end to end in
one buffer of their own (the Training lab's trainer keeps them so), that buffer is read as it is:
no gather at all. Sampled steps add the summaries: one numpy
sort per run of rows of one length, the norms of all tensors at once, and the kept tensors'
copies as views of one stacked copy. With ``lazy=True`` a sampled step only copies the tracked
values (one copy per bank) and reads what the optimizer reports; the summaries wait until the
record is read, and then the unread records are summarised together.

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

import functools
import inspect
import math
import operator
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from dgs_core.optim._compile import Sampler
from dgs_core.params import Param, invalid

EPS = 1e-12  # SPEC §4: η_eff = |Δθ| / (|g| + 1e-12)
GLOBAL = "*"  # the ``tensor`` of rows that concern the whole step (lr, batch size)
FRAME_COLUMNS = ("step", "tensor", "quantity", "statistic", "value")
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_BLOCK = 16  # elements per sampled block: one 64-byte cache line of float32
# Deferred EMA updates: at most this many steps, and this many elements in all (1 MiB of float32)
_HISTORY_ROWS, _HISTORY_ELEMENTS = 32, 1 << 18
_GRAD = operator.attrgetter("grad")

_EVERY = Param("every", 1, low=1, integer=True, help="record every k-th step")
_BETA = Param("beta", 0.9, low=0.0, high=1.0, high_open=True, help="importance EMA β")
_IMPORTANCE = Param("importance", "grad", choices=("grad", "taylor"), help="|g| or |g ⊙ θ|")
_GRADS = Param("grads", "auto", choices=("auto", "before", "after"), help="when p.grad is read")
_QUANTILE = Param("quantiles", 0.5, low=0.0, high=1.0, help="quantile levels")
_SAMPLE_SIZE = Param("sample_size", 2048, low=1, integer=True, help="elements tracked per tensor")
_KEEP_MAX = Param("keep_max_elements", 4096, low=1, integer=True, help="per-element copy cap")


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

    A record of ``Diagnostics(lazy=True)`` computes ``tensors`` and ``elements`` when one of
    them is first read, from a copy of the tracked values taken at its step: the same numbers.
    Treat a record as read-only.
    """

    __slots__ = ("__weakref__", "_elements", "_raw", "_tensors", "batch_size", "lr", "step")

    def __init__(
        self,
        step: int,
        lr: float,
        batch_size: int | None,
        tensors: tuple[TensorDiagnostics, ...] = (),
        elements: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.step, self.lr, self.batch_size = step, lr, batch_size
        self._tensors = tuple(tensors)
        self._elements: Mapping[str, torch.Tensor] = {} if elements is None else elements
        self._raw: _Raw | None = None  # set while the summaries wait to be computed

    @property
    def tensors(self) -> tuple[TensorDiagnostics, ...]:
        if self._raw is not None:
            self._raw.owner._summarise_unread(self)
        return self._tensors

    @property
    def elements(self) -> Mapping[str, torch.Tensor]:
        if self._raw is not None:
            self._raw.owner._summarise_unread(self)
        return self._elements

    def __repr__(self) -> str:
        return (
            f"DiagnosticRecord(step={self.step}, lr={self.lr}, batch_size={self.batch_size}, "
            f"tensors={self.tensors!r})"
        )

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        """Copies and pickles hold the summaries, not what computes them."""
        return DiagnosticRecord, (self.step, self.lr, self.batch_size, self.tensors, dict(self.elements))

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
_ROW = {key: row for row, key in enumerate(_BUFFERS)}  # the rows of a bank's storage


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
    # a random subset's blocks as rows of the (numel // block) × block view: one row gather
    # moves a whole cache line, ~2x faster than gathering its elements one by one
    block_rows: torch.Tensor | None = None
    block: int = 1
    extrapolate: float = 1.0  # √(numel / tracked): a norm of the tracked elements → the tensor's
    order: int = 0  # in Diagnostics._tracked (the optimizer's order)
    bank: _Bank | None = None
    position: int = 0  # in bank.members
    importance: torch.Tensor | None = None  # I_t
    grad: torch.Tensor | None = None  # |g_t|, then |g_t| + ε
    before: torch.Tensor | None = None  # θ_t, then θ_t − θ_{t+1}, then η_eff (sampled steps)
    after: torch.Tensor | None = None  # θ_{t+1} (sampled steps)
    count: int = 0  # gradients seen, for the bias correction
    # The views a block gather reads and writes, made once: making them costs a gather about
    # as much as its copying does (three gathers per tensor and record).
    blocks: dict[str, torch.Tensor] = field(default_factory=dict)  # the buffers as block rows
    param_blocks: torch.Tensor | None = None  # θ as block rows (while θ's storage stays put)
    param_at: int = 0  # θ's data_ptr when param_blocks was made

    def gather(self, source: torch.Tensor, out: torch.Tensor, key: str | None = None) -> None:
        """The tracked elements of ``source`` (the parameter, its gradient or a state tensor of its
        shape) into ``out`` (the ``key`` buffer, if one), in the order of ``index``."""
        if self.block_rows is not None and source.dtype == out.dtype and source.is_contiguous():
            block = self.block
            rows = source.detach().as_strided((source.numel() // block, block), (block, 1))
            out_rows = self.blocks[key] if key is not None else out.view(-1, block)
            torch.index_select(rows, 0, self.block_rows, out=out_rows)
            return
        flat = source.detach().reshape(-1)
        if self.index is None:
            out.copy_(flat)
        elif out.dtype != flat.dtype:
            out.copy_(flat.index_select(0, self.index))
        else:
            torch.index_select(flat, 0, self.index, out=out)

    def gather_param(self, key: str) -> None:
        """θ's tracked elements into the ``key`` buffer."""
        if self.block_rows is not None and self.param.data_ptr() != self.param_at:
            self.view_param()  # new storage (``p.data = …``) or none made yet
        if self.param_blocks is not None:
            torch.index_select(self.param_blocks, 0, self.block_rows, out=self.blocks[key])
        else:
            self.gather(self.param, getattr(self, key), key)

    def view_param(self) -> None:
        """Make :attr:`param_blocks`, where θ allows (contiguous, of the buffers' dtype)."""
        p = self.param.detach()
        self.param_at = p.data_ptr()
        self.param_blocks = None
        if self.blocks and p.dtype == self.blocks["grad"].dtype and p.is_contiguous():
            self.param_blocks = p.as_strided((p.numel() // self.block, self.block), (self.block, 1))


@dataclass(eq=False)
class _Bank:
    """The tracked tensors of one device and dtype, their buffers laid end to end, so that an
    elementwise update of every tensor is one kernel instead of one per tensor (CPU foreach
    ops loop over the tensors).

    The members tracked whole come first, and one ``torch._foreach_copy_`` gathers all of them
    into views of the buffers shaped like their parameters: a small model's gradients cost one
    call per step, not a Python loop over its tensors.
    """

    members: list[_Tracked]
    params: list[torch.Tensor]  # the members' parameters
    storage: torch.Tensor  # one row per key of _BUFFERS
    buffers: dict[str, torch.Tensor]  # the rows of storage
    shaped: dict[str, list[torch.Tensor]]  # the whole members' buffers, shaped like their params
    starts: np.ndarray  # where each member's elements start, for per-tensor sums
    sizes: list[int]  # each member's tracked elements
    whole: int  # how many leading members are tracked whole
    kept: bool  # every member has a per-element copy
    squares: np.ndarray | None = None  # norms' work space
    # Deferred EMA updates (small models, see defer): the waiting steps' gradients, one row each
    history: torch.Tensor | None = None
    history_shaped: list[list[torch.Tensor]] = field(default_factory=list)  # rows, shaped like θ
    weights: torch.Tensor | None = None  # (1 − β) β^(rows − 1 − j), j = 0 … rows − 1
    beta: float = 0.9
    waiting: int = 0  # rows filled
    # Gradients that are views laid end to end in one buffer (a trainer's flat gradient buffer):
    # read as that one tensor, no copy. ``flat_views``: the p.grad objects it was found for.
    flat: torch.Tensor | None = None
    flat_views: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def build(cls, members: list[_Tracked], dtype: torch.dtype, device: torch.device) -> _Bank:
        members = sorted(members, key=lambda s: s.index is not None)  # stable: whole ones first
        sizes = [s.tracked for s in members]
        storage = torch.zeros(len(_BUFFERS), sum(sizes), dtype=dtype, device=device)
        buffers = dict(zip(_BUFFERS, storage, strict=True))
        whole = sum(s.index is None for s in members)
        starts = np.cumsum([0, *sizes[:-1]])
        kept = all(s.grid is not None for s in members)
        bank = cls(members, [s.param for s in members], storage, buffers, {}, starts, sizes, whole, kept)
        for key, flat in buffers.items():
            views = flat.split(sizes)
            for s, view in zip(members, views, strict=True):
                setattr(s, key, view)
            heads = zip(members[:whole], views[:whole], strict=True)
            bank.shaped[key] = [view.view(s.param.shape) for s, view in heads]
        for position, s in enumerate(members):
            s.bank, s.position = bank, position
            if s.block_rows is not None:
                s.blocks = {key: getattr(s, key).view(-1, s.block) for key in _BUFFERS}
                s.view_param()
        return bank

    def gather_params(self, key: str) -> None:
        """Each member's tracked elements of its parameter into the ``key`` buffer (call it
        under ``torch.no_grad()``: the parameters require grad)."""
        whole = self.whole
        if whole:
            torch._foreach_copy_(self.shaped[key], self.params[:whole])
        for s in self.members[whole:]:
            s.gather_param(key)

    def keep_history(self, rows: int, beta: float) -> None:
        """Defer the EMA of up to ``rows`` steps (every member tracked whole): see :meth:`defer`."""
        self.history = self.storage.new_zeros(rows, self.storage.shape[1])
        self.history_shaped = [
            [view.view(s.param.shape) for s, view in zip(self.members, row.split(self.sizes), strict=True)]
            for row in self.history
        ]
        exponents = torch.arange(rows - 1, -1, -1, dtype=torch.float64)
        self.weights = ((1.0 - beta) * beta**exponents).to(self.storage.dtype).to(self.storage.device)
        self.beta = beta

    def defer(self, grads: Sequence[torch.Tensor]) -> None:
        """A step's gradients into the history; :meth:`settle` applies their EMA updates later.

        For a small model each torch call costs more than its work: a step that records
        nothing then makes one call (the copy) instead of three (copy, abs, lerp).
        """
        if self.waiting == len(self.history_shaped):
            self.settle()
        torch._foreach_copy_(self.history_shaped[self.waiting], grads)
        self.waiting += 1

    def settle(self) -> None:
        """The EMA updates of the deferred steps, oldest first, in two calls:
        I ← β^k I + Σ_j (1 − β) β^(k−1−j) |g_j|, equal to k updates I ← β I + (1 − β)|g_j|."""
        k = self.waiting
        if k and self.history is not None and self.weights is not None:
            history = self.history[:k].abs_()
            self.buffers["importance"].addmv_(history.T, self.weights[-k:], beta=self.beta**k)
            self.waiting = 0

    def flat_grads(self, grads: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """``grads`` (the members', none None) as one tensor when they are views laid end to end
        in one buffer, in the members' order, every member tracked whole; else None.

        Checked by identity on every step (a few hundred ns), and in full only when the
        gradients are views at all: torch's fresh gradients never are.
        """
        if len(grads) == len(self.flat_views) and all(map(operator.is_, grads, self.flat_views)):
            return self.flat
        self.flat, self.flat_views = None, []  # none yet, or the owner replaced them: let go
        first = grads[0]
        if first is None or first._base is None or self.whole < len(self.members):
            return None
        storage, start = first.untyped_storage().data_ptr(), first.storage_offset()
        end = start
        for g, size in zip(grads, self.sizes, strict=True):
            if (
                g is None
                or g.requires_grad
                or g.dtype != self.storage.dtype
                or g.device != self.storage.device
                or not g.is_contiguous()
                or g.untyped_storage().data_ptr() != storage
                or g.storage_offset() != end
            ):
                return None
            end += size
        self.flat = first.detach().as_strided((end - start,), (1,), start)
        self.flat_views = list(grads)
        return self.flat

    def gather_grads(self, grads: Sequence[torch.Tensor]) -> None:
        """Each member's tracked elements of its gradient (members' order, none requiring grad)."""
        whole = self.whole
        if whole:
            torch._foreach_copy_(self.shaped["grad"], grads[:whole])
        for s, grad in zip(self.members[whole:], grads[whole:], strict=True):
            s.gather(grad, s.grad, "grad")  # type: ignore[arg-type]

    def norms(self, storage: torch.Tensor) -> list[list[float]]:
        """Per member: ‖grad‖, ‖before‖, ‖after‖ of ``storage``'s rows (the buffers or a copy).

        Members of one size: one ``vector_norm`` over the rows, in the buffers' dtype (torch's
        cascade summation: float32 to ~1e-7, 3x faster than summing in float64). Else numpy's
        segment sum (``reduceat``) in float64, ~20x faster here than torch's CPU index_add_.
        """
        values = storage[1:]
        if len(set(self.sizes)) == 1:
            rows = values.view(3, len(self.sizes), -1)
            return torch.linalg.vector_norm(rows, dim=2).T.tolist()
        if self.squares is None:  # reused: a fresh megabyte-sized array costs page faults
            self.squares = np.empty(tuple(values.shape))
        np.square(values.cpu().numpy(), out=self.squares, dtype=np.float64)
        return np.sqrt(np.add.reduceat(self.squares, self.starts, axis=1)).T.tolist()


@dataclass(eq=False, slots=True)
class _Raw:
    """What a record's summaries are computed from, captured on its step (see _record)."""

    owner: Diagnostics
    live: list[_Tracked]
    lrs: list[float]  # η_t per live tensor, for the scaling factor
    corrections: list[float]  # the importance's bias corrections 1 / (1 − β^t)
    scales: list[torch.Tensor | None]  # DGS's s_t on the tracked elements (copies)
    extras: list[tuple[str, ...]]  # the optimizer's own summaries' keys, per live tensor
    extra_values: list[float]  # their values, in that order
    storages: dict[int, torch.Tensor]  # per bank (id): rows importance, |g|, θ_t, θ_{t+1}


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
        lazy: compute a record's summaries (``tensors``, ``elements``) when the record is first
            read instead of on its step; the step then keeps a copy of the tracked values (4
            per element). Reading one record computes every unread one, in a row: this costs less
            in all (the code and data stay in the caches) and moves the work out of the training
            loop to where the records are shown. The numbers are the same.

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
        lazy: bool = False,
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
        self._buffers: dict[tuple[int, torch.dtype], torch.Tensor] = {}  # _summarise's flat copies
        self._layouts: dict[tuple[int, ...], _Layout] = {}

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

        generator = torch.Generator().manual_seed(seed)
        self._tracked: list[_Tracked] = []
        by_bank: dict[tuple[torch.dtype, torch.device], list[_Tracked]] = defaultdict(list)
        for name, group, p in entries:
            grid = _grid_shape(p, self.keep_max_elements) if name in keep else None
            block_rows, block = None, 1
            if grid is not None:
                index = _grid_index(p, grid)
            else:
                index, block_rows, block = _random_index(p, self.sample_size, generator)
            tracked = p.numel() if index is None else index.numel()
            extrapolate = math.sqrt(p.numel() / tracked)
            order = len(self._tracked)
            s = _Tracked(p, name, group, index, grid, tracked, block_rows, block, extrapolate, order)
            self._tracked.append(s)
            dtype = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
            by_bank[(dtype, p.device)].append(s)
        self._banks = [_Bank.build(members, *key) for key, members in by_bank.items()]
        for bank in self._banks:
            rows = min(_HISTORY_ROWS, _HISTORY_ELEMENTS // bank.storage.shape[1])
            if self.importance == "grad" and bank.whole == len(bank.members) and rows >= 2:
                bank.keep_history(rows, self.beta)
        self._on_cpu = all(bank.storage.device.type == "cpu" for bank in self._banks)
        self._row_dtype = torch.float32
        for dtype, _ in by_bank:
            self._row_dtype = torch.promote_types(self._row_dtype, dtype)
        self._t = 0
        self._pending: tuple[bool, bool, list[_Tracked], int | None] | None = None
        self.lazy = bool(lazy)
        # records whose summaries wait (lazy), oldest first; the lock guards them and the
        # scratch buffers of the summaries, which another thread may compute (a page)
        self._unread: list[weakref.ref[DiagnosticRecord]] = []
        self._lock = threading.Lock()

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

    def _settle(self) -> None:
        for bank in self._banks:
            bank.settle()

    def reset(self) -> None:
        """Forget the importance EMA and the step count (e.g. when the run restarts)."""
        torch._foreach_zero_([bank.buffers["importance"] for bank in self._banks])
        for bank in self._banks:
            bank.waiting = 0
        for s in self._tracked:
            s.count = 0
        self._t = 0
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        """The importance EMA and the step counts, to resume a run with identical records
        (the tracked elements follow from ``seed``, so rebuild with the same arguments).

        ``"pending"``: the gradients (|g| rows, oldest first) whose EMA updates are deferred,
        kept as they are so that a resumed run applies them in the same groups, to the bit.
        """
        pending = {}
        for bank in self._banks:
            if bank.waiting:
                rows = bank.history[: bank.waiting].split(bank.sizes, dim=1)  # type: ignore[index]
                pending.update({s.name: r.cpu().clone() for s, r in zip(bank.members, rows, strict=True)})
        return {
            "step": self._t,
            "importance": {s.name: s.importance.detach().cpu().clone() for s in self._tracked},
            "count": {s.name: s.count for s in self._tracked},
            "pending": pending,
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
        pending = state.get("pending", {})  # none in states saved before deferred updates
        waiting = {}
        for bank in self._banks:
            rows = [pending[s.name] for s in bank.members if s.name in pending]
            steps = rows[0].shape[0] if rows else 0
            if rows and (
                bank.history is None
                or len(rows) != len(bank.members)
                or any(tuple(r.shape) != (steps, s.tracked) for r, s in zip(rows, bank.members, strict=True))
                or steps > bank.history.shape[0]
            ):
                raise ValueError(
                    f"Invalid state: pending gradients of {sorted(n for n in pending)} do not fit "
                    "(must come from Diagnostics built with the same arguments)"
                )
            waiting[id(bank)] = (steps, rows)
        with torch.no_grad():
            for s in self._tracked:
                s.importance.copy_(importance[s.name])
                s.count = int(count[s.name])
            for bank in self._banks:
                steps, rows = waiting[id(bank)]
                if steps:
                    bank.history[:steps].copy_(torch.cat(rows, dim=1))  # type: ignore[index]
                bank.waiting = steps
        self._t = int(state["step"])
        self._pending = None

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
            with torch.no_grad():
                for bank in self._banks:
                    bank.gather_params("before")
        live = [] if read_after else self._read_grads(sampled)
        # AdAdaGrad's step() moves batch_size on to the next step's: read the one used now
        batch_size = getattr(self.optimizer, "batch_size", None) if sampled else None
        # what after_step needs; a plain tuple: this runs on every step
        self._pending = (sampled, read_after, live, None if batch_size is None else int(batch_size))

    def after_step(self, step: int, lr: float | None = None) -> DiagnosticRecord | None:
        """Call just after ``optimizer.step()``; returns the record on sampled steps, else None.

        ``step`` labels the record; ``lr`` is the schedule's η_t (default: each tensor's
        parameter-group lr, read now) that the scaling factor divides by.
        """
        if self._pending is None:
            raise RuntimeError("after_step() without before_step(): call it before optimizer.step()")
        sampled, read_after, live, batch_size = self._pending
        self._pending = None
        if read_after:
            live = self._read_grads(sampled)
        if not sampled:
            return None
        with torch.no_grad():
            return self._record(int(step), lr, live, batch_size)

    def _operands(
        self, key: str, live: list[_Tracked], storages: Mapping[int, torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """The ``key`` rows of the live tensors, as few tensors as possible (see _Bank): of the
        banks' buffers, or of ``storages`` (per bank id, a record's copy of them)."""
        of = {id(b): b.storage for b in self._banks} if storages is None else storages
        if len(live) == len(self._tracked):
            return [of[id(bank)][_ROW[key]] for bank in self._banks]
        ids = {id(s) for s in live}
        out = []
        for bank in self._banks:
            if all(id(s) in ids for s in bank.members):
                out.append(of[id(bank)][_ROW[key]])
            else:
                out += [_member_row(of[id(bank)], s, key) for s in bank.members if id(s) in ids]
        return out

    def _read_grads(self, sampled: bool) -> list[_Tracked]:
        """|g| into the grad buffers and the importance EMA update; the tensors that had one.

        The EMA runs on every step, so this is the per-step cost: with every tensor's gradient
        present it is one gather per bank (or per sampled tensor), then abs and lerp on each
        bank's flat buffers, with no per-tensor Python beyond the gathers; none where the
        gradients already lie in one buffer (:meth:`_read_flat`). Otherwise a small model's bank
        defers the update on steps that record nothing (:meth:`_Bank.defer`).
        """
        if self._read_flat():
            return self._tracked
        grads = [[p.grad for p in bank.params] for bank in self._banks]
        flats = [bank.flat_grads(bank_grads) for bank, bank_grads in zip(self._banks, grads, strict=True)]
        if any(flat is None for flat in flats):
            # no autograd here (no no_grad() context either: ~5 µs a step): only gradients that
            # need none, e.g. not from backward(create_graph=True), take this path
            for bank_grads in grads:
                for g in bank_grads:
                    if g is None or g.requires_grad:
                        with torch.no_grad():
                            self._settle()
                            return self._read_some_grads()
        weight = 1.0 - self.beta
        for bank, bank_grads, flat in zip(self._banks, grads, flats, strict=True):
            if flat is None and bank.history is not None and not sampled:
                bank.defer(bank_grads)
                for s in bank.members:
                    s.count += 1
                continue
            if bank.waiting:
                bank.settle()
            if flat is not None:  # the gradients as one tensor already: |g| in one call
                self._update(bank, torch.abs(flat, out=bank.buffers["grad"]), weight)
            else:
                bank.gather_grads(bank_grads)
                self._update(bank, bank.buffers["grad"].abs_(), weight)
        return self._tracked

    def _update(self, bank: _Bank, abs_grads: torch.Tensor, weight: float) -> None:
        """The importance EMA of ``bank``'s tensors with this step's |g| (its grad buffer)."""
        scores = abs_grads
        if self.importance == "taylor":
            scores = torch.mul(abs_grads, bank.buffers["before"]).abs_()
        bank.buffers["importance"].lerp_(scores, weight)
        for s in bank.members:
            s.count += 1

    def _read_flat(self) -> bool:
        """:meth:`_read_grads` where every bank's gradients are still the views of one buffer
        that :meth:`_Bank.flat_grads` found (a trainer's flat gradient buffer): two calls per
        bank and the least Python, since this runs on every step. False (nothing done) if not."""
        for bank in self._banks:
            views = bank.flat_views
            if not views or not all(map(operator.is_, map(_GRAD, bank.params), views)):
                return False
        weight = 1.0 - self.beta
        for bank in self._banks:
            if bank.waiting:  # deferred by a state loaded from a run without the buffer
                bank.settle()
            self._update(bank, torch.abs(bank.flat, out=bank.buffers["grad"]), weight)  # type: ignore[arg-type]
        return True

    def _read_some_grads(self) -> list[_Tracked]:
        """:meth:`_read_grads` when some tensors have no gradient: only the others move on."""
        live = [s for s in self._tracked if s.param.grad is not None]
        if not live:
            return live
        for s in live:
            s.gather(s.param.grad, s.grad, "grad")
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
        """The record of this step: what depends on the step is read now (θ_{t+1}, the
        optimizer's state); the summaries follow now, or when first read (``lazy``)."""
        groups = self.optimizer.param_groups
        lrs = [float(lr if lr is not None else groups[s.group]["lr"]) for s in live]
        record_lr = float(lr if lr is not None else groups[0]["lr"])
        record = DiagnosticRecord(step, record_lr, batch_size, ())
        if not live:
            return record
        if len(live) == len(self._tracked):
            for bank in self._banks:
                bank.gather_params("after")
        else:
            for s in live:
                s.gather_param("after")
        scales = [_state_scale(self.optimizer, s) for s in live]
        extras = _optimizer_summaries(
            self.optimizer, [s.param for s in live], lambda: _sampler(self.optimizer, live, scales)
        )
        raw = _Raw(
            owner=self,
            live=live,
            lrs=lrs,
            # Î = I / (1 − β^t): a positive factor, so it multiplies the mean and the quantiles too
            corrections=[1.0 / (1.0 - self.beta**s.count) for s in live],
            scales=scales,
            extras=[tuple(str(key) for key in summary) for summary in extras],
            extra_values=_to_floats([v for summary in extras for v in summary.values()]),
            storages={id(bank): bank.storage.clone() if self.lazy else bank.storage for bank in self._banks},
        )
        record._raw = raw
        if self.lazy:
            with self._lock:
                if len(self._unread) >= 256:  # forget the records dropped unread
                    self._unread = [ref for ref in self._unread if ref() is not None]
                self._unread.append(weakref.ref(record))
        else:
            with self._lock:
                self._fill(record, raw)
        return record

    def _summarise_unread(self, record: DiagnosticRecord) -> None:
        """Compute the summaries of ``record`` and of every other record still waiting for
        them, oldest first."""
        with self._lock, torch.no_grad():
            unread, self._unread = self._unread, []
            for ref in unread:
                other = ref()
                if other is not None and other._raw is not None:
                    self._fill(other, other._raw)
            if record._raw is not None:  # not listed: a summary before it raised
                self._fill(record, record._raw)

    def _fill(self, record: DiagnosticRecord, raw: _Raw) -> None:
        record._tensors, record._elements = self._summaries(raw)
        record._raw = None

    def _summaries(self, raw: _Raw) -> tuple[tuple[TensorDiagnostics, ...], dict[str, torch.Tensor]]:
        """The record's per-tensor summaries and per-element copies, from ``raw``'s rows (which
        this changes: before ← θ_t − θ_{t+1} → |Δθ| → η_eff = |Δθ| / (|g| + ε), grad ← |g| + ε)."""
        live, lrs, corrections, scales = raw.live, raw.lrs, raw.corrections, raw.scales
        storages = raw.storages
        abs_grads, lr_eff = self._operands("grad", live, storages), self._operands("before", live, storages)
        torch._foreach_sub_(lr_eff, self._operands("after", live, storages))
        # per bank and member: ‖g‖, ‖Δθ‖, ‖θ_{t+1}‖ (the non-live members' are ignored)
        bank_norms = {id(bank): bank.norms(storages[id(bank)]) for bank in self._banks}
        torch._foreach_abs_(lr_eff)
        torch._foreach_add_(abs_grads, EPS)
        torch._foreach_div_(lr_eff, abs_grads)

        # rows to summarise, per tensor: importance, lr_eff (and DGS's scale)
        rows: list[torch.Tensor] = []
        first_row: list[int] = []
        for s, scale in zip(live, scales, strict=True):
            first_row.append(len(rows))
            storage = storages[id(s.bank)]
            rows += [_member_row(storage, s, "importance"), _member_row(storage, s, "before")]
            if scale is not None:
                rows.append(scale)
        table = self._summarise(rows).tolist()  # rows × (mean, quantiles…)
        extra_values = iter(raw.extra_values)

        names = self._statistics
        tensors = []
        for i, s in enumerate(live):
            row, correction, lr_i = first_row[i], corrections[i], lrs[i]
            lr_eff = table[row + 1]
            stats = {
                "importance": {k: v * correction for k, v in zip(names, table[row], strict=True)},
                "lr_eff": dict(zip(names, lr_eff, strict=True)),
                "scaling_factor": {k: _ratio(v, lr_i) for k, v in zip(names, lr_eff, strict=True)},
            }
            if scales[i] is not None:
                stats["scale"] = dict(zip(names, table[row + 2], strict=True))
            grad_norm, update_norm, param_norm = bank_norms[id(s.bank)][s.position]
            stats["grad_norm"] = {"value": grad_norm * s.extrapolate}
            stats["update_norm"] = {"value": update_norm * s.extrapolate}
            stats["param_norm"] = {"value": param_norm * s.extrapolate}
            for key in raw.extras[i]:
                stats[key] = {"value": next(extra_values)}
            tensors.append(TensorDiagnostics(s.name, tuple(s.param.shape), s.param.numel(), s.tracked, stats))
        return tuple(tensors), self._elements(raw)

    def _elements(self, raw: _Raw) -> dict[str, torch.Tensor]:
        """The per-element copies of the kept tensors, float32 on the CPU.

        Copies, since the buffers (and DGS's state) change on the next step. Where a whole bank
        is live and kept (a small model with keep="all") the quantities are one stacked copy of
        the bank's rows, handed out as views: a few ops per record instead of a few per
        tensor and quantity.
        """
        live, corrections, lrs, scales = raw.live, raw.corrections, raw.lrs, raw.scales
        everything = len(live) == len(self._tracked)
        index = {} if everything else {id(s): i for i, s in enumerate(live)}
        pieces: dict[int, list[tuple[str, torch.Tensor]]] = {}  # live index → its views
        for bank in self._banks:
            at = [s.order if everything else index.get(id(s), -1) for s in bank.members]
            if not bank.kept or -1 in at:
                continue
            bank_scales = [scales[i] for i in at]
            with_scale = [scale is not None for scale in bank_scales]
            if any(with_scale) and not all(with_scale):
                continue  # DGS's scale for some tensors only: one by one below
            quantities = ["importance", "lr_eff", "scaling_factor"]
            storage = raw.storages[id(bank)]
            importance, before = storage[_ROW["importance"]], storage[_ROW["before"]]
            rows = [
                importance * _per_element(bank, [corrections[i] for i in at]),
                before,
                before * _per_element(bank, [_ratio(1.0, lrs[i]) for i in at]),
            ]
            if all(with_scale):
                quantities.append("scale")
                rows.append(torch.cat(bank_scales))  # type: ignore[arg-type]
            stacked = torch.stack(rows).to("cpu", torch.float32)  # a copy: stack makes one
            columns = stacked.split_with_sizes(bank.sizes, dim=1)
            for i, s, values in zip(at, bank.members, columns, strict=True):
                views = values.view(len(quantities), *s.grid).unbind()  # type: ignore[misc]
                pieces[i] = list(zip(quantities, views, strict=True))

        elements: dict[str, torch.Tensor] = {}
        for i, s in enumerate(live):
            if s.grid is None:
                continue
            own = pieces.get(i)
            if own is None:
                storage = raw.storages[id(s.bank)]
                before = _member_row(storage, s, "before")
                copies = {
                    "importance": _member_row(storage, s, "importance") * corrections[i],
                    "lr_eff": before,
                    "scaling_factor": before * _ratio(1.0, lrs[i]),
                }
                if scales[i] is not None:
                    copies["scale"] = scales[i]  # type: ignore[assignment]
                own = [(k, v.to("cpu", torch.float32, copy=True).view(s.grid)) for k, v in copies.items()]
            for quantity, values in own:
                elements[f"{s.name}/{quantity}"] = values
        return elements

    def _summarise(self, rows: list[torch.Tensor]) -> np.ndarray:
        """[mean, quantiles...] of each row (1-D tensors of any lengths), float64, rows × stats.

        On the CPU with numpy, whose vectorised sort is ~20x faster than torch's CPU sort here:
        one copy of every row laid end to end (in a reused buffer: a fresh megabyte-sized
        allocation costs page faults on every record), each run of consecutive rows of one
        length sorted in place as one matrix, then every quantile read with one fancy index.
        """
        lengths = tuple(row.numel() for row in rows)
        layout = self._layouts.get(lengths)
        if layout is None:
            if len(self._layouts) >= 16:  # the live tensors changed often: start over
                self._layouts.clear()
            layout = self._layouts[lengths] = _Layout.of(lengths, self.quantiles)
        dtype = self._row_dtype  # the rows are bank buffers and DGS's scale in a bank's dtype
        buffer = self._buffers.get((layout.total, dtype))
        if buffer is None:
            buffer = self._buffers[(layout.total, dtype)] = torch.empty(layout.total, dtype=dtype)
        if self._on_cpu:
            torch.cat(rows, out=buffer)
        else:
            buffer.copy_(torch.cat([row.to(rows[0].device) for row in rows]))
        flat = buffer.numpy()
        if len(layout.runs) > 1:  # one call for all (a long single run sums faster by rows)
            sums = np.add.reduceat(flat, layout.starts, dtype=np.float64)
        else:
            sums = flat.reshape(len(rows), -1).sum(axis=1, dtype=np.float64)
        for first, count, length in layout.runs:
            start = layout.starts[first]
            flat[start : start + count * length].reshape(count, length).sort(axis=1)
        means = sums / layout.lengths
        below, above = flat[layout.below].astype(np.float64), flat[layout.above].astype(np.float64)
        quantiles = below + layout.fraction * (above - below)
        return np.concatenate([means[:, None], quantiles], axis=1)


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where :meth:`Diagnostics._summarise`'s rows lie in its flat copy, per list of lengths."""

    total: int
    lengths: np.ndarray  # per row
    starts: np.ndarray  # per row
    runs: tuple[tuple[int, int, int], ...]  # (first row, rows, length) of consecutive rows of one length
    below: np.ndarray  # rows × levels: flat positions of the order statistics around each quantile
    above: np.ndarray
    fraction: np.ndarray  # rows × levels: the interpolation weight of ``above``

    @classmethod
    def of(cls, lengths: Sequence[int], levels: Sequence[float]) -> _Layout:
        sizes = np.asarray(lengths, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        runs: list[tuple[int, int, int]] = []
        for row, length in enumerate(lengths):
            if runs and runs[-1][2] == length:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1, length)
            else:
                runs.append((row, 1, length))
        below, above, fraction = _quantile_positions(sizes, levels)
        offsets = starts[:, None]
        return cls(int(sizes.sum()), sizes, starts, tuple(runs), offsets + below, offsets + above, fraction)


def _quantile_positions(
    lengths: np.ndarray, levels: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted rows of these lengths: the indices below and above each quantile level and the
    weight of the one above (rows × levels), linear interpolation as ``torch.quantile`` does."""
    position = np.asarray(levels, dtype=np.float64)[None, :] * (lengths[:, None] - 1)
    below = np.floor(position).astype(np.int64)
    return below, np.ceil(position).astype(np.int64), position - below


def _sorted_row_quantiles(ordered: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles of each row of an ordered matrix with linear interpolation, as
    ``torch.quantile`` computes them."""
    below, above, fraction = _quantile_positions(np.array([ordered.shape[1]]), levels)
    low, high = ordered[:, below[0]].astype(np.float64), ordered[:, above[0]].astype(np.float64)
    return low + fraction * (high - low)


def _ratio(value: float, lr: float) -> float:
    return value / lr if lr != 0 else math.nan


def _per_element(bank: _Bank, values: list[float]) -> float | torch.Tensor:
    """One value per member of ``bank`` as a multiplier of its flat buffers: a scalar when they
    are all equal (the usual case), else each value repeated over its member's elements."""
    first = values[0]
    if all(v == first or (math.isnan(v) and math.isnan(first)) for v in values):
        return first
    dtype, device = bank.storage.dtype, bank.storage.device
    sizes = torch.tensor([s.tracked for s in bank.members], device=device)
    return torch.repeat_interleave(torch.tensor(values, dtype=dtype, device=device), sizes)


def _random_index(
    p: torch.Tensor, size: int, generator: torch.Generator
) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """At most ``size`` flat indices of ``p`` in random blocks of contiguous elements, sorted
    (memory order); None when ``p`` has no more than ``size`` elements. Also the blocks as rows
    of ``p``'s (numel // block) × block view, and the block's length.

    Blocks, not single elements: a random element per cache line would make the gather read
    about as many cache lines as the whole tensor has. The last ``numel % block`` elements
    are never drawn.
    """
    n = p.numel()
    if n <= size:
        return None, None, 1
    block = min(_BLOCK, size)
    rows = _distinct(n // block, size // block, generator).sort().values
    index = (rows[:, None] * block + torch.arange(block)).reshape(-1)
    return index.to(p.device), rows.to(p.device) if block > 1 else None, block


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


def _member_row(storage: torch.Tensor, s: _Tracked, key: str) -> torch.Tensor:
    """``s``'s elements of the ``key`` row of its bank's storage (its own view) or of a copy."""
    if storage is s.bank.storage:  # type: ignore[union-attr]
        return getattr(s, key)
    start = int(s.bank.starts[s.position])  # type: ignore[union-attr]
    return storage[_ROW[key], start : start + s.tracked]


def _state_scale(optimizer: torch.optim.Optimizer, s: _Tracked) -> torch.Tensor | None:
    """DGS's s_t on the tracked elements: ``state[p]["scale"]`` when it is per-element."""
    scale = optimizer.state.get(s.param, {}).get("scale")
    if not isinstance(scale, torch.Tensor) or scale.numel() != s.param.numel():
        return None
    out = torch.empty_like(s.importance)
    s.gather(scale, out)
    return out


def _sampler(
    optimizer: torch.optim.Optimizer, live: list[_Tracked], scales: list[torch.Tensor | None]
) -> Sampler:
    """``sample(param, tensor)``: the tracked elements of ``tensor`` (shaped like ``param``), for
    an optimizer's ``tensor_summaries_many``; DGS's s_t is the copy already read for the scale."""
    tracked = {id(s.param): (s, scale) for s, scale in zip(live, scales, strict=True)}

    def sample(param: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
        found = tracked.get(id(param))
        if found is None or tensor.shape != param.shape:
            raise ValueError("Invalid sample: a tensor shaped like one of the recorded parameters is needed")
        s, scale = found
        if scale is not None and tensor is optimizer.state[param].get("scale"):
            return scale
        out = torch.empty(s.tracked, dtype=tensor.dtype, device=tensor.device)
        s.gather(tensor, out)
        return out

    return sample


def _optimizer_summaries(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    sampler: Callable[[], Sampler],
) -> list[Mapping[str, object]]:
    """The optimizer's ``tensor_summaries`` of each tensor: through its
    ``tensor_summaries_many(params)`` when it has one (all tensors in one go), else one call
    each; given ``sample=sampler()`` where the method takes it (values from per-element states
    are then estimated on the tracked elements; made only then: it costs a few µs a record)."""
    many: Callable[..., list[Mapping[str, object]]] | None = getattr(optimizer, "tensor_summaries_many", None)
    if many is not None:
        return list(many(params, sample=sampler()) if _takes_sample(many) else many(params))
    one: Callable[[torch.Tensor], Mapping[str, object]] | None = getattr(optimizer, "tensor_summaries", None)
    return [{} if one is None else one(p) for p in params]


def _takes_sample(method: Callable[..., Any]) -> bool:
    return _signature_has(getattr(method, "__func__", method), "sample")


@functools.cache
def _signature_has(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return False


def _to_floats(values: list) -> list[float]:
    """Python floats, with one device transfer per device for the tensors among ``values``
    (a tensor of several elements, e.g. AdaGrad-Norm's per-row b_t, gives its mean)."""
    out: list[float | None] = [None if isinstance(v, torch.Tensor) else float(v) for v in values]
    if None not in out:  # no tensors (or no values: most optimizers report none)
        return out  # type: ignore[return-value]
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for k, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device[v.device].append(k)
    for members in by_device.values():
        # 0-d float64 tensors (DGS's clipped) as they are; others' means (one op each)
        stacked = torch.stack([_scalar(values[k]) for k in members])
        for k, value in zip(members, stacked.tolist(), strict=True):
            out[k] = value
    return out  # type: ignore[return-value]


def _scalar(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    if value.dtype != torch.float64:
        value = value.to(torch.float64)
    return value if value.dim() == 0 else value.mean()


def _needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """True when the registry says this optimizer's step computes its own gradients.

    Only DGS Lab's own classes are looked up: the registry imports every optimizer module,
    which a run of torch's optimizers has no reason to pay for (torch's LBFGS: grads="after").
    """
    if not type(optimizer).__module__.startswith("dgs_core."):
        return False
    from dgs_core.optim import registry

    return any(info.cls is type(optimizer) and info.needs_closure for info in registry.infos())
