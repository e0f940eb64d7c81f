"""The budget file (`budgets.yaml`): default limits for every variant plus per-variant overrides.

Metric names, units and directions come from `hil.metrics`; every mistake is one HilError line naming the
file, the key path and the allowed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from hil.errors import HilError
from hil.metrics import METRICS, metric
from models.config_file import read_yaml_mapping

DEFAULT_BUDGETS_FILE = "budgets.yaml"


@dataclass(frozen=True)
class Limit:
    """A budget on one metric of one variant: a lower bound, an upper bound, or both."""

    min: float | None = None
    max: float | None = None
    metric: str = ""
    variant: str = ""

    def check(self, value: float | None) -> tuple[bool, str]:
        """Whether `value` is within the limit, and one line naming variant, metric, value and budget."""
        unit = METRICS[self.metric].unit if self.metric in METRICS else ""
        who = " ".join(p for p in (self.variant, self.metric) if p) or "value"
        if value is None or not math.isfinite(value):
            return False, f"{who} has no valid measurement (got {value!r}); budget {self.describe()}"
        shown = f"{who} = {_fmt(value, unit)}"
        if self.max is not None and value > self.max:
            return False, f"{shown} exceeds budget max {_fmt(self.max, unit)}"
        if self.min is not None and value < self.min:
            return False, f"{shown} is below budget min {_fmt(self.min, unit)}"
        return True, f"{shown} within budget {self.describe()}"

    def describe(self) -> str:
        """The limit as text, e.g. `max 3.000 mJ` or `min 90.000 % max 99.000 %`."""
        unit = METRICS[self.metric].unit if self.metric in METRICS else ""
        parts = [f"min {_fmt(self.min, unit)}" if self.min is not None else ""]
        parts.append(f"max {_fmt(self.max, unit)}" if self.max is not None else "")
        return " ".join(p for p in parts if p)


OUTCOMES = ("passed", "failed", "skipped")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one budget (passed, failed or skipped) with the one line that explains it."""

    outcome: str
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"


def judge(limit: Limit, value: float | None, *, valid: bool = True, reason: str | None = None,
          skipped: bool = False) -> Verdict:
    """The verdict of a budget on a figure: the one rule the budget tests, `hil measure` and the report use."""
    if skipped:
        return Verdict("skipped", reason or "not measured by design")
    if not valid or value is None:
        who = " ".join(p for p in (limit.variant, limit.metric) if p) or "value"
        return Verdict("failed", f"{who} invalid: {reason}" if reason else f"{who} not measured")
    ok, message = limit.check(value)
    return Verdict("passed" if ok else "failed", message)


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3f} {unit}".rstrip()


class _LimitSpec(BaseModel):
    """`{max: X}`, `{min: X}` or both, as written in the file."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _sane(self) -> _LimitSpec:
        if self.min is None and self.max is None:
            raise ValueError("a limit needs min, max or both, e.g. {max: 100}")
        for bound in (self.min, self.max):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"limits must be finite numbers, got {bound}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


_Section = dict[str, _LimitSpec | None]


class _BudgetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    defaults: _Section = {}
    variants: dict[str, _Section | None] = {}


@dataclass(frozen=True)
class Budgets:
    """Validated budgets: defaults and per-variant overrides (None = the default is removed)."""

    defaults: dict[str, Limit]
    overrides: dict[str, dict[str, Limit | None]]
    source: str = DEFAULT_BUDGETS_FILE

    def check_variants(self, known: list[str]) -> None:
        """Raise a HilError if the file overrides a variant that is not in `known`."""
        unknown = [v for v in self.overrides if v not in known]
        if unknown:
            raise HilError(
                f"{self.source}: variants.{unknown[0]}: unknown variant; "
                f"known: {', '.join(known) or '(none)'}"
            )

    def for_variant(self, name: str) -> dict[str, Limit]:
        """The limits that apply to one variant: its overrides merged over the defaults, metric by metric."""
        merged: dict[str, Limit | None] = {**self.defaults, **self.overrides.get(name, {})}
        return {m: _bind(lim, m, name) for m, lim in merged.items() if lim is not None}

    def cases(self, variants: list[str]) -> list[tuple[str, str, Limit]]:
        """(variant, metric, limit) for every budget of every variant, in METRICS order (test parameters)."""
        order = list(METRICS)
        out = []
        for v in variants:
            limits = self.for_variant(v)
            out += [(v, m, limits[m]) for m in sorted(limits, key=order.index)]
        return out


def _bind(limit: Limit, metric_name: str, variant: str) -> Limit:
    return Limit(min=limit.min, max=limit.max, metric=metric_name, variant=variant)


def _error_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    # pydantic appends the union member tried ('_LimitSpec') to the location; it is not a key of the file.
    key = ".".join(str(p) for p in loc if p not in ("_LimitSpec",)) or "(top level)"
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = "version, defaults, variants" if len(loc) == 1 else "min, max"
        msg = f"unknown key; allowed keys: {allowed}"
    elif kind == "literal_error":
        msg = f"unsupported version {err.get('input')!r}; allowed: 1"
    elif kind in ("float_parsing", "float_type"):
        msg = f"a limit must be a number (got {err.get('input')!r})"
    elif kind in ("dict_type", "model_type"):
        section = len(loc) == 1 or (len(loc) == 2 and loc[0] == "variants")
        shape = (
            "of metric names to limits, e.g. {latency_ms: {max: 100}}" if section else "such as {max: 100}"
        )
        msg = f"expected a mapping {shape} (got {err.get('input')!r})"
    return f"{source}: {key}: {msg}"


def _limits(section: dict[str, _LimitSpec | None], where: str, source: str) -> dict[str, Limit | None]:
    budgetable = [m.name for m in METRICS.values() if m.budget]
    out: dict[str, Limit | None] = {}
    for name, spec in section.items():
        if name not in METRICS:
            raise HilError(f"{source}: {where}.{name}: unknown metric; known: {', '.join(budgetable)}")
        if not metric(name).budget:
            raise HilError(
                f"{source}: {where}.{name}: metric is reported only and takes no budget; "
                f"metrics with budgets: {', '.join(budgetable)}"
            )
        out[name] = None if spec is None else Limit(min=spec.min, max=spec.max, metric=name)
    return out


def parse_budgets(data: Any, source: str = DEFAULT_BUDGETS_FILE) -> Budgets:
    """Validate a budgets mapping (as read from YAML)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HilError(f"{source}: the budget file must be a YAML mapping, got {type(data).__name__}")
    try:
        doc = _BudgetFile.model_validate(data)
    except ValidationError as exc:
        raise HilError(_error_line(exc, source)) from None
    defaults = {m: lim for m, lim in _limits(doc.defaults, "defaults", source).items() if lim is not None}
    overrides = {v: _limits(sec or {}, f"variants.{v}", source) for v, sec in doc.variants.items()}
    return Budgets(defaults=defaults, overrides=overrides, source=source)


def load_budgets(path: str | Path = DEFAULT_BUDGETS_FILE) -> Budgets:
    """Read and validate a budget file."""
    data = read_yaml_mapping(
        path, what="budget file", hint="pass --budgets PATH or create it (see budgets.yaml)", error=HilError
    )
    return parse_budgets(data, str(path))
