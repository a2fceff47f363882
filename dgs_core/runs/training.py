"""Training bundles: a Trainer's run written to a bundle, read back as recorded, and resumed.

On the CPU a resumed run continues bit for bit like an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from dgs_core.diagnostics import DiagnosticRecord, TensorDiagnostics
from dgs_core.limits import check_training, server_limits
from dgs_core.runs.archive import FORMAT_VERSION, LIMITS, Archive, Limits, SnapshotError
from dgs_core.runs.bundle import Bundle, config_error, device_available, expect, keys_of, write_bundle
from dgs_core.runs.codec import (
    Decoder,
    csv_bytes,
    encode,
    file_keys,
    json_bytes,
    parquet_bytes,
    safetensors_bytes,
)
from dgs_core.runs.landscape import landscape_members, read_landscapes
from dgs_core.runs.landscape import members as landscape_files
from dgs_core.training.config import TrainConfig
from dgs_core.training.results import METRIC_COLUMNS, trajectory_capacity
from dgs_core.training.trainer import Trainer

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from dgs_core.landscape import LossGrid

# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------

# Lane entries of Trainer.state_dict() that have members of their own; the rest goes to trainer.json.
_LANE_MEMBERS = ("model", "optimizer", "columns", "records", "checkpoints", "trajectory")
_ELEMENT_QUANTITIES = ("importance", "lr_eff", "scaling_factor", "scale")
DIAGNOSTIC_COLUMNS = {"step": "int", "tensor": "str", "quantity": "str", "statistic": "str", "value": "float"}
TRAINING_METRICS = {
    **{c: "float" for c in METRIC_COLUMNS},
    "step": "int",
    "data_source": "str",
    "batch_size": "int",
    "spike": "bool",
}
_TRAINING_FILES = (
    "metrics/{}.csv",
    "metrics/{}.parquet",
    "diagnostics/{}.parquet",
    "diagnostics/{}.json",
    "diagnostics/{}.safetensors",
    "weights/{}.safetensors",
    "optimizer/{}.safetensors",
    "optimizer/{}.json",
    "checkpoints/{}.safetensors",
)
TRAJECTORY_FILE = "trajectory/{}.safetensors"  # from format 3 on


def _records_members(records: Sequence[DiagnosticRecord]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    meta = []
    elements: dict[str, torch.Tensor] = {}
    for record in records:
        meta.append(
            {
                "step": record.step,
                "tensors": [
                    {"name": t.name, "shape": list(t.shape), "numel": t.numel, "tracked": t.tracked}
                    for t in record.tensors
                ],
                "elements": list(record.elements),
            }
        )
        for key, tensor in record.elements.items():
            elements[f"{record.step}:{key}"] = tensor
    return {"records": meta}, elements


_DTYPES = {"int": "int64", "str": "str", "float": "float64"}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The diagnostics frame with its schema's dtypes: an empty one (diagnostics off) would
    otherwise be written with untyped (null) Parquet columns that the reader refuses."""
    return frame.astype({column: _DTYPES[kind] for column, kind in DIAGNOSTIC_COLUMNS.items()})


