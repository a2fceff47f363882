"""The zip container of a bundle: its caps, deterministic writing, and hardened reading.

Reading checks, in order: the file size; that it is a zip; every member's path (relative, no
``..``, no backslash, no symlink, no duplicates), compression method and size (one member, all
members, JSON members). Tables are checked against their schema and row count from Parquet
metadata before any data is read. Figures are rendered here too (HTML, optionally PNG): the
caller builds them (:mod:`dgs_core.viz.runs`) and passes them in.
"""

from __future__ import annotations

import asyncio
import html
import io
import json
import math
import re
import stat
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch
from safetensors import SafetensorError

if TYPE_CHECKING:
    import plotly.graph_objects as go

FORMAT = "dgs-lab-run"
# 2: a surface bundle's config.json is SurfaceConfig.to_dict(); 3: a training bundle holds each
# optimizer's weight trajectory (trajectory/<key>.safetensors) and may hold landscapes
FORMAT_VERSION = 3
KINDS = ("training", "surface", "study")
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


def portable(fig: go.Figure) -> go.Figure:
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


def figures_html(title: str, figures: Mapping[str, go.Figure], keys: Sequence[str]) -> bytes:
    """One self-contained page: plotly.js embedded once, then every figure (without figures,
    no plotly.js: 4 MB less)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    script = f'<script type="text/javascript">{get_plotlyjs()}</script>\n' if figures else ""
    parts = [
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n{script}</head>\n<body>\n"
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


def write_zip(members: Mapping[str, bytes], created: datetime, limits: Limits) -> bytes:
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


# ---------------------------------------------------------------------------------------------
# Reading: the archive
# ---------------------------------------------------------------------------------------------

MEMBER_PATH = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


class Archive:
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
            if len(name) > 200 or not MEMBER_PATH.fullmatch(name) or ".." in parts or "." in parts:
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
