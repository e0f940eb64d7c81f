"""Estimate, then decide: the change of each (variant, metric) with a simultaneous interval, from sessions.

The noise a merge gate must see through is between sessions (a bench drifts between days: temperature,
supply, probe), not between the trials of one session, so the variance comes from a window of baseline
sessions, never from one run's trials. Most of a session's drift is shared by every variant measured in it;
each session's shared shift is estimated (the median over its variants of their deviation from their
baseline means) and removed, so a variant's row is its own change, net of the shift common to the matrix.
The shift itself is a row of its own (variant `*`): bench drift of the whole session hides a firmware-wide
change of about its size, which the row's interval says.

Model (log scale for relative tolerances, the metric's unit otherwise): y[s, v] = mu[v] + shift[s] + e[s, v].
A row's interval has two ends with two jobs. Its "better" end is simultaneous over every noisy row of the
merge and every look (the first session and each re-measurement), by Bonferroni: the chance that a merge
which changed nothing gets any REGRESSION is at most `alpha`. Its "worse" end bounds one figure at a time:
the chance that a regression of exactly the tolerance passes as ok is at most `miss` (split over looks).
Verdicts compare the interval of the worsening with 0 and the tolerance: REGRESSION (lo > 0 and
hi >= tol), ok (hi < tol), INCONCLUSIVE (lo <= 0 < tol <= hi); improved when the improvement is as sure as a
REGRESSION must be and larger than a tenth of the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

SHIFT = "*"  # the row of the shift shared by every variant of a session
MIN_SHARED = 4  # variants a session needs for its shared shift to be estimated and removed
MIN_SESSIONS = 3  # baseline sessions needed to estimate the between-session noise at all
MEDIAN_VAR = math.pi / 2  # variance of a median relative to a mean, for normal errors
EXACT = 1e-12  # relative differences below this are floating-point rounding, not noise


@dataclass(frozen=True)
class Scale:
    """How a metric's change is measured: `log` (relative tolerance) or `linear` (absolute or pp)."""

    log: bool
    tol: float  # the tolerance on this scale (log1p(pct/100) for relative)
    better: str  # 'lower' or 'higher'

    @property
    def sign(self) -> float:
        """+1 when an increase is worse."""
        return 1.0 if self.better == "lower" else -1.0

    def to_scale(self, x: np.ndarray) -> np.ndarray:
        return np.log(x) if self.log else x

    def shown(self, d: float) -> float:
        """A change on this scale as printed: percent for relative metrics, the unit otherwise."""
        return (math.expm1(d) * 100.0) if self.log else d


@dataclass(frozen=True)
class Estimate:
    """One row: the change of a variant (or of the shared shift) with its simultaneous interval."""

    variant: str
    change: float  # on the metric's scale, signed (positive = increase)
    low: float  # interval of the change on the metric's scale
    high: float
    se: float
    df: float
    baseline: float | None  # baseline mean in the metric's unit (None for the shift row)
    value: float | None  # candidate mean in the metric's unit
    sessions: int  # candidate sessions that measured it
    verdict: str


@dataclass
class MetricEstimate:
    """Every row of one metric, and what the window says about the bench's noise on it."""

    metric: str
    scale: Scale
    rows: list[Estimate]
    between_sd: float  # per-variant between-session SD after removing the shared shift (scale units)
    shared_sd: float  # SD of the shared session shift
    total_sd: float  # per-variant between-session SD, shift included
    shared_removed: bool
    baseline_sessions: int
    notes: list[str] = field(default_factory=list)


def _row(variant: str, change: float, se: float, df: float, scale: Scale, alpha_row: float, beta_row: float,
         **kw) -> Estimate:
    """The row's interval (better end at `alpha_row`, worse end at `beta_row`) and its verdict."""
    if se > 0:
        to_better, to_worse = quantile(alpha_row, df) * se, quantile(beta_row, df) * se
    else:
        to_better = to_worse = 0.0
    worse = scale.sign * change
    lo, hi = worse - to_better, worse + to_worse
    ends = sorted((scale.sign * lo, scale.sign * hi))
    # as sure of the improvement as a REGRESSION must be of the worsening, and by more than a tenth of the
    # tolerance (an exact figure moving in its last digits is not an improvement worth a verdict)
    better = worse + to_better < -scale.tol / 10
    return Estimate(variant, change, ends[0], ends[1], se, df, verdict=_verdict(lo, hi, scale.tol, better), **kw)


