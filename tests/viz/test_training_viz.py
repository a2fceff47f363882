"""Training-lab figures: one panel per optimizer, the scrubber's step, snapshots at or before it."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from dgs_core.studies.large_batch import LargeBatchStudy, large_batch_base
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer
from dgs_core.viz import training as viz
from dgs_core.viz.large_batch import large_batch_figure


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    config = TrainConfig(
        task="spirals",
        task_params={"n_samples": 150},
        optimizers=[("sgd", {"lr": 0.1}), "dgs", ("adam", {"lr": 0.01})],
        steps=30,
        eval_every=10,
        diag_every=5,
        device="cpu",
    )
    trainer = Trainer(config)
    list(trainer.run())
    return trainer


def _cursor_x(fig: go.Figure) -> set[float]:
    return {shape.x0 for shape in fig.layout.shapes if shape.type == "line"}


def _panels(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_loss_figure_side_by_side_and_overlaid(trainer: Trainer) -> None:
    fig = viz.loss_figure(trainer.results, step=20)
    assert _panels(fig) == ["SGD", "DGS", "Adam"]
    assert _cursor_x(fig) == {20}
    batch_loss = [t for t in fig.data if t.name == "batch loss"]
    assert len(batch_loss) == 3 and list(batch_loss[0].y) == trainer.results["sgd"].metrics["loss"].tolist()
    validation = [t for t in fig.data if t.name == "validation"]
    assert [list(t.x) for t in validation] == [[10, 20, 30]] * 3
    overlaid = viz.loss_figure(trainer.results, overlay=True)
    assert not overlaid.layout.annotations and not _cursor_x(overlaid)
    assert {t.name for t in overlaid.data} >= {"Adam: validation", "DGS: train", "SGD: batch loss"}


def test_accuracy_lr_and_batch_size_figures(trainer: Trainer) -> None:
    accuracy = viz.accuracy_figure(trainer.results, step=10)
    assert len(accuracy.data) == 6 and _cursor_x(accuracy) == {10}
    lr = viz.lr_figure(trainer.results, step=15)
    schedule = [t for t in lr.data if t.name == "schedule lr η_t"]
    assert len(schedule) == 3 and set(schedule[2].y) == {0.01}
    medians = [t for t in lr.data if t.name == "η_eff median"]
    band = trainer.results["adam"].quantile_band()
    assert list(medians[2].y) == band["q50"].tolist() and list(medians[2].x) == band["step"].tolist()
    batch = viz.batch_size_figure(trainer.results, step=5)
    assert [t.name for t in batch.data] == ["SGD", "DGS", "Adam"] and set(batch.data[0].y) == {32}


@pytest.mark.parametrize("quantity", ["importance", "scaling_factor"])
def test_layer_heatmaps(trainer: Trainer, quantity: str) -> None:
    fig = viz.layer_heatmap_figure(trainer.results, quantity, step=25)
    assert len(fig.data) == 3 and _cursor_x(fig) == {25}
    heat = fig.data[1]
    table = trainer.results["dgs"].layer_table(quantity)
    assert list(heat.y) == list(table.index) and list(heat.x) == [1, 5, 10, 15, 20, 25, 30]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), np.log10(table.to_numpy()))


def test_dgs_own_scale_has_a_heatmap_only_for_dgs(trainer: Trainer) -> None:
    fig = viz.layer_heatmap_figure(trainer.results, "scale", step=10)
    assert len(fig.data) == 1  # sgd and adam have no s_t


def test_histogram_uses_the_record_at_or_before_the_step(trainer: Trainer) -> None:
    fig = viz.scaling_histogram_figure(trainer.results, step=12)
    assert [t.name for t in fig.data] == ["SGD (step 10)", "DGS (step 10)", "Adam (step 10)"]
    sgd = np.asarray(fig.data[0].x)
    np.testing.assert_allclose(sgd, 0.0, atol=1e-2)  # plain SGD: every factor is 1 (float32)
    kept = trainer.results["dgs"].elements_at(12, "scaling_factor")
    assert len(fig.data[1].x) == sum(v.numel() for v in kept.values())
    assert viz.scaling_histogram_figure(trainer.results, step=0).data == ()


def test_weight_heatmap_shows_the_kept_grid(trainer: Trainer) -> None:
    fig = viz.weight_heatmap_figure(trainer.results, "2.weight", step=30, quantity="importance")
    assert len(fig.data) == 3
    grid = trainer.results["adam"].elements_at(30, "importance")["2.weight"].numpy()
    np.testing.assert_allclose(np.asarray(fig.data[2].customdata, dtype=float), grid)
    assert np.asarray(fig.data[2].z).shape == (32, 32)


def test_decision_boundary(trainer: Trainer) -> None:
    fig = viz.decision_boundary_figure(trainer.results, trainer.task, step=25, resolution=20)
    assert _panels(fig) == ["SGD · step 20", "DGS · step 20", "Adam · step 20"]
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == 3 and np.asarray(heatmaps[0].z).shape == (20, 20)
    points = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert len(points) == 3 * trainer.task.num_classes
    assert sum(len(t.x) for t in points[:3]) == trainer.task.x_val.shape[0]
    early = viz.decision_boundary_figure(trainer.results, trainer.task, step=3, points="none")
    assert not early.data  # nothing evaluated before step 10
    with pytest.raises(ValueError, match="Invalid points: 'all'"):
        viz.decision_boundary_figure(trainer.results, trainer.task, step=3, points="all")


def test_binary_boundary_draws_the_half_contour() -> None:
    trainer = Trainer(
        TrainConfig(
            task="moons",
            task_params={"n_samples": 100},
            optimizers=["sgd"],
            steps=4,
            eval_every=2,
            device="cpu",
        )
    )
    list(trainer.run())
    fig = viz.decision_boundary_figure(trainer.results, trainer.task, step=4)
    contours = [t for t in fig.data if isinstance(t, go.Contour)]
    assert len(contours) == 1 and contours[0].contours.start == 0.5


def test_decision_boundary_refuses_other_tasks() -> None:
    trainer = Trainer(
        TrainConfig(
            task="modular",
            task_params={"modulus": 5},
            optimizers=["sgd"],
            steps=2,
            eval_every=2,
            device="cpu",
        )
    )
    list(trainer.run())
    assert trainer.results["sgd"].checkpoints == {}
    with pytest.raises(ValueError, match="not a 2-D task"):
        viz.decision_boundary_figure(trainer.results, trainer.task, step=2)


def test_lanes_table_has_each_optimizers_latest_numbers(trainer: Trainer) -> None:
    table = viz.lanes_table(trainer.results).set_index("optimizer")
    assert list(table.index) == ["SGD", "DGS", "Adam"]  # display names, not registry keys
    columns = ["status", "step", "batch loss", "val loss", "val accuracy", "lr", "batch size"]
    assert list(table.columns) == columns
    metrics = trainer.results["adam"].metrics
    assert table.loc["Adam", "step"] == 30 and table.loc["Adam", "status"] == "done"
    assert table.loc["Adam", "batch loss"] == f"{metrics['loss'].iloc[-1]:.4g}"
    assert table.loc["Adam", "val accuracy"] == f"{metrics['val_metric'].iloc[-1]:.4g}"
    assert table.loc["Adam", "lr"] == "0.01"


def test_large_batch_figure() -> None:
    base = large_batch_base("moons", task_params={"n_samples": 100}, device="cpu", diag_every=0)
    study = LargeBatchStudy(base, small_batch=15, large_batch=45, epochs=1)
    list(study.run())
    gap = study.gap()
    fig = large_batch_figure(gap)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 6  # train, validation and gap for each batch size
    gaps = [t for t in bars if t.name.startswith("batch ")]
    assert [t.name for t in gaps] == ["batch 15", "batch 45"]
    assert list(gaps[0].x) == ["sgd", "lars", "extrasgd"]
    np.testing.assert_allclose(list(gaps[1].y), gap[gap["batch_size"] == 45]["metric_gap"])


def test_thin_keeps_every_bucket_extreme_and_short_lines_whole() -> None:
    x = np.arange(1, 10_001)
    y = np.ones(10_000)
    y[4321] = 50.0  # a spike and a dip must survive
    y[777] = 0.01
    tx, ty = viz.thin(x, y, max_points=200)
    assert len(tx) <= 200 and np.all(np.diff(tx) > 0)
    assert 4322 in tx and 778 in tx and ty.max() == 50.0 and ty.min() == 0.01
    short_x, short_y = viz.thin([1, 2, 3], [3.0, 1.0, 2.0], max_points=200)
    assert list(short_x) == [1, 2, 3] and list(short_y) == [3.0, 1.0, 2.0]


def test_loss_figure_marks_only_the_largest_spikes() -> None:
    import pandas as pd

    steps = np.arange(1, 2001)
    loss = np.ones(2000)
    loss[10::10] = 1.6  # 200 spikes of ratio 1.6 ...
    loss[500] = 9.0  # ... and two much larger ones
    loss[1500] = 5.0
    frame = pd.DataFrame({"step": steps, "loss": loss, "spike": loss > 1.5})
    kept = viz.largest_spikes(frame, limit=5)
    assert len(kept) == 5 and kept["step"].is_monotonic_increasing
    assert {501, 1501} <= set(kept["step"]) and set(kept["loss"]) <= {1.6, 9.0, 5.0}
    assert len(viz.largest_spikes(frame, limit=1000)) == int(frame["spike"].sum())


def test_the_muon_note_names_the_matrices_and_the_adamw_fallback() -> None:
    from dgs_core.training.models import build_model
    from dgs_core.training.tasks import make_task

    note = viz.muon_split_note(build_model(make_task("moons"), None))
    assert note.startswith("**Muon** orthogonalizes the steps of the 3 weight matrices: 0.weight (32×2)")
    assert "The 3 other tensors take its AdamW fallback" in note and "4.bias (2)" in note
