"""The merge gate: compare a run with a baseline run, metric by metric, within per-metric tolerances.

Modelled on pytest-benchmark's `--benchmark-compare-fail`: `METRIC=5%` (relative), `METRIC=0.5pp`
(percentage points, for % metrics) or `METRIC=2` (absolute, in the metric's unit). A change in the worse
direction beyond the tolerance is a REGRESSION; invalid or missing measurements fail with their reason,
except measurements skipped by design (a variant TFLM cannot run) on both sides.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from hil.errors import HilError
from hil.metrics import METRICS, metric
from hil.results import Measurement, ResultsStore, Run

FAILING = ("REGRESSION", "INVALID", "MISSING")
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


@dataclass(frozen=True)
class GateRow:
    """One (variant, metric) of the comparison."""

    variant: str
    metric: str
    unit: str
    baseline: float | None
    value: float | None
    change: float | None
    change_pct: float | None
    tolerance: str | None
    verdict: str  # ok, improved, worse (no tolerance), new, skipped, REGRESSION, INVALID, MISSING
    reason: str | None = None

    @property
    def failed(self) -> bool:
        """Whether this row fails the gate."""
        return self.verdict in FAILING


@dataclass
class GateResult:
    """The comparison of run `run` with run `baseline`: every row, and whether the gate fails."""

    run: Run
    baseline: Run
    rows: list[GateRow]
    tolerances: dict[str, Tolerance]
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[GateRow]:
        """Rows that fail the gate."""
        return [r for r in self.rows if r.failed]

    @property
    def failed(self) -> bool:
        """True on any regression beyond tolerance, invalid or missing measurement, or nothing to compare."""
        return bool(self.failures) or not self.rows

    def summary(self) -> str:
        """One line: passed/FAILED with the count of each failing verdict."""
        if not self.rows:
            return (
                f"gate FAILED: no measurements to compare in run {self.run.id} or baseline {self.baseline.id}"
            )
        if not self.failed:
            return f"gate passed: {len(self.rows)} figures compared, none worse than its tolerance"
        counts = {v: sum(r.verdict == v for r in self.rows) for v in FAILING}
        parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        return f"gate FAILED: {parts} of {len(self.rows)} figures"

    def table(self) -> str:
        """Aligned text table of every row, headed by both runs (simulated runs are marked)."""
        head = [
            "variant",
            "metric",
            "baseline",
            "run",
            "change",
            "change %",
            "tolerance",
            "verdict",
            "reason",
        ]
        body = [
            [
                r.variant,
                r.metric,
                _num(r.baseline, r.unit),
                _num(r.value, r.unit),
                _signed(r.change, r.unit),
                _signed(r.change_pct, "%"),
                r.tolerance or "-",
                r.verdict,
                r.reason or "",
            ]
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        right = {2, 3, 4, 5}

        def line(cells: list[str]) -> str:
            out = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(out).rstrip()

        lines = [f"run      {_describe(self.run)}", f"baseline {_describe(self.baseline)}", ""]
        lines += [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
        lines += [""] + [f"note: {n}" for n in self.notes] + [self.summary()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for CI artifacts and the report)."""
        return {
            "run": asdict(self.run),
            "baseline": asdict(self.baseline),
            "tolerances": {m: str(t) for m, t in self.tolerances.items()},
            "failed": self.failed,
            "summary": self.summary(),
            "notes": list(self.notes),
            "rows": [{**asdict(r), "failed": r.failed} for r in self.rows],
        }


def _describe(run: Run) -> str:
    sim = " [simulated]" if run.simulated else ""
    return (
        f"{run.id}: {run.started_at[:19]} commit {run.git_commit[:10]} on {run.git_branch}, "
        f"bench {run.bench}, {run.status}{sim}"
    )


def _num(x: float | None, unit: str) -> str:
    return "-" if x is None else f"{x:.4g} {unit}".rstrip()


def _signed(x: float | None, unit: str) -> str:
    return "-" if x is None else f"{x:+.3g} {unit}".rstrip()


