"""Reading any bundle: :func:`read_bundle` checks the common part, then the kind's reader rebuilds the run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from dgs_core.runs.archive import LIMITS, MB, Archive, Limits, SnapshotError
from dgs_core.runs.bundle import Bundle, _check_manifest, expect
from dgs_core.runs.landscape import landscape_keys
from dgs_core.runs.study import members as study_members
from dgs_core.runs.study import read_study
from dgs_core.runs.surface import members as surface_members
from dgs_core.runs.surface import read_surface
from dgs_core.runs.training import members as training_members
from dgs_core.runs.training import read_training

# Per kind: its own members (given the optimizers' file keys) and its reader.
_KINDS = {
    "training": (training_members, read_training),
    "surface": (surface_members, read_surface),
    "study": (study_members, read_study),
}


def _expected_members(
    kind: str, keys: Sequence[str], png: Sequence[str], version: int, archive: Archive
) -> list[str]:
    common = ["manifest.json", "config.json", "figures/index.html", *(f"figures/{k}.png" for k in png)]
    if kind == "training":  # format 3 added the trajectories and the optional landscapes
        landscapes = landscape_keys(archive) if version >= 3 else []
        return common + training_members(keys, version, landscapes)
    return common + _KINDS[kind][0](keys)


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
    expected = _expected_members(kind, keys, png, manifest["format_version"], archive)
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
        return _KINDS[kind][1](archive, common, keys, device)
    except SnapshotError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError) as exc:
        # the last line of defence: a check above missed a malformed value
        raise SnapshotError(f"the bundle's data is inconsistent ({type(exc).__name__}: {exc})") from None