def _verdict(worse_low: float, worse_high: float, tol: float, better: bool) -> str:
    if better:
        return "improved"
    if worse_high < tol:
        return "ok"
    if worse_low > 0:
        return "REGRESSION"
    return "INCONCLUSIVE"


def session_matrix(sessions: list[dict[str, float]], variants: list[str], scale: Scale) -> np.ndarray:
    """Sessions x variants on the metric's scale; NaN where a session did not measure a variant (or a
    relative metric's value is not positive)."""
    out = np.full((len(sessions), len(variants)), np.nan)
    for i, s in enumerate(sessions):
        for j, v in enumerate(variants):
            x = s.get(v)
            if x is not None and math.isfinite(x) and (x > 0 or not scale.log):
                out[i, j] = x
    return scale.to_scale(out)


def _fit(y: np.ndarray, shared: bool) -> tuple[np.ndarray, np.ndarray]:
    """Variant means and session shifts of a baseline matrix (sessions x variants, NaN = not measured)."""
    mu = np.nanmean(y, axis=0)
    shift = np.zeros(y.shape[0])
    if shared:
        for _ in range(3):
            shift = np.nanmedian(y - mu, axis=1)
            shift -= np.nanmean(shift)
            mu = np.nanmean(y - shift[:, None], axis=0)
    return mu, shift


def rows_in_family(noisy: bool, n_variants: int, shared: bool) -> int:
    """How many rows a metric adds to the merge's family of tests (exact metrics add none)."""
    return (n_variants + (1 if shared else 0)) if noisy else 0


@lru_cache(maxsize=4096)
def quantile(alpha_row: float, df: float) -> float:
    """Upper one-sided Student-t quantile (the normal one for infinite df): the gate's intervals and the
    change points' thresholds both take theirs from here."""
    from scipy import special

    df = max(df, 1.0)
    return float(-special.ndtri(alpha_row)) if math.isinf(df) else float(-special.stdtrit(df, alpha_row))


@dataclass
class WindowNoise:
    """The between-session noise of one metric, from the baseline sessions alone."""

    mu: np.ndarray
    shift: np.ndarray
    between_sd: float
    between_df: float
    shared_sd: float
    total_sd: float
    total_df: float
    shared: bool
    counts: np.ndarray  # baseline sessions per variant


def window_noise(y: np.ndarray, *, cancel_shared: bool = True) -> WindowNoise:
    """Fit the baseline window: means, shifts and the between-session SDs with their degrees of freedom."""
    k, v = y.shape
    present = ~np.isnan(y)
    counts = present.sum(axis=0)
    n = int(present.sum())
    shared = cancel_shared and v >= MIN_SHARED and k >= MIN_SESSIONS and bool(
        (present.sum(axis=1) >= MIN_SHARED).all())
    mu0 = np.nanmean(y, axis=0)
    dev = y - mu0
    dev[np.abs(dev) <= EXACT * np.maximum(np.abs(y), 1.0)] = 0.0  # rounding of a mean of equal values
    total_df = max(n - v, 1)
    total_sd = float(math.sqrt(np.nansum(dev**2) / total_df))
    if shared:
        mu, shift = _fit(y, True)
        resid = y - mu - shift[:, None]
        between_df = max(n - k - v + 1, 1)
        between_sd = float(math.sqrt(np.nansum(resid**2) / between_df))
        shared_sd = float(np.std(shift, ddof=1)) if k > 1 else 0.0
    else:
        mu, shift = mu0, np.zeros(k)
        between_sd, between_df, shared_sd = total_sd, total_df, 0.0
    return WindowNoise(mu, shift, between_sd, between_df, shared_sd, total_sd, total_df, shared, counts)


