"""Simulated merges through the gate's own code and the virtual bench's noise model: false alarms, detection
and bench sessions per merge, for the gate as built and for the designs it was chosen over.

    .venv/bin/python benchmarks/bench_gate.py [--merges 1000] [--cvs 1 2 3] [--workers 2]

Each merge: a baseline window of --window sessions on main, then the candidate's session, then up to
--remeasure re-measurement sessions of the INCONCLUSIVE variants (plus anchors); every figure of every
session is drawn with hil.sim.noise.NoiseModel (shared and per-variant session drift, per-trial noise) as the
virtual board applies it, and judged by hil.gate.decide.gate_loop. Cases: no change, +5 % energy on one
variant. Metrics: every gated metric of hil.gate.DEFAULT_TOLERANCES, the default matrix's deployable
variants. A merge's verdict is REGRESSION if any row is, and a detection needs the injected variant's
energy_mj row to be REGRESSION.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil.errors import HilError
from hil.gate import DEFAULT_TOLERANCES, parse_tolerances
from hil.gate.decide import Session, gate_loop
from hil.sim.noise import NoiseModel

TRIALS = 5
POWER = ("power_mw", "idle_power_mw", "active_power_mw", "dynamic_power_mw", "energy_mj", "dynamic_energy_mj")
LATENCY_JITTER = 0.0003  # the virtual board's per-trial latency spread (mean of many jittered inferences)
# What +X % energy per inference does to each power figure of the variant (active current scaled by
# 1 + X, idle unchanged; the default matrix's duty cycle and idle share on the virtual ESP32).
ACTIVE_SHARE, DUTY = 0.84, 0.8


def _variants() -> list[str]:
    from models.registry import DEFAULT_CONFIG, load_registry

    return [v.name for v in load_registry(DEFAULT_CONFIG).variants() if v.mode not in ("dynamic", "float16")]


def _nominal(variants: list[str]) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(7)
    out = {}
    for v in variants:
        idle = 225.0
        active = idle + rng.uniform(900, 1700)
        lat = rng.uniform(5, 60)
        out[v] = {
            "latency_ms": lat, "latency_p95_ms": lat * 1.001, "idle_power_mw": idle, "active_power_mw": active,
            "dynamic_power_mw": active - idle, "power_mw": idle + DUTY * (active - idle),
            "energy_mj": active * lat / 1e3, "dynamic_energy_mj": (active - idle) * lat / 1e3,
            "flash_kb": rng.uniform(20, 200), "arena_kb": rng.uniform(10, 90), "accuracy": rng.uniform(90, 99),
        }
    return out


def _injected(fig: dict[str, float], factor: float) -> dict[str, float]:
    """A variant's figures with its inference current scaled so energy per inference scales by `factor`."""
    out = dict(fig)
    d = factor - 1.0
    out["energy_mj"] *= factor
    out["active_power_mw"] *= factor
    extra = fig["active_power_mw"] * d
    out["dynamic_power_mw"] += extra
    out["dynamic_energy_mj"] = out["dynamic_power_mw"] * fig["latency_ms"] / 1e3
    out["power_mw"] += DUTY * extra
    return out


def _session(noise: NoiseModel, seed: int, figures: dict[str, dict[str, float]], variants: list[str],
             rng: np.random.Generator) -> Session:
    values = {}
    for v in variants:
        fig = figures[v]
        gains = [noise.gain(seed, v, t) for t in range(TRIALS)]
        for m, x in fig.items():
            if m in POWER:
                values[(v, m)] = [x * g for g in gains]
            elif m.startswith("latency"):
                values[(v, m)] = list(x * (1 + rng.normal(0, LATENCY_JITTER, TRIALS)))
            else:
                values[(v, m)] = [x]
    return Session(values)


