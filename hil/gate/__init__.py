"""The merge gate: estimate each (variant, metric)'s change against a window of baseline sessions, then decide.

Tolerances are written as in pytest-benchmark's `--benchmark-compare-fail`: `METRIC=5%` (relative),
`METRIC=0.5pp` (percentage points, for % metrics) or `METRIC=2` (absolute, in the metric's unit), and mean
the smallest regression the gate must catch. `hil.gate.stats` estimates (interval per row, noise from the
window), `hil.gate.decide` decides over the whole matrix (one false-alarm budget, re-measurement, policy),
`hil.gate.window` picks comparable baseline runs from the results database, and this module ties them to it.
Invalid or missing gated figures fail with their reason, except figures skipped by design on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hil.errors import HilError
from hil.metrics import METRICS, metric

FAILING = ("REGRESSION", "INVALID", "MISSING")
# What `hil gate` gates when no --tolerance is given: the figures a merge is judged on. The other power
# figures (idle, active, dynamic) follow energy and power and have budgets; gating them too would only widen
# every interval (more rows share the false-alarm budget).
DEFAULT_TOLERANCES = ("latency_ms=5%", "energy_mj=5%", "power_mw=5%", "accuracy=0.5pp", "flash_kb=1%", "arena_kb=1%")
TOLERANCE_FORMS = (
    "METRIC=N% (relative to the baseline), METRIC=Npp (percentage points, for % metrics) "
    "or METRIC=N (absolute, in the metric's unit)"
)
_TOKEN = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_]+)\s*[=:]\s*(?P<amount>[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)"
    r"\s*(?P<suffix>[A-Za-z%]*)\s*$"
)
_EPS = 1e-9


@dataclass(frozen=True)
class Tolerance:
    """How much worse a metric may get: `kind` 'rel' (percent of baseline), 'pp' or 'abs' (metric unit)."""

    metric: str
    kind: str
    amount: float

    def allowed(self, baseline: float) -> float:
        """The allowed worsening in the metric's unit for this baseline value."""
        return abs(baseline) * self.amount / 100.0 if self.kind == "rel" else self.amount

    def __str__(self) -> str:
        unit = METRICS[self.metric].unit
        if self.kind == "rel":
            return f"{self.amount:g}%"
        if self.kind == "pp":
            return f"{self.amount:g}pp"
        return f"{self.amount:g} {unit}".rstrip()


def parse_tolerance(token: str) -> Tolerance:
    """One `METRIC=TOL` token (`:` works as well, as in `pytest --gate energy_mj:5%`)."""
    m = _TOKEN.match(token)
    if not m:
        raise HilError(f"bad tolerance {token!r}: expected {TOLERANCE_FORMS}")
    name, amount, suffix = m["metric"], float(m["amount"]), m["suffix"]
    if name not in METRICS:
        raise HilError(f"bad tolerance {token!r}: unknown metric {name!r}; known: {', '.join(METRICS)}")
    unit = metric(name).unit
    if suffix == "%":
        return Tolerance(name, "rel", amount)
    if suffix.lower() == "pp":
        if unit != "%":
            raise HilError(
                f"bad tolerance {token!r}: 'pp' (percentage points) is for % metrics and {name} is in "
                f"{unit or 'no unit'}; use N% or an absolute N"
            )
        return Tolerance(name, "pp", amount)
    if suffix == "" or (unit and suffix.lower() == unit.lower()):
        return Tolerance(name, "abs", amount)
    raise HilError(f"bad tolerance {token!r}: unknown suffix {suffix!r}; expected {TOLERANCE_FORMS}")


def parse_tolerances(tokens: list[str]) -> dict[str, Tolerance]:
    """`["energy_mj=5%", "accuracy=0.5pp", "arena_kb=2"]` -> {metric: Tolerance}; no metric twice."""
    out: dict[str, Tolerance] = {}
    for token in tokens:
        tol = parse_tolerance(token)
        if tol.metric in out:
            raise HilError(
                f"bad tolerance {token!r}: {tol.metric} already has a tolerance ({out[tol.metric]})"
            )
        out[tol.metric] = tol
    return out


from hil.gate.result import GateResult, GateRow, compare  # noqa: E402  (re-exported: the public API)

__all__ = ["DEFAULT_TOLERANCES", "FAILING", "GateResult", "GateRow", "Tolerance", "compare", "parse_tolerance",
           "parse_tolerances"]
