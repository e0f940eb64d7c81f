"""The gate's answer for one candidate run, read from and written for people: table, JSON, Markdown for a PR.

`compare` ties the results database to the statistics: the candidate's sessions (its run and its
re-measurements), the baseline window, the figures that cannot be compared (invalid, missing, skipped),
and the estimated rows of every gated metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hil.errors import HilError
from hil.gate import FAILING, Tolerance
from hil.gate.decide import DEFAULT_ALPHA, DEFAULT_MISS, DEFAULT_WINDOW, POLICIES, Session, gate_loop
from hil.gate.stats import SHIFT
from hil.gate.window import baseline_window, candidate_sessions, remeasure_of
from hil.metrics import METRICS
from hil.results import ResultsStore, Run


@dataclass(frozen=True)
class GateRow:
    """One (variant, metric): its change with the simultaneous interval, and the verdict.

    `change_pct`, `low` and `high` are percent for relative tolerances and the metric's unit otherwise
    (`interval_unit` says which); variant `*` is the shift shared by every variant of the sessions.
    """

    variant: str
    metric: str
    unit: str
    baseline: float | None
    value: float | None
    change: float | None  # value - baseline, in the metric's unit
    change_pct: float | None
    tolerance: str | None
    verdict: str  # ok, improved, REGRESSION, INCONCLUSIVE, unresolved, new, skipped, INVALID, MISSING
    reason: str | None = None
    low: float | None = None
    high: float | None = None
    interval_unit: str = "%"  # % for a relative tolerance, pp or the metric's unit otherwise
    sessions: int = 0
    relative: bool = True  # the change and interval are percent of the baseline

    @property
    def failed(self) -> bool:
        """Whether this row fails the gate by itself (INCONCLUSIVE fails only under the fail policy)."""
        return self.verdict in FAILING

    def change_text(self) -> str:
        """`+3.1 % [+2.4, +3.8]` (or in the metric's unit for absolute tolerances)."""
        x = self.change_pct if self.relative else self.change
        if x is None:
            return "-"
        if self.low is None or self.high is None:
            return f"{x:+.3g} {self.interval_unit}".rstrip()
        u = f" {self.interval_unit}" if self.interval_unit else ""
        return f"{_r(x):+.2f}{u} [{_r(self.low):+.2f}, {_r(self.high):+.2f}]"


@dataclass
class GateResult:
    """The candidate run against its baseline window: every row, the policy, and whether the gate fails."""

    run: Run
    baseline: Run  # the newest baseline run
    rows: list[GateRow]
    tolerances: dict[str, Tolerance]
    notes: list[str] = field(default_factory=list)
    window: list[Run] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)  # candidate run ids: the run, then its re-measurements
    policy: str = "fail"
    alpha: float = DEFAULT_ALPHA
    miss: float = DEFAULT_MISS
    noise: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> between/shared SD (scale units)

    @property
    def inconclusive(self) -> list[GateRow]:
        return [r for r in self.rows if r.verdict == "INCONCLUSIVE"]

    @property
    def failures(self) -> list[GateRow]:
        """Rows that fail the gate (INCONCLUSIVE ones too under the fail policy)."""
        return [r for r in self.rows if r.failed or (r.verdict == "INCONCLUSIVE" and self.policy == "fail")]

    @property
    def failed(self) -> bool:
        """True on a regression, an invalid or missing figure, an unresolved INCONCLUSIVE under the fail policy,
        or nothing to compare."""
        return bool(self.failures) or not self.rows

    def summary(self) -> str:
        """One line: passed/FAILED with the count of each verdict that matters."""
        if not self.rows:
            return f"gate FAILED: no gated figure to compare in run {self.run.id} or its baseline"
        counts = {v: sum(r.verdict == v for r in self.rows) for v in (*FAILING, "INCONCLUSIVE")}
        parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        sessions = f"{len(self.sessions)} session(s)"
        if not self.failed:
            extra = f" ({parts}; policy {self.policy})" if parts else ""
            return f"gate passed: {len(self.rows)} figures, {sessions}{extra}"
        policy = f" (policy {self.policy} for INCONCLUSIVE)" if self.inconclusive else ""
        return f"gate FAILED: {parts} of {len(self.rows)} figures, {sessions}{policy}"

    def _header(self) -> list[str]:
        w = self.window
        lines = [f"run      {_describe(self.run)}"]
        if len(self.sessions) > 1:
            lines.append(f"sessions {', '.join(map(str, self.sessions))} (the run and its re-measurements)")
        lines.append(f"baseline {len(w)} run(s) {w[0].id}..{w[-1].id} on {w[-1].git_branch}, commits "
                     f"{w[0].git_commit[:10]}..{w[-1].git_commit[:10]}{' [simulated]' if w[-1].simulated else ''}")
        exact = [m for m, n in self.noise.items() if not n["total"]]
        for m, n in self.noise.items():
            if m in exact:
                continue
            lines.append(f"noise    {m}: {n['between']:.2g} % between sessions per variant, net of a "
                         f"{n['shared']:.2g} % shift shared by each session" if n.get("shared_removed") else
                         f"noise    {m}: {n['total']:.2g} % between sessions")
        if exact:
            lines.append(f"exact    {', '.join(exact)}: no spread between the baseline runs, compared exactly")
        lines.append(f"errors   a merge that changed nothing fails with probability <= {self.alpha:g} (the better "
                     "ends of the intervals hold together); a regression of one figure's tolerance passes with "
                     f"probability <= {self.miss:g}")
        return lines

    def table(self) -> str:
        """Aligned text table of every row, headed by the run, the window and the noise."""
        head = ["variant", "metric", "baseline", "run", "change [interval]", "tolerance", "verdict", "reason"]
        body = [[r.variant, r.metric, _num(r.baseline, r.unit), _num(r.value, r.unit), r.change_text(),
                 r.tolerance or "-", r.verdict, r.reason or ""] for r in self.rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        right = {2, 3, 4}

        def line(cells: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

        lines = [*self._header(), ""]
        lines += [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
        lines += [""] + [f"note: {n}" for n in self.notes] + [self.summary()]
        return "\n".join(lines)

    def markdown(self) -> str:
        """A pull-request comment: verdict, the rows that are not ok, then every row folded."""
        icon = "❌" if self.failed else "✅"
        out = [f"### {icon} {self.summary()}", ""]
        out += [f"- {line.strip()}" for line in self._header()[1:]]
        notable = [r for r in self.rows if r.verdict not in ("ok", "skipped")]
        out += ["", "| variant | metric | baseline | run | change [interval] | tolerance | verdict |",
                "|---|---|---|---|---|---|---|"]
        for r in notable or []:
            out.append(_md_row(r))
        if not notable:
            out.append("| all | | | | | | ok |")
        out += ["", f"<details><summary>every figure ({len(self.rows)} rows)</summary>", "",
                "| variant | metric | baseline | run | change [interval] | tolerance | verdict |",
                "|---|---|---|---|---|---|---|"] + [_md_row(r) for r in self.rows] + ["", "</details>"]
        out += [f"\n> {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for CI artifacts and the report)."""
        return {
            "run": asdict(self.run),
            "baseline": asdict(self.baseline),
            "window": [r.id for r in self.window],
            "sessions": list(self.sessions),
            "policy": self.policy,
            "alpha": self.alpha,
            "miss": self.miss,
            "noise": self.noise,
            "tolerances": {m: str(t) for m, t in self.tolerances.items()},
            "failed": self.failed,
            "summary": self.summary(),
            "notes": list(self.notes),
            "rows": [{**asdict(r), "failed": r in self.failures} for r in self.rows],
        }


def _r(x: float) -> float:
    """Rounded for print, without a sign on zero (-0.001 prints as +0.00, not -0.00)."""
    return round(x, 2) + 0.0


def _md_row(r: GateRow) -> str:
    cells = [r.variant if r.variant != SHIFT else "all (shared shift)", r.metric, _num(r.baseline, r.unit),
             _num(r.value, r.unit), r.change_text(), r.tolerance or "-", f"**{r.verdict}**" if r.verdict in
             (*FAILING, "INCONCLUSIVE") else r.verdict]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _describe(run: Run) -> str:
    sim = " [simulated]" if run.simulated else ""
    return (f"{run.id}: {run.started_at[:19]} commit {run.git_commit[:10]} on {run.git_branch}, "
            f"bench {run.bench}, {run.status}{sim}")


def _num(x: float | None, unit: str) -> str:
    return "-" if x is None else f"{x:.4g} {unit}".rstrip()


def _unscored_rows(store: ResultsStore, window: list[Run], sessions: list[int],
                   tolerances: dict[str, Tolerance]) -> tuple[list[GateRow], set[tuple[str, str]]]:
    """Rows for gated figures that cannot be estimated: invalid, missing, skipped or new; and the keys to skip."""
    newest = {(m.variant, m.metric): m for m in store.measurements(window[-1].id) if m.metric in tolerances}
    first = {(m.variant, m.metric): m for m in store.measurements(sessions[0]) if m.metric in tolerances}
    rows, drop = [], set()
    for key in sorted(set(newest) | set(first)):
        v, name = key
        tol = str(tolerances[name])
        unit = METRICS[name].unit if name in METRICS else ""
        b, c = newest.get(key), first.get(key)
        if c is None:
            if b is not None and b.skipped:
                rows.append(GateRow(v, name, unit, None, None, None, None, tol, "skipped", b.reason))
            else:
                rows.append(GateRow(v, name, unit, b.value if b else None, None, None, None, tol, "MISSING",
                                    f"in baseline run {window[-1].id}, not measured in run {sessions[0]}"))
            drop.add(key)
        elif c.skipped and (b is None or b.skipped):
            rows.append(GateRow(v, name, unit, None, None, None, None, tol, "skipped", c.reason))
            drop.add(key)
        elif not c.valid or c.value is None or not math.isfinite(c.value):
            rows.append(GateRow(v, name, unit, b.value if b else None, None, None, None, tol, "INVALID",
                                f"run: {c.reason or 'no value'}"))
            drop.add(key)
        elif b is None:
            rows.append(GateRow(v, name, unit, None, c.value, None, None, tol, "new", "not in the baseline"))
            drop.add(key)
        elif b.skipped or not b.valid:
            rows.append(GateRow(v, name, unit, None, c.value, None, None, tol, "INVALID",
                                f"baseline: {b.reason or 'no value'}"))
            drop.add(key)
    return rows, drop


def compare(store: ResultsStore, run: int | str, baseline: int | str, tolerances: dict[str, Tolerance], *,
            window: int = DEFAULT_WINDOW, alpha: float = DEFAULT_ALPHA, miss: float = DEFAULT_MISS,
            policy: str = "fail", remeasure: int = 0,
            measure: Callable[[list[str]], int] | None = None,
            progress: Callable[[str], None] = lambda _: None) -> GateResult:
    """Judge run `run` (and its re-measurements) against a window of baseline runs (`baseline`: a branch such
    as `main`, `latest-main`, or run ids). With `measure` (variants -> new run id) and `remeasure` > 0, the
    INCONCLUSIVE variants are re-measured as new sessions before the policy decides what is left."""
    if not tolerances:
        raise HilError("no tolerance given: pass --tolerance METRIC=TOL ... (e.g. energy_mj=5%)")
    if policy not in POLICIES:
        raise HilError(f"--policy {policy!r}: use one of {', '.join(POLICIES)}")
    if not 0 < alpha < 0.5:
        raise HilError(f"--alpha {alpha}: the false-alarm rate per merge must be between 0 and 0.5")
    if not 0 < miss < 0.5:
        raise HilError(f"--miss {miss}: the miss rate per figure must be between 0 and 0.5")
    cand = store.run(store.resolve(run))
    if remeasure_of(cand) is not None:  # a re-measurement session: judge the run it belongs to
        cand = store.run(remeasure_of(cand))
    runs = baseline_window(store, str(baseline), cand, window=window)
    sessions = [r.id for r in candidate_sessions(store, cand)]
    unscored, drop = _unscored_rows(store, runs, sessions, tolerances)
    def load(run_id: int) -> Session:
        """A run's trial values of the gated figures that can be estimated."""
        return Session({k: v for k, v in store.trial_values(run_id).items()
                        if k[1] in tolerances and k not in drop}, run_id)

    base = [load(r.id) for r in runs]
    cands = [load(i) for i in sessions]
    first = cands[0]

    def measure_session(variants: list[str]) -> Session:
        new_id = measure(variants)  # type: ignore[misc]
        sessions.append(new_id)
        return load(new_id)

    looks_left = max(remeasure - (len(cands) - 1), 0) if measure is not None else 0
    judged = gate_loop(base, first, tolerances, measure=measure_session if looks_left else None,
                       remeasure=looks_left, alpha=alpha, miss=miss, progress=progress, earlier=cands[1:])
    rows = list(unscored)
    noise = {}
    for me in judged.metrics:
        tol = tolerances[me.metric]
        unit = METRICS[me.metric].unit if me.metric in METRICS else ""
        sc = me.scale
        noise[me.metric] = {"between": round(sc.shown(me.between_sd), 4), "shared": round(sc.shown(me.shared_sd), 4),
                            "total": round(sc.shown(me.total_sd), 4), "shared_removed": me.shared_removed}
        for e in me.rows:
            pct = sc.shown(e.change)
            lo, hi = sc.shown(e.low), sc.shown(e.high)
            reason = None
            if e.verdict == "REGRESSION":
                reason = (f"{e.variant} {me.metric} worse by {abs(pct):.3g}{'%' if sc.log else ' ' + unit}, "
                          f"interval reaches the tolerance {tol}")
            elif e.verdict == "INCONCLUSIVE":
                reason = "cannot yet tell a change of the tolerance from bench noise"
            elif e.verdict == "unresolved":
                reason = ("a change shared by every variant up to this bound cannot be told from bench drift "
                          "between sessions")
            change = None if e.baseline is None or e.value is None else e.value - e.baseline
            if sc.log:
                change_pct = pct
            else:
                change_pct = None if not e.baseline else (change or 0.0) / abs(e.baseline) * 100
            rows.append(GateRow(e.variant, me.metric, unit, e.baseline, e.value, change if sc.log else pct,
                                change_pct, str(tol), e.verdict, reason, lo, hi,
                                "%" if sc.log else ("pp" if tol.kind == "pp" else unit), e.sessions, sc.log))
    order = {name: i for i, name in enumerate(METRICS)}
    rows.sort(key=lambda r: (r.variant == SHIFT, r.variant, order.get(r.metric, len(order)), r.metric))
    result = GateResult(cand, runs[-1], rows, dict(tolerances), notes=list(judged.notes), window=runs,
                        sessions=sessions, policy=policy, alpha=alpha, miss=miss, noise=noise)
    if result.inconclusive:
        result.notes.append(
            f"{len(result.inconclusive)} figure(s) INCONCLUSIVE after {len(sessions)} session(s): "
            + ("re-measure them (hil gate --remeasure N) or " if measure is None else "")
            + f"policy {policy} applies")
    return result