def export_training(
    trainer: Trainer | Mapping[str, Any],
    *,
    figures: Mapping[str, go.Figure] | None = None,
    name: str | None = None,
    created: datetime | None = None,
    png: bool = False,
    limits: Limits = LIMITS,
    landscapes: Sequence[LossGrid] = (),
) -> bytes:
    """The bundle of a training run: a :class:`Trainer` (finished, stopped or mid-run) or its
    ``state_dict()``.

    Args:
        figures: ``{title: figure}`` to store as HTML (the Training lab's are
            :func:`dgs_core.viz.runs.training_figures`; none by default).
        landscapes: loss grids of this run (:func:`dgs_core.landscape.evaluate_grid`), stored
            under ``landscape/`` (:mod:`dgs_core.runs.landscape`); their figures go in
            ``figures`` (:func:`dgs_core.viz.landscape.landscape_figures`).
        name: the run's display name (default: task and optimizers).
        created: the manifest's time (default: now, or ``SOURCE_DATE_EPOCH``).
        png: also store PNG images (needs kaleido and a Chromium; slow: seconds).
    """
    if isinstance(trainer, Mapping):
        trainer = Trainer.from_state_dict(trainer)
    if not isinstance(trainer, Trainer):
        raise SnapshotError(f"cannot export {type(trainer).__name__} (needs a Trainer or its state_dict)")
    config = trainer.config
    state = trainer.state_dict()
    labels = config.labels
    members: dict[str, bytes] = {}
    extra_tensors: dict[str, torch.Tensor] = {}
    lanes_json = {}
    for label, key in zip(labels, file_keys(labels, "run"), strict=True):
        lane, result = state["lanes"][label], trainer.results[label]
        frame = result.metrics
        members[f"metrics/{key}.csv"] = csv_bytes(frame)
        members[f"metrics/{key}.parquet"] = parquet_bytes(frame, limits)
        meta, elements = _records_members(lane["records"])
        members[f"diagnostics/{key}.parquet"] = parquet_bytes(_typed(result.diagnostics), limits)
        members[f"diagnostics/{key}.json"] = json_bytes(meta)
        members[f"diagnostics/{key}.safetensors"] = safetensors_bytes(elements)
        members[f"weights/{key}.safetensors"] = safetensors_bytes(lane["model"])
        optimizer_tensors: dict[str, torch.Tensor] = {}
        optimizer_json = encode(lane["optimizer"], optimizer_tensors, "optimizer")
        members[f"optimizer/{key}.safetensors"] = safetensors_bytes(optimizer_tensors)
        members[f"optimizer/{key}.json"] = json_bytes(optimizer_json)
        checkpoints = {
            f"{step}/{k}": t for step, weights in lane["checkpoints"].items() for k, t in weights.items()
        }
        members[f"checkpoints/{key}.safetensors"] = safetensors_bytes(checkpoints)
        members[TRAJECTORY_FILE.format(key)] = safetensors_bytes(
            {str(step): flat for step, flat in lane["trajectory"].items()}
        )
        rest = {k: v for k, v in lane.items() if k not in _LANE_MEMBERS}
        lanes_json[label] = encode(rest, extra_tensors, f"lanes/{key}")
    members["trainer.json"] = json_bytes({"step": state["step"], "lanes": lanes_json})
    members["trainer.safetensors"] = safetensors_bytes(extra_tensors)
    numel = sum(p.numel() for p in next(iter(trainer.lanes.values())).model.parameters())
    members.update(landscape_members(landscapes, labels, numel, limits))
    default_name = f"{config.task}: {', '.join(labels)} · {trainer.step} steps"
    return write_bundle(
        "training",
        name=name or default_name,
        created=created,
        device=str(trainer.device),
        seed=config.seed,
        labels=labels,
        config=config.to_dict(),
        members=members,
        figures=figures or {},
        png=png,
        limits=limits,
    )


def members(keys: Sequence[str], version: int = FORMAT_VERSION, landscapes: Sequence[str] = ()) -> list[str]:
    """A training bundle's own members (``version``: the bundle's format version; ``landscapes``:
    the keys its landscape index lists, from format 3 on)."""
    patterns = (*_TRAINING_FILES, TRAJECTORY_FILE) if version >= 3 else _TRAINING_FILES
    own = ["trainer.json", "trainer.safetensors"] + [
        pattern.format(key) for key in keys for pattern in patterns
    ]
    return own + (landscape_files(landscapes) if version >= 3 else [])


