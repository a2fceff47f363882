"""Validated values: one :class:`Param` spec for every setting DGS Lab accepts.

Optimizer hyperparameters, schedule parameters, task parameters and every field of a lab's
configuration (``TrainConfig``, ``SurfaceConfig``, ``StudySpec``) are declared as ``Param``
specs. The same spec validates a constructor's argument, re-validates a value written later
(a schedule or the UI writes ``group["lr"]``), gives the UI its widget (kind, range, log scale,
help text) and documents the valid range.

A bad value raises :class:`ParamError`, a ``ValueError`` whose message names the field and the
value, ``Invalid lr: -1.0 (must be >= 0)``, and whose ``field`` attribute lets a page mark the
widget that holds it.

The rules, the same everywhere:

- numbers are ``int``, ``float``, numpy scalars or 0-d tensors; strings are refused (text from
  a URL or a form is parsed by its reader first), and so are ``bool`` and non-finite values;
- an integer field takes an integral float (``3.0`` → ``3``), never ``3.5``;
- bounds are inclusive unless ``low_open`` / ``high_open``;
- ``optional=True`` also takes ``None`` ("off").

>>> lr = Param("lr", 0.1, low=0.0, high=1e3, log=True, help="learning rate")
>>> lr.validate(0.05)
0.05
>>> try:
...     lr.validate(-1)
... except ParamError as error:
...     print(error.field, "|", error)
lr | Invalid lr: -1 (must be in [0, 1000])
>>> ParamSet([lr]).resolve({"lr": 1})
{'lr': 1.0}
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Value = float | int | bool | str | tuple[int, ...] | None


class ParamError(ValueError):
    """A value that does not fit its field. ``field`` names the field, ``value`` is the value."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def invalid(field: str, value: Any, requirement: str) -> ParamError:
    """The error for ``value`` in ``field``: ``Invalid field: value (must be requirement)``."""
    return ParamError(field, value, f"Invalid {field}: {value!r} (must be {requirement})")


