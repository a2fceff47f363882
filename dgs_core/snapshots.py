"""Run snapshots: one versioned ``.zip`` that brings a training or surface run back exactly.

Making a bundle — one call per lab (pages put it behind a download button; pass a callable
so the bundle is only built when the user clicks)::

    from dgs_core.snapshots import export_training, export_surface, surface_config

    st.download_button("Download run", data=lambda: export_training(trainer),
                       file_name="run.zip", mime="application/zip")

    config = surface_config("rosenbrock", {"sgd": {"lr": 1e-3}, "adam": None}, start=(-2, 2), steps=500)
    runs = run_surface_config(config)             # the same as surfaces.compare(...) with those arguments
    data = export_surface(runs, config)

``export_training`` takes the live :class:`~dgs_core.training.Trainer` (or its
``state_dict()``); ``export_surface`` takes ``{label: Run}`` and the :func:`surface_config`
that produced it (the config is what ``python -m dgs_core run`` re-runs). Both draw the
lab's standard figures (:mod:`dgs_core.viz.runs`) unless given ``figures={title: go.Figure}``,
and add PNG copies with ``png=True`` when kaleido finds a Chromium.

Reading one back — every file is untrusted; any problem raises :class:`SnapshotError`
(a ``ValueError``) with one message naming the member and what is wrong::

    bundle = read_bundle("run.zip")               # a path or the bytes of an upload
    bundle.results, bundle.task                    # training: {label: RunResult} as recorded
    bundle.runs                                    # surface: {label: Run}
    trainer = resume_trainer(bundle, extra_steps=200)

Format (``FORMAT_VERSION`` 1). A bundle is a zip (stored or deflated members only) holding
exactly these members, ``<key>`` being each optimizer's file key from the manifest::

    manifest.json        format "dgs-lab-run", format_version, kind ("training" | "surface"),
                         name, created (UTC, ISO 8601), dgs_lab_version, torch_version,
                         python_version, device, seed, runs [{label, key}],
                         figures [{title, key}], png [keys], png_note
    config.json          training: TrainConfig.to_dict() (task, model, optimizers and their
                         hyperparameters, schedule or annealing plan, batch policy, …);
                         surface: surface_config() (surface, starts, lrs, steps, noise, …).
                         Either one is a valid input of ``python -m dgs_core run``.
    figures/index.html   every figure, self-contained (one embedded copy of plotly.js)
    figures/<fig>.png    when rendered (``manifest.png`` lists them)
  training:
    trainer.json         step, and per optimizer its status, reason, examples seen, data order
                         (batch cursors), annealing-controller state and any other state of
                         Trainer.state_dict() (tagged JSON, below)
    trainer.safetensors  tensors of that other state (usually empty)
    metrics/<key>.csv, metrics/<key>.parquet     RunResult.metrics, one row per step
    diagnostics/<key>.parquet                    the diagnostic records, long format
    diagnostics/<key>.json                       per record: step, tensors (name, shape, numel,
                                                 tracked) and its per-element copies
    diagnostics/<key>.safetensors                those copies, keyed "<step>:<tensor>/<quantity>"
    weights/<key>.safetensors                    the model's final state_dict
    optimizer/<key>.safetensors, optimizer/<key>.json    optimizer.state_dict(): tensors, and the
                                                 rest (param_groups, step counters, generator
                                                 states by reference) as tagged JSON
    checkpoints/<key>.safetensors                the weights at evaluation steps, keyed
                                                 "<step>/<tensor>" (2-D tasks: the decision
                                                 boundary at any step is drawn from them)
  surface:
    simulation.json      per optimizer: resolved hyperparameters, notes, noise settings
    trajectories/<key>.safetensors   points, loss, grad, lr, scaling, batch_size, diverged_at,
                                     starts, lrs (and DGS's scale, ExtraSGD's extrapolated)
    metrics/<key>.csv, metrics/<key>.parquet     step, row, x, y, loss, gap

Tagged JSON is plain JSON where a value that JSON cannot hold is one-key object:
``{"$tensor": name}`` (in the companion .safetensors), ``{"$ndarray": name}``,
``{"$tuple": [...]}``, ``{"$float": "nan" | "inf" | "-inf"}`` and ``{"$map": [[key, value],
…]}`` (a dict whose keys are not all strings). Nothing is ever pickled, and reading executes
no code: JSON through ``json``, tensors through ``safetensors``, tables through ``pyarrow``.

Reading checks, in order: the file size; that it is a zip; every member's path (relative,
no ``..``, no backslash, no symlink, no duplicates), compression method and size (one member,
all members, JSON members); the manifest; that the members are exactly those of the format;
the config (validated like a new run); then every tensor's name, shape and dtype against the
model, optimizer and task built from that config, the tables' schemas and row counts (read
from Parquet metadata before any data), and that the CSV and Parquet copies agree. Only then
is the run rebuilt. The caps are :data:`LIMITS`.

Deterministic output: the same run gives the same bytes (zip timestamps are the manifest's
``created``, which honours ``SOURCE_DATE_EPOCH``), so a bundle from the CLI equals the one
from the page for the same config and time.
"""

from __future__ import annotations

import asyncio
import copy
import html
import io
import json
import math
import os
import platform
import re
import stat
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch
from safetensors import SafetensorError

import dgs_core
from dgs_core.device import resolve_device
from dgs_core.diagnostics import DiagnosticRecord, TensorDiagnostics
from dgs_core.metrics import divergence_message
from dgs_core.optim import registry
from dgs_core.params import invalid
from dgs_core.surfaces import MAX_STEPS, Run, check_starts, get_surface, simulate
from dgs_core.training.config import TrainConfig
from dgs_core.training.results import METRIC_COLUMNS
from dgs_core.training.trainer import Trainer

if TYPE_CHECKING:
    import plotly.graph_objects as go

FORMAT = "dgs-lab-run"
FORMAT_VERSION = 1
KINDS = ("training", "surface")
MB = 1 << 20


class SnapshotError(ValueError):
    """A bundle that cannot be written or read; the message names what is wrong."""


@dataclass(frozen=True)
class Limits:
    """Caps on what a bundle may hold (bytes unless said otherwise)."""

    max_bytes: int = 64 * MB  # the .zip file itself
    max_uncompressed: int = 256 * MB  # every member together, decompressed
    max_member: int = 128 * MB  # one member, decompressed
    max_json: int = 16 * MB  # one JSON member
    max_members: int = 2000
    max_rows: int = 5_000_000  # one table (Parquet member)


LIMITS = Limits()


# ---------------------------------------------------------------------------------------------
# Tagged JSON: plain values, with tensors by reference
# ---------------------------------------------------------------------------------------------

_TAGS = ("$tensor", "$ndarray", "$tuple", "$float", "$map")
_MAX_DEPTH = 64


