"""Diagnostics common to every optimizer (SPEC §4); see :mod:`dgs_core.diagnostics.fast`."""

from dgs_core.diagnostics.fast import (
    DEFAULT_QUANTILES,
    EPS,
    FRAME_COLUMNS,
    GLOBAL,
    DiagnosticRecord,
    Diagnostics,
    TensorDiagnostics,
    quantile_name,
    to_frame,
)

__all__ = [
    "DEFAULT_QUANTILES",
    "EPS",
    "FRAME_COLUMNS",
    "GLOBAL",
    "DiagnosticRecord",
    "Diagnostics",
    "TensorDiagnostics",
    "quantile_name",
    "to_frame",
]
