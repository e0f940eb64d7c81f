"""A lab's own noise, from its history: within a run (trial to trial) and between runs, per variant and metric.

Tolerances should be set from data: `hil noise` says how much each figure moves between sessions on this
bench, how much of that the whole session shares, and the smallest change the gate can resolve with 1, 2
or 3 sessions at the default error rates.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from hil.errors import HilError
from hil.gate.decide import DEFAULT_ALPHA, SESSION_SIZE, Session
from hil.gate.stats import MIN_SESSIONS, Scale, session_matrix, smallest_resolvable, window_noise
from hil.gate.window import branch_runs, kind
from hil.metrics import METRICS
from hil.results import ResultsStore, Run


@dataclass(frozen=True)
class NoiseRow:
    """One (variant, metric): CVs in percent (log scale); variant `*` holds the metric's pooled figures."""

    variant: str
    metric: str
    runs: int
    within_pct: float | None  # trial-to-trial, pooled within runs
    between_pct: float  # run-to-run of the run medians
    shared_pct: float | None = None  # the part every variant of a run shares (pooled row only)
    net_pct: float | None = None  # run-to-run net of the shared part (pooled row only)
    resolvable_pct: tuple[float, ...] = ()  # smallest change the gate resolves with 1, 2, 3 sessions


def _runs(store: ResultsStore, branch: str | None, last: int) -> list[Run]:
    runs = branch_runs(store, "latest-main" if branch is None else branch)
    kinds = {kind(r) for r in runs}
    if len(kinds) > 1:
        newest = kind(runs[-1])
        runs = [r for r in runs if kind(r) == newest]
    return runs[-last:] if last else runs


def estimate(store: ResultsStore, *, branch: str | None = "main", metrics: list[str] | None = None,
             last: int = 30, alpha: float = DEFAULT_ALPHA, family: int = 40) -> list[NoiseRow]:
    """Noise rows of the newest `last` finished runs of `branch` (one bench kind: the newest run's)."""
    runs = _runs(store, branch, last)
    if len(runs) < MIN_SESSIONS:
        raise HilError(f"{len(runs)} finished run(s) on branch {branch or 'main'} in {store.path}: at least "
                       f"{MIN_SESSIONS} are needed to estimate the noise between runs")
    names = metrics or [m for m in METRICS if METRICS[m].budget]
    sessions = [Session(store.trial_values(r.id), r.id) for r in runs]
    out: list[NoiseRow] = []
    for metric in names:
        per_run = [s.medians(metric) for s in sessions]
        variants = sorted({v for d in per_run for v in d})
        if not variants:
            continue
        scale = Scale(True, 0.0, METRICS[metric].better if metric in METRICS else "lower")
        y = session_matrix(per_run, variants, scale)
        if np.isnan(y).all():
            continue
        for j, v in enumerate(variants):
            col = y[:, j][~np.isnan(y[:, j])]
            if col.size < 2:
                continue
            within = []
            for s in sessions:
                x = [math.log(t) for t in s.values.get((v, metric), []) if t > 0]
                if len(x) > 1:
                    within.append((statistics.variance(x), len(x) - 1))
            w = (math.sqrt(sum(a * d for a, d in within) / sum(d for _a, d in within)) * 100) if within else None
            out.append(NoiseRow(v, metric, int(col.size), w, float(np.std(col, ddof=1)) * 100))
        noise = window_noise(y)
        alpha_row = alpha / family
        resolvable = tuple(
            smallest_resolvable(noise, alpha_row=alpha_row / k, sessions=k, n_shared=SESSION_SIZE) * 100
            for k in (1, 2, 3))
        out.append(NoiseRow("*", metric, y.shape[0], None, noise.total_sd * 100,
                            noise.shared_sd * 100 if noise.shared else None,
                            noise.between_sd * 100 if noise.shared else None, resolvable))
    return out


def table(rows: list[NoiseRow]) -> str:
    """The rows as an aligned text table, pooled rows first for each metric."""
    head = ["metric", "variant", "runs", "within run %", "between runs %", "shared %", "net %",
            "resolvable with 1/2/3 sessions %"]
    body = []
    for metric in dict.fromkeys(r.metric for r in rows):
        mine = [r for r in rows if r.metric == metric]
        for r in sorted(mine, key=lambda r: r.variant != "*"):
            body.append([metric, "all (pooled)" if r.variant == "*" else r.variant, str(r.runs),
                         "-" if r.within_pct is None else f"{r.within_pct:.2f}", f"{r.between_pct:.2f}",
                         "-" if r.shared_pct is None else f"{r.shared_pct:.2f}",
                         "-" if r.net_pct is None else f"{r.net_pct:.2f}",
                         " / ".join(f"{x:.2g}" for x in r.resolvable_pct) or "-"])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
