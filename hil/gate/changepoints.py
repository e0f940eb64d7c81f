"""Change points in the nightly results history: which commit moved which variant's figure, and by how much.

Method: binary segmentation (Scott & Knott 1974; Vostrikova 1981) with the two-sample z statistic of a mean
shift, max over split points, at a Bonferroni-corrected level across every series and split point tested,
on each (variant, metric) series of one branch's runs, oldest first. Before testing, what the harness knows
about its bench is used:

- figures are compared in log space (a relative change is the same size on a 1 mJ and a 30 mJ variant);
- the drift shared by every variant of a night (supply, shunt temperature, scope gain on the bench) is
  cancelled: each night's median deviation across variants is subtracted (needs 3 or more variants);
- the noise is estimated robustly and pooled across the variants of a metric: the MAD of first
  differences (a step is one outlying difference and barely moves it), with a Student t threshold whose
  degrees of freedom reflect the MAD's efficiency;
- a change must be confirmed: a split point needs two or more runs on each side unless it lies at the
  newest run, where it is only *suspected*; a change with enough runs after it is kept only if the runs after
  its first one still show the shift on their own, so a single outlying night is never a change.

Why not E-divisive means (Matteson & James 2014, Apache Otava / signal-processing-algorithms): it cannot be
installed beside our numpy 2.4, and it is a permutation test (slow for a nightly job over hundreds of
series). Why not `ruptures` (PELT, binary segmentation): its detectors take a penalty or a number of change
points rather than a significance level, give no interval on the size, and know nothing of the drift shared
across variants; the test and the correction fit in a few lines here, with no new dependency, and
`benchmarks/bench_changepoints.py` measures the detection and false-alarm rates they give.

Measured (`benchmarks/bench_changepoints.py`, 200 simulated 30-night histories per case, 12 variants, 11
metrics, CV 2 %, detection after each of nights 10..30): a +5 % energy step on one variant is found in 100 %,
confirmed a median 1 night after it, with the right commit range in 96 %; a +3 % step in 98.5 %, a median
3 nights after; flat histories show a change point (any series, any look) in 3 %.

A change common to *all* variants of a metric (a firmware change that slows every model by 5 %) is cancelled
with the drift: pass `cancel_shared=False` (`hil changes --keep-shared-drift`) to look for those, at the
cost of sensitivity; the merge gate reports such a shift on its own row, with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from hil.errors import HilError
from hil.gate.stats import quantile
from hil.metrics import METRICS

ALPHA = 0.002  # false-alarm level of one detection over every series and split tested: ~0.05 over 21 nights
CONFIRM_RUNS = 1  # runs after the first changed one needed to confirm a change
CONFIRM_Z = 1.645  # one-sided 95 %: the runs after the first changed one must still show the shift
MIN_RUNS = 6  # fewer runs cannot separate a change from the noise estimate
NOISE_FLOOR_PCT = 0.01  # relative noise assumed at least: exact figures (flash, arena, accuracy) still work
MIN_SHARED_VARIANTS = 3  # variants needed on a night to estimate its shared drift with a median
TRIM = 3.0  # differences beyond TRIM robust sigmas (a step, a glitch) are left out of the noise estimate
DIFF_EFFICIENCY = 0.6  # degrees of freedom per difference of the trimmed noise estimate (von Neumann: 2/3)
_MAD_SCALE = 1.4826  # MAD -> standard deviation for Gaussian data
_TRIM_VARIANCE = 1 - 2 * TRIM * math.exp(-TRIM**2 / 2) / math.sqrt(2 * math.pi) / math.erf(TRIM / math.sqrt(2))


@dataclass(frozen=True)
class ChangePoint:
    """A shift in one variant's metric: the first run after it, the commit range, its size and 95 % interval."""

    variant: str
    metric: str
    index: int  # position of run_id_after among the runs analysed (0 = oldest)
    run_id_before: int  # the series' last run before the change
    run_id_after: int  # the series' first run after the change
    commit_before: str
    commit_after: str
    size_pct: float  # after vs before, percent of the level before (nan on a series with values <= 0)
    low_pct: float
    high_pct: float
    confirmed: bool  # False: the change is at the newest run(s) and awaits the next night
    before: float = math.nan  # level before and after, in the metric's unit (shared drift cancelled)
    after: float = math.nan
    z: float = math.nan  # test statistic of the split
    runs_after: int = 0  # runs of the series from run_id_after to the next change or the newest run
    low: float = math.nan  # 95 % interval of after - before in the metric's unit (series with values <= 0)
    high: float = math.nan

    @property
    def worse(self) -> bool | None:
        """True when the change goes the metric's bad way (hil.metrics), None for a metric not in the table."""
        change = self.size_pct if not math.isnan(self.size_pct) else self.after - self.before
        if self.metric not in METRICS or math.isnan(change) or change == 0:
            return None
        up = change > 0
        return up if METRICS[self.metric].better == "lower" else not up

    def describe(self) -> str:
        """One line: `pruned-int8 energy_mj +5.1 % [+3.9, +6.3] from run 21 (commits 1a2b3c4..5d6e7f8)`."""
        if math.isnan(self.size_pct):  # a series with values <= 0: the change in the metric's unit
            unit = METRICS[self.metric].unit if self.metric in METRICS else ""
            unit = "pp" if unit == "%" else unit
            size = f"{self.after - self.before:+.4g} {unit} [{self.low:+.4g}, {self.high:+.4g}]".replace("  ", " ")
        else:
            size = f"{self.size_pct:+.1f} % [{self.low_pct:+.1f}, {self.high_pct:+.1f}]"
        line = (f"{self.variant} {self.metric} {size} from run {self.run_id_after} "
                f"(commits {_short(self.commit_before)}..{_short(self.commit_after)})")
        if not self.confirmed:
            line += " suspected: newest run, not confirmed yet"
        return line

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (nan as None)."""
        d = asdict(self)
        d["worse"] = self.worse
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _short(commit: str | None) -> str:
    return (commit or "?")[:7]


def select_runs(history: pd.DataFrame, *, branch: str | None = None, simulated: bool | None = None,
                last: int | None = None) -> pd.DataFrame:
    """The valid figures of one branch and one bench kind, restricted to its newest `last` runs, oldest first.

    Runs of several branches (with `branch` None) or simulated and real runs mixed (with `simulated` None)
    are refused with a HilError naming them: a series must come from one bench kind on one line of commits.
    """
    df = history
    if branch is not None:
        df = df[df["git_branch"] == branch]
    else:
        branches = sorted({str(b) for b in df["git_branch"].dropna().unique()})
        if len(branches) > 1:
            raise HilError(f"the history holds runs of branches {', '.join(branches)}; choose one branch")
    if simulated is not None:
        df = df[df["simulated"].astype(bool) == bool(simulated)]
    df = df[df["valid"].astype(bool) & df["value"].notna()]
    df = df[np.isfinite(df["value"].astype(float))]
    if "status" in df:
        df = df[df["status"] != "running"]  # a run still measuring is not a night yet
    if "remeasure_of" in df:  # the gate's re-measurements of a candidate are not nights of the branch
        df = df[df["remeasure_of"].isna()]
    run_ids = np.sort(df["run_id"].unique())
    if last:
        run_ids = run_ids[-int(last):]
        df = df[df["run_id"].isin(run_ids)]
    kinds = df.groupby("run_id")["simulated"].first().astype(bool)
    if simulated is None and kinds.nunique() > 1:
        sim = kinds.index[kinds].tolist()
        real = kinds.index[~kinds].tolist()
        raise HilError(
            f"{'branch ' + branch if branch else 'the history'} mixes simulated runs ({_ids(sim)}) and real "
            f"runs ({_ids(real)}); change points need one bench kind: choose simulated or real runs"
        )
    return df.sort_values("run_id", kind="stable")


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:5]))
    return shown + (f", ... {len(ids)} in all" if len(ids) > 5 else "")


@dataclass
class _Series:
    variant: str
    metric: str
    positions: np.ndarray  # indices into the run list
    y: np.ndarray  # transformed, drift-cancelled values
    log: bool
    sigma: float
    df: float


@dataclass
class _Block:
    """One metric: transformed values [run, variant] (NaN where a variant has no valid figure that run)."""

    metric: str
    variants: list[str]
    x: np.ndarray
    log: bool
    floor: float  # noise floor in transformed units


def _blocks(df: pd.DataFrame, noise_floor_pct: float) -> tuple[np.ndarray, list[_Block]]:
    """Run ids (oldest first) and one value matrix per metric, in log space when every value is positive."""
    run_ids, r_code = np.unique(df["run_id"].to_numpy(), return_inverse=True)
    metric_names, m_code = np.unique(df["metric"].to_numpy().astype(str), return_inverse=True)
    variant_col, value_col = df["variant"].to_numpy().astype(str), df["value"].to_numpy(float)
    out = []
    for i, metric_name in enumerate(metric_names):
        rows = np.flatnonzero(m_code == i)
        names, v_code = np.unique(variant_col[rows], return_inverse=True)
        values = np.full((len(run_ids), len(names)), np.nan)
        values[r_code[rows], v_code] = value_col[rows]
        log = bool(np.nanmin(values) > 0)
        scale = 1.0 if log else float(np.nanmedian(np.abs(values))) or 1.0
        out.append(_Block(str(metric_name), [str(n) for n in names], np.log(values) if log else values, log,
                          noise_floor_pct / 100 * scale))
    return run_ids, out


def _series(block: _Block, cancel_shared: bool, offsets: np.ndarray | None = None) -> list[_Series]:
    """The block's series with the shared drift cancelled and the metric's pooled noise estimate.

    `offsets` [run, variant] are level shifts already found; they are taken out of the drift estimate only,
    so that a variant's own step does not pull the night medians (and shrink its estimated size)."""
    x = block.x
    if cancel_shared and len(block.variants) >= MIN_SHARED_VARIANTS:
        x = x - shared_drift(x if offsets is None else x - offsets)[:, None]
    cols = [x[:, j] for j in range(len(block.variants))]
    d = np.concatenate([np.diff(c[~np.isnan(c)]) for c in cols])
    sigma, dof = _noise(d, block.floor)
    return [_Series(name, block.metric, np.flatnonzero(~np.isnan(c)), c[~np.isnan(c)], block.log, sigma, dof)
            for name, c in zip(block.variants, cols, strict=True)]


