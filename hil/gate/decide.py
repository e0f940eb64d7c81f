"""The merge decision over the whole matrix: one false-alarm budget, re-measurement of what is unsure, a policy.

Sessions are plain data ({(variant, metric): trial values}); the database, the bench and the benchmark's
simulated merges all reach the same `judge` and `gate_loop`, so what the benchmark measures is what runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from hil.errors import HilError
from hil.gate.stats import (
    MIN_SESSIONS,
    MetricEstimate,
    Scale,
    estimate_metric,
    rows_in_family,
    session_matrix,
    smallest_resolvable,
    window_noise,
)
from hil.metrics import METRICS

DEFAULT_ALPHA = 0.01  # chance that a merge which changed nothing gets any REGRESSION
DEFAULT_MISS = 0.02  # chance that one figure's regression of exactly the tolerance passes as ok
DEFAULT_WINDOW = 10  # baseline sessions
DEFAULT_REMEASURE = 2  # extra sessions at most for the unsure variants
POLICIES = ("fail", "warn", "pass")
SESSION_SIZE = 6  # variants a re-measurement session measures at least (anchors for its shared shift)
RESOLVE_SESSIONS = 4  # a tolerance even this many sessions could not resolve is refused as finer than the noise

Key = tuple[str, str]  # (variant, metric)


@dataclass(frozen=True)
class Session:
    """One bench session's figures: {(variant, metric): per-trial values}; `run_id` where it was recorded."""

    values: dict[Key, list[float]]
    run_id: int | None = None

    def medians(self, metric: str) -> dict[str, float]:
        """{variant: median of its trials} for one metric."""
        return {v: statistics.median(x) for (v, m), x in self.values.items() if m == metric and x}


def scale_for(metric: str, tol) -> Scale:
    """The scale a tolerance is judged on (hil.gate.Tolerance: relative -> log)."""
    better = METRICS[metric].better if metric in METRICS else "lower"
    if tol.kind == "rel":
        return Scale(True, math.log1p(tol.amount / 100.0), better)
    return Scale(False, tol.amount, better)


@dataclass
class Judgement:
    """Every gated metric's rows after one look, with the family's error budget."""

    metrics: list[MetricEstimate]
    alpha: float
    looks: int
    family: int  # noisy rows sharing alpha
    sessions: int  # candidate sessions used
    notes: list[str] = field(default_factory=list)

    def rows(self):
        """(metric estimate, row) pairs."""
        return [(me, r) for me in self.metrics for r in me.rows]

    def unsure(self) -> list[str]:
        """Variants with an INCONCLUSIVE row (the ones to re-measure)."""
        return sorted({r.variant for me, r in self.rows() if r.verdict == "INCONCLUSIVE"})

    def regressions(self) -> list[tuple[str, str]]:
        return [(r.variant, me.metric) for me, r in self.rows() if r.verdict == "REGRESSION"]


def judge(baseline: list[Session], candidate: list[Session], tolerances: dict, *, alpha: float = DEFAULT_ALPHA,
          miss: float = DEFAULT_MISS, looks: int = 1, cancel_shared: bool = True,
          check_resolvable: bool = True) -> Judgement:
    """Estimate every gated (variant, metric) of the candidate sessions against the baseline window, and
    decide with `alpha` spread over the family of noisy rows and `looks` looks (Bonferroni), and `miss`
    spread over the looks of each row."""
    if len(baseline) < 1 or not candidate:
        raise HilError("the gate needs baseline sessions and at least one candidate session")
    per_metric = {}
    family = 0
    for metric, tol in tolerances.items():
        scale = scale_for(metric, tol)
        base = [s.medians(metric) for s in baseline]
        cand = [s.medians(metric) for s in candidate]
        if not any(base) or not any(cand):
            continue
        variants = sorted({v for s in base for v in s} | {v for s in cand for v in s})
        noise = window_noise(session_matrix(base, variants, scale), cancel_shared=cancel_shared)
        # noisy: the window's runs differ, or any session's trials do (a window of one run shows no spread)
        noisy = noise.total_sd > 0 or any(len(set(x)) > 1 for s in [*baseline, *candidate]
                                          for (_v, m), x in s.values.items() if m == metric)
        family += rows_in_family(noisy, len(variants), noise.shared)
        per_metric[metric] = (scale, base, cand, noise, noisy)
    alpha_row = alpha / max(family, 1) / max(looks, 1)
    beta_row = miss / max(looks, 1)
    if check_resolvable:
        _check_resolvable(per_metric, tolerances, baseline, alpha_row, looks)
    out = []
    for metric, (scale, base, cand, noise, _noisy) in per_metric.items():
        out.append(estimate_metric(metric, scale, base, cand, alpha_row=alpha_row, beta_row=beta_row,
                                   cancel_shared=cancel_shared, noise=noise))
    notes = [n for me in out for n in me.notes]
    return Judgement(out, alpha, looks, family, len(candidate), notes)


