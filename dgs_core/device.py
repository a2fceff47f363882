"""Pick the compute device (CUDA when present, else Apple MPS, else CPU), and the CPU settings
for many small tensors (:func:`small_tensor_mode`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def default_device() -> torch.device:
    """Return the best available device (CUDA, then MPS, then CPU)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> tuple[str, ...]:
    """The device types this machine can run on: "cpu", then "cuda" and "mps" where present."""
    mps = getattr(torch.backends, "mps", None)
    return (
        "cpu",
        *(("cuda",) if torch.cuda.is_available() else ()),
        *(("mps",) if mps is not None and mps.is_available() else ()),
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto" → :func:`default_device`; anything else → ``torch.device(device)``."""
    if device is None or device == "auto":
        return default_device()
    return torch.device(device)


_SUBNORMAL = 1e-39  # below float32's smallest normal number (~1.18e-38)


def flush_denormal_enabled() -> bool:
    """Whether this thread flushes denormal floats to zero (``torch.set_flush_denormal``).

    torch has no getter, so this asks the CPU: with flushing on, a denormal operand reads as 0.
    """
    return (torch.tensor(_SUBNORMAL, dtype=torch.float32) * 1.0).item() == 0.0


@contextmanager
def small_tensor_mode() -> Iterator[None]:
    """One intra-op thread and flushed denormals while the block runs; both restored after.

    For loops over tiny tensors (the Surface lab's simulator, the training lab's small models):
    waking torch's OpenMP/MKL workers costs more than such work (a 10⁴-element ``sqrt``
    measured 2 ms with two threads on a busy CPU against 35 µs with one), and converging runs
    push optimizer state (Adam's v) into the denormal range, where every CPU op is ~100× slower.

    Every block saves the settings it finds and restores them on leaving, so blocks nest
    (leaving an inner block keeps the outer one's flushing on) and settings made before the
    outermost block come back after it. Both settings belong to the calling thread: flushing
    is a CPU flag of the thread, and under torch's OpenMP backend (the standard builds) so is
    the intra-op thread count: ``torch.set_num_threads`` in one thread leaves the others'.

    >>> with small_tensor_mode():
    ...     torch.get_num_threads(), flush_denormal_enabled()
    (1, True)
    """
    threads, flushing = torch.get_num_threads(), flush_denormal_enabled()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # False (a no-op) where the CPU has no such mode
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flushing)