def shared_drift(x: np.ndarray) -> np.ndarray:
    """Each night's median deviation across variants from their own median level; x is [run, variant].

    Nights with fewer than 3 variants get 0 (a median of two would cancel their own changes)."""
    if not np.isnan(x).any():
        return np.median(x - np.median(x, axis=0), axis=1)
    dev = x - np.nanmedian(x, axis=0)
    enough = np.sum(~np.isnan(dev), axis=1) >= MIN_SHARED_VARIANTS
    shared = np.zeros(len(x))
    if enough.any():
        shared[enough] = np.nanmedian(dev[enough], axis=1)
    return shared


def _noise(d: np.ndarray, floor: float) -> tuple[float, float]:
    """Noise sigma of a series from its first differences, and the degrees of freedom of that estimate.

    The MAD gives a first, robust scale; the RMS of the differences within TRIM of it (a step is one large
    difference and is left out), corrected for the trimming, is the estimate: more efficient than the MAD
    (about 0.6 of the variance estimate's degrees of freedom of iid data, against 0.25 for the MAD of
    differences), which matters because the threshold sits far in the tail."""
    if d.size == 0:
        return floor, 1.0
    scale = _MAD_SCALE * float(np.median(np.abs(d)))
    if scale == 0:  # most differences are exactly 0: an exact figure (flash, arena, accuracy), noise known
        return floor, math.inf
    kept = d[np.abs(d) <= TRIM * scale]
    sigma = math.sqrt(float(np.mean(kept**2)) / _TRIM_VARIANCE) / math.sqrt(2)
    return max(sigma, floor), max(1.0, DIFF_EFFICIENCY * kept.size)


