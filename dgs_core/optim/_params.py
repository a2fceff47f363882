"""Hyperparameter specifications: one source of truth for validation and for the UI.

Every optimizer file declares its hyperparameters as a tuple of :class:`HyperParam`.
The same specs validate the constructor's arguments, re-validate a parameter group at the
top of ``step()`` (a schedule or the UI may have written new values), drive the registry's
``create()`` and give the UI its widget ranges. Error messages always name the argument and
the value: ``Invalid lr: -1.0 (must be >= 0)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Value = float | int | bool | str


@dataclass(frozen=True)
class HyperParam:
    """One hyperparameter: default, valid range or choices, and a help text for the UI.

    Numeric bounds are inclusive unless ``low_open`` / ``high_open`` is set.
    ``log`` asks the UI for a log-scaled control (learning rates, epsilons).
    """

    name: str
    default: Value
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Value, ...] | None = None
    integer: bool = False
    log: bool = False
    help: str = ""

    @property
    def kind(self) -> str:
        """"bool", "choice", "int" or "float"."""
        if isinstance(self.default, bool):
            return "bool"
        if self.choices is not None:
            return "choice"
        return "int" if self.integer else "float"

    def describe_range(self) -> str:
        """The valid range as a short phrase, e.g. "in [0, 1)"."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "True or False"
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_fmt(self.high)}"
        return "finite"

    def validate(self, value: Any) -> Value:
        """Return ``value`` (coerced to int/float where harmless) or raise ``ValueError``."""
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise _invalid(self, value)
            return value
        if kind == "choice":
            if value not in self.choices:  # type: ignore[operator]
                raise _invalid(self, value)
            return value
        original = value
        if isinstance(value, bool):
            raise _invalid(self, original)
        if not isinstance(value, int | float):
            # tensors and numpy scalars: accept anything float() understands
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise _invalid(self, original) from None
        if not math.isfinite(value):
            raise _invalid(self, original)
        if kind == "int":
            if float(value) != int(value):
                raise _invalid(self, original)
            value = int(value)
        else:
            value = float(value)
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise _invalid(self, original)
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise _invalid(self, original)
        return value


def _fmt(x: float) -> str:
    return f"{x:g}"


def _invalid(spec: HyperParam, value: Any) -> ValueError:
    return ValueError(f"Invalid {spec.name}: {value!r} (must be {spec.describe_range()})")


def validate_hparams(specs: Iterable[HyperParam], values: Mapping[str, Any]) -> dict[str, Value]:
    """Validate every spec'd key present in ``values``; return the validated copy.

    Keys without a spec are passed through unchanged (``params``, ``foreach``, ...).
    """
    by_name = {s.name: s for s in specs}
    out = dict(values)
    for key, value in values.items():
        spec = by_name.get(key)
        if spec is not None:
            out[key] = spec.validate(value)
    return out


def check_group(specs: Iterable[HyperParam], group: Mapping[str, Any]) -> None:
    """Re-validate a parameter group in place of use (top of ``step()``).

    Schedules and the UI write ``group["lr"]`` and friends after construction; a bad value
    must fail loudly with the argument named instead of silently corrupting the weights.
    """
    for spec in specs:
        if spec.name in group:
            spec.validate(group[spec.name])


def defaults_of(specs: Iterable[HyperParam]) -> dict[str, Value]:
    """``{name: default}`` for a spec tuple."""
    return {s.name: s.default for s in specs}
