"""What the diagnostics return: one :class:`DiagnosticRecord` per sampled step, and its long format.

A record holds one :class:`TensorDiagnostics` per parameter tensor (its mean, quantiles and
single values) and, for the kept tensors, per-element copies for heatmaps. :func:`to_frame`
turns records into one long-format DataFrame: columns step, tensor, quantity, statistic, value.
Both implementations (:mod:`~dgs_core.diagnostics.reference`, :mod:`~dgs_core.diagnostics.fast`)
return these records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

EPS = 1e-12  # docs/algorithms.md#diagnostics: η_eff = |Δθ| / (|g| + 1e-12)
GLOBAL = "*"  # the ``tensor`` of rows that concern the whole step (lr, batch size)
FRAME_COLUMNS = ("step", "tensor", "quantity", "statistic", "value")
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class TensorDiagnostics:
    """One parameter tensor's summaries on one sampled step.

    ``stats[quantity][statistic]``: quantities "importance", "lr_eff", "scaling_factor" and,
    for DGS, "scale" have the statistics "mean" and one per quantile ("q05", "q50", ...);
    "grad_norm", "update_norm", "param_norm" and the optimizer's own values (see
    :mod:`dgs_core.diagnostics.summaries`) have the single statistic "value".
    ``tracked``: how many of the ``numel`` elements the summaries come from.
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    tracked: int
    stats: Mapping[str, Mapping[str, float]]


class DiagnosticRecord:
    """What ``Diagnostics.after_step`` returns on a sampled step.

    Attributes:
        step: the training loop's step label.
        lr: the lr passed to ``after_step`` (else the first parameter group's).
        batch_size: the optimizer's ``batch_size`` attribute (AdAdaGrad) read by ``before_step``:
            the batch size this step used; None when the optimizer has none.
        tensors: one :class:`TensorDiagnostics` per tensor that had a gradient.
        elements: per-element copies of the kept tensors, float32 on the CPU, shaped like
            ``Diagnostics.element_index``'s grid, keyed ``"{tensor}/{quantity}"``
            (importance, lr_eff, scaling_factor, scale): ready for ``safetensors``.

    A record of ``Diagnostics(lazy=True)`` computes ``tensors`` and ``elements`` when one of
    them is first read, from a copy of the tracked values taken at its step: the same numbers.
    Until then ``_raw`` holds that copy, and ``_raw.owner`` computes them. Treat a record as
    read-only.
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
        self._raw: Any = None  # set while the summaries wait to be computed (lazy)

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

    @property
    def nbytes(self) -> int:
        """About what the record holds: its element copies' buffers, 64 bytes per summary number."""
        buffers = {
            v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in self.elements.values()
        }
        numbers = sum(len(stats) for tensor in self.tensors for stats in tensor.stats.values())
        return sum(buffers.values()) + 64 * numbers

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        """Copies and pickles hold the summaries, not what computes them; each element tensor
        is cloned, since they are views of one buffer per record and pickle writes a view's
        whole buffer (32 views: 32 buffers, 1.3 MB instead of 40 KB for a medium MLP)."""
        elements = {key: value.clone() for key, value in self.elements.items()}
        return DiagnosticRecord, (self.step, self.lr, self.batch_size, self.tensors, elements)

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