def _invalid_reason(base: Measurement, new: Measurement) -> str | None:
    reasons = []
    for side, m in (("baseline", base), ("run", new)):
        if not m.valid or m.value is None or not math.isfinite(m.value):
            reasons.append(f"{side}: {m.reason or 'no value'}")
    return "; ".join(reasons) or None


def _row(
    variant: str, name: str, base: Measurement | None, new: Measurement | None, tol: Tolerance | None
) -> GateRow:
    unit = (new or base).unit  # type: ignore[union-attr]
    tol_text = str(tol) if tol else None
    if new is None and base.skipped:  # type: ignore[union-attr]
        return GateRow(variant, name, unit, None, None, None, None, tol_text, "skipped", base.reason)  # type: ignore[union-attr]
    if new is None:
        return GateRow(
            variant,
            name,
            unit,
            base.value,
            None,
            None,
            None,
            tol_text,
            "MISSING",  # type: ignore[union-attr]
            "in the baseline, not measured in this run",
        )
    if base is None:
        if new.skipped:
            return GateRow(variant, name, unit, None, None, None, None, tol_text, "skipped", new.reason)
        bad = None if new.valid and new.value is not None else f"run: {new.reason or 'no value'}"
        return GateRow(
            variant,
            name,
            unit,
            None,
            new.value,
            None,
            None,
            tol_text,
            "INVALID" if bad else "new",
            bad or "not in the baseline",
        )
    if new.skipped and base.skipped:  # cannot run by design, and could not in the baseline either
        return GateRow(variant, name, unit, None, None, None, None, tol_text, "skipped", new.reason)
    bad = _invalid_reason(base, new)
    if bad:
        return GateRow(variant, name, unit, base.value, new.value, None, None, tol_text, "INVALID", bad)
    b, v = float(base.value), float(new.value)  # type: ignore[arg-type]
    change = v - b
    pct = change / abs(b) * 100.0 if b != 0 else None
    if name not in METRICS:
        return GateRow(variant, name, unit, b, v, change, pct, tol_text, "ok", "unknown metric: not gated")
    worse = change if metric(name).better == "lower" else -change
    limit = tol.allowed(b) if tol else 0.0
    slack = _EPS * max(abs(b), abs(v), 1.0)
    if worse > limit + slack:
        if tol is None:
            return GateRow(variant, name, unit, b, v, change, pct, None, "worse")
        reason = f"{variant} {name} {b:.4g} -> {v:.4g} {unit}".rstrip() + f", worse by more than {tol}"
        return GateRow(variant, name, unit, b, v, change, pct, tol_text, "REGRESSION", reason)
    verdict = "improved" if worse < -(limit + slack) else "ok"
    return GateRow(variant, name, unit, b, v, change, pct, tol_text, verdict)


def compare(
    store: ResultsStore, run: int | str, baseline: int | str, tolerances: dict[str, Tolerance]
) -> GateResult:
    """Compare run `run` with `baseline` (ids or references; `latest-main` = the newest one before `run`)."""
    run_id = store.resolve(run)
    base_id = store.resolve(baseline, before=run_id)
    if base_id == run_id:
        raise HilError(f"run and baseline are the same run ({run_id}); pass another --baseline")
    new = {(m.variant, m.metric): m for m in store.measurements(run_id)}
    old = {(m.variant, m.metric): m for m in store.measurements(base_id)}
    order = {name: i for i, name in enumerate(METRICS)}
    keys = sorted(set(new) | set(old), key=lambda k: (k[0], order.get(k[1], len(order)), k[1]))
    rows = [_row(v, m, old.get((v, m)), new.get((v, m)), tolerances.get(m)) for v, m in keys]
    result = GateResult(store.run(run_id), store.run(base_id), rows, dict(tolerances))
    seen = {m for _, m in keys}
    result.notes += [
        f"tolerance on {m} matches no measurement in either run" for m in tolerances if m not in seen
    ]
    if result.run.simulated != result.baseline.simulated:
        kind = {True: "simulated", False: "real"}
        result.notes.append(
            f"comparing a {kind[result.run.simulated]} run with a {kind[result.baseline.simulated]} baseline"
        )
    return result
