"""The fast path: the records of :mod:`~dgs_core.diagnostics.reference` at a cost a training loop
hardly notices.

Read ``reference.py`` first: it is the definition, and ``tests/diagnostics/test_parity.py``
checks that this module gives the same records wherever it tracks every element. What this one
adds, each for a measured reason (``bench/diagnostics_overhead.py``, ``bench/training_speed.py``):

1. **Sampled elements.** Every quantity is elementwise, so this path follows a fixed, seeded
   random subset of at most ``sample_size`` elements per tensor (every element of smaller
   tensors) and computes them exactly there; for larger tensors the mean and quantiles are
   estimates from the subset and the norms are extrapolated from it,
   ‖x‖ ≈ √(numel / tracked) · ‖x_subset‖. The subset is made of random blocks of 16
   contiguous elements (one 64-byte cache line of float32): a gather then touches a small
   fraction of the parameters' memory (single random elements would touch about every cache
   line), ~2x faster than element by element. The cost per step is O(tracked elements),
   whatever the model's size. A kept tensor is tracked on its grid instead.
2. **Banks.** The tracked elements of all tensors of one dtype and device lie end to end in
   one buffer per quantity (rows of one ``storage``), so the per-step EMA is one ``abs`` and
   one ``lerp`` for the whole model, not one per tensor (CPU foreach ops loop over tensors);
   tensors tracked whole are gathered by one ``torch._foreach_copy_``.
3. **The flat gradient buffer** (``flat_grads=``): where the caller keeps every ``p.grad`` as
   a view of one buffer (the Training lab's trainer does) and every tensor is tracked whole,
   the buffer is the gradients' bank row already: |g| is one ``abs`` into the row, no gather.
4. **Summaries in numpy** (:mod:`~dgs_core.diagnostics.quantiles`): all rows of a record
   sorted and read in a few numpy calls; the norms of all tensors at once.
5. **Lazy records** (``lazy=True``): a recorded step only copies the tracked values (the
   bank storages) and reads what the optimizer reports; the summaries are computed when the
   record is first read, where the records are shown (the page), and reading one record
   summarises every unread one, in a row. The numbers are the same.

Which gradient: ``before_step()`` reads the gradients after backward (and after any clipping
or unscaling) and before ``optimizer.step()``: the gradient the step consumes. Closure
optimizers (ExtraSGD) compute their gradients inside ``step(closure)``; for them the gradients
are read in ``after_step()`` (for ExtraSGD: the gradient at the extrapolated point, the one its
update applied). ``grads="auto"`` picks "after" for registry entries with ``needs_closure``; in
every mode, a step where no tensor has a gradient at ``before_step()`` reads them after.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dgs_core.diagnostics.base import DiagnosticsBase, grid_index
from dgs_core.diagnostics.quantiles import RowSummariser
from dgs_core.diagnostics.records import EPS, DiagnosticRecord, TensorDiagnostics
from dgs_core.diagnostics.summaries import SCALE_STATE, Sample, summaries_many_for

_BLOCK = 16  # elements per sampled block: one 64-byte cache line of float32
_BUFFERS = ("importance", "grad", "before", "after")
_ROW = {key: row for row, key in enumerate(_BUFFERS)}  # the rows of a bank's storage


@dataclass(eq=False, slots=True)
class _Tracked:
    """Bookkeeping for one parameter tensor; its buffers hold the tracked elements only and are
    views into its bank's rows."""

    param: torch.Tensor
    name: str
    group: int
    index: torch.Tensor | None  # flat indices of the tracked elements; None = all of them
    grid: tuple[int, int] | None  # the kept copy's (rows, cols), None when not kept
    tracked: int
    # a random subset's blocks as rows of the (numel // block) × block view: one row gather
    # moves a whole cache line
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
    # The views a block gather reads and writes, made once: making them costs about as much
    # as a gather's copying does.
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
    """The tracked tensors of one device and dtype, their buffers laid end to end: one row of
    ``storage`` per quantity of ``_BUFFERS``. The members tracked whole come first, and one
    ``torch._foreach_copy_`` gathers all of them into views shaped like their parameters."""

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

    def gather_grads(self) -> None:
        """Each member's tracked elements of its gradient (every member has one)."""
        whole = self.whole
        if whole:
            torch._foreach_copy_(self.shaped["grad"], [p.grad for p in self.params[:whole]])
        for s in self.members[whole:]:
            # banked: s.grad is a view; every member has a grad
            s.gather(s.param.grad, s.grad, "grad")  # type: ignore[arg-type]  # (reason above)

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


