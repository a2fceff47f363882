"""Reading a training bundle and resuming it, against reading the same files directly, in one run.

    .venv/bin/python bench/bundles.py [--steps 200] [--repeat 3]

Builds a bundle of a digits run (4 optimizers, diagnostics every 5 steps: ≈ 9–16 MB), then times

- ``read_bundle`` (every check, the run rebuilt) against the floor: opening the zip and reading
  every Parquet member with pandas and every safetensors member with safetensors, nothing else;
- ``resume_trainer`` (a trainer ready to train on) against the same floor.

Targets (issue #16): import ≤ 2 s and resume start ≤ 2 s on this machine. Medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import zipfile

import pandas as pd
import safetensors.torch

from dgs_core.runs.read import read_bundle
from dgs_core.runs.training import export_training, resume_trainer
from dgs_core.training.config import TrainConfig
from dgs_core.training.trainer import Trainer


def _direct(data: bytes) -> None:
    """The floor: every table and tensor file of the bundle read with pandas / safetensors."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if name.endswith(".parquet"):
                pd.read_parquet(io.BytesIO(archive.read(name)))
            elif name.endswith(".safetensors"):
                safetensors.torch.load(archive.read(name))


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = TrainConfig(
        task="digits",
        optimizers=["sgd", "adam", "dgs", "adan"],
        steps=args.steps,
        eval_every=10,
        diag_every=5,
    )
    trainer = Trainer(config)
    list(trainer.run())
    data = export_training(trainer)
    print(f"bundle: {len(data) / 2**20:.1f} MB; cores {os.cpu_count()}, load average {os.getloadavg()}")
    read_bundle(data)  # imports and caches warm
    direct = _median(lambda: _direct(data), args.repeat)
    read = _median(lambda: read_bundle(data), args.repeat)
    bundle = read_bundle(data)
    resume = _median(lambda: resume_trainer(bundle, extra_steps=10), args.repeat)
    print(f"direct pandas/safetensors read: {direct:.2f} s")
    print(f"read_bundle: {read:.2f} s ({read / direct:.1f}× the direct read; target ≤ 2 s)")
    print(f"resume_trainer: {resume:.2f} s ({resume / direct:.1f}× the direct read; target ≤ 2 s)")


if __name__ == "__main__":
    main()
