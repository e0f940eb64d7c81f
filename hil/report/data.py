"""What a report shows, gathered once: the run, its measurements per variant, verdicts, factory rows, ranking.

Everything comes from the results database alone (the factory rows and plots a run measured are stored
with it), so a report of an old run does not change when the variants are rebuilt. Everything else in
`hil.report` (tables, plots, documents) reads this `ReportData` and never the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hil.budgets import Limit, Verdict, judge
from hil.metrics import METRICS
from hil.results import SKIPPED_PREFIX
from models.errors import ModelError

RANK_METRICS = ("latency_ms", "accuracy", "energy_mj")


@dataclass
class VariantResult:
    """One variant of the run: measurements by metric, budgets, verdicts by metric and its factory row."""

    name: str
    measurements: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, dict[str, float | None]] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    factory: dict[str, Any] = field(default_factory=dict)
    not_run: str | None = None  # why the variant has no figures at all (e.g. TFLM cannot allocate it)

    def value(self, name: str) -> float | None:
        """The valid measured value of a metric, or None."""
        m = self.measurements.get(name)
        if m is None or not m.valid or m.value is None or not math.isfinite(m.value):
            return None
        return float(m.value)

    @property
    def size_bytes(self) -> float | None:
        """Flatbuffer size: the factory's, else the flash size measured on the bench."""
        if self.factory.get("size_bytes") is not None:
            return float(self.factory["size_bytes"])
        kb = self.value("flash_kb")
        return None if kb is None else kb * 1024

    @property
    def skip_reason(self) -> str | None:
        """Why the variant did not run: `not_run`, its skipped measurements, or the message of a skipped test."""
        if self.not_run:
            return self.not_run
        if self.measurements and all(is_skipped(m) for m in self.measurements.values()):
            return skip_text(next(iter(self.measurements.values())))
        skipped = [v.message for v in self.verdicts.values() if v.outcome == "skipped" and v.message]
        if skipped and not any(m.valid for m in self.measurements.values()):
            return skipped[0]
        return None

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(metric, message) of every failed budget test and invalid measurement."""
        out = [(k, v.message) for k, v in self.verdicts.items() if v.outcome == "failed"]
        seen = {k for k, _ in out}
        out += [(k, f"invalid: {m.reason}") for k, m in self.measurements.items()
                if not m.valid and not is_skipped(m) and k not in seen and k in self.budgets]
        return out

    @property
    def passes_all(self) -> bool:
        """Ran, and no budget test failed."""
        return self.skip_reason is None and not self.failures


@dataclass
class Ranking:
    """Variants ranked by the corrected objective; `chosen` is the best one that passes all budgets."""

    table: pd.DataFrame
    reference: str
    chosen: str | None
    reference_choice: str | None  # what the reference study's objective would pick
    note: str = ""


@dataclass
class ReportData:
    """All a report needs, read from the results store and the factory folder."""

    run: Any
    meta: dict[str, Any]
    variants: list[VariantResult]
    artifacts: dict[str, dict[str, Path]]  # variant -> kind -> existing file
    factory_meta: dict[str, Any]
    ranking: Ranking | None
    ranking_note: str
    gate: Any = None  # hil.gate.GateResult when a baseline was given
    baseline: int | None = None
    # regressed variant -> (the baseline run whose profile it is compared with, per-layer changes or None when
    # the two profiles are of different operators); filled with the gate
    layer_changes: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def profile(self, variant: str) -> Any:
        """The variant's per-layer profile in this run (hil.profiling.LayerProfile), or None."""
        path = self.artifacts.get(variant, {}).get("profile")
        if path is None:
            return None
        from hil.profiling import LayerProfile

        return LayerProfile.read(path)

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated", getattr(self.run, "simulated", False)))


def is_skipped(m: Any) -> bool:
    """A measurement that cannot be taken by design (e.g. TFLM cannot run the variant), not a failure."""
    return bool(getattr(m, "skipped", False))


def skip_text(m: Any) -> str:
    """The reason of a skipped measurement without the store's 'skipped: ' prefix."""
    return (m.reason or "").removeprefix(SKIPPED_PREFIX)


def budget_verdict(m: Any, limits: dict[str, float | None], metric: str = "", variant: str = "") -> Verdict:
    """The verdict a budget gives a measurement (hil.budgets.judge), for runs that stored no test outcome."""
    limit = Limit(min=limits.get("min"), max=limits.get("max"), metric=metric, variant=variant)
    if m is None:
        return judge(limit, None)
    return judge(limit, m.value, valid=m.valid, reason=m.reason, skipped=is_skipped(m))