def read_training(
    archive: Archive, common: dict[str, Any], keys: Sequence[str], device: str | None
) -> Bundle:
    raw = common["config"]
    expect(isinstance(raw, dict), "config.json must be a JSON object")
    loaded = dict(raw)
    notes = []
    if device is not None:
        loaded["device"] = device
    elif not device_available(raw.get("device", "auto")):
        loaded["device"] = "cpu"
        notes.append(f"recorded on device {raw.get('device')!r}, which is not available here: loaded on cpu")
    try:
        config = TrainConfig.from_dict(loaded)
        # before any model is built: a small file must not make the server allocate gigabytes
        check_training(config)
        trainer = Trainer(config)
    except (ValueError, TypeError) as exc:
        raise config_error(exc) from None
    expect(
        list(common["labels"]) == config.labels,
        f"manifest.json: runs {list(common['labels'])} differ from config.json's optimizers {config.labels}",
    )
    saved = archive.json("trainer.json")
    expect(
        isinstance(saved, dict) and set(saved) == {"step", "lanes"}, "trainer.json must hold step and lanes"
    )
    step = saved["step"]
    expect(
        isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= config.steps,
        f"trainer.json: step {step!r} (must be an integer in [0, {config.steps}])",
    )
    expect(
        isinstance(saved["lanes"], dict) and list(saved["lanes"]) == config.labels,
        f"trainer.json: lanes must be {config.labels}",
    )
    extras = Decoder("trainer.json", archive.tensors("trainer.safetensors"))
    version = common["manifest"]["format_version"]
    if version < 3:
        notes.append(
            f"a format-{version} bundle: no weight trajectories (the landscape has only the final "
            "weights, and the checkpoints of 2-D tasks)"
        )
    lanes, spikes = {}, {}
    for label, key in zip(config.labels, keys, strict=True):
        lane = trainer.lanes[label]
        rest = extras(saved["lanes"][label])
        _check_lane(label, rest, step)
        columns = archive.table(f"metrics/{key}.parquet", TRAINING_METRICS, max_rows=step)
        expect(
            columns["step"] == list(range(1, len(columns["step"]) + 1)),
            f"metrics/{key}.parquet: steps must run 1, 2, 3, …",
        )
        spikes[label] = columns["spike"]
        lanes[label] = {
            **rest,
            "model": _read_weights(archive, f"weights/{key}.safetensors", lane.model),
            "optimizer": _read_optimizer(archive, key, lane.optimizer),
            "columns": {c: columns[c] for c in METRIC_COLUMNS},
            "records": _read_records(archive, key, lane.model, lane.result.element_index, step),
            "checkpoints": _read_checkpoints(archive, key, lane.model, columns),
        }
        if version >= 3:
            lanes[label]["trajectory"] = _read_trajectory(archive, key, lane.model, columns)
    extras.finish()
    state = {"config": config.to_dict(), "step": step, "lanes": lanes}
    try:
        trainer.load_state_dict(state)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
        raise SnapshotError(f"trainer.json: the saved state does not load ({exc})") from None
    landscapes: tuple = ()
    if version >= 3:
        numel = sum(p.numel() for p in next(iter(trainer.lanes.values())).model.parameters())
        landscapes = read_landscapes(archive, config.labels, numel)
    for label, key in zip(config.labels, keys, strict=True):
        frame = trainer.results[label].metrics
        expect(
            spikes[label] == frame["spike"].tolist(),
            f"metrics/{key}.parquet: the spike column does not match the losses",
        )
        expect(
            archive.read(f"metrics/{key}.csv") == csv_bytes(frame),
            f"metrics/{key}.csv does not match metrics/{key}.parquet",
        )
    return Bundle(**common, notes=tuple(notes), trainer=trainer, landscapes=landscapes)


_STATUS = re.compile(r"running|done|stopped|diverged at step \d+")


def _check_lane(label: str, lane: Any, step: int) -> None:
    where = f"trainer.json: lane {label!r}"
    expect(isinstance(lane, dict), f"{where} must be an object")
    for key in ("status", "reason", "samples", "batches", "annealing"):
        expect(key in lane, f"{where} has no {key}")
    expect(
        isinstance(lane["status"], str) and bool(_STATUS.fullmatch(lane["status"])),
        f"{where}: invalid status {lane['status']!r}",
    )
    expect(isinstance(lane["reason"], str) and len(lane["reason"]) < 200, f"{where}: invalid reason")
    samples = lane["samples"]
    expect(
        isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0,
        f"{where}: invalid samples {samples!r}",
    )
    batches = lane["batches"]
    expect(
        isinstance(batches, dict)
        and all(
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
            for v in batches.values()
        ),
        f"{where}: invalid batches {batches!r}",
    )


