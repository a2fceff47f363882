"""Pick the compute device: CUDA when present, else Apple MPS, else CPU."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """Return the best available device (CUDA, then MPS, then CPU)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto" → :func:`default_device`; anything else → ``torch.device(device)``."""
    if device is None or device == "auto":
        return default_device()
    return torch.device(device)
