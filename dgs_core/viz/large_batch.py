"""The Training lab's large-batch question as a figure: each optimizer's accuracy and train −
validation gap at a small and a large batch (:class:`dgs_core.studies.large_batch.LargeBatchStudy`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dgs_core.viz.style import OPTIMIZER_COLORS, PALETTE, rgba

MARGIN = {"l": 60, "r": 20, "t": 40, "b": 40}


def large_batch_figure(gap: pd.DataFrame, *, height: int = 380) -> go.Figure:
    """Train vs validation accuracy (left) and the gap train − validation (right) per
    optimizer at each batch size, from :func:`dgs_core.training.large_batch_gap`."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("accuracy: train (solid) vs validation (hatched)", "gap: train − validation"),
    )
    batches = sorted(gap["batch_size"].unique()) if len(gap) else []
    shades = {b: a for b, a in zip(batches, np.linspace(1.0, 0.45, max(1, len(batches))), strict=False)}
    palette = {
        label: OPTIMIZER_COLORS.get(name, PALETTE[i % len(PALETTE)])
        for i, (label, name) in enumerate(dict(zip(gap["optimizer"], gap["name"], strict=True)).items())
    }
    for batch in batches:
        rows = gap[gap["batch_size"] == batch]
        x = [f"{label} · b={batch}" for label in rows["optimizer"]]
        fill = [rgba(palette[label], shades[batch]) for label in rows["optimizer"]]
        fig.add_trace(
            go.Bar(
                x=x, y=rows["train_metric"], marker_color=fill, name=f"train, b={batch}", showlegend=False
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=x,
                y=rows["val_metric"],
                marker={"color": fill, "pattern": {"shape": "/"}},
                name=f"validation, b={batch}",
                showlegend=False,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Bar(
                x=list(rows["optimizer"]),
                y=rows["metric_gap"],
                marker_color=fill,
                name=f"batch {batch}",
                text=[f"{v:+.3f}" if math.isfinite(v) else "—" for v in rows["metric_gap"]],
                textposition="outside",
            ),
            row=1,
            col=2,
        )
    fig.update_layout(barmode="group", height=height, margin=MARGIN, legend={"orientation": "h", "y": -0.2})
    fig.update_yaxes(title_text="accuracy", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="train − validation accuracy", row=1, col=2)
    return fig
