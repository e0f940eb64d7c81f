"""Synthetic shunt + marker captures with known ground truth, quantised like an 8-bit scope."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from instruments.waveform import Waveform

R, SUPPLY = 0.05, 5.0


@dataclass
class Truth:
    energy_mj: float  # per inference, integral of V_board * I over the marker window
    dynamic_energy_mj: float
    width_ms: float
    idle_power_mw: float
    n: int


def current_profile(t: np.ndarray, *, period: float, width: float, phase: float, idle_a: float,
                    active_a: float, shape: str) -> np.ndarray:
    """Idle current plus, inside each window, a rectangular or shaped (ramp + half-sine) pulse."""
    u = np.mod(t - phase, period)
    inside = u < width
    if shape == "rect":
        extra = np.where(inside, active_a - idle_a, 0.0)
    else:
        x = np.clip(u / width, 0, 1)
        extra = np.where(inside, (active_a - idle_a) * (0.6 + 0.4 * np.sin(np.pi * x) + 0.2 * x), 0.0)
    return idle_a + extra


def quantize(v: np.ndarray, vdiv: float, offset: float, bits: int = 8) -> tuple[np.ndarray, np.ndarray, bool]:
    """Rigol-style ADC: 25 codes/div at 8 bits, centre code 2**(bits-1)-1; returns codes, volts, clipped."""
    step = vdiv / (25 * 2 ** (bits - 8))
    ref = 2 ** (bits - 1) - 1
    raw = np.rint((v - offset) / step + ref)
    codes = np.clip(raw, 0, 2**bits - 1)
    clipped = bool((codes == 0).any() or (codes == 2**bits - 1).any())
    return codes, (codes - ref) * step + offset, clipped


def make_capture(*, shape: str = "rect", period: float = 10e-3, width: float = 4e-3, phase: float = 1.3e-3,
                 idle_a: float = 0.05, active_a: float = 0.15, dt: float = 2e-6, duration: float = 0.1,
                 noise_v: float = 0.1e-3, vdiv: float = 1e-3, offset: float | None = None, bits: int = 8,
                 seed: int = 0) -> tuple[Waveform, Waveform, Truth]:
    """A capture of `duration` seconds: CH1 shunt voltage (low side), CH2 a 3.3 V marker."""
    rng = np.random.default_rng(seed)
    n = int(round(duration / dt))
    t = -duration / 2 + dt * np.arange(n)
    kw = dict(period=period, width=width, phase=phase, idle_a=idle_a, active_a=active_a, shape=shape)
    vs = current_profile(t, **kw) * R + rng.normal(0, noise_v, n)
    if offset is None:
        offset = (idle_a + active_a) / 2 * R
    codes, volts, clipped = quantize(vs, vdiv, offset, bits)
    marker_v = np.where(np.mod(t - phase, period) < width, 3.3, 0.0) + rng.normal(0, 0.01, n)
    common = dict(t0=float(t[0]), dt=dt, adc_bits=bits)
    shunt = Waveform(volts=volts, channel=1, volts_per_div=vdiv, offset=offset, clipped=clipped,
                     raw_codes=codes, adc_step_v=vdiv / (25 * 2 ** (bits - 8)), **common)
    marker = Waveform(volts=marker_v, channel=2, volts_per_div=1.0, offset=1.65, **common)
    # ground truth by fine integration of one window
    tf = phase + np.linspace(0, width, 200_001)
    i = current_profile(tf, **kw)
    p = i * (SUPPLY - i * R)
    energy = float(np.trapezoid(p, tf))
    idle_p = idle_a * (SUPPLY - idle_a * R)
    starts = phase + period * np.arange(-20, 20)
    complete = int(np.sum((starts >= t[0]) & (starts + width <= t[-1])))
    truth = Truth(energy * 1e3, (energy - idle_p * width) * 1e3, width * 1e3, idle_p * 1e3, complete)
    return shunt, marker, truth
