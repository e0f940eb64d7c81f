"""Speed of `hil.power.analyze` on a 10-million-sample two-channel capture (figures printed, not asserted).

Run: .venv/bin/python benchmarks/bench_power.py [samples]
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from hil.power import analyze
from instruments.waveform import Waveform


def make(n: int) -> tuple[Waveform, Waveform]:
    """Shunt (8-bit quantised, 0.8 mV/div) and marker channels at 10 MS/s with 4 ms inferences every 10 ms."""
    rng = np.random.default_rng(0)
    dt = 1e-7
    t = dt * np.arange(n)
    inside = np.mod(t - 1.3e-3, 10e-3) < 4e-3
    step = 0.8e-3 / 25
    vs = np.where(inside, 7.5e-3, 2.5e-3) + rng.normal(0, 1e-4, n)
    shunt_v = (np.clip(np.rint((vs - 5e-3) / step + 127), 0, 255) - 127) * step + 5e-3
    marker_v = np.where(inside, 3.3, 0.0)
    shunt = Waveform(t0=0.0, dt=dt, volts=shunt_v, channel=1, volts_per_div=0.8e-3, adc_step_v=step)
    marker = Waveform(t0=0.0, dt=dt, volts=marker_v, channel=2, volts_per_div=1.0)
    return shunt, marker


def main() -> None:
    n = int(float(sys.argv[1])) if len(sys.argv) > 1 else 10_000_000
    shunt, marker = make(n)
    times, sums = [], []
    for _ in range(7):
        t0 = time.perf_counter()
        report = analyze(shunt, marker, shunt_ohms=0.05, supply_volts=5.0)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        np.sum(shunt.volts)
        sums.append(time.perf_counter() - t0)
    med, med_sum = statistics.median(times), statistics.median(sums)
    print(f"analyze: {n:,} samples x 2 channels, {report.n_inferences} inferences, valid={report.valid}")
    print(f"analyze median of 7: {med * 1e3:.1f} ms  ({n / med / 1e6:.1f} M samples/s per channel)")
    print(f"numpy.sum over the same array: {med_sum * 1e3:.2f} ms; ratio analyze/sum = {med / med_sum:.1f}x")
    print(f"target < 200 ms: {'met' if med < 0.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
