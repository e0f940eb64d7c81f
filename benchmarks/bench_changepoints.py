"""Detection and false-alarm rates of `hil.gate.changepoints.detect` on simulated nightly histories.

Each history is 30 nights of 12 variants on one branch, every night a new commit, with the bench noise model
of the virtual bench (hil.sim.noise.NoiseModel, drawn as the virtual board draws it): every power figure of a
variant's night is nominal * the median over its trials of the session gain exp(s_r + u_rv + e_t), s_r shared
by all variants of a night (75 % of the between-night variance), u_rv per variant, e_t per trial (0.3 %);
latency has 0.03 % jitter; flash, arena and accuracy are exact. Cases: a +5 % and a +3 % energy step on one variant
from night 20, and flat histories. Detection runs after each of nights 10..30 on the history so far, as a
nightly job would. Figures are printed, not asserted.

Run: .venv/bin/python benchmarks/bench_changepoints.py [--histories 200] [--cv 2] [--workers 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from hil.gate.changepoints import ALPHA, detect
from hil.sim.noise import NoiseModel

NIGHTS, VARIANTS, STEP_NIGHT, FIRST_LOOK, TRIALS = 30, 12, 20, 10, 5
POWER_METRICS = {"energy_mj": 3.0, "dynamic_energy_mj": 1.2, "power_mw": 250.0, "active_power_mw": 420.0,
                 "idle_power_mw": 140.0, "dynamic_power_mw": 280.0}
JITTER_METRICS = {"latency_ms": 6.0, "latency_p95_ms": 6.3}
EXACT_METRICS = {"flash_kb": 80.0, "arena_kb": 30.0, "accuracy": 95.0}
STEP_METRIC = "energy_mj"
LATENCY_JITTER = 0.0003
TRIAL_NOISE = 0.003


def history(rng: np.random.Generator, *, cv: float, step_pct: float, step_variant: int) -> pd.DataFrame:
    """A 30-night history shaped like `ResultsStore.history()`: run ids 1..30, one commit per night."""
    nights = np.arange(1, NIGHTS + 1)
    variants = [f"v{j:02d}" for j in range(VARIANTS)]
    scale = rng.uniform(0.3, 3.0, VARIANTS)  # variants differ in size, so in every figure
    commits = [f"{rng.integers(1 << 40):010x}c{n:02d}" for n in nights]
    model = NoiseModel(between_run_cv=cv, shared_fraction=0.75, trial_cv=TRIAL_NOISE)
    seeds = rng.integers(2**31, size=NIGHTS)
    gain = np.array([[np.median([model.gain(int(s), v, t) for t in range(TRIALS)]) for v in variants]
                     for s in seeds])
    frames = []
    for name, nominal in {**POWER_METRICS, **JITTER_METRICS, **EXACT_METRICS}.items():
        base = nominal * (scale if name not in ("accuracy",) else np.linspace(0.92, 1.0, VARIANTS))
        if name in POWER_METRICS:  # one gain moves every power figure of a variant's night, as on the board
            noise = np.log(gain)
        elif name in JITTER_METRICS:
            noise = rng.normal(0, LATENCY_JITTER, (NIGHTS, VARIANTS))
        else:
            noise = np.zeros((NIGHTS, VARIANTS))
        values = base[None, :] * np.exp(noise)
        if name == STEP_METRIC and step_pct:
            values[nights >= STEP_NIGHT, step_variant] *= 1 + step_pct / 100
        frames.append(pd.DataFrame({
            "run_id": np.repeat(nights, VARIANTS), "variant": np.tile(variants, NIGHTS), "metric": name,
            "value": values.ravel(), "trials": TRIALS,
        }))
    df = pd.concat(frames, ignore_index=True)
    df["git_commit"] = [commits[i - 1] for i in df["run_id"]]
    df["started_at"] = [f"2026-01-{i:02d}T01:30:00" for i in df["run_id"]]
    df = df.assign(git_branch="main", bench="bench.yaml", simulated=True, status="passed", unit="", valid=True,
                   reason=None, spread=None)
    return df.sort_values(["run_id"], kind="stable").reset_index(drop=True)


def one(args: tuple[int, float, float, float]) -> dict:
    """Simulate one history and run the 21 nightly looks; what was found, when and where."""
    seed, cv, step, alpha = args
    rng = np.random.default_rng(seed)
    target = f"v{int(rng.integers(VARIANTS)):02d}"
    df = history(rng, cv=cv, step_pct=step, step_variant=int(target[1:]))
    first_confirmed = None
    any_false = any_false_confirmed = False
    final: list = []
    for night in range(FIRST_LOOK, NIGHTS + 1):
        found = detect(df[df["run_id"] <= night], branch="main", alpha=alpha)
        hits = [c for c in found if c.variant == target and c.metric == STEP_METRIC and step]
        others = [c for c in found if c not in hits]
        any_false |= bool(others)
        any_false_confirmed |= any(c.confirmed for c in others)
        if first_confirmed is None and night >= STEP_NIGHT and any(c.confirmed for c in hits):
            first_confirmed = night
        if night == NIGHTS:
            final = hits
    commit_before = df.loc[df["run_id"] == STEP_NIGHT - 1, "git_commit"].iloc[0]
    commit_after = df.loc[df["run_id"] == STEP_NIGHT, "git_commit"].iloc[0]
    confirmed = [c for c in final if c.confirmed]
    return {
        "detected": bool(confirmed),
        "delay": None if first_confirmed is None else first_confirmed - STEP_NIGHT,
        "right_range": any(c.commit_before == commit_before and c.commit_after == commit_after for c in confirmed),
        "size": confirmed[0].size_pct if confirmed else None,
        "covered": any(c.low_pct <= step <= c.high_pct for c in confirmed),
        "false": any_false,
        "false_confirmed": any_false_confirmed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--histories", type=int, default=200, help="histories per case (default 200)")
    p.add_argument("--cv", type=float, default=2.0, help="night-to-night CV of power figures, %% (default 2)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"detect()'s alpha (default {ALPHA})")
    p.add_argument("--cases", default="5,3,0", help="step sizes in %%, 0 = flat (default 5,3,0)")
    a = p.parse_args()
    print("command:", " ".join([".venv/bin/python", *sys.argv]))
    print(f"parameters: {a.histories} histories per case, {NIGHTS} nights, {VARIANTS} variants, "
          f"{len(POWER_METRICS) + len(JITTER_METRICS) + len(EXACT_METRICS)} metrics, CV {a.cv} % "
          f"(shared {np.sqrt(.75) * a.cv:.2f} %, per variant {np.sqrt(.25) * a.cv:.2f} %), trial noise "
          f"{TRIAL_NOISE * 100:.1f} %/sqrt({TRIALS}), latency jitter {LATENCY_JITTER * 100:.2f} %, step on "
          f"{STEP_METRIC} of one variant from night {STEP_NIGHT}, looks after nights {FIRST_LOOK}..{NIGHTS}, "
          f"alpha {a.alpha}, seed {a.seed}, {a.workers} workers")
    cases = [(f"+{float(x):g} % step" if float(x) else "flat", float(x)) for x in a.cases.split(",")]
    t0 = time.perf_counter()
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        for label, step in cases:
            base = a.seed * 1_000_003 + int(step * 1000) * 100_000
            jobs = [(base + h, a.cv / 100, step, a.alpha) for h in range(a.histories)]
            res = list(pool.map(one, jobs, chunksize=8))
            n = len(res)
            delays = [r["delay"] for r in res if r["delay"] is not None]
            sizes = [r["size"] for r in res if r["size"] is not None]
            detected = sum(r["detected"] for r in res)
            rows.append({
                "case": label,
                "detected (night 30)": f"{detected / n:.1%}" if step else "–",
                "median delay (nights)": f"{statistics.median(delays):g}" if delays else "–",
                "detected within 2 nights": f"{sum(d <= 2 for d in delays) / n:.1%}" if step else "–",
                "right commit range": f"{sum(r['right_range'] for r in res) / max(1, detected):.1%}" if step else "–",
                "median size %": f"{statistics.median(sizes):+.2f}" if sizes else "–",
                "95% CI covers step": (f"{sum(r['covered'] for r in res) / max(1, len(sizes)):.1%}" if step else "–"),
                "any other change (21 looks)": f"{sum(r['false'] for r in res) / n:.1%}",
                "other confirmed (21 looks)": f"{sum(r['false_confirmed'] for r in res) / n:.1%}",
            })
    print(pd.DataFrame(rows).to_string(index=False))
    print("'any other change': share of histories where some look reported a change point (confirmed or suspected)"
          " on any series other than the stepped one; on the flat case this is the false-alarm rate.")
    print(f"time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
