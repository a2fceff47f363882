"""Tables built from the registries, for the UI and the README."""

from __future__ import annotations

import pandas as pd

from dgs_core.optim import registry


def optimizer_table() -> pd.DataFrame:
    """One row per registered optimizer: name, summary, paper link, interpretation flag."""
    rows = [
        {
            "optimizer": info.label,
            "key": info.name,
            "summary": info.summary,
            "paper": info.paper,
            "interpretation": info.interpretation,
            "needs closure": info.needs_closure,
        }
        for info in registry.infos()
    ]
    return pd.DataFrame(rows)