def _merge(args: tuple) -> tuple[bool, bool, int, bool, bool]:
    """One merge: (any false REGRESSION on an unchanged figure, injected variant caught, sessions, INCONCLUSIVE
    left, refused because a tolerance is finer than the window's noise can resolve)."""
    cv, seed, factor, design, window, remeasure = args
    rng = np.random.default_rng([seed, 99])
    noise = NoiseModel(between_run_cv=cv / 100, shared_fraction=0.75, trial_cv=0.003)
    variants = _variants_cached()
    nominal = _nominal(variants)
    target = variants[int(rng.integers(len(variants)))]
    cand = dict(nominal)
    if factor != 1.0:
        cand[target] = _injected(nominal[target], factor)
    tol = parse_tolerances(DEFAULT_TOLERANCES)
    base = [_session(noise, int(rng.integers(2**31)), nominal, variants, rng) for _ in range(window)]
    first = _session(noise, int(rng.integers(2**31)), cand, variants, rng)
    if design == "last-run":  # the gate before: the last baseline's medians against the candidate's
        regress = []
        for (v, m), x in first.values.items():
            if m not in tol:
                continue
            b = np.median(base[-1].values[(v, m)])
            c = np.median(x)
            t = tol[m]
            worse = (c - b) if m != "accuracy" else (b - c)
            limit = abs(b) * t.amount / 100 if t.kind == "rel" else t.amount
            if worse > limit + 1e-9 * max(abs(b), 1):
                regress.append((v, m))
        false = any(v != target or factor == 1.0 for v, _m in regress)
        return false, (target, "energy_mj") in regress, 1, False, False

    def measure(todo: list[str]) -> Session:
        return _session(noise, int(rng.integers(2**31)), cand, todo, rng)

    try:
        j = gate_loop(base, first, tol, measure=measure, remeasure=remeasure, cancel_shared=(design == "window"))
    except HilError:  # the gate refuses to judge: no verdict is given
        return False, False, 0, False, True
    regress = j.regressions()
    false = any(v != target or factor == 1.0 or m not in ("energy_mj", "active_power_mw", "dynamic_power_mw",
                                                          "dynamic_energy_mj", "power_mw")
                for v, m in regress)
    return false, (target, "energy_mj") in regress, j.sessions, bool(j.unsure()), False


_CACHE: list[str] = []


def _variants_cached() -> list[str]:
    if not _CACHE:
        _CACHE.extend(_variants())
    return _CACHE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--merges", type=int, default=1000)
    p.add_argument("--cvs", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--remeasure", type=int, default=2)
    p.add_argument("--designs", nargs="+", default=["window", "window-no-shared", "last-run"])
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    print(f"$ .venv/bin/python benchmarks/bench_gate.py --merges {a.merges} --cvs {' '.join(map(str, a.cvs))} "
          f"--window {a.window} --remeasure {a.remeasure}")
    print(f"{len(_variants_cached())} deployable variants x {len(DEFAULT_TOLERANCES)} gated metrics "
          f"({' '.join(DEFAULT_TOLERANCES)}); {TRIALS} trials a session; noise: 75 % of the between-session "
          "variance shared by a session's variants, 0.3 % per trial (hil.sim.noise.NoiseModel)")
    print()
    print("| design | between-run CV | false REGRESSION per merge, no change | +5 % energy on one variant caught | "
          "sessions per merge, no change | sessions per merge, +5 % | INCONCLUSIVE left, no change | "
          "refused (tolerance finer than the noise) |")
    print("|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(a.workers) as pool:
        for design in a.designs:
            for cv in a.cvs:
                res = {}
                for case, factor in (("none", 1.0), ("+5%", 1.05)):
                    jobs = [(cv, i + (0 if case == "none" else 10**6), factor, design, a.window, a.remeasure)
                            for i in range(a.merges)]
                    res[case] = list(pool.map(_merge, jobs, chunksize=20))
                none, inj = res["none"], res["+5%"]
                fa = sum(r[0] for r in none) / len(none)
                det = sum(r[1] for r in inj) / len(inj)
                judged0 = [r for r in none if not r[4]] or [(0, 0, 0, 0, 0)]
                judged1 = [r for r in inj if not r[4]] or [(0, 0, 0, 0, 0)]
                s0 = sum(r[2] for r in judged0) / len(judged0)
                s1 = sum(r[2] for r in judged1) / len(judged1)
                inc = sum(r[3] for r in none) / len(none)
                ref = sum(r[4] for r in none + inj) / len(none + inj)
                print(f"| {design} | {cv:g} % | {fa:.1%} | {det:.1%} | {s0:.2f} | {s1:.2f} | {inc:.1%} | {ref:.1%} |",
                      flush=True)
    print(f"\n{a.merges} merges per cell; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