def _check_resolvable(per_metric: dict, tolerances: dict, baseline: list[Session], alpha_row: float,
                      looks: int) -> None:
    """A tolerance the bench's noise could not resolve even with RESOLVE_SESSIONS sessions is a usage error."""
    for metric, (scale, _base, _cand, noise, noisy) in per_metric.items():
        if not noisy:
            continue
        if len(baseline) < MIN_SESSIONS:
            raise HilError(f"{metric}: {len(baseline)} baseline run(s) is too few to estimate the bench's noise; "
                           f"the gate needs at least {MIN_SESSIONS} runs on the base branch (measure more, or "
                           "widen --baseline-window)")
        sessions = max(looks, RESOLVE_SESSIONS)
        smallest = smallest_resolvable(noise, alpha_row=alpha_row, sessions=sessions, n_shared=SESSION_SIZE)
        if smallest >= scale.tol:
            tol = tolerances[metric]
            sd = noise.between_sd if noise.shared else noise.total_sd
            raise HilError(
                f"{metric}={tol}: smaller than this bench's noise can resolve: its figures vary by "
                f"{scale.shown(sd):.2g}{'%' if scale.log else ''} between sessions ({len(baseline)} baseline runs), "
                f"so even {sessions} sessions tell no change smaller than "
                f"{scale.shown(smallest):.2g}{'%' if scale.log else ''} from noise; raise the tolerance, lengthen "
                "--baseline-window, or steady the bench (hil noise shows its noise)")


def remeasure_set(j: Judgement, all_variants: list[str]) -> list[str]:
    """The unsure variants plus anchors (sure ones, in matrix order) up to SESSION_SIZE variants."""
    unsure = j.unsure()
    if not unsure:
        return []
    anchors = [v for v in all_variants if v not in unsure]
    need = max(SESSION_SIZE - len(unsure), 0)
    return sorted(unsure + anchors[:need], key=lambda v: all_variants.index(v) if v in all_variants else 0)


def gate_loop(baseline: list[Session], first: Session, tolerances: dict, *,
              measure: Callable[[list[str]], Session] | None, remeasure: int = DEFAULT_REMEASURE,
              alpha: float = DEFAULT_ALPHA, miss: float = DEFAULT_MISS, cancel_shared: bool = True,
              earlier: list[Session] = (),
              progress: Callable[[str], None] = lambda _: None) -> Judgement:
    """Judge the first session (with `earlier` re-measurements already taken); while rows are INCONCLUSIVE and
    sessions remain, re-measure those variants (plus anchors) as new sessions through `measure` and judge
    again. Every look spends its share of `alpha`, fixed in advance. Returns the last judgement."""
    candidate = [first, *earlier]
    looks = len(candidate) + (remeasure if measure is not None else 0)
    j = judge(baseline, candidate, tolerances, alpha=alpha, miss=miss, looks=looks, cancel_shared=cancel_shared)
    all_variants = sorted({v for (v, _m) in first.values})
    while measure is not None and len(candidate) < looks:
        todo = remeasure_set(j, all_variants)
        if not todo:
            break
        progress(f"gate: {len(j.unsure())} variant(s) INCONCLUSIVE; re-measuring {', '.join(todo)} "
                 f"(session {len(candidate) + 1} of at most {looks})")
        candidate.append(measure(todo))
        j = judge(baseline, candidate, tolerances, alpha=alpha, miss=miss, looks=looks, cancel_shared=cancel_shared)
    return j
