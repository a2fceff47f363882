"""DGS Lab optimizers and their registry.

>>> from dgs_core.optim import DGS, Adan, LARS, ExtraSGD, AdaGradNorm, AdAdaGrad, create, names
>>> from dgs_core.optim import LAMB, AdaScaleSGD, MARS, Lion, Muon, ScheduleFreeAdamW

Attributes are loaded on first use, so importing one optimizer module
(``from dgs_core.optim.dgs import DGS``) does not import the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DGS": "dgs_core.optim.dgs",
    "Adan": "dgs_core.optim.adan",
    "LAMB": "dgs_core.optim.lamb",
    "LARS": "dgs_core.optim.lars",
    "ExtraSGD": "dgs_core.optim.extrasgd",
    "AdaGradNorm": "dgs_core.optim.adagrad_norm",
    "AdaScaleSGD": "dgs_core.optim.adascale",
    "AdAdaGrad": "dgs_core.optim.adadagrad",
    "AdAdaGradNorm": "dgs_core.optim.adadagrad",
    "Lion": "dgs_core.optim.lion",
    "MARS": "dgs_core.optim.mars",
    "Muon": "dgs_core.optim.muon",
    "ScheduleFreeAdamW": "dgs_core.optim.schedule_free",
    "OptimizerInfo": "dgs_core.optim.registry",
    "create": "dgs_core.optim.registry",
    "get": "dgs_core.optim.registry",
    "infos": "dgs_core.optim.registry",
    "names": "dgs_core.optim.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dgs_core.optim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