class Diagnostics(DiagnosticsBase):
    """The diagnostics (docs/algorithms.md#diagnostics) for any ``torch.optim.Optimizer``, on
    sampled elements: the
    records of :class:`~dgs_core.diagnostics.reference.ReferenceDiagnostics`, fast (see the
    module docstring). The arguments are :class:`~dgs_core.diagnostics.base.DiagnosticsBase`'s.

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

    def _build(self) -> None:
        """The tracked elements (random blocks, or the kept grid) and their banks."""
        generator = torch.Generator().manual_seed(self.seed)
        self._tracked: list[_Tracked] = []
        by_bank: dict[tuple[torch.dtype, torch.device], list[_Tracked]] = defaultdict(list)
        for observed in self._observed:
            p, grid = observed.param, observed.grid
            block_rows, block = None, 1
            if grid is not None:
                index = grid_index(p, grid)
            else:
                index, block_rows, block = _random_index(p, self.sample_size, generator)
            tracked = p.numel() if index is None else index.numel()
            extrapolate = math.sqrt(p.numel() / tracked)
            order = len(self._tracked)
            s = _Tracked(
                p, observed.name, observed.group, index, grid, tracked, block_rows, block, extrapolate, order
            )
            self._tracked.append(s)
            dtype = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
            by_bank[(dtype, p.device)].append(s)
        self._banks = [_Bank.build(members, *key) for key, members in by_bank.items()]
        # The caller's flat gradient buffer is the grad row's layout where there is one bank,
        # every tensor is tracked whole (in the optimizer's order) and the dtypes agree.
        self._flat: torch.Tensor | None = None
        if self._flat_grads is not None and len(self._banks) == 1:
            bank = self._banks[0]
            if bank.whole == len(bank.members) and bank.storage.dtype == self._flat_grads.dtype:
                self._flat = self._flat_grads
        row_dtype = torch.float32
        for dtype, _ in by_bank:
            row_dtype = torch.promote_types(row_dtype, dtype)
        on_cpu = all(bank.storage.device.type == "cpu" for bank in self._banks)
        self._summarise = RowSummariser(self.quantiles, row_dtype, on_cpu)
        self._optimizer_values = summaries_many_for(type(self.optimizer))  # the optimizer's own values
        self._pending: tuple[bool, bool, list[_Tracked], int | None] | None = None
        # records whose summaries wait (lazy), oldest first; the lock guards them and the
        # scratch buffers of the summaries, which another thread may compute (a page)
        self._unread: list[weakref.ref[DiagnosticRecord]] = []
        self._lock = threading.Lock()

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
        if any(len(rows) for rows in state.get("pending", {}).values()):
            raise ValueError(
                "Invalid state: pending (deferred EMA updates of an older version; not resumable)"
            )
        with torch.no_grad():
            for s in self._tracked:
                s.importance.copy_(importance[s.name])
                s.count = int(count[s.name])
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
        sampled = self._sampled(record)
        read_after = self.grads == "after" or all(s.param.grad is None for s in self._tracked)
        if sampled or self.importance == "taylor":
            with torch.no_grad():
                for bank in self._banks:
                    bank.gather_params("before")
        live = [] if read_after else self._read_grads()
        batch_size = self._batch_size() if sampled else None
        # what after_step needs; a plain tuple: this runs on every step
        self._pending = (sampled, read_after, live, batch_size)

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
            live = self._read_grads()
        if not sampled:
            return None
        with torch.no_grad():
            return self._record(int(step), lr, live, batch_size)

    def _read_grads(self) -> list[_Tracked]:
        """|g_t| on the tracked elements into the grad rows and the importance EMA update;
        returns the tensors that had a gradient (the others keep their I and t).

        This runs on every step: with the flat buffer it is three calls (abs, lerp, and the
        check that the contract holds), else a gather per bank (or per sampled tensor) then
        abs and lerp on each bank's rows.
        """
        if self._flat_grads is not None:
            self._check_flat_grads()
        if self._flat is not None:  # the buffer is the grad row's layout: |g| in one call
            live = self._tracked
            scores = [torch.abs(self._flat, out=self._banks[0].buffers["grad"])]
        else:
            live = [s for s in self._tracked if s.param.grad is not None]
            if not live:
                return live
            # gradients with a graph (backward(create_graph=True)) stay out of autograd; no
            # no_grad() context otherwise: it costs ~4 µs, a step of the 2-D tasks ~330 µs
            # live: members whose grad is not None
            if any(s.param.grad.requires_grad for s in live):  # type: ignore[union-attr]  # (reason above)
                with torch.no_grad():
                    self._gather_grads(live)
            else:
                self._gather_grads(live)
            scores = self._operands("grad", live)
            torch._foreach_abs_(scores)
        if self.importance == "taylor":
            scores = torch._foreach_mul(scores, self._operands("before", live))
            torch._foreach_abs_(scores)
        torch._foreach_lerp_(self._operands("importance", live), scores, 1.0 - self.beta)
        for s in live:
            s.count += 1
        return live

    def _gather_grads(self, live: list[_Tracked]) -> None:
        if len(live) == len(self._tracked):
            for bank in self._banks:
                bank.gather_grads()
        else:
            for s in live:
                # live, banked: a grad and a grad buffer
                s.gather(s.param.grad, s.grad, "grad")  # type: ignore[arg-type]  # (reason above)

    def _operands(
        self, key: str, live: list[_Tracked], storages: Mapping[int, torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """The ``key`` rows of the live tensors, as few tensors as possible (a bank's whole row
        where all its members are live): of the banks' buffers, or of ``storages`` (per bank
        id, a record's copy of them)."""
        if len(live) == len(self._tracked):
            if storages is None:
                return [bank.buffers[key] for bank in self._banks]
            return [storages[id(bank)][_ROW[key]] for bank in self._banks]
        of = {id(b): b.storage for b in self._banks} if storages is None else storages
        ids = {id(s) for s in live}
        out = []
        for bank in self._banks:
            if all(id(s) in ids for s in bank.members):
                out.append(of[id(bank)][_ROW[key]])
            else:
                out += [_member_row(of[id(bank)], s, key) for s in bank.members if id(s) in ids]
        return out

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
        states = [self.optimizer.state.get(s.param, {}) for s in live]
        scales = [_state_scale(s, state) for s, state in zip(live, states, strict=True)]
        extras: list[dict[str, Any]] = [{}] * len(live)
        if self._optimizer_values is not None:
            extras = self._optimizer_values(
                self.optimizer,
                [groups[s.group] for s in live],
                [s.param for s in live],
                states,
                [_sampler(s, state, scale) for s, state, scale in zip(live, states, scales, strict=True)],
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

        names = self.statistics
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
        is live and kept (a small model with keep="all", the Training lab's default) the
        quantities are one stacked copy of the bank's rows, handed out as views: a few ops per
        record instead of a few per tensor and quantity.
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
                # all(with_scale): no None among them
                rows.append(torch.cat(bank_scales))  # type: ignore[arg-type]  # (reason above)
            stacked = torch.stack(rows).to("cpu", torch.float32)  # a copy: stack makes one
            columns = stacked.split_with_sizes(bank.sizes, dim=1)
            for i, s, values in zip(at, bank.members, columns, strict=True):
                # bank.kept: every member has a grid
                views = values.view(len(quantities), *s.grid).unbind()  # type: ignore[misc]  # (reason above)
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
                    # not None (checked above; scales[i] is not narrowed)
                    copies["scale"] = scales[i]  # type: ignore[assignment]  # (reason above)
                own = [(k, v.to("cpu", torch.float32, copy=True).view(s.grid)) for k, v in copies.items()]
            for quantity, values in own:
                elements[f"{s.name}/{quantity}"] = values
        return elements


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

    The last ``numel % block`` elements are never drawn.
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


def _member_row(storage: torch.Tensor, s: _Tracked, key: str) -> torch.Tensor:
    """``s``'s elements of the ``key`` row of its bank's storage (its own view) or of a copy."""
    if storage is s.bank.storage:  # type: ignore[union-attr]  # every tracked tensor is in a bank
        return getattr(s, key)
    start = int(s.bank.starts[s.position])  # type: ignore[union-attr]  # every tracked tensor is in a bank
    return storage[_ROW[key], start : start + s.tracked]


def _state_scale(s: _Tracked, state: Mapping[str, Any]) -> torch.Tensor | None:
    """DGS's s_t on the tracked elements (a copy): the per-element state ``SCALE_STATE``."""
    scale = state.get(SCALE_STATE)
    if not isinstance(scale, torch.Tensor) or scale.numel() != s.param.numel():
        return None
    out = torch.empty_like(s.importance)
    s.gather(scale, out)
    return out


def _sampler(s: _Tracked, state: Mapping[str, Any], scale: torch.Tensor | None) -> Sample:
    """``sample(tensor)`` for the optimizer's summaries: the tracked elements of a tensor shaped
    like ``s``'s parameter; DGS's s_t is the copy already read for the scale's quantiles."""

    def sample(tensor: torch.Tensor) -> torch.Tensor:
        if scale is not None and tensor is state.get(SCALE_STATE):
            return scale
        if tensor.shape != s.param.shape:
            raise ValueError(f"Invalid sample: shape {tuple(tensor.shape)} (must be {s.name}'s)")
        out = torch.empty(s.tracked, dtype=tensor.dtype, device=tensor.device)
        s.gather(tensor, out)
        return out

    return sample


def _to_floats(values: Sequence[float | torch.Tensor]) -> list[float]:
    """Python floats, with one device transfer per device for the tensors among ``values``
    (a tensor of several elements, e.g. AdaGrad-Norm's per-row b_t, gives its mean)."""
    out: list[float | None] = [None if isinstance(v, torch.Tensor) else float(v) for v in values]
    if None not in out:  # no tensors (or no values: most optimizers report none)
        return out  # type: ignore[return-value]  # None not in out: all floats
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for k, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device[v.device].append(k)
    for members in by_device.values():
        # by_device lists the tensors only
        stacked = torch.stack([_scalar(values[k]) for k in members])  # type: ignore[arg-type]  # (reason above)
        for k, value in zip(members, stacked.tolist(), strict=True):
            out[k] = value
    return out  # type: ignore[return-value]  # every None (a tensor's place) was filled above


def _scalar(value: torch.Tensor) -> torch.Tensor:
    value = value.detach()
    if value.dtype != torch.float64:
        value = value.to(torch.float64)
    return value if value.dim() == 0 else value.mean()
