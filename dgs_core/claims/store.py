"""Shipped results: ``assets/claims/<claim>/`` holds ``record.json`` and the tables as CSV.

``record.json`` is the card's text, the budget, the plan's config hash, the code version
(``dgs_core.__version__`` and the git commit), the date, the tuned hyperparameters, the
configurations to open in the labs, the numbers and the verdict. The tables are small CSV
files (``tuning.csv``, ``runs.csv``, ``curves.csv``, and the overshoot claim's
``surface_tuning.csv`` and ``starts.csv``), from which the numbers are computed again by
:attr:`Claim.numbers <dgs_core.claims.base.Claim.numbers>` (a test checks they agree).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dgs_core.claims.verdicts import Verdict

CLAIMS_DIR = Path(__file__).resolve().parents[2] / "assets" / "claims"
RECORD = "record.json"
DIGITS = 8  # significant digits kept in the CSV files: far below any difference a verdict reads


class StoredResult:
    """A result read back from disk: its record, its tables, numbers and verdict."""

    def __init__(self, record: Mapping[str, Any], tables: Mapping[str, pd.DataFrame]) -> None:
        self.record = dict(record)
        self.tables = dict(tables)

    @property
    def numbers(self) -> dict[str, Any]:
        return self.record["numbers"]

    @property
    def verdict(self) -> Verdict:
        return Verdict.from_dict(self.record["verdict"])


def _plain(value: Any) -> Any:
    """JSON without NaN or infinity (the record is read by browsers and other tools)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_result(result: Any, directory: Path = CLAIMS_DIR) -> Path:
    """Write a :class:`~dgs_core.claims.execution.ClaimResult` to ``directory/<claim>/``;
    returns that folder. Files are written next to the old ones and then moved over them, so a
    reader never sees half a result."""
    folder = Path(directory) / result.claim.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in result.tables.items():
        path = folder / f"{name}.csv"
        partial = folder / f".{name}.csv.partial"
        table.to_csv(partial, index=False, float_format=f"%.{DIGITS}g")
        written.append((partial, path))
    record = folder / RECORD
    partial_record = folder / f".{RECORD}.partial"
    partial_record.write_text(
        json.dumps(_plain(result.record), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    written.append((partial_record, record))
    for partial, path in written:
        partial.replace(path)
    for stale in folder.glob("*.csv"):
        if stale.stem not in result.tables:
            stale.unlink()
    return folder


def load_result(name: str, directory: Path = CLAIMS_DIR) -> StoredResult | None:
    """The stored result of claim ``name``, or None when there is none."""
    folder = Path(directory) / name
    record_path = folder / RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text(encoding="utf-8"))
    tables = {table: pd.read_csv(folder / f"{table}.csv") for table in record["tables"]}
    return StoredResult(record, tables)
