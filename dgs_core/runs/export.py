"""A bundle taken to the tools people keep their runs in: TensorBoard and MLflow.

:func:`to_tensorboard` writes one TensorBoard run per optimizer (a folder each, named by its
label) with these scalars, by step:

    training   loss/batch, loss/train, loss/val, accuracy/train, accuracy/val, lr, batch_size,
               lr_eff/q05 … lr_eff/q95 (the effective-lr quantiles over every parameter), and
               the scaling factors η_eff / η of every recorded step as a histogram
    surface    loss (f), gap (f − f*), lr
    study      per optimizer the seed runs' curves (one run per seed) and, for the tuning
               trials, score against trial

:func:`tensorboard_zip` puts those folders in one zip (the Runs page offers it).

:func:`to_mlflow` logs the bundle as one parent MLflow run (the config as parameters, the
figures and the bundle's manifest as artifacts) with one child run per optimizer (its
hyperparameters, the same metrics by step). MLflow is optional: without it a ``RuntimeError``
says how to install it. The default tracking store is ``sqlite:///mlflow.db`` (MLflow's
file store is in maintenance mode since 3.x; pass ``file:./mlruns`` with
``MLFLOW_ALLOW_FILE_STORE=true`` for that).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dgs_core.runs.bundle import Bundle
from dgs_core.studies.sweep import SEEDS, TUNE

MLFLOW_INSTALL = "pip install mlflow-skinny==3.17.2"
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_TRAINING_SCALARS = {
    "loss": "loss/batch",
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_metric": "accuracy/train",
    "val_metric": "accuracy/val",
    "lr": "lr",
    "batch_size": "batch_size",
}


def scalars(bundle: Bundle) -> Iterator[tuple[str, str, int, float]]:
    """Every scalar of a bundle as (run, tag, step, value); NaN values are left out."""
    if bundle.kind == "training":
        for label, result in bundle.results.items():
            frame = result.metrics
            for column, tag in _TRAINING_SCALARS.items():
                for step, value in zip(frame["step"], frame[column], strict=True):
                    if not math.isnan(float(value)):
                        yield label, tag, int(step), float(value)
            band = result.quantile_band("lr_eff", _QUANTILES)
            for name in band.columns[1:]:
                for step, value in zip(band["step"], band[name], strict=True):
                    if math.isfinite(value):
                        yield label, f"lr_eff/{name}", int(step), float(value)
    elif bundle.kind == "surface":
        for label, run in (bundle.runs or {}).items():
            for t in range(run.steps + 1):
                yield label, "loss", t, float(run.loss[t, 0])
                yield label, "gap", t, float(run.gap[t, 0])
            for t in range(run.steps):
                if math.isfinite(run.lr[t, 0]):
                    yield label, "lr", t + 1, float(run.lr[t, 0])
    else:
        result = bundle.study
        for row in result.curves.itertuples(index=False):
            yield f"{row.optimizer}/seed{row.seed}", "value", int(row.step), float(row.value)
        tuned = result.trials[result.trials["phase"] == TUNE]
        for row in tuned.itertuples(index=False):
            if math.isfinite(row.score):
                yield row.optimizer, "tuning/score", int(row.trial), float(row.score)


def histograms(bundle: Bundle) -> Iterator[tuple[str, str, int, np.ndarray]]:
    """The scaling factors of every recorded step (training bundles) as (run, tag, step, values)."""
    if bundle.kind != "training":
        return
    for label, result in bundle.results.items():
        for record in result.records:
            values = [
                tensor.reshape(-1).numpy()
                for key, tensor in record.elements.items()
                if key.endswith("/scaling_factor") and tensor.numel()
            ]
            if values:
                pooled = np.concatenate(values)
                pooled = pooled[np.isfinite(pooled)]
                if pooled.size:
                    yield label, "scaling_factor", record.step, pooled


def to_tensorboard(bundle: Bundle, directory: str | Path) -> list[Path]:
    """Write TensorBoard event files under ``directory``, one run folder per optimizer; returns them."""
    from tensorboardX import SummaryWriter

    root = Path(directory)
    writers: dict[str, Any] = {}

    def writer(run: str) -> Any:
        if run not in writers:
            writers[run] = SummaryWriter(str(root / _folder(run)))
        return writers[run]

    try:
        for run, tag, step, value in scalars(bundle):
            writer(run).add_scalar(tag, value, step)
        for run, tag, step, values in histograms(bundle):
            writer(run).add_histogram(tag, values, step)
        for run in list(writers):
            writer(run).add_text("config", f"```json\n{json.dumps(bundle.config, indent=1)}\n```", 0)
    finally:
        for w in writers.values():
            w.close()
    return [root / _folder(run) for run in writers]


def tensorboard_zip(bundle: Bundle) -> bytes:
    """:func:`to_tensorboard`'s folders as one zip (the Runs page's download): unzip it and
    run ``tensorboard --logdir <folder>``."""
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        to_tensorboard(bundle, folder)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _folder(run: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run) or "run"


def to_mlflow(bundle: Bundle, uri: str = DEFAULT_MLFLOW_URI, *, experiment: str = "DGS Lab") -> str:
    """Log ``bundle`` to the MLflow tracking store at ``uri``; returns the parent run's id."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise RuntimeError(f"MLflow is not installed; to export to MLflow: {MLFLOW_INSTALL}") from None
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    parent = client.create_run(experiment_id, run_name=bundle.name, tags=_tags(bundle))
    parent_id = parent.info.run_id
    for key, value in _flat_params(bundle.config).items():
        client.log_param(parent_id, key, value)
    children: dict[str, str] = {}
    for label in bundle.labels:
        child = client.create_run(
            experiment_id,
            run_name=label,
            tags={**_tags(bundle), "mlflow.parentRunId": parent_id, "optimizer": label},
        )
        children[label] = child.info.run_id
        for key, value in _optimizer_params(bundle, label).items():
            client.log_param(child.info.run_id, key, value)
    batches: dict[str, list] = {}
    for run, tag, step, value in scalars(bundle):
        label = run.split("/", 1)[0]
        metric = tag if "/" not in run else f"{run.split('/', 1)[1]}/{tag}"
        batches.setdefault(children.get(label, parent_id), []).append(
            mlflow.entities.Metric(_metric_key(metric), value, 0, step)
        )
    for run_id, metrics in batches.items():
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "figures.html").write_bytes(bundle.figures_html)
        (Path(folder) / "manifest.json").write_text(json.dumps(dict(bundle.manifest), indent=1))
        client.log_artifacts(parent_id, folder)
    for run_id in (*children.values(), parent_id):
        client.set_terminated(run_id)
    return parent_id


