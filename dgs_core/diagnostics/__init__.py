"""Diagnostics common to every optimizer, so the labs can show them side by side.

The definitions: docs/algorithms.md#diagnostics.

Per parameter tensor: the importance score (an EMA of |g| or |g ⊙ θ|, kept here, not by the
optimizer), the effective learning rate per element η_eff = |Δθ| / (|g| + 1e-12), the scaling
factor η_eff / η_t, their means and quantiles, the norms of g, Δθ and θ, and the optimizer's
own values. The modules, in reading order:

    reference.py   docs/algorithms.md#diagnostics as written: every element, plain torch. The definition.
    fast.py        :class:`Diagnostics`, the same records on sampled elements, fast enough to
                   run on every training step (what it adds, and why, in its docstring)
    summaries.py   the optimizer-specific values (LARS's trust ratio, AdaGrad-Norm's b_t,
                   Adan's ‖v‖, DGS's t and clipped fraction), declared as data per optimizer
    records.py     DiagnosticRecord, TensorDiagnostics and to_frame (the long format)
    base.py        the arguments both implementations share; quantiles.py: the fast summaries

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

from dgs_core.diagnostics.fast import Diagnostics
from dgs_core.diagnostics.records import (
    DEFAULT_QUANTILES,
    EPS,
    FRAME_COLUMNS,
    GLOBAL,
    DiagnosticRecord,
    TensorDiagnostics,
    quantile_name,
    to_frame,
)
from dgs_core.diagnostics.reference import ReferenceDiagnostics
from dgs_core.diagnostics.summaries import SUMMARIES, tensor_summaries

__all__ = [
    "DEFAULT_QUANTILES",
    "EPS",
    "FRAME_COLUMNS",
    "GLOBAL",
    "SUMMARIES",
    "DiagnosticRecord",
    "Diagnostics",
    "ReferenceDiagnostics",
    "TensorDiagnostics",
    "quantile_name",
    "tensor_summaries",
    "to_frame",
]