@dataclass(frozen=True)
class Param:
    """One validated value: its default, valid range or choices, and the UI's help text.

    Attributes:
        name: the field's name, as in configs, URLs and error messages.
        default: the value when none is given; its type sets the kind (a bool is a switch).
        low, high: inclusive bounds of a number (``low_open`` / ``high_open``: exclusive).
        choices: the allowed values (a choice field).
        integer: an integer field.
        step_list: a strictly increasing tuple of integers within [low, high] (milestones).
        optional: ``None`` is allowed too (the field is off).
        log: the UI shows a log-scaled control (learning rates, epsilons).
        help: one line for the UI.
    """

    name: str
    default: Value
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    integer: bool = False
    step_list: bool = False
    optional: bool = False
    log: bool = False
    help: str = ""

    @property
    def kind(self) -> str:
        """ "bool", "choice", "int_list", "int" or "float"."""
        if isinstance(self.default, bool):
            return "bool"
        if self.choices is not None:
            return "choice"
        if self.step_list:
            return "int_list"
        return "int" if self.integer else "float"

    def describe_range(self) -> str:
        """The valid values as a short phrase, e.g. "in [0, 1)"."""
        kind = self.kind
        if kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices or ())
        elif kind == "bool":
            text = "True or False"
        elif kind == "int_list":
            text = f"a strictly increasing list of integers{self._bounds(' ')}"
        elif kind == "int":
            text = f"an integer{self._bounds(' ')}"
        else:  # a float: its bounds say enough
            text = self._bounds("") or "a finite number"
        return f"{text}, or None" if self.optional else text

    def _bounds(self, lead: str) -> str:
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            return f"{lead}in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"
        if self.low is not None:
            return f"{lead}{'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"{lead}{'<' if self.high_open else '<='} {_fmt(self.high)}"
        return ""

    def validate(self, value: Any) -> Value:
        """``value`` checked and normalised (ints stay ints, numbers become floats, step lists
        tuples), or :class:`ParamError`."""
        if value is None and self.optional:
            return None
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.error(value)
            return value
        if kind == "choice":
            try:
                ok = value in (self.choices or ())
            except TypeError:  # an unhashable or uncomparable value
                ok = False
            if not ok or isinstance(value, bool) != any(isinstance(c, bool) for c in self.choices or ()):
                raise self.error(value)
            return value
        if kind == "int_list":
            return self._validate_steps(value)
        number = _number(value)
        if number is None:
            raise self.error(value)
        if kind == "int":
            if number != int(number):
                raise self.error(value)
            number = int(number)
        else:
            number = float(number)
        if not self._in_range(number):
            raise self.error(value)
        return number

    def _in_range(self, number: float) -> bool:
        low, high = self.low, self.high
        if low is not None and (number < low or (self.low_open and number == low)):
            return False
        return high is None or number < high or (not self.high_open and number == high)

    def _validate_steps(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise self.error(value)
        items = list(value)
        steps = []
        for item in items:
            number = _number(item)
            if number is None or number != int(number) or not self._in_range(number):
                raise self.error(items)
            steps.append(int(number))
        if any(a >= b for a, b in itertools.pairwise(steps)):
            raise self.error(items)
        return tuple(steps)

    def error(self, value: Any, requirement: str | None = None) -> ParamError:
        """The :class:`ParamError` for ``value`` (``requirement`` defaults to the valid range)."""
        return invalid(self.name, value, requirement or self.describe_range())


def _fmt(x: float) -> str:
    return f"{x:g}"


def _number(value: Any) -> float | None:
    """A finite number as a float (ints as ints), or None: no bools, no strings, no inf/NaN."""
    if isinstance(value, bool) or isinstance(value, str | bytes):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        number = float(value)  # floats, numpy floats, 0-d tensors
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


class ParamSet(tuple):
    """An ordered, immutable collection of :class:`Param` specs: one record's fields.

    A tuple of ``Param`` (so ``+`` joins two sets and a ``for`` loop walks the fields), with the
    operations every record needs: :meth:`defaults`, :meth:`resolve` (defaults plus the given
    values, every value validated, unknown names refused), :meth:`validate` (only the given
    values) and ``params["lr"]``.
    """

    def __new__(cls, params: Iterable[Param] = ()) -> ParamSet:
        items = tuple(params)
        names = [p.name for p in items]
        if len(names) != len(set(names)):
            raise ValueError(f"Invalid ParamSet: duplicate names in {names}")
        return super().__new__(cls, items)

    # a ParamSet joins Params, not any tuple
    def __add__(self, other: Iterable[Param]) -> ParamSet:  # type: ignore[override]  # (reason above)
        return ParamSet((*self, *other))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for param in self:
                if param.name == key:
                    return param
            raise KeyError(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return key in self.names
        return super().__contains__(key)

    def __iter__(self) -> Iterator[Param]:
        return super().__iter__()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self)

    def without(self, *names: str) -> ParamSet:
        """The set minus the named fields."""
        return ParamSet(p for p in self if p.name not in names)

    def defaults(self) -> dict[str, Value]:
        """``{name: default}``."""
        return {p.name: p.default for p in self}

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``values`` with every field of this set validated; other keys pass through
        unchanged (``params``, ``foreach``, …)."""
        out = dict(values)
        for param in self:
            if param.name in out:
                out[param.name] = param.validate(out[param.name])
        return out

    def check(self, values: Mapping[str, Any]) -> None:
        """Validate the fields present in ``values`` (a parameter group at the top of
        ``step()``: a schedule or the UI may have written a bad value since construction)."""
        for param in self:
            if param.name in values:
                param.validate(values[param.name])

    def resolve(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        base: Mapping[str, Any] | None = None,
        what: str = "parameter",
    ) -> dict[str, Any]:
        """Defaults, updated by ``base`` then ``values``, all validated.

        An unknown name raises :class:`ParamError` naming it (``what`` says what kind of field,
        "hyperparameter for dgs").
        """
        values = dict(values or {})
        unknown = [k for k in values if k not in self.names]
        if unknown:
            raise ParamError(
                str(unknown[0]),
                unknown[0],
                f"Invalid {what}: {unknown[0]!r} (must be one of {', '.join(self.names)})",
            )
        resolved = self.defaults()
        resolved.update(base or {})
        resolved.update(values)
        return {p.name: p.validate(resolved[p.name]) for p in self}


def check_keys(data: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    """Refuse a mapping with a key outside ``allowed`` (a config read from JSON or a URL):
    ``Invalid <what> key: 'x' (must be one of …)``, the key as the error's field."""
    allowed = list(allowed)
    unknown = sorted(set(data) - set(allowed), key=str)
    if unknown:
        raise ParamError(
            str(unknown[0]),
            unknown[0],
            f"Invalid {what} key: {unknown[0]!r} (must be one of {', '.join(allowed)})",
        )


def check_step(value: Any, name: str = "step") -> int:
    """A step index: an integer >= 0 (``ParamError`` naming ``name`` otherwise)."""
    # integer=True: validate gives an int
    return Param(name, 0, low=0, integer=True).validate(value)  # type: ignore[return-value]  # (reason above)


MAX_LR = 1e3


def lr_param(default: float, name: str = "lr", help: str = "learning rate η") -> Param:
    """A learning rate: a float in [0, 1000] on a log-scaled control."""
    return Param(name, default, low=0.0, high=MAX_LR, log=True, help=help)


def check_tuple(name: str, value: Any, specs: Iterable[Param]) -> tuple[Any, ...]:
    """A tuple argument made of several fields, such as ``betas = (beta1, beta2)``, validated.

    One value per spec, each checked by its spec (so the error names that field, ``beta1``);
    anything that is not a sequence of that length names ``name``. Returns the values as a tuple.
    """
    specs = tuple(specs)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise invalid(name, value, f"{len(specs)} values ({', '.join(s.name for s in specs)})")
    items = tuple(value)
    if len(items) != len(specs):
        raise invalid(name, value, f"{len(specs)} values ({', '.join(s.name for s in specs)})")
    return tuple(spec.validate(item) for spec, item in zip(specs, items, strict=True))
