"""Params declared once, with the values they take, and one validator for every family.

A family's params are dataclass fields made by :func:`param`: a default and a :class:`Rule`
(``epochs: int = param(100, at_least(1))``). :func:`validate` checks every field of an instance
(the tabular members' params, the image classifiers' training) and raises a one-line
:class:`~pipeline.errors.ParamError` naming the first bad one; :func:`check` does the same for
a plain dict against rules (scikit-learn estimators' options). scikit-learn declares its
estimators' params the same way (``_parameter_constraints``) but checks them with a private
function; this is the package's own, so no family depends on a library's internals.
"""

from __future__ import annotations

import math
from dataclasses import field, fields

from pipeline.errors import ParamError, UsageError


class Rule:
    """What a param takes. :meth:`checked` returns the value (whole numbers and numbers coerced,
    as the command line and TOML give either) or raises ValueError with why it is refused."""

    def checked(self, value):
        raise NotImplementedError


class Interval(Rule):
    """A number of ``kind`` (int or float) between ``low`` and ``high`` (None: unbounded),
    each bound included unless ``open`` names it ("low", "high" or "both"); never NaN, and
    infinite only where ``finite`` is False."""

    def __init__(self, kind: type, low=None, high=None, open: str = "", finite: bool = True):
        self.kind, self.low, self.high, self.open, self.finite = kind, low, high, open, finite

    def checked(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(self.why)
        try:
            number = self.kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"must be {'a whole' if self.kind is int else 'a'} number") from None
        if self.kind is int and number != float(value):
            raise ValueError("must be a whole number")
        low_open, high_open = self.open in ("low", "both"), self.open in ("high", "both")
        if math.isnan(number) or (self.finite and math.isinf(number)) \
                or (self.low is not None and (number <= self.low if low_open else number < self.low)) \
                or (self.high is not None and (number >= self.high if high_open else number > self.high)):
            raise ValueError(self.why)
        return number

    @property
    def why(self) -> str:
        if self.high is None:
            if self.low == 0 and self.open in ("low", "both"):
                return "must be a positive number"
            return "must be a number" if self.low is None else f"must be at least {self.low:g}"
        left = "(" if self.open in ("low", "both") else "["
        right = ")" if self.open in ("high", "both") else "]"
        return f"must be in {left}{self.low:g}, {self.high:g}{right}"


class OneOf(Rule):
    """One of ``choices`` (compared by value; True and 1 are told apart)."""

    def __init__(self, *choices):
        self.choices = choices

    def checked(self, value):
        if not any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices):
            raise ValueError(self.why)
        return value

    @property
    def why(self) -> str:
        if set(self.choices) == {True, False}:
            return "must be true or false"
        return f"not one of {', '.join(_shown(c) for c in self.choices)}"


class Satisfies(Rule):
    """Whatever ``test(value)`` accepts; ``why`` says what that is."""

    def __init__(self, test, why: str):
        self.test, self.why = test, why

    def checked(self, value):
        if not self.test(value):
            raise ValueError(self.why)
        return value


def _shown(choice) -> str:
    return str(choice).lower() if isinstance(choice, bool) else str(choice)


def at_least(low, kind: type = int) -> Interval:
    return Interval(kind, low)


def positive(finite: bool = True) -> Interval:
    return Interval(float, 0, open="low", finite=finite)


FLAG = OneOf(True, False)
LOG_TARGET = OneOf(True, False, "auto")


def param(default, rule: Rule):
    """A dataclass field declaring a param: its (immutable) default and the values it takes."""
    return field(default=default, metadata={"rule": rule})


def validate(instance) -> None:
    """Check (and coerce, in place) every field of a frozen dataclass of params against its rule."""
    for item in fields(instance):
        rule = item.metadata.get("rule")
        if rule is not None:
            value = getattr(instance, item.name)
            object.__setattr__(instance, item.name, checked(item.name, value, rule))


def check(values: dict, rules: dict[str, Rule]) -> dict:
    """``values`` with each one that ``rules`` names checked (and coerced)."""
    return {key: checked(key, value, rules[key]) if key in rules else value for key, value in values.items()}


def checked(name: str, value, rule: Rule):
    try:
        return rule.checked(value)
    except ValueError as exc:
        raise ParamError(name, value, str(exc)) from None


def build(cls, values: dict, owner: str):
    """The params dataclass ``cls`` with ``values`` over its defaults; a key it does not declare
    is a one-line error naming ``owner`` and what it takes."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"{owner} has no param {unknown[0]!r} (its params: {', '.join(sorted(known))})")
    return cls(**values)
