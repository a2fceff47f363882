"""Tables built from the registries, for the UI and the README."""

from __future__ import annotations

import pandas as pd

from dgs_core.optim import registry


def optimizer_table() -> pd.DataFrame:
    """One row per registered optimizer: name, summary, paper link, interpretation flag, and
    where it departs from the official code ("" when it does not) with the reference's link."""
    rows = [
        {
            "optimizer": info.label,
            "key": info.name,
            "summary": info.summary,
            "paper": info.paper,
            "interpretation": info.interpretation,
            "needs closure": info.needs_closure,
            "departs from the official code": "; ".join(info.departures),
            "docs": info.docs,
        }
        for info in registry.infos()
    ]
    return pd.DataFrame(rows)


def optimizer_markdown() -> str:
    """The README's optimizer table (kept equal to the registry by tests/test_readme.py)."""
    lines = [
        "| name | optimizer | what it does | paper | interpretation | departs from the official code "
        "| 2-D surface defaults |",
        "|---|---|---|---|---|---|---|",
    ]
    for info in registry.infos():
        surface = ", ".join(f"{k}={v}" for k, v in info.surface_defaults.items()) or "—"
        departs = f"[yes]({info.docs}): {'; '.join(info.departures)}" if info.departures else "no"
        lines.append(
            f"| `{info.name}` | {info.label} | {info.summary} | [link]({info.paper}) | "
            f"{'**yes**' if info.interpretation else 'no'} | {departs} | {surface} |"
        )
    return "\n".join(lines)