def _metric_key(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_./ " else "_" for c in tag)


def _tags(bundle: Bundle) -> dict[str, str]:
    manifest = bundle.manifest
    return {
        "dgs_lab.kind": bundle.kind,
        "dgs_lab.version": str(manifest["dgs_lab_version"]),
        "dgs_lab.created": str(manifest["created"]),
    }


def _flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as MLflow parameters: nested keys joined by dots, values as text (≤ 500 chars)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key == "optimizers" and not prefix:
            continue  # each optimizer's child run holds its own
        if isinstance(value, Mapping) and value:
            out.update(_flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value, sort_keys=True)[:500]
    return out


def _optimizer_params(bundle: Bundle, label: str) -> dict[str, str]:
    if bundle.kind == "training":
        result = bundle.results[label]
        return {"optimizer": result.name, **{k: str(v) for k, v in result.hparams.items()}}
    if bundle.kind == "surface":
        run = (bundle.runs or {})[label]
        return {"optimizer": run.optimizer, **{k: str(v) for k, v in run.hparams.items()}}
    best = bundle.study.best.set_index("optimizer")
    hparams = json.loads(best.loc[label, "hparams"] or "{}")
    seeds = bundle.study.trials[
        (bundle.study.trials["phase"] == SEEDS) & (bundle.study.trials["optimizer"] == label)
    ]
    return {
        "optimizer": label,
        **{f"tuned.{k}": str(v) for k, v in hparams.items()},
        "seeds": str(len(seeds)),
    }