def _read_weights(archive: Archive, name: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    loaded = archive.tensors(name)
    expected = model.state_dict()
    _check_state(name, loaded, expected)
    return {k: loaded[k] for k in expected}


def _check_state(
    where: str, loaded: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """The same tensor names, shapes and dtypes as the model built from config.json."""
    missing = [k for k in expected if k not in loaded]
    expect(not missing, f"{where}: tensor {missing[0] if missing else ''!r} is missing")
    extra = [k for k in loaded if k not in expected]
    expect(
        not extra,
        f"{where}: unexpected tensor {extra[0] if extra else ''!r} (not in the model of config.json)",
    )
    for k, t in expected.items():
        expect(
            tuple(loaded[k].shape) == tuple(t.shape),
            f"{where}: {k} has shape {tuple(loaded[k].shape)} "
            f"but the model of config.json needs {tuple(t.shape)}",
        )
        expect(loaded[k].dtype == t.dtype, f"{where}: {k} is {loaded[k].dtype} (the model needs {t.dtype})")


def _upgrade_group(group: dict[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter group saved before the optimizers kept torch's whole contract: it had an
    ``independent_rows`` switch (only the 2-D simulator sets it now, as a group key) and no
    ``maximize``. Both meant the default, so the upgrade changes no number."""
    group = dict(group)
    if group.get("independent_rows") is False and "independent_rows" not in expected:
        del group["independent_rows"]
    if "maximize" in expected and "maximize" not in group:
        group["maximize"] = False
    if set(group) == set(expected):
        group = {k: group[k] for k in expected}  # the fresh group's order
    return group


def _read_optimizer(archive: Archive, key: str, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    name = f"optimizer/{key}.json"
    decoder = Decoder(name, archive.tensors(f"optimizer/{key}.safetensors"))
    state = decoder(archive.json(name))
    decoder.finish()
    fresh = optimizer.state_dict()
    expect(
        isinstance(state, dict) and set(state) == set(fresh),
        f"{name}: keys {keys_of(state)} (expected {sorted(fresh)})",
    )
    groups, fresh_groups = state["param_groups"], fresh["param_groups"]
    expect(
        isinstance(groups, list) and len(groups) == len(fresh_groups),
        f"{name}: {len(groups) if isinstance(groups, list) else 'no'} parameter groups "
        f"(expected {len(fresh_groups)})",
    )
    for i, (group, expected) in enumerate(zip(groups, fresh_groups, strict=True)):
        if isinstance(group, dict):
            group = groups[i] = _upgrade_group(group, expected)
        expect(
            isinstance(group, dict) and set(group) == set(expected),
            f"{name}: parameter group {i} has keys {keys_of(group)} (expected {sorted(expected)})",
        )
        for k, value in expected.items():
            if k == "lr":  # the one value a schedule changes during the run
                lr = group[k]
                expect(
                    isinstance(lr, float | int)
                    and not isinstance(lr, bool)
                    and math.isfinite(lr)
                    and lr >= 0,
                    f"{name}: parameter group {i}: invalid lr {lr!r} (must be a finite number >= 0)",
                )
            else:
                expect(
                    type(group[k]) is type(value) and group[k] == value,
                    f"{name}: parameter group {i}: {k} = {group[k]!r} differs from config.json ({value!r})",
                )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    per_param = state["state"]
    expect(isinstance(per_param, dict), f"{name}: state must be a mapping")
    for index, entries in per_param.items():
        expect(
            isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(params),
            f"{name}: state of unknown parameter {index!r} (the model has {len(params)})",
        )
        expect(isinstance(entries, dict), f"{name}: state of parameter {index} must be a mapping")
        shape = tuple(params[index].shape)
        for k, value in entries.items():
            if isinstance(value, torch.Tensor):
                expect(
                    tuple(value.shape) in ((), (1,), shape),
                    f"{name}: state {k!r} of parameter {index} has shape {tuple(value.shape)} "
                    f"(expected () or {shape})",
                )
    return state


def _read_records(
    archive: Archive, key: str, model: torch.nn.Module, element_index: Mapping[str, torch.Tensor], step: int
) -> list[DiagnosticRecord]:
    name = f"diagnostics/{key}.json"
    meta = archive.json(name)
    expect(
        isinstance(meta, dict) and isinstance(meta.get("records"), list),
        f"{name} must hold a list of records",
    )
    columns = archive.table(f"diagnostics/{key}.parquet", DIAGNOSTIC_COLUMNS)
    elements = archive.tensors(f"diagnostics/{key}.safetensors")
    rows: dict[int, list[tuple[str, str, str, float]]] = {}
    for row in zip(*columns.values(), strict=True):
        rows.setdefault(row[0], []).append(row[1:])
    params = dict(model.named_parameters())
    records, used, last = [], set(), 0
    for item in meta["records"]:
        expect(
            isinstance(item, dict) and set(item) == {"step", "tensors", "elements"}, f"{name}: invalid record"
        )
        s = item["step"]
        expect(
            isinstance(s, int) and not isinstance(s, bool) and last < s <= step and s in rows,
            f"{name}: invalid record step {s!r}",
        )
        last = s
        lr, batch_size, stats = math.nan, None, {}
        for tensor, quantity, statistic, value in rows.pop(s):
            if tensor == "*" and quantity == "lr":
                lr = value
            elif tensor == "*" and quantity == "batch_size":
                batch_size = int(value)
            else:
                stats.setdefault(tensor, {}).setdefault(quantity, {})[statistic] = value
        tensors = []
        for t in item["tensors"]:
            expect(
                isinstance(t, dict) and set(t) == {"name", "shape", "numel", "tracked"},
                f"{name}: invalid tensor entry",
            )
            p = params.get(t["name"])
            expect(
                p is not None and t["shape"] == list(p.shape) and t["numel"] == p.numel(),
                f"{name}: tensor {t['name']!r} {t['shape']} does not match the model of config.json",
            )
            expect(
                isinstance(t["tracked"], int) and 0 <= t["tracked"] <= p.numel(),
                f"{name}: invalid tracked count",
            )
            tensors.append(
                TensorDiagnostics(
                    t["name"], tuple(p.shape), p.numel(), t["tracked"], stats.pop(t["name"], {})
                )
            )
        expect(
            not stats, f"diagnostics/{key}.parquet: step {s} has rows for tensors the record does not list"
        )
        kept = {}
        for element in item["elements"]:
            tensor_name, _, quantity = str(element).rpartition("/")
            rows_index, cols_index = (
                element_index.get(f"{tensor_name}/rows"),
                element_index.get(f"{tensor_name}/cols"),
            )
            stored = elements.get(f"{s}:{element}")
            expect(
                quantity in _ELEMENT_QUANTITIES and rows_index is not None and stored is not None,
                f"{name}: step {s}: unknown per-element copy {element!r}",
            )
            grid = (len(rows_index), len(cols_index))
            expect(
                tuple(stored.shape) == grid and stored.dtype == torch.float32,
                f"diagnostics/{key}.safetensors: {s}:{element} has shape {tuple(stored.shape)} "
                f"{stored.dtype} (expected {grid} float32)",
            )
            kept[element] = stored
            used.add(f"{s}:{element}")
        records.append(DiagnosticRecord(s, lr, batch_size, tuple(tensors), kept))
    expect(not rows, f"diagnostics/{key}.parquet: rows for step {next(iter(rows), '')} that no record lists")
    unused = sorted(set(elements) - used)
    expect(
        not unused,
        f"diagnostics/{key}.safetensors: tensor {unused[0] if unused else ''!r} that no record lists",
    )
    return records


def _read_checkpoints(
    archive: Archive, key: str, model: torch.nn.Module, columns: Mapping[str, list]
) -> dict[int, dict[str, torch.Tensor]]:
    """Weights at evaluation steps (the decision boundary's), each checked like the final weights."""
    name = f"checkpoints/{key}.safetensors"
    loaded = archive.tensors(name)
    evaluated = {s for s, v in zip(columns["step"], columns["val_loss"], strict=True) if not math.isnan(v)}
    grouped: dict[int, dict[str, torch.Tensor]] = {}
    for k, tensor in loaded.items():
        step, _, tensor_name = k.partition("/")
        expect(step.isdigit() and int(step) in evaluated, f"{name}: {k!r} is not at an evaluated step")
        grouped.setdefault(int(step), {})[tensor_name] = tensor
    expected = model.state_dict()
    out = {}
    for step in sorted(grouped):
        _check_state(f"{name}: step {step}", grouped[step], expected)
        out[step] = {k: grouped[step][k] for k in expected}
    return out


def _read_trajectory(
    archive: Archive, key: str, model: torch.nn.Module, columns: Mapping[str, list]
) -> dict[int, torch.Tensor]:
    """The weight trajectory: step 0 and evaluated steps only, each a finite float32 vector of
    the model's parameter count, at most :func:`trajectory_capacity` of them, in step order."""
    name = TRAJECTORY_FILE.format(key)
    loaded = archive.tensors(name)
    numel = sum(p.numel() for p in model.parameters())
    capacity = trajectory_capacity(numel)
    expect(
        len(loaded) <= capacity,
        f"{name}: {len(loaded)} snapshots (a model this size keeps at most {capacity})",
    )
    evaluated = {s for s, v in zip(columns["step"], columns["val_loss"], strict=True) if not math.isnan(v)}
    out = {}
    for k in sorted(loaded, key=lambda k: int(k) if k.isdigit() else -1):
        expect(
            k.isdigit() and len(k) < 10 and (int(k) == 0 or int(k) in evaluated),
            f"{name}: {k!r} is not step 0 or an evaluated step",
        )
        flat = loaded[k]
        expect(
            tuple(flat.shape) == (numel,) and flat.dtype == torch.float32,
            f"{name}: step {k} has shape {tuple(flat.shape)} {flat.dtype} "
            f"(the model of config.json needs ({numel},) float32)",
        )
        expect(bool(flat.isfinite().all()), f"{name}: step {k} holds values that are not finite")
        out[int(k)] = flat
    return out


# Resuming
# ---------------------------------------------------------------------------------------------


def resume_trainer(bundle: Bundle, *, extra_steps: int = 0) -> Trainer:
    """A new trainer that continues a training bundle's run from its weights and optimizer state.

    A stopped run continues to its configured steps; ``extra_steps`` raises the step count
    (optimizers that finished because the run reached its steps go on; those that diverged
    or whose annealing plan ended stay done). On the CPU the continuation equals an
    uninterrupted run of the longer config.
    """
    if bundle.kind != "training" or bundle.trainer is None:
        raise SnapshotError("only training runs can be resumed (this is a surface run)")
    if isinstance(extra_steps, bool) or not isinstance(extra_steps, int) or extra_steps < 0:
        raise SnapshotError(f"Invalid extra_steps: {extra_steps!r} (must be an integer >= 0)")
    state = bundle.trainer.state_dict()
    limits = server_limits()
    config = bundle.trainer.config
    # the bundle's own max_steps is the recorder's setting, not this server's: the lower one holds
    cap = min(config.max_steps, limits.max_steps)
    steps = config.steps + extra_steps
    if steps > cap:
        raise SnapshotError(
            f"Invalid extra_steps: {extra_steps} ({config.steps} + {extra_steps} exceeds max_steps={cap})"
        )
    if extra_steps or cap != config.max_steps:
        state["config"] = config.replace(steps=steps, max_steps=cap).to_dict()
    if extra_steps:
        for lane in state["lanes"].values():
            if lane["status"] == "done" and not lane["reason"]:
                lane["status"] = "stopped"
    # state_dict() already copied the weights, optimizer state and metric lists, and the
    # recorded diagnostics and checkpoints are never written again: only the small mutable
    # states are copied here (a deepcopy of everything took seconds on a 16 MB run, 14k tensors).
    for lane in state["lanes"].values():
        for key in ("diagnostics", "annealing"):
            lane[key] = copy.deepcopy(lane[key])
    return Trainer.from_state_dict(state)