def _encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """``value`` as tagged JSON; tensors and arrays go to ``tensors`` under their path."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.generic):
        return _encode(value.item(), tensors, path)
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"$tensor": path}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise SnapshotError(f"cannot store an object array at {path!r}")
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"$ndarray": path}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _encode(v, tensors, f"{path}/{k}") for k, v in value.items()}
        return {
            "$map": [
                [_encode(k, tensors, f"{path}/{i}k"), _encode(v, tensors, f"{path}/{k}")]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise SnapshotError(f"cannot store a {type(value).__name__} at {path!r} (not JSON, not a tensor)")


class _Decoder:
    """Tagged JSON back to values; every tensor of the companion file must be used once."""

    def __init__(self, member: str, tensors: Mapping[str, torch.Tensor]) -> None:
        self.member, self.tensors, self.used = member, tensors, set()

    def fail(self, what: str) -> SnapshotError:
        return SnapshotError(f"{self.member}: {what}")

    def __call__(self, node: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail(f"nested more than {_MAX_DEPTH} levels deep")
        if isinstance(node, list):
            return [self(v, depth + 1) for v in node]
        if not isinstance(node, dict):
            return node
        tags = [k for k in node if k.startswith("$")]
        if not tags:
            return {k: self(v, depth + 1) for k, v in node.items()}
        if len(node) != 1 or tags[0] not in _TAGS:
            raise self.fail(f"unknown tagged value {sorted(node)!r} (tags: {', '.join(_TAGS)})")
        tag, arg = tags[0], node[tags[0]]
        if tag in ("$tensor", "$ndarray"):
            if not isinstance(arg, str) or arg not in self.tensors:
                raise self.fail(f"refers to tensor {arg!r}, which its .safetensors file does not hold")
            if arg in self.used:
                raise self.fail(f"refers to tensor {arg!r} twice")
            self.used.add(arg)
            return self.tensors[arg] if tag == "$tensor" else self.tensors[arg].numpy()
        if tag == "$float":
            if arg not in ("nan", "inf", "-inf"):
                raise self.fail(f"invalid $float {arg!r} (must be nan, inf or -inf)")
            return float(arg)
        if not isinstance(arg, list):
            raise self.fail(f"{tag} must hold a list")
        if tag == "$tuple":
            return tuple(self(v, depth + 1) for v in arg)
        out = {}
        for item in arg:
            if not isinstance(item, list) or len(item) != 2:
                raise self.fail("$map items must be [key, value] pairs")
            key = self(item[0], depth + 1)
            if not isinstance(key, int | float | str | bool | tuple) and key is not None:
                raise self.fail(f"$map key {key!r} cannot be a dict key")
            out[key] = self(item[1], depth + 1)
        return out

    def finish(self) -> None:
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            raise self.fail(f"its .safetensors file holds tensor {unused[0]!r} that nothing refers to")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _created(created: datetime | None) -> datetime:
    if created is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible-builds convention
        created = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.astimezone(UTC).replace(microsecond=0)


_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def _file_keys(titles: Sequence[str], fallback: str) -> list[str]:
    """A file-name-safe, unique key per title ("Learning rate" → "learning_rate", "sgd#2" → "sgd_2")."""
    keys: list[str] = []
    for title in titles:
        base = re.sub(r"[^a-z0-9_.-]+", "_", title.lower()).strip("._-")[:48] or fallback
        key, n = base, 2
        while key in keys:
            key, n = f"{base}_{n}", n + 1
        keys.append(key)
    return keys


def _json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=sort_keys, ensure_ascii=False) + "\n").encode()


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def _parquet_bytes(frame: pd.DataFrame, limits: Limits) -> bytes:
    if len(frame) > limits.max_rows:
        raise SnapshotError(
            f"the run is too large for a bundle: a table of {len(frame)} rows (at most {limits.max_rows}); "
            "record fewer diagnostics"
        )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _portable(fig: go.Figure) -> go.Figure:
    """A copy of the figure as plotly draws it anywhere, in a canonical key order.

    A figure on this process's default template gets plotly's own ("plotly"): importing
    streamlit makes its theme the default, and a bundle must not depend on whether a page or
    the CLI made it. The copy also fixes the order of the serialised keys, which otherwise
    follows the order the builder set them in.
    """
    import plotly.graph_objects as go
    import plotly.io as pio

    portable = go.Figure(fig)
    default = pio.templates.default
    if isinstance(default, str) and default != "plotly" and fig.layout.template == pio.templates[default]:
        portable.layout.template = pio.templates["plotly"]
    return portable


def _figures_html(title: str, figures: Mapping[str, go.Figure], keys: Sequence[str]) -> bytes:
    """One self-contained page: plotly.js embedded once, then every figure."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    parts = [
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<h1>{html.escape(title)}</h1>\n"
    ]
    for key, (name, fig) in zip(keys, figures.items(), strict=True):
        body = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"figure-{key}")
        parts.append(f"<h2>{html.escape(name)}</h2>\n{body}\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts).encode()


def png_images(figures: Mapping[str, go.Figure], *, timeout: float = 180.0) -> dict[str, bytes]:
    """PNG bytes of each figure via kaleido (one headless Chromium for all of them).

    Never reaches the network: plotly.js comes from the plotly package and MathJax is off.
    Raises ``RuntimeError`` when kaleido or a Chromium is missing or rendering fails.
    """
    import kaleido
    import plotly

    plotlyjs = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    async def render() -> dict[str, bytes]:
        out = {}
        async with kaleido.Kaleido(n=1, mathjax=False, plotlyjs=str(plotlyjs)) as k:
            for name, fig in figures.items():
                layout = fig.layout
                opts = {"format": "png", "width": layout.width or 1000, "height": layout.height or 500}
                out[name] = await k.calc_fig(fig.to_dict(), opts=opts)
        return out

    result: dict[str, Any] = {}

    def target() -> None:  # a thread of its own: the caller may already run an event loop
        try:
            result["images"] = asyncio.run(render())
        except BaseException as exc:  # reported to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RuntimeError(f"PNG rendering took more than {timeout:g} s")
    if "error" in result:
        raise RuntimeError(f"PNG rendering failed: {result['error']}") from result["error"]
    return result["images"]


def _write_zip(members: Mapping[str, bytes], created: datetime, limits: Limits) -> bytes:
    total = sum(len(data) for data in members.values())
    biggest = max(members, key=lambda name: len(members[name]))
    if total > limits.max_uncompressed or len(members[biggest]) > limits.max_member:
        raise SnapshotError(
            f"the run is too large for a bundle: {total / MB:.0f} MB in all, {biggest} "
            f"{len(members[biggest]) / MB:.0f} MB (caps: {limits.max_uncompressed // MB} MB in all, "
            f"{limits.max_member // MB} MB per member); record fewer diagnostics or evaluations"
        )
    buffer = io.BytesIO()
    stamp = created.timetuple()[:6]
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            # Parquet and PNG are compressed already
            info.compress_type = (
                zipfile.ZIP_STORED if name.endswith((".parquet", ".png")) else zipfile.ZIP_DEFLATED
            )
            archive.writestr(info, data, compresslevel=6)
    data = buffer.getvalue()
    if len(data) > limits.max_bytes:
        raise SnapshotError(
            f"the run is too large for a bundle: {len(data) / MB:.0f} MB compressed "
            f"(cap {limits.max_bytes // MB} MB); record fewer diagnostics or evaluations"
        )
    return data


def _bundle(
    kind: str,
    *,
    name: str,
    created: datetime | None,
    device: str,
    seed: int,
    labels: Sequence[str],
    config: Mapping[str, Any],
    members: Mapping[str, bytes],
    figures: Mapping[str, go.Figure],
    png: bool,
    limits: Limits,
) -> bytes:
    """Manifest, config, figures and the kind's members, zipped."""
    when = _created(created)
    figures = {title: _portable(fig) for title, fig in figures.items()}
    figure_keys = _file_keys(list(figures), "figure")
    images: dict[str, bytes] = {}
    png_note = ""
    if png and figures:
        try:
            rendered = png_images(figures)
            images = {key: rendered[title] for key, title in zip(figure_keys, figures, strict=True)}
        except (ImportError, RuntimeError) as exc:
            png_note = f"no PNG images: {exc}"
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "created": when.isoformat().replace("+00:00", "Z"),
        "dgs_lab_version": dgs_core.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "seed": seed,
        "runs": [
            {"label": label, "key": key} for label, key in zip(labels, _file_keys(labels, "run"), strict=True)
        ],
        "figures": [{"title": t, "key": k} for t, k in zip(figures, figure_keys, strict=True)],
        "png": list(images),
        "png_note": png_note,
    }
    everything = {
        "manifest.json": _json_bytes(manifest),
        "config.json": _json_bytes(config, sort_keys=True),
        **members,
        "figures/index.html": _figures_html(name, figures, figure_keys),
        **{f"figures/{key}.png": data for key, data in images.items()},
    }
    return _write_zip(everything, when, limits)


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------