def estimate_metric(
    metric: str,
    scale: Scale,
    baseline: list[dict[str, float]],
    candidate: list[dict[str, float]],
    *,
    alpha_row: float,
    beta_row: float,
    cancel_shared: bool = True,
    noise: WindowNoise | None = None,
) -> MetricEstimate:
    """Rows of one metric: each variant's change net of the shared shift, and the shift itself.

    `baseline` and `candidate`: one {variant: session value} per session (a session value is the median of
    that session's trials). `alpha_row`: the false-alarm error each row may spend (its share of the family's);
    `beta_row`: the chance each row may pass a regression of the tolerance as ok. `noise`: the window's fit
    when already computed (it must come from the same baseline sessions).
    """
    variants = sorted({v for s in baseline for v in s} | {v for s in candidate for v in s})
    yb = session_matrix(baseline, variants, scale)
    yc = session_matrix(candidate, variants, scale)
    w = noise if noise is not None else window_noise(yb, cancel_shared=cancel_shared)
    cand_counts = (~np.isnan(yc)).sum(axis=1)
    shared = w.shared and bool((cand_counts >= MIN_SHARED).all())
    notes = []
    if w.shared and not shared:
        notes.append(f"{metric}: a candidate session measured fewer than {MIN_SHARED} variants, so the shift "
                     "shared by the session is not removed (wider intervals)")
    if shared:
        shift_c = np.nanmedian(yc - w.mu, axis=1)  # robust: one variant's own change does not move it
        sd, df = w.between_sd, w.between_df
    else:
        shift_c = np.zeros(yc.shape[0])
        sd, df = w.total_sd, w.total_df
    rows = []
    for j, v in enumerate(variants):
        col = yc[:, j]
        m = int((~np.isnan(col)).sum())
        kb = int(w.counts[j])
        if m == 0 or kb == 0:
            continue
        change = float(np.nanmean(col - shift_c) - w.mu[j])
        var = 1.0 / m + 1.0 / kb
        if shared:
            var += MEDIAN_VAR * float(np.mean(1.0 / cand_counts[~np.isnan(col)])) / m
        se = sd * math.sqrt(var)
        base_mean = float(np.exp(w.mu[j]) if scale.log else w.mu[j])
        cand_mean = float(np.exp(np.nanmean(col)) if scale.log else np.nanmean(col))
        rows.append(_row(v, change, se, df, scale, alpha_row, beta_row, baseline=base_mean, value=cand_mean,
                         sessions=m))
    if shared and w.total_sd > 0:
        m = yc.shape[0]
        k = yb.shape[0]
        change = float(np.mean(shift_c) - np.mean(w.shift))
        se = w.shared_sd * math.sqrt(1.0 / m + 1.0 / k)
        row = _row(SHIFT, change, se, k - 1, scale, alpha_row, beta_row, baseline=None, value=None, sessions=m)
        if row.verdict == "INCONCLUSIVE":  # re-measuring cannot resolve it in a few sessions: said, not retried
            row = replace(row, verdict="unresolved")
        rows.append(row)
    return MetricEstimate(metric, scale, rows, w.between_sd, w.shared_sd, w.total_sd, shared, yb.shape[0], notes)


def smallest_resolvable(noise: WindowNoise, *, alpha_row: float, sessions: int, n_shared: int) -> float:
    """The smallest worsening (scale units) a variant's row can tell from no change, half the time, after
    `sessions` sessions: a tolerance below it cannot be gated on this bench."""
    sd, df = (noise.between_sd, noise.between_df) if noise.shared else (noise.total_sd, noise.total_df)
    k = float(np.median(noise.counts)) if noise.counts.size else 1.0
    var = 1.0 / sessions + 1.0 / max(k, 1.0)
    if noise.shared:
        var += MEDIAN_VAR / max(n_shared, 1) / sessions
    return quantile(alpha_row, df) * sd * math.sqrt(var)