def _best_split(y: np.ndarray, a: int, b: int, n: int, min_seg: int) -> tuple[int, float]:
    """The split k in [a, b) maximising |mean(y[a:k]) - mean(y[k:b])| / sqrt(1/nl + 1/nr), in noise units of 1.

    Both sides need `min_seg` points, except the right side of a segment that ends at the newest run
    (a change seen in the newest run(s) only: a suspected change)."""
    m = b - a
    if m < 2:
        return -1, 0.0
    seg = y[a:b]
    cs = np.cumsum(seg)
    k = np.arange(1, m)
    nl, nr = k, m - k
    stat = np.abs(cs[:-1] / nl - (cs[-1] - cs[:-1]) / nr) / np.sqrt(1 / nl + 1 / nr)
    allowed = (nl >= min_seg) & ((nr >= min_seg) | (b == n))
    if not allowed.any():
        return -1, 0.0
    stat = np.where(allowed, stat, -1.0)
    i = int(np.argmax(stat))
    return a + int(k[i]), float(stat[i])


def _segment(y: np.ndarray, threshold: float, min_seg: int) -> list[tuple[int, float]]:
    """Binary segmentation: split while the best split's statistic exceeds the threshold; (split, z) sorted."""
    n = len(y)
    found: list[tuple[int, float]] = []
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        k, z = _best_split(y, a, b, n, min_seg)
        if k < 0 or z <= threshold:
            continue
        found.append((k, z))
        stack += [(a, k), (k, b)]
    return sorted(found)


