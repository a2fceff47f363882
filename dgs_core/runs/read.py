"""Reading any bundle: :func:`read_bundle` checks the common part, then the kind's reader rebuilds the run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from dgs_core.runs.archive import LIMITS, MB, Archive, Limits, SnapshotError
from dgs_core.runs.bundle import Bundle, _check_manifest, expect
from dgs_core.runs.surface import _read_surface
from dgs_core.runs.training import _TRAINING_FILES, _read_training

if TYPE_CHECKING:
    pass


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
    archive = Archive(data, limits)
    if "manifest.json" not in archive.infos:
        raise SnapshotError("not a DGS Lab bundle: manifest.json is missing")
    manifest = archive.json("manifest.json")
    kind, labels, keys, png = _check_manifest(manifest)
    expected = _expected_members(kind, keys, png)
    missing = [n for n in expected if n not in archive.infos]
    expect(not missing, f"{missing[0] if missing else ''} is missing")
    unexpected = sorted(set(archive.infos) - set(expected))
    expect(
        not unexpected, f"refused member {unexpected[0] if unexpected else ''!r}: not part of a {kind} bundle"
    )
    config = archive.json("config.json")
    figures_html = archive.read("figures/index.html")
    images = {}
    for key in png:
        data = archive.read(f"figures/{key}.png")
        expect(data.startswith(b"\x89PNG\r\n\x1a\n"), f"figures/{key}.png is not a PNG image")
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
