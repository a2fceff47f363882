"""Encoding a run's values for a bundle: tagged JSON, and the bytes of each member type.

Tagged JSON is plain JSON where a value that JSON cannot hold is a one-key object:
``{"$tensor": name}`` (in the companion .safetensors), ``{"$ndarray": name}``,
``{"$tuple": [...]}``, ``{"$float": "nan" | "inf" | "-inf"}`` and ``{"$map": [[key, value],
…]}`` (a dict whose keys are not all strings). Nothing is ever pickled, and reading executes
no code: JSON through ``json``, tensors through ``safetensors``, tables through ``pyarrow``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import safetensors.torch
import torch

if TYPE_CHECKING:
    pass
from dgs_core.runs.archive import Limits, SnapshotError

# ---------------------------------------------------------------------------------------------
# Tagged JSON: plain values, with tensors by reference
# ---------------------------------------------------------------------------------------------

_TAGS = ("$tensor", "$ndarray", "$tuple", "$float", "$map")
_MAX_DEPTH = 64


def encode(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """``value`` as tagged JSON; tensors and arrays go to ``tensors`` under their path."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, np.generic):
        return encode(value.item(), tensors, path)
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"$tensor": path}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise SnapshotError(f"cannot store an object array at {path!r}")
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"$ndarray": path}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v, tensors, f"{path}/{k}") for k, v in value.items()}
        return {
            "$map": [
                [encode(k, tensors, f"{path}/{i}k"), encode(v, tensors, f"{path}/{k}")]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise SnapshotError(f"cannot store a {type(value).__name__} at {path!r} (not JSON, not a tensor)")


class Decoder:
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


def created_at(created: datetime | None) -> datetime:
    if created is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible-builds convention
        created = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created.astimezone(UTC).replace(microsecond=0)


_KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def file_keys(titles: Sequence[str], fallback: str) -> list[str]:
    """A file-name-safe, unique key per title ("Learning rate" → "learning_rate", "sgd#2" → "sgd_2")."""
    keys: list[str] = []
    for title in titles:
        base = re.sub(r"[^a-z0-9_.-]+", "_", title.lower()).strip("._-")[:48] or fallback
        key, n = base, 2
        while key in keys:
            key, n = f"{base}_{n}", n + 1
        keys.append(key)
    return keys


def json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=sort_keys, ensure_ascii=False) + "\n").encode()


def safetensors_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    return safetensors.torch.save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def parquet_bytes(frame: pd.DataFrame, limits: Limits) -> bytes:
    if len(frame) > limits.max_rows:
        raise SnapshotError(
            f"the run is too large for a bundle: a table of {len(frame)} rows (at most {limits.max_rows}); "
            "record fewer diagnostics"
        )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()