def resolve_path(path: str | Path, *bases: Path | None) -> Path | None:
    """An artifact path as stored (absolute, or relative to the working folder or the database's folder)."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [p, *(b / p for b in bases if b is not None)]
    return next((c for c in candidates if c.exists()), None)


def _variant_results(store: Any, run: Any, meta: dict) -> list[VariantResult]:
    """Measurements, budgets and verdicts grouped per variant, in a stable order."""
    results: dict[str, VariantResult] = {}
    factory_rows = {r.variant: r.factory for r in store.variants(run.id)}

    def get(name: str) -> VariantResult:
        return results.setdefault(name, VariantResult(name, factory=factory_rows.get(name, {})))

    for m in store.measurements(run.id):
        get(m.variant).measurements[m.metric] = m
    for name, limits in (meta.get("budgets") or {}).items():
        get(name).budgets = {k: dict(v) for k, v in limits.items()}
    for o in store.outcomes(run.id):
        get(o.variant).verdicts[o.metric] = Verdict(o.outcome, o.message)
    for name, row in factory_rows.items():
        if not row.get("tflm_ok", True):
            get(name)
    for v in results.values():
        if v.not_run is None and not v.measurements and factory_rows.get(v.name, {}).get("tflm_ok") is False:
            v.not_run = f"not deployable on TFLM: {factory_rows[v.name].get('tflm_error')}"
        for metric_name, limits in v.budgets.items():
            if metric_name not in v.verdicts:
                m = v.measurements.get(metric_name)
                v.verdicts[metric_name] = (Verdict("skipped", v.not_run) if m is None and v.not_run
                                           else budget_verdict(m, limits, metric_name, v.name))
    order = list(factory_rows)
    return sorted(results.values(), key=lambda v: (order.index(v.name) if v.name in order else len(order),
                                                   v.name))


def rank_variants(variants: list[VariantResult], reference: str | None) -> tuple[Ranking | None, str]:
    """Rank the variants with every ranking figure by the corrected objective (models.objective.rank)."""
    from models.objective import rank

    rows, left_out = [], []
    for v in variants:
        figures = {k: v.value(k) for k in RANK_METRICS}
        if v.size_bytes is None or any(x is None for x in figures.values()):
            missing = [k for k, x in figures.items() if x is None] + ([] if v.size_bytes else ["size"])
            left_out.append(f"{v.name} ({'skipped' if v.skip_reason else 'no valid ' + ', '.join(missing)})")
            continue
        rows.append({"variant": v.name, "size_bytes": v.size_bytes, **figures})
    note = f"Not ranked: {'; '.join(left_out)}." if left_out else ""
    if not rows:
        return None, note or "No variant has every ranking figure."
    names = [r["variant"] for r in rows]
    fallback = ""
    if reference not in names:  # the unoptimised model did not run: compare with the largest that did
        largest = max(rows, key=lambda r: r["size_bytes"])["variant"]
        fallback = (f"Reference {reference!r} has no figures; objectives are relative to {largest!r}. "
                    if reference else f"Objectives are relative to the largest variant {largest!r}. ")
        reference = largest
    try:
        table = rank(rows, reference)
    except ModelError as exc:
        return None, f"Ranking impossible: {exc}"
    passing = {v.name for v in variants if v.passes_all}
    table["passes_budgets"] = table["variant"].isin(passing)
    chosen = next((n for n in table["variant"] if n in passing), None)
    ref_choice = str(table.sort_values("objective_reference", kind="stable")["variant"].iloc[0])
    return Ranking(table, str(reference), chosen, ref_choice, fallback + note), fallback + note


def load(store: Any, run: int | str = "latest") -> ReportData:
    """Read one run of `store` (id, 'latest' or 'latest-main'): measurements, outcomes, factory rows, files."""
    r = store.run(store.resolve(run))
    meta = dict(r.meta or {})
    db_dir = Path(store.path).resolve().parent if getattr(store, "path", None) else None
    variants = _variant_results(store, r, meta)
    artifacts: dict[str, dict[str, Path]] = {}
    for a in store.artifacts(r.id):
        path = resolve_path(a.path, db_dir)
        if path is not None:
            artifacts.setdefault(a.variant, {})[a.kind] = path
    factory_meta = dict(meta.get("factory") or {})
    ranking, note = rank_variants(variants, factory_meta.get("reference"))
    return ReportData(r, meta, variants, artifacts, factory_meta, ranking, note)


def unit(name: str, measurement: Any = None) -> str:
    """The unit of a metric: as recorded, else from the catalogue."""
    if measurement is not None and getattr(measurement, "unit", None):
        return str(measurement.unit)
    return METRICS[name].unit if name in METRICS else ""


TREND_RUNS = 20  # runs shown in the trend plots
TREND_METRICS = ("energy_mj", "latency_ms")  # plotted when the report is given no gate tolerances


@dataclass
class Trend:
    """The last runs of the report's branch and bench kind (up to the run itself) and their change points."""

    history: pd.DataFrame  # valid figures of those runs, oldest first (a ResultsStore.history() frame)
    run_ids: list[int]
    branch: str | None
    metrics: list[str]
    changes: list[Any] = field(default_factory=list)  # hil.gate.changepoints.ChangePoint
    note: str = ""  # why no change points could be computed, if so


def load_trend(store: Any, run: Any, metrics: list[str], last: int = TREND_RUNS) -> Trend:
    """Figures of `metrics` over the newest `last` runs of `run`'s branch and bench kind up to `run`.

    Later runs are left out, so the report of an old run does not change; change points come from
    `hil.gate.changepoints.detect` on the same runs and metrics (as `hil changes --last N --metric ...`)."""
    from hil.errors import HilError
    from hil.gate.changepoints import detect, select_runs

    df = store.history()
    same = (df["git_branch"] == run.git_branch) if run.git_branch is not None else df["git_branch"].isna()
    df = df[same & (df["simulated"].astype(bool) == bool(run.simulated)) & (df["run_id"] <= run.id)]
    df = select_runs(df[df["metric"].isin(metrics)], branch=run.git_branch, simulated=bool(run.simulated),
                     last=last)
    run_ids = sorted(int(r) for r in df["run_id"].unique())
    shown = [m for m in metrics if (df["metric"] == m).any()]
    trend = Trend(df, run_ids, run.git_branch, shown)
    try:
        trend.changes = detect(df, branch=run.git_branch, simulated=bool(run.simulated), metrics=shown)
    except HilError as exc:
        trend.note = f"No change points: {exc}."
    return trend
