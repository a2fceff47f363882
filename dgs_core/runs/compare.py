"""Runs side by side: the *effective* configuration of a run, the diff of several, EMA smoothing.

A bundle's ``config.json`` holds what the user set; defaults fill the rest when the run is
built. :func:`effective_config` resolves them again (the config's own defaults, the task's or
surface's parameters, every optimizer's hyperparameters as the run used them), so that a diff
compares what the runs really did: a setting left at its default equals the same value set by
hand. :func:`config_diff` puts the settings that differ first and hides the equal ones.

:func:`smooth_ema` is TensorBoard's scalar smoothing (a debiased exponential moving average).

>>> smooth_ema([1.0, 3.0, 3.0], 0.5).round(4).tolist()
[1.0, 2.3333, 2.7143]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dgs_core.params import invalid
from dgs_core.runs.bundle import Bundle
from dgs_core.surfaces import get_surface
from dgs_core.surfaces.config import SurfaceConfig
from dgs_core.training.config import TrainConfig
from dgs_core.training.tasks import get_task_info

MISSING = "—"  # a setting a run does not have (e.g. an optimizer only the other run compared)


# ---------------------------------------------------------------------------------------------
# Smoothing
# ---------------------------------------------------------------------------------------------


def smooth_ema(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average of the finite values.

    .. math:: m_t = w\\,m_{t-1} + (1 - w)\\,y_t,\\quad m_0 = 0,\\qquad
              \\hat y_t = m_t / (1 - w^{n_t})

    with :math:`n_t` the number of finite values so far. The debiasing keeps the first points
    on the data (a plain EMA started at 0 would begin near 0). Non-finite values are passed
    through and skipped by the average, as in TensorBoard. ``weight`` in [0, 1): 0 returns the
    values unchanged.
    """
    if not isinstance(weight, int | float) or not 0.0 <= weight < 1.0:
        raise invalid("smoothing", weight, "a number in [0, 1)")
    y = np.asarray(values, dtype=float)
    out = y.copy()
    if weight == 0.0:
        return out
    last, count = 0.0, 0
    for i, value in enumerate(y):
        if not math.isfinite(value):
            continue
        last = weight * last + (1.0 - weight) * value
        count += 1
        out[i] = last / (1.0 - weight**count)
    return out


# ---------------------------------------------------------------------------------------------
# Effective configurations and their diff
# ---------------------------------------------------------------------------------------------


def effective_config(bundle: Bundle) -> dict[str, str]:
    """The run's configuration with every default resolved, flat: ``{"steps": "300",
    "task_params.noise": "0.2", "optimizers.adam.lr": "0.001", …}`` (values as JSON text)."""
    out: dict[str, str] = {"kind": bundle.kind}
    if bundle.kind == "training":
        config = TrainConfig.from_dict(bundle.config).to_dict()
        config.pop("optimizers")
        config["task_params"] = get_task_info(config["task"]).resolve(config["task_params"])
        _flatten(config, "", out)
        for label, result in bundle.results.items():
            _flatten({"optimizer": result.name, **result.hparams}, f"optimizers.{label}.", out)
    elif bundle.kind == "surface":
        config = SurfaceConfig.from_dict(bundle.config).to_dict()
        for shown_only in ("optimizers", "hparams", "view", "step"):  # the lab's view, not the run
            config.pop(shown_only, None)
        config["surface_params"] = dict(get_surface(config["surface"], **config["surface_params"]).params)
        _flatten(config, "", out)
        for label, run in (bundle.runs or {}).items():
            _flatten({"optimizer": run.optimizer, **run.hparams}, f"optimizers.{label}.", out)
    else:
        _flatten(dict(bundle.config), "", out)
    return out


def config_diff(bundles: Mapping[str, Bundle], *, all_settings: bool = False) -> pd.DataFrame:
    """The effective configurations of several runs, one row per setting, one column per run.

    Rows, in this order: settings every run has, with different values; settings only some runs
    have (the others show "—"); with ``all_settings``, the settings equal in every run last.
    Without it, nothing is shown for a setting equal on every side. Within a group, the order
    of the configuration.
    """
    flat = {name: effective_config(bundle) for name, bundle in bundles.items()}
    return diff_table(flat, all_settings=all_settings)


def diff_table(flat: Mapping[str, Mapping[str, str]], *, all_settings: bool = False) -> pd.DataFrame:
    """:func:`config_diff` on flat configurations ``{run: {setting: value}}``."""
    settings = list(dict.fromkeys(k for values in flat.values() for k in values))
    differ, partial, equal = [], [], []
    for setting in settings:
        values = [flat[name].get(setting, MISSING) for name in flat]
        if MISSING in values:
            partial.append([setting, *values])
        elif len(set(values)) > 1:
            differ.append([setting, *values])
        else:
            equal.append([setting, *values])
    rows = differ + partial + (equal if all_settings else [])
    return pd.DataFrame(rows, columns=["setting", *flat])


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flatten(inner, f"{prefix}{key}.", out)
    else:
        out[prefix.rstrip(".")] = _show(value)


def _show(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, sort_keys=True, default=str)