# Lane entries of Trainer.state_dict() that have members of their own; the rest goes to trainer.json.
_LANE_MEMBERS = ("model", "optimizer", "columns", "records", "checkpoints")
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


def export_training(
    trainer: Trainer | Mapping[str, Any],
    *,
    figures: Mapping[str, go.Figure] | None = None,
    name: str | None = None,
    created: datetime | None = None,
    png: bool = False,
    limits: Limits = LIMITS,
) -> bytes:
    """The bundle of a training run: a :class:`Trainer` (finished, stopped or mid-run) or its
    ``state_dict()``.

    Args:
        figures: ``{title: figure}`` to store as HTML (default: the Training lab's standard
            figures from :func:`dgs_core.viz.runs.training_figures`).
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
    for label, key in zip(labels, _file_keys(labels, "run"), strict=True):
        lane, result = state["lanes"][label], trainer.results[label]
        frame = result.metrics
        members[f"metrics/{key}.csv"] = _csv_bytes(frame)
        members[f"metrics/{key}.parquet"] = _parquet_bytes(frame, limits)
        meta, elements = _records_members(lane["records"])
        members[f"diagnostics/{key}.parquet"] = _parquet_bytes(result.diagnostics, limits)
        members[f"diagnostics/{key}.json"] = _json_bytes(meta)
        members[f"diagnostics/{key}.safetensors"] = _safetensors_bytes(elements)
        members[f"weights/{key}.safetensors"] = _safetensors_bytes(lane["model"])
        optimizer_tensors: dict[str, torch.Tensor] = {}
        optimizer_json = _encode(lane["optimizer"], optimizer_tensors, "optimizer")
        members[f"optimizer/{key}.safetensors"] = _safetensors_bytes(optimizer_tensors)
        members[f"optimizer/{key}.json"] = _json_bytes(optimizer_json)
        checkpoints = {
            f"{step}/{k}": t for step, weights in lane["checkpoints"].items() for k, t in weights.items()
        }
        members[f"checkpoints/{key}.safetensors"] = _safetensors_bytes(checkpoints)
        rest = {k: v for k, v in lane.items() if k not in _LANE_MEMBERS}
        lanes_json[label] = _encode(rest, extra_tensors, f"lanes/{key}")
    members["trainer.json"] = _json_bytes({"step": state["step"], "lanes": lanes_json})
    members["trainer.safetensors"] = _safetensors_bytes(extra_tensors)
    if figures is None:
        from dgs_core.viz.runs import training_figures  # late: viz depends on this layer

        figures = training_figures(trainer.results, trainer.task)
    default_name = f"{config.task}: {', '.join(labels)} · {trainer.step} steps"
    return _bundle(
        "training",
        name=name or default_name,
        created=created,
        device=str(trainer.device),
        seed=config.seed,
        labels=labels,
        config=config.to_dict(),
        members=members,
        figures=figures,
        png=png,
        limits=limits,
    )


# ---------------------------------------------------------------------------------------------
# Surface runs
# ---------------------------------------------------------------------------------------------

_SURFACE_KEYS = (
    "surface",
    "surface_params",
    "optimizers",
    "start",
    "steps",
    "seed",
    "noise_std",
    "batch_size",
    "clip_norm",
)
_OPTIMIZER_KEYS = ("name", "hparams", "label", "lrs")
_NUMPY = {torch.float64: np.float64, torch.int64: np.int64}
TRAJECTORY_ARRAYS = {  # name → (dtype, shape in terms of T steps, N rows)
    "points": (torch.float64, ("T+1", "N", 2)),
    "loss": (torch.float64, ("T+1", "N")),
    "grad": (torch.float64, ("T", "N", 2)),
    "lr": (torch.float64, ("T", "N")),
    "scaling": (torch.float64, ("T", "N", 2)),
    "batch_size": (torch.int64, ("T", "N")),
    "diverged_at": (torch.int64, ("N",)),
    "starts": (torch.float64, ("N", 2)),
    "lrs": (torch.float64, ("N",)),
    "scale": (torch.float64, ("T", "N", 2)),
    "extrapolated": (torch.float64, ("T", "N", 2)),
}
_OPTIONAL_ARRAYS = ("scale", "extrapolated")
SURFACE_METRICS = {"step": "int", "row": "int", "x": "float", "y": "float", "loss": "float", "gap": "float"}


def surface_config(
    surface: str,
    optimizers: Sequence[Any] | Mapping[str, Mapping[str, Any] | None],
    *,
    surface_params: Mapping[str, float] | None = None,
    start: Any = None,
    steps: int = 500,
    seed: int = 0,
    noise_std: float = 0.0,
    batch_size: int = 1,
    clip_norm: float | None = None,
) -> dict[str, Any]:
    """A validated, plain-JSON surface run: what :func:`run_surface_config` simulates.

    The arguments mirror :func:`dgs_core.surfaces.compare`. ``optimizers``: names,
    ``{name: hparams}``, or dicts ``{"name", "hparams", "label", "lrs"}`` (``lrs``: a sweep of
    learning rates for that optimizer). Labels default to the name ("sgd", "sgd#2", …).
    Raises ``ValueError`` naming the bad value.
    """
    surf = get_surface(surface, **dict(surface_params or {}))
    starts = None if start is None else check_starts(surf, start)[0].tolist()
    if isinstance(optimizers, Mapping):
        optimizers = [{"name": n, "hparams": dict(h or {})} for n, h in optimizers.items()]
    if isinstance(optimizers, str) or not isinstance(optimizers, Sequence) or not optimizers:
        raise ValueError(f"Invalid optimizers: {optimizers!r} (must name at least one optimizer)")
    entries, labels = [], []
    for item in optimizers:
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, Mapping) or "name" not in entry or set(entry) - set(_OPTIMIZER_KEYS):
            raise ValueError(
                f"Invalid optimizer: {item!r} (needs 'name'; may have 'hparams', 'label', 'lrs')"
            )
        info = registry.get(entry["name"])
        hparams = entry.get("hparams") or {}
        if not isinstance(hparams, Mapping):
            raise ValueError(f"Invalid hparams for {info.name}: {hparams!r} (must be a mapping)")
        info.resolve(hparams, surface=True)
        lrs = entry.get("lrs")
        if lrs is not None:
            values = np.atleast_1d(np.asarray(lrs, dtype=float))
            if values.ndim != 1 or not values.size:
                raise invalid("lrs", lrs, "a non-empty list of numbers")
            lrs = [float(info.hyperparam("lr").validate(float(v))) for v in values]
        label = entry.get("label") or info.name
        if not isinstance(label, str):
            raise invalid("label", label, "a string")
        base, k = label, 2
        while label in labels:
            label, k = f"{base}#{k}", k + 1
        labels.append(label)
        entries.append({"name": info.name, "hparams": dict(hparams), "label": label, "lrs": lrs})
    config = {
        "surface": surf.name,
        "surface_params": dict(surf.params),
        "optimizers": entries,
        "start": starts,
        "steps": _check_int("steps", steps, 1, MAX_STEPS),
        "seed": _check_int("seed", seed, 0, 2**63 - 1),
        "noise_std": _check_float("noise_std", noise_std),
        "batch_size": _check_int("batch_size", batch_size, 1, 2**31 - 1),
        "clip_norm": None if clip_norm is None else _check_float("clip_norm", clip_norm, positive=True),
    }
    return json.loads(json.dumps(config))  # plain JSON: lists, not tuples


def surface_config_from_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a surface config read from JSON (the inverse of :func:`surface_config`)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"Invalid surface config: {data!r} (must be a mapping)")
    unknown = sorted(set(data) - set(_SURFACE_KEYS))
    if unknown or "surface" not in data or "optimizers" not in data:
        raise ValueError(
            f"Invalid surface config field: {(unknown or ['surface'])[0]!r} "
            f"(needs surface and optimizers; may have {', '.join(_SURFACE_KEYS[2:])})"
        )
    return surface_config(**dict(data))


def run_surface_config(config: Mapping[str, Any]) -> dict[str, Run]:
    """Simulate every optimizer of a :func:`surface_config`: ``{label: Run}``."""
    config = surface_config_from_dict(config)
    surf = get_surface(config["surface"], **config["surface_params"])
    return {
        entry["label"]: simulate(
            surf,
            entry["name"],
            entry["hparams"],
            start=config["start"],
            lrs=entry["lrs"],
            steps=config["steps"],
            seed=config["seed"],
            noise_std=config["noise_std"],
            batch_size=config["batch_size"],
            clip_norm=config["clip_norm"],
        )
        for entry in config["optimizers"]
    }


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer in [{low}, {high}])")
    return int(value)


def _check_float(name: str, value: Any, *, positive: bool = False) -> float:
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number {'>' if positive else '>='} 0)")
    return float(value)


def _rows(config: Mapping[str, Any], entry: Mapping[str, Any]) -> int:
    starts = 1 if config["start"] is None else len(config["start"])
    return starts * (1 if entry["lrs"] is None else len(entry["lrs"]))


def _surface_metrics(run: Run) -> pd.DataFrame:
    steps, rows = run.points.shape[0], run.rows
    return pd.DataFrame(
        {
            "step": np.repeat(np.arange(steps, dtype=np.int64), rows),
            "row": np.tile(np.arange(rows, dtype=np.int64), steps),
            "x": run.points[..., 0].reshape(-1),
            "y": run.points[..., 1].reshape(-1),
            "loss": run.loss.reshape(-1),
            "gap": run.gap.reshape(-1),
        }
    )


def export_surface(
    runs: Mapping[str, Run],
    config: Mapping[str, Any],
    *,
    figures: Mapping[str, go.Figure] | None = None,
    name: str | None = None,
    created: datetime | None = None,
    png: bool = False,
    limits: Limits = LIMITS,
) -> bytes:
    """The bundle of a Surface-lab comparison: ``{label: Run}`` and the :func:`surface_config`
    that produced it (labels, surface, steps and rows must agree).

    ``figures``, ``name``, ``created``, ``png``: as :func:`export_training` (default figures:
    :func:`dgs_core.viz.runs.surface_figures`).
    """
    config = surface_config_from_dict(config)
    labels = [entry["label"] for entry in config["optimizers"]]
    if list(runs) != labels:
        raise SnapshotError(f"the runs {list(runs)} do not match the config's optimizers {labels}")
    members: dict[str, bytes] = {}
    simulation = {}
    for entry, key in zip(config["optimizers"], _file_keys(labels, "run"), strict=True):
        run = runs[entry["label"]]
        expected = (config["surface"], entry["name"], config["steps"], _rows(config, entry))
        if (run.surface.name, run.optimizer, run.steps, run.rows) != expected:
            raise SnapshotError(
                f"run {entry['label']!r} ({run.surface.name}, {run.optimizer}, {run.steps} steps, "
                f"{run.rows} rows) does not match its config {expected}"
            )
        arrays = {
            k: torch.from_numpy(np.ascontiguousarray(getattr(run, k), dtype=_NUMPY[dtype]))
            for k, (dtype, _) in TRAJECTORY_ARRAYS.items()
            if getattr(run, k) is not None
        }
        members[f"trajectories/{key}.safetensors"] = _safetensors_bytes(arrays)
        frame = _surface_metrics(run)
        members[f"metrics/{key}.csv"] = _csv_bytes(frame)
        members[f"metrics/{key}.parquet"] = _parquet_bytes(frame, limits)
        simulation[entry["label"]] = _encode(
            {
                "hparams": dict(run.hparams),
                "notes": list(run.notes),
                "noise_std": run.noise_std,
                "batch": run.batch,
                "clip_norm": run.clip_norm,
                "seed": run.seed,
            },
            {},
            entry["label"],
        )
    members["simulation.json"] = _json_bytes(simulation)
    if figures is None:
        from dgs_core.viz.runs import surface_figures  # late: viz depends on this layer

        figures = surface_figures(runs)
    default_name = f"{config['surface']}: {', '.join(labels)} · {config['steps']} steps"
    return _bundle(
        "surface",
        name=name or default_name,
        created=created,
        device="cpu",
        seed=config["seed"],
        labels=labels,
        config=config,
        members=members,
        figures=figures,
        png=png,
        limits=limits,
    )


# ---------------------------------------------------------------------------------------------
# Reading: the archive
# ---------------------------------------------------------------------------------------------

_MEMBER_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class _Archive:
    """A zip opened for reading with every structural check done up front."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.limits = limits
        if len(data) > limits.max_bytes:
            raise SnapshotError(
                f"the file is {len(data) / MB:.1f} MB; bundles are limited to {limits.max_bytes // MB} MB"
            )
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
            raise SnapshotError(
                f"not a DGS Lab bundle: not a readable zip archive (truncated or damaged: {exc})"
            ) from None
        if not infos:
            raise SnapshotError("not a DGS Lab bundle: the zip archive is empty")
        if len(infos) > limits.max_members:
            raise SnapshotError(f"the bundle has {len(infos)} members (at most {limits.max_members})")
        self.infos: dict[str, zipfile.ZipInfo] = {}
        total = 0
        for info in infos:
            name = info.filename
            parts = name.split("/")
            if len(name) > 200 or not _MEMBER_PATH.fullmatch(name) or ".." in parts or "." in parts:
                raise SnapshotError(
                    f"refused member {name!r}: a member path must stay inside the bundle "
                    "(relative, no '..', no backslashes, plain file names)"
                )
            if name in self.infos:
                raise SnapshotError(f"refused member {name!r}: it appears twice in the archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SnapshotError(f"refused member {name!r}: it is a symbolic link")
            if info.flag_bits & 0x1:
                raise SnapshotError(f"refused member {name!r}: it is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise SnapshotError(
                    f"refused member {name!r}: compression method {info.compress_type} "
                    "(only stored or deflated)"
                )
            if info.file_size > limits.max_member:
                raise SnapshotError(
                    f"refused member {name!r}: {info.file_size / MB:.0f} MB uncompressed "
                    f"(at most {limits.max_member // MB} MB per member)"
                )
            total += info.file_size
            self.infos[name] = info
        if total > limits.max_uncompressed:
            raise SnapshotError(
                f"the bundle holds {total / MB:.0f} MB uncompressed "
                f"(at most {limits.max_uncompressed // MB} MB)"
            )

    def read(self, name: str, cap: int | None = None) -> bytes:
        info = self.infos.get(name)
        if info is None:
            raise SnapshotError(f"{name} is missing")
        cap = min(cap or self.limits.max_member, self.limits.max_member)
        if info.file_size > cap:
            raise SnapshotError(f"{name} is {info.file_size / MB:.1f} MB (at most {cap / MB:.0f} MB)")
        try:
            with self.zip.open(info) as member:
                data = member.read(cap + 1)  # bounded by the declared size, itself capped
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError) as exc:
            raise SnapshotError(f"{name} is damaged ({exc})") from None
        if len(data) != info.file_size:
            raise SnapshotError(f"{name} is damaged (its size differs from the archive's record)")
        return data

    def json(self, name: str) -> Any:
        data = self.read(name, self.limits.max_json)
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise SnapshotError(f"{name} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except (RecursionError, ValueError) as exc:
            raise SnapshotError(f"{name} is not valid JSON ({exc})") from None

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        data = self.read(name)
        try:
            return safetensors.torch.load(data)
        except (SafetensorError, ValueError, RuntimeError, TypeError, OSError) as exc:
            raise SnapshotError(f"{name} is not a valid safetensors file ({exc})") from None

    def table(self, name: str, schema: Mapping[str, str], max_rows: int | None = None) -> dict[str, list]:
        """The columns of a Parquet member, checked against ``{column: int | float | str | bool}``."""
        data = self.read(name)
        try:
            parquet = pq.ParquetFile(pa.BufferReader(data))
            rows, names = parquet.metadata.num_rows, parquet.schema_arrow.names
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise SnapshotError(f"{name} is not a readable Parquet file ({exc})") from None
        if names != list(schema):
            raise SnapshotError(f"{name}: columns {names} (expected {list(schema)})")
        # Parquet compresses (a few bytes can declare millions of rows): count before reading
        if rows > self.limits.max_rows:
            raise SnapshotError(f"{name}: {rows} rows (at most {self.limits.max_rows})")
        if max_rows is not None and rows > max_rows:
            raise SnapshotError(f"{name}: {rows} rows (the run has at most {max_rows})")
        try:
            table = parquet.read()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise SnapshotError(f"{name} is not a readable Parquet file ({exc})") from None
        if table.num_rows != rows:
            raise SnapshotError(f"{name} is damaged (its row count differs from its metadata)")
        checks = {
            "int": pa.types.is_int64,
            "float": pa.types.is_float64,
            "bool": pa.types.is_boolean,
            "str": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        }
        columns = {}
        for column, kind in schema.items():
            array = table.column(column)
            if not checks[kind](array.type):
                raise SnapshotError(f"{name}: column {column!r} has type {array.type} (expected {kind})")
            values = array.to_pylist()
            if kind == "float":
                values = [math.nan if v is None else v for v in values]  # pandas writes NaN as null
            elif array.null_count:
                raise SnapshotError(f"{name}: column {column!r} has missing values")
            columns[column] = values
        return columns


# ---------------------------------------------------------------------------------------------
# Reading: bundles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Bundle:
    """A bundle read back and checked. Treat it as read-only (pages cache it).

    Attributes:
        kind: "training" or "surface".
        manifest: manifest.json as read.
        config: config.json as read (plain JSON).
        labels: the optimizers' labels, in order.
        figures_html: figures/index.html, the figures as they were exported.
        png: ``{figure key: PNG bytes}`` (may be empty).
        notes: what changed on loading (e.g. "recorded on cuda, loaded on cpu").
        trainer: training: the run rebuilt as recorded (use :func:`resume_trainer` to train on).
        runs: surface: ``{label: Run}``.
    """

    kind: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    labels: tuple[str, ...]
    figures_html: bytes
    png: Mapping[str, bytes] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    trainer: Trainer | None = None
    runs: Mapping[str, Run] | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def results(self) -> dict[str, Any]:
        """Training: ``{label: RunResult}`` as recorded."""
        if self.trainer is None:
            raise SnapshotError("a surface bundle has no training results")
        return self.trainer.results

    @property
    def task(self) -> Any:
        """Training: the task (rebuilt from the config; deterministic)."""
        if self.trainer is None:
            raise SnapshotError("a surface bundle has no task")
        return self.trainer.task

    @property
    def steps(self) -> int:
        """Training: lockstep steps done; surface: steps simulated."""
        return self.trainer.step if self.trainer is not None else int(self.config["steps"])

    def summary(self) -> pd.DataFrame:
        """One row per optimizer (per row of a surface run): where the run ended."""
        return training_summary(self.results) if self.kind == "training" else surface_summary(self.runs or {})


def training_summary(results: Mapping[str, Any]) -> pd.DataFrame:
    """label, optimizer, status, steps, last batch loss, the last evaluation, best validation
    accuracy and loss spikes, per optimizer."""
    rows = []
    for label, r in results.items():
        evals = r.evaluations
        last = evals.iloc[-1] if len(evals) else None
        rows.append(
            {
                "label": label,
                "optimizer": r.name,
                "status": r.status + (f" ({r.reason})" if r.reason else ""),
                "steps": r.steps_done,
                "loss": float(r.columns["loss"][-1]) if r.steps_done else math.nan,
                **{
                    c: math.nan if last is None else float(last[c])
                    for c in ("train_loss", "train_metric", "val_loss", "val_metric")
                },
                "best_val_metric": float(evals["val_metric"].max()) if len(evals) else math.nan,
                "spikes": r.spikes,
            }
        )
    return pd.DataFrame(rows)


def surface_summary(runs: Mapping[str, Run]) -> pd.DataFrame:
    """label, optimizer, row, lr, final gap, steps to ε, overshoots, spikes, divergence."""
    rows = []
    for label, run in runs.items():
        values = run.metrics()
        for r in range(run.rows):
            reached = int(values["steps_to_tolerance"][r])
            rows.append(
                {
                    "label": label,
                    "optimizer": run.optimizer,
                    "row": r,
                    "lr": float(run.lrs[r]),
                    "final_gap": float(values["final_gap"][r]),
                    "steps_to_tolerance": reached if reached >= 0 else None,
                    "overshoots": int(values["overshoots"][r]),
                    "spikes": int(values["spikes"][r]),
                    "diverged": divergence_message(int(values["diverged_at"][r])),
                }
            )
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["steps_to_tolerance"] = frame["steps_to_tolerance"].astype("Int64")
    return frame


def _keys(value: Any) -> str:
    """The keys of a decoded mapping for a message (or what it is instead)."""
    return str(sorted(map(str, value))) if isinstance(value, dict) else f"none (a {type(value).__name__})"


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SnapshotError(message)


def _check_manifest(manifest: Any) -> tuple[str, list[str], list[str], list[str]]:
    """kind, labels, run keys and PNG figure keys from a manifest, checked."""
    _expect(isinstance(manifest, dict), "manifest.json must be a JSON object")
    _expect(
        manifest.get("format") == FORMAT, f"not a DGS Lab bundle (manifest format {manifest.get('format')!r})"
    )
    version = manifest.get("format_version")
    _expect(
        isinstance(version, int) and not isinstance(version, bool) and version >= 1,
        f"manifest.json: invalid format_version {version!r}",
    )
    _expect(
        version <= FORMAT_VERSION,
        f"the bundle has format version {version}, made by a newer DGS Lab "
        f"({manifest.get('dgs_lab_version')}); this one ({dgs_core.__version__}) "
        f"reads up to {FORMAT_VERSION}",
    )
    kind = manifest.get("kind")
    _expect(kind in KINDS, f"manifest.json: kind {kind!r} (must be one of {', '.join(KINDS)})")
    for key in ("name", "created", "dgs_lab_version", "torch_version", "device", "png_note"):
        _expect(
            isinstance(manifest.get(key), str) and len(manifest[key]) <= 1000, f"manifest.json: invalid {key}"
        )
    seed = manifest.get("seed")
    _expect(isinstance(seed, int) and not isinstance(seed, bool), f"manifest.json: invalid seed {seed!r}")
    runs, figures, png = manifest.get("runs"), manifest.get("figures"), manifest.get("png")
    _expect(isinstance(runs, list) and runs, "manifest.json: runs must be a non-empty list")
    _expect(
        isinstance(figures, list) and isinstance(png, list), "manifest.json: figures and png must be lists"
    )
    labels, keys = [], []
    for item in runs:
        _expect(
            isinstance(item, dict) and set(item) == {"label", "key"},
            f"manifest.json: invalid run entry {item!r}",
        )
        _expect(
            isinstance(item["label"], str) and item["label"] not in labels,
            f"manifest.json: invalid label {item['label']!r}",
        )
        _expect(
            isinstance(item["key"], str) and bool(_KEY.fullmatch(item["key"])) and item["key"] not in keys,
            f"manifest.json: invalid file key {item['key']!r}",
        )
        labels.append(item["label"])
        keys.append(item["key"])
    figure_keys = []
    for item in figures:
        _expect(
            isinstance(item, dict) and set(item) == {"title", "key"} and isinstance(item["title"], str),
            f"manifest.json: invalid figure entry {item!r}",
        )
        _expect(
            isinstance(item["key"], str)
            and bool(_KEY.fullmatch(item["key"]))
            and item["key"] not in figure_keys,
            f"manifest.json: invalid figure key {item['key']!r}",
        )
        figure_keys.append(item["key"])
    _expect(
        all(k in figure_keys for k in png) and len(set(png)) == len(png),
        "manifest.json: png lists unknown figures",
    )
    return kind, labels, keys, png


def _expected_members(kind: str, keys: Sequence[str], png: Sequence[str]) -> list[str]:
    names = ["manifest.json", "config.json", "figures/index.html", *(f"figures/{k}.png" for k in png)]
    if kind == "training":
        names += ["trainer.json", "trainer.safetensors"]
        names += [pattern.format(key) for key in keys for pattern in _TRAINING_FILES]
    else:
        names += ["simulation.json"]
        for key in keys:
            names += [f"trajectories/{key}.safetensors", f"metrics/{key}.csv", f"metrics/{key}.parquet"]
    return names


def read_bundle(
    source: bytes | bytearray | str | os.PathLike, *, device: str | None = None, limits: Limits = LIMITS
) -> Bundle:
    """Read and check a bundle (a path or its bytes); raises :class:`SnapshotError` naming the problem.

    ``device``: where a training run's tensors go (default: the recorded device when this
    machine has it, else the CPU).
    """
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise SnapshotError(f"cannot read {path}: {exc.strerror}") from None
        if size > limits.max_bytes:
            raise SnapshotError(
                f"the file is {size / MB:.1f} MB; bundles are limited to {limits.max_bytes // MB} MB"
            )
        data = path.read_bytes()
    archive = _Archive(data, limits)
    if "manifest.json" not in archive.infos:
        raise SnapshotError("not a DGS Lab bundle: manifest.json is missing")
    manifest = archive.json("manifest.json")
    kind, labels, keys, png = _check_manifest(manifest)
    expected = _expected_members(kind, keys, png)
    missing = [n for n in expected if n not in archive.infos]
    _expect(not missing, f"{missing[0] if missing else ''} is missing")
    unexpected = sorted(set(archive.infos) - set(expected))
    _expect(
        not unexpected, f"refused member {unexpected[0] if unexpected else ''!r}: not part of a {kind} bundle"
    )
    config = archive.json("config.json")
    figures_html = archive.read("figures/index.html")
    images = {}
    for key in png:
        data = archive.read(f"figures/{key}.png")
        _expect(data.startswith(b"\x89PNG\r\n\x1a\n"), f"figures/{key}.png is not a PNG image")
        images[key] = data
    common = {
        "kind": kind,
        "manifest": manifest,
        "config": config,
        "labels": tuple(labels),
        "figures_html": figures_html,
        "png": MappingProxyType(images),
    }
    try:
        if kind == "training":
            return _read_training(archive, common, keys, device)
        return _read_surface(archive, common, keys)
    except SnapshotError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        # the last line of defence: a check above missed a malformed value
        raise SnapshotError(f"the bundle's data is inconsistent ({type(exc).__name__}: {exc})") from None


def _device_available(name: Any) -> bool:
    try:
        device = resolve_device(name)
    except (RuntimeError, ValueError, TypeError):
        return False  # TrainConfig names the bad value
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return device.type == "cpu"


def _config_error(exc: Exception) -> SnapshotError:
    return SnapshotError(f"config.json: {exc}")


def _read_training(
    archive: _Archive, common: dict[str, Any], keys: Sequence[str], device: str | None
) -> Bundle:
    raw = common["config"]
    _expect(isinstance(raw, dict), "config.json must be a JSON object")
    loaded = dict(raw)
    notes = []
    if device is not None:
        loaded["device"] = device
    elif not _device_available(raw.get("device", "auto")):
        loaded["device"] = "cpu"
        notes.append(f"recorded on device {raw.get('device')!r}, which is not available here: loaded on cpu")
    try:
        config = TrainConfig.from_dict(loaded)
        trainer = Trainer(config)
    except (ValueError, TypeError) as exc:
        raise _config_error(exc) from None
    _expect(
        list(common["labels"]) == config.labels,
        f"manifest.json: runs {list(common['labels'])} differ from config.json's optimizers {config.labels}",
    )
    saved = archive.json("trainer.json")
    _expect(
        isinstance(saved, dict) and set(saved) == {"step", "lanes"}, "trainer.json must hold step and lanes"
    )
    step = saved["step"]
    _expect(
        isinstance(step, int) and not isinstance(step, bool) and 0 <= step <= config.steps,
        f"trainer.json: step {step!r} (must be an integer in [0, {config.steps}])",
    )
    _expect(
        isinstance(saved["lanes"], dict) and list(saved["lanes"]) == config.labels,
        f"trainer.json: lanes must be {config.labels}",
    )
    extras = _Decoder("trainer.json", archive.tensors("trainer.safetensors"))
    lanes, spikes = {}, {}
    for label, key in zip(config.labels, keys, strict=True):
        lane = trainer.lanes[label]
        rest = extras(saved["lanes"][label])
        _check_lane(label, rest, step)
        columns = archive.table(f"metrics/{key}.parquet", TRAINING_METRICS, max_rows=step)
        _expect(
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
    extras.finish()
    state = {"config": config.to_dict(), "step": step, "lanes": lanes}
    try:
        trainer.load_state_dict(state)
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as exc:
        raise SnapshotError(f"trainer.json: the saved state does not load ({exc})") from None
    for label, key in zip(config.labels, keys, strict=True):
        frame = trainer.results[label].metrics
        _expect(
            spikes[label] == frame["spike"].tolist(),
            f"metrics/{key}.parquet: the spike column does not match the losses",
        )
        _expect(
            archive.read(f"metrics/{key}.csv") == _csv_bytes(frame),
            f"metrics/{key}.csv does not match metrics/{key}.parquet",
        )
    return Bundle(**common, notes=tuple(notes), trainer=trainer)


_STATUS = re.compile(r"running|done|stopped|diverged at step \d+")


def _check_lane(label: str, lane: Any, step: int) -> None:
    where = f"trainer.json: lane {label!r}"
    _expect(isinstance(lane, dict), f"{where} must be an object")
    for key in ("status", "reason", "samples", "batches", "annealing"):
        _expect(key in lane, f"{where} has no {key}")
    _expect(
        isinstance(lane["status"], str) and bool(_STATUS.fullmatch(lane["status"])),
        f"{where}: invalid status {lane['status']!r}",
    )
    _expect(isinstance(lane["reason"], str) and len(lane["reason"]) < 200, f"{where}: invalid reason")
    samples = lane["samples"]
    _expect(
        isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0,
        f"{where}: invalid samples {samples!r}",
    )
    batches = lane["batches"]
    _expect(
        isinstance(batches, dict)
        and all(
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
            for v in batches.values()
        ),
        f"{where}: invalid batches {batches!r}",
    )


def _read_weights(archive: _Archive, name: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    loaded = archive.tensors(name)
    expected = model.state_dict()
    _check_state(name, loaded, expected)
    return {k: loaded[k] for k in expected}


def _check_state(
    where: str, loaded: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """The same tensor names, shapes and dtypes as the model built from config.json."""
    missing = [k for k in expected if k not in loaded]
    _expect(not missing, f"{where}: tensor {missing[0] if missing else ''!r} is missing")
    extra = [k for k in loaded if k not in expected]
    _expect(
        not extra,
        f"{where}: unexpected tensor {extra[0] if extra else ''!r} (not in the model of config.json)",
    )
    for k, t in expected.items():
        _expect(
            tuple(loaded[k].shape) == tuple(t.shape),
            f"{where}: {k} has shape {tuple(loaded[k].shape)} "
            f"but the model of config.json needs {tuple(t.shape)}",
        )
        _expect(loaded[k].dtype == t.dtype, f"{where}: {k} is {loaded[k].dtype} (the model needs {t.dtype})")


def _read_optimizer(archive: _Archive, key: str, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    name = f"optimizer/{key}.json"
    decoder = _Decoder(name, archive.tensors(f"optimizer/{key}.safetensors"))
    state = decoder(archive.json(name))
    decoder.finish()
    fresh = optimizer.state_dict()
    _expect(
        isinstance(state, dict) and set(state) == set(fresh),
        f"{name}: keys {_keys(state)} (expected {sorted(fresh)})",
    )
    groups, fresh_groups = state["param_groups"], fresh["param_groups"]
    _expect(
        isinstance(groups, list) and len(groups) == len(fresh_groups),
        f"{name}: {len(groups) if isinstance(groups, list) else 'no'} parameter groups "
        f"(expected {len(fresh_groups)})",
    )
    for i, (group, expected) in enumerate(zip(groups, fresh_groups, strict=True)):
        _expect(
            isinstance(group, dict) and set(group) == set(expected),
            f"{name}: parameter group {i} has keys {_keys(group)} (expected {sorted(expected)})",
        )
        for k, value in expected.items():
            if k == "lr":  # the one value a schedule changes during the run
                lr = group[k]
                _expect(
                    isinstance(lr, float | int)
                    and not isinstance(lr, bool)
                    and math.isfinite(lr)
                    and lr >= 0,
                    f"{name}: parameter group {i}: invalid lr {lr!r} (must be a finite number >= 0)",
                )
            else:
                _expect(
                    type(group[k]) is type(value) and group[k] == value,
                    f"{name}: parameter group {i}: {k} = {group[k]!r} differs from config.json ({value!r})",
                )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    per_param = state["state"]
    _expect(isinstance(per_param, dict), f"{name}: state must be a mapping")
    for index, entries in per_param.items():
        _expect(
            isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(params),
            f"{name}: state of unknown parameter {index!r} (the model has {len(params)})",
        )
        _expect(isinstance(entries, dict), f"{name}: state of parameter {index} must be a mapping")
        shape = tuple(params[index].shape)
        for k, value in entries.items():
            if isinstance(value, torch.Tensor):
                _expect(
                    tuple(value.shape) in ((), (1,), shape),
                    f"{name}: state {k!r} of parameter {index} has shape {tuple(value.shape)} "
                    f"(expected () or {shape})",
                )
    return state


def _read_records(
    archive: _Archive, key: str, model: torch.nn.Module, element_index: Mapping[str, torch.Tensor], step: int
) -> list[DiagnosticRecord]:
    name = f"diagnostics/{key}.json"
    meta = archive.json(name)
    _expect(
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
        _expect(
            isinstance(item, dict) and set(item) == {"step", "tensors", "elements"}, f"{name}: invalid record"
        )
        s = item["step"]
        _expect(
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
            _expect(
                isinstance(t, dict) and set(t) == {"name", "shape", "numel", "tracked"},
                f"{name}: invalid tensor entry",
            )
            p = params.get(t["name"])
            _expect(
                p is not None and t["shape"] == list(p.shape) and t["numel"] == p.numel(),
                f"{name}: tensor {t['name']!r} {t['shape']} does not match the model of config.json",
            )
            _expect(
                isinstance(t["tracked"], int) and 0 <= t["tracked"] <= p.numel(),
                f"{name}: invalid tracked count",
            )
            tensors.append(
                TensorDiagnostics(
                    t["name"], tuple(p.shape), p.numel(), t["tracked"], stats.pop(t["name"], {})
                )
            )
        _expect(
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
            _expect(
                quantity in _ELEMENT_QUANTITIES and rows_index is not None and stored is not None,
                f"{name}: step {s}: unknown per-element copy {element!r}",
            )
            grid = (len(rows_index), len(cols_index))
            _expect(
                tuple(stored.shape) == grid and stored.dtype == torch.float32,
                f"diagnostics/{key}.safetensors: {s}:{element} has shape {tuple(stored.shape)} "
                f"{stored.dtype} (expected {grid} float32)",
            )
            kept[element] = stored
            used.add(f"{s}:{element}")
        records.append(DiagnosticRecord(s, lr, batch_size, tuple(tensors), kept))
    _expect(not rows, f"diagnostics/{key}.parquet: rows for step {next(iter(rows), '')} that no record lists")
    unused = sorted(set(elements) - used)
    _expect(
        not unused,
        f"diagnostics/{key}.safetensors: tensor {unused[0] if unused else ''!r} that no record lists",
    )
    return records


def _read_checkpoints(
    archive: _Archive, key: str, model: torch.nn.Module, columns: Mapping[str, list]
) -> dict[int, dict[str, torch.Tensor]]:
    """Weights at evaluation steps (the decision boundary's), each checked like the final weights."""
    name = f"checkpoints/{key}.safetensors"
    loaded = archive.tensors(name)
    evaluated = {s for s, v in zip(columns["step"], columns["val_loss"], strict=True) if not math.isnan(v)}
    grouped: dict[int, dict[str, torch.Tensor]] = {}
    for k, tensor in loaded.items():
        step, _, tensor_name = k.partition("/")
        _expect(step.isdigit() and int(step) in evaluated, f"{name}: {k!r} is not at an evaluated step")
        grouped.setdefault(int(step), {})[tensor_name] = tensor
    expected = model.state_dict()
    out = {}
    for step in sorted(grouped):
        _check_state(f"{name}: step {step}", grouped[step], expected)
        out[step] = {k: grouped[step][k] for k in expected}
    return out


def _read_surface(archive: _Archive, common: dict[str, Any], keys: Sequence[str]) -> Bundle:
    try:
        config = surface_config_from_dict(common["config"])
    except (ValueError, TypeError) as exc:
        raise _config_error(exc) from None
    labels = [entry["label"] for entry in config["optimizers"]]
    _expect(
        list(common["labels"]) == labels,
        f"manifest.json: runs {list(common['labels'])} differ from config.json's optimizers {labels}",
    )
    surf = get_surface(config["surface"], **config["surface_params"])
    simulation = archive.json("simulation.json")
    _expect(
        isinstance(simulation, dict) and list(simulation) == labels, f"simulation.json must hold {labels}"
    )
    decoder = _Decoder("simulation.json", {})
    runs = {}
    for entry, key in zip(config["optimizers"], keys, strict=True):
        label = entry["label"]
        meta = decoder(simulation[label])
        _expect(
            isinstance(meta, dict)
            and set(meta) == {"hparams", "notes", "noise_std", "batch", "clip_norm", "seed"},
            f"simulation.json: invalid entry for {label!r}",
        )
        try:
            registry.get(entry["name"]).resolve(meta["hparams"], surface=True)
        except (ValueError, TypeError) as exc:
            raise SnapshotError(f"simulation.json: {label}: {exc}") from None
        _expect(
            isinstance(meta["notes"], list) and all(isinstance(n, str) for n in meta["notes"]),
            f"simulation.json: invalid notes for {label!r}",
        )
        name = f"trajectories/{key}.safetensors"
        arrays = archive.tensors(name)
        sizes = {"T": config["steps"], "T+1": config["steps"] + 1, "N": _rows(config, entry)}
        for array, (dtype, dims) in TRAJECTORY_ARRAYS.items():
            if array not in arrays:
                _expect(array in _OPTIONAL_ARRAYS, f"{name}: {array} is missing")
                continue
            shape = tuple(sizes.get(d, d) for d in dims)
            got = arrays[array]
            _expect(
                tuple(got.shape) == shape and got.dtype == dtype,
                f"{name}: {array} has shape {tuple(got.shape)} {got.dtype} (expected {shape} {dtype})",
            )
        extra = sorted(set(arrays) - set(TRAJECTORY_ARRAYS))
        _expect(not extra, f"{name}: unexpected array {extra[0] if extra else ''!r}")
        numpy = {k: v.numpy() for k, v in arrays.items()}
        run = Run(
            surface=surf,
            optimizer=entry["name"],
            hparams=MappingProxyType(dict(meta["hparams"])),
            **{k: numpy.get(k) for k in TRAJECTORY_ARRAYS},
            noise_std=float(meta["noise_std"]),
            batch=int(meta["batch"]),
            clip_norm=None if meta["clip_norm"] is None else float(meta["clip_norm"]),
            seed=int(meta["seed"]),
            notes=tuple(meta["notes"]),
        )
        frame = _surface_metrics(run)
        stored = archive.table(f"metrics/{key}.parquet", SURFACE_METRICS)
        _expect(
            stored["step"] == frame["step"].tolist() and stored["row"] == frame["row"].tolist(),
            f"metrics/{key}.parquet does not match {name}",
        )
        _expect(
            archive.read(f"metrics/{key}.csv") == _csv_bytes(frame),
            f"metrics/{key}.csv does not match {name}",
        )
        runs[label] = run
    return Bundle(**common, runs=MappingProxyType(runs))


# ---------------------------------------------------------------------------------------------
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
    if extra_steps:
        config = bundle.trainer.config
        steps = config.steps + extra_steps
        if steps > config.max_steps:
            raise SnapshotError(
                f"Invalid extra_steps: {extra_steps} ({config.steps} + {extra_steps} "
                f"exceeds max_steps={config.max_steps})"
            )
        state["config"] = config.replace(steps=steps).to_dict()
        for lane in state["lanes"].values():
            if lane["status"] == "done" and not lane["reason"]:
                lane["status"] = "stopped"
    return Trainer.from_state_dict(copy.deepcopy(state))