def detect(history: pd.DataFrame, *, branch: str | None = None, metrics: Iterable[str] | None = None,
           variants: Iterable[str] | None = None, simulated: bool | None = None, last: int | None = None,
           cancel_shared: bool = True, alpha: float = ALPHA, confirm_runs: int = CONFIRM_RUNS,
           min_runs: int = MIN_RUNS, noise_floor_pct: float = NOISE_FLOOR_PCT) -> list[ChangePoint]:
    """Change points of every (variant, metric) series in `history` (a `ResultsStore.history()` frame).

    Only valid figures of one branch and one bench kind are used (see `select_runs`); fewer than `min_runs`
    runs is a HilError. Sorted by run, variant and metric; suspected (unconfirmed) changes are included.
    """
    if not 0 < alpha < 1 or confirm_runs < 0:
        raise HilError(f"alpha {alpha} must be in (0, 1) and confirm_runs {confirm_runs} 0 or more")
    df = select_runs(history, branch=branch, simulated=simulated, last=last)
    n_runs = int(df["run_id"].nunique())
    if n_runs < min_runs:
        where = f" of branch {branch}" if branch else ""
        raise HilError(f"only {n_runs} run{'s' if n_runs != 1 else ''}{where} with valid figures; change-point "
                       f"detection needs at least {min_runs}")
    if metrics is not None:
        df = df[df["metric"].isin(list(metrics))]
    if variants is not None:
        df = df[df["variant"].isin(list(variants))]
    run_ids, blocks = _blocks(df, noise_floor_pct)
    commits = df.groupby("run_id")["git_commit"].first().reindex(run_ids).fillna("?").astype(str).to_numpy()
    tests = sum(max(int(n) - 1, 0) for b in blocks for n in np.sum(~np.isnan(b.x), axis=0))
    min_seg = 1 + confirm_runs
    found: list[ChangePoint] = []
    level = alpha / (2 * max(tests, 1))

    def segments(series: list[_Series]) -> list[list[tuple[int, float]]]:
        return [_segment(s.y / s.sigma, quantile(level, s.df), min_seg) if len(s.y) >= min_runs else []
                for s in series]

    for block in blocks:
        series = _series(block, cancel_shared)
        splits = segments(series)
        if cancel_shared and any(splits):  # second pass: the night drift without the steps just found
            offsets = np.zeros_like(block.x)
            for j, (s, sp) in enumerate(zip(series, splits, strict=True)):
                bounds = [0, *(k for k, _ in sp), len(s.y)]
                for a, b in zip(bounds[1:-1], bounds[2:], strict=True):
                    offsets[s.positions[a:b], j] = s.y[a:b].mean() - s.y[: bounds[1]].mean()
            series = _series(block, cancel_shared, offsets)
            splits = segments(series)
        for s, sp in zip(series, splits, strict=True):
            bounds = [0, *(k for k, _ in sp), len(s.y)]
            for i, (k, z) in enumerate(sp):
                found += _change(s, k, z, bounds[i], bounds[i + 2], commits, run_ids, confirm_runs)
    return sorted(found, key=lambda c: (c.index, c.variant, c.metric))


def _change(s: _Series, k: int, z: float, a: int, b: int, commits: np.ndarray, run_ids: np.ndarray,
            confirm_runs: int) -> list[ChangePoint]:
    """The ChangePoint of split k between segments [a, k) and [k, b), or none if later runs disown it."""
    y = s.y
    before, after = y[a:k], y[k:b]
    diff = float(after.mean() - before.mean())
    confirmed = len(after) >= 1 + confirm_runs
    if confirmed and len(after) > 1:  # the runs after the first changed one, on their own, must still show it
        rest = y[k + 1:b]
        z_rest = (rest.mean() - before.mean()) / (s.sigma * math.sqrt(1 / len(rest) + 1 / len(before)))
        if z_rest * math.copysign(1.0, diff) < CONFIRM_Z:
            return []
    se = s.sigma * math.sqrt(1 / len(before) + 1 / len(after))
    q = quantile(0.025, s.df)
    lo, hi = diff - q * se, diff + q * se
    if s.log:
        size, low, high = (100 * math.expm1(v) for v in (diff, lo, hi))
        level_before, level_after = math.exp(before.mean()), math.exp(after.mean())
    else:  # percent of a level near or below 0 means nothing: the change is given in the metric's unit
        level_before, level_after = float(before.mean()), float(after.mean())
        size = low = high = math.nan
    pos_before, pos_after = int(s.positions[k - 1]), int(s.positions[k])
    return [ChangePoint(
        variant=s.variant, metric=s.metric, index=pos_after,
        run_id_before=int(run_ids[pos_before]), run_id_after=int(run_ids[pos_after]),
        commit_before=str(commits[pos_before]), commit_after=str(commits[pos_after]),
        size_pct=size, low_pct=low, high_pct=high, confirmed=confirmed,
        before=level_before, after=level_after, z=z, runs_after=len(after),
        low=math.nan if s.log else lo, high=math.nan if s.log else hi,
    )]
