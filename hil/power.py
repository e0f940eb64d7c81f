"""Power analysis of a shunt capture: current, power, inference windows, energy per inference, uncertainty.

Wiring (see "Measuring power" in README.md): `low_side` (shunt in the ground return, single-ended), `high_side`
(shunt in the supply line, differential: a differential probe, or CH1 - CH2 via `shunt_ref`) and
`amplifier` (a current-sense amplifier of gain `amplifier_gain` feeding one channel). All three give the
shunt voltage Vs; current I = Vs / R, board voltage = supply - Vs (burden correction) and P = V_board * I.

A power meter (or `instruments.meters.ScopeCurrentSource`) gives the current itself: pass it as
`analyze(current=..., supply_volts=...)`; then P = (supply - I * burden_ohms) * I and the wiring modes, which
describe a scope and shunt, do not apply. A meter's marker is a logic waveform (0/1) and is cut at 0.5.

Inference windows come from the marker (GPIO high during inference; edges with hysteresis, interpolated
within a sample) or, without a marker, from the current (activity above idle, with hysteresis).
Integrals use the midpoint rule: sample k stands for [t_k - dt/2, t_k + dt/2); window edges fall inside
samples and are integrated fractionally. Statistics over windows are `Stats(mean, std, min, max)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hil.errors import HilError
from instruments.meters.base import is_current, is_logic
from instruments.waveform import Waveform

WIRINGS = ("low_side", "high_side", "amplifier")
#: `PowerReport.wiring` of an analysis of a current waveform (a meter): no shunt arithmetic.
CURRENT_INPUT = "current"
MIN_SAMPLES_PER_WINDOW = 20
#: Hysteresis band on each side of the threshold, as a fraction of the signal's two-level span.
HYSTERESIS = 0.1
#: A current resolution coarser than this fraction of the mean current triggers a warning.
COARSE_RESOLUTION = 0.02
#: Samples next to each window edge left out of the idle average (the current may lag the marker).
EDGE_GUARD_SAMPLES = 2
_STATS_SAMPLES = 1_000_000


@dataclass
class Stats:
    """Mean, sample standard deviation, minimum and maximum over the inference windows."""

    mean: float = math.nan
    std: float = math.nan
    min: float = math.nan
    max: float = math.nan

    @classmethod
    def of(cls, values: np.ndarray) -> Stats:
        if values.size == 0:
            return cls()
        std = float(values.std(ddof=1)) if values.size > 1 else 0.0
        return cls(float(values.mean()), std, float(values.min()), float(values.max()))


@dataclass
class InferenceWindow:
    """One inference: start/end seconds (0 = trigger), energy and dynamic energy in mJ."""

    start_s: float
    end_s: float
    energy_mj: float
    dynamic_energy_mj: float

    @property
    def width_ms(self) -> float:
        return (self.end_s - self.start_s) * 1e3


@dataclass
class PowerReport:
    """Figures of one capture. `valid` is False with a `reason` whenever a figure would be wrong."""

    valid: bool
    reason: str | None
    wiring: str
    window_source: str  # "marker" or "current"
    n_inferences: int
    avg_power_mw: float
    idle_power_mw: float
    active_power_mw: float
    dynamic_power_mw: float
    energy_per_inference_mj: Stats
    dynamic_energy_per_inference_mj: Stats
    pulse_width_ms: Stats
    samples_per_window: int
    clipped: bool
    current_resolution_ma: float
    idle_noise_ma: float
    power_uncertainty_mw: float
    energy_uncertainty_mj: float
    windows: list[InferenceWindow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None)."""
        return _json_ready(asdict(self))


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return None if not math.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    return obj


def power_series(
    volts: np.ndarray, *, shunt_ohms: float, supply_volts: float, gain: float = 1.0, burden_correction: bool = True
) -> np.ndarray:
    """Board power in watts per sample from the shunt-channel volts: I = v / (G R), P = (supply - I R) I.

    The one place the physics lives: `analyze` integrates it, the report plots it.
    """
    scale = 1.0 / (gain * shunt_ohms)  # A per volt at the scope input
    # P = I * V_board with I = v * scale and V_board = supply - I * R: one array, three in-place passes
    power = np.multiply(volts, -(scale * scale * shunt_ohms) if burden_correction else 0.0)
    power += supply_volts * scale
    power *= volts
    return power


def current_power_series(current: np.ndarray, *, supply_volts: float, burden_ohms: float = 0.0) -> np.ndarray:
    """Board power in watts per sample from the current in A: P = (supply - I * burden_ohms) * I."""
    power = np.multiply(current, -float(burden_ohms))
    power += supply_volts
    power *= current
    return power


def differential(plus: Waveform, minus: Waveform) -> Waveform:
    """CH+ minus CH- as one waveform (high-side shunt measured with two single-ended channels)."""
    _check_aligned(plus, minus, "shunt_ref")
    step = math.hypot(plus.step_v, minus.step_v)
    return Waveform(
        t0=plus.t0, dt=plus.dt, volts=plus.volts - minus.volts, channel=f"{plus.channel}-{minus.channel}",
        volts_per_div=max(plus.volts_per_div, minus.volts_per_div), offset=plus.offset - minus.offset,
        probe=plus.probe, adc_bits=plus.adc_bits, clipped=plus.clipped or minus.clipped, raw_codes=None,
        preamble={"plus": plus.preamble, "minus": minus.preamble}, idn=plus.idn,
        settings={"plus": plus.settings, "minus": minus.settings}, adc_step_v=step,
    )


def _check_aligned(a: Waveform, b: Waveform, name: str) -> None:
    """Both channels must come from one capture: same length, interval and start."""
    if len(a) != len(b) or not math.isclose(a.dt, b.dt, rel_tol=1e-9) or abs(a.t0 - b.t0) > a.dt / 2:
        raise HilError(f"{name} channel {b.channel} is not sampled like the shunt channel {a.channel} "
                       f"({len(b)} vs {len(a)} samples, dt {b.dt:g} vs {a.dt:g} s); "
                       "fetch both from one capture")


def _hysteresis_edges(v: np.ndarray, threshold: float, band: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Rising and falling edge indices k (state changes between k-1 and k) and the initial state (0/1)."""
    hi, lo = threshold + band, threshold - band
    above, below = v > hi, v < lo
    enter_hi = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    enter_lo = np.flatnonzero(below[1:] & ~below[:-1]) + 1
    idx = np.concatenate((enter_hi, enter_lo))
    kind = np.concatenate((np.ones(enter_hi.size, np.int8), np.zeros(enter_lo.size, np.int8)))
    order = np.argsort(idx, kind="stable")
    idx, kind = idx[order], kind[order]
    state0 = 1 if v[0] > threshold else 0
    # keep only events that change the state (alternating sequence)
    keep = np.empty(kind.size, bool)
    prev = state0
    for i, k in enumerate(kind.tolist()):  # events are sparse: a few per edge
        keep[i] = k != prev
        prev = k if keep[i] else prev
    idx, kind = idx[keep], kind[keep]
    return idx[kind == 1], idx[kind == 0], state0


def _crossing_times(v: np.ndarray, edges: np.ndarray, threshold: float, rising: bool,
                    lookback: int = 256) -> np.ndarray:
    """Fractional sample position of the last `threshold` crossing at or before each hysteresis edge.

    Only `lookback` samples before each edge are examined (an edge slower than that falls back to k - 0.5).
    """
    if edges.size == 0:
        return edges.astype(np.float64)
    offs = np.arange(-lookback, 1)
    idx = np.clip(edges[:, None] + offs, 0, v.size - 1)
    seg = v[idx]
    a, b = seg[:, :-1], seg[:, 1:]
    hit = (a < threshold) & (b >= threshold) if rising else (a > threshold) & (b <= threshold)
    last = lookback - 1 - np.argmax(hit[:, ::-1], axis=1)  # last crossing pair in the segment
    has = hit.any(axis=1)
    rows = np.arange(edges.size)
    a0, b0 = a[rows, last], b[rows, last]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(b0 != a0, (threshold - a0) / (b0 - a0), 1.0)
    pos = idx[rows, last] + np.clip(frac, 0.0, 1.0)
    return np.where(has, pos, edges - 0.5)


def _two_levels(x: np.ndarray) -> tuple[float, float, float]:
    """Low level, high level and noise (robust) of a two-level signal, from a strided subsample."""
    sub = x[:: max(1, x.size // _STATS_SAMPLES)]
    lo, hi = np.percentile(sub, [5, 95])
    noise = float(np.median(np.abs(np.diff(sub[: min(sub.size, 200_000)])))) * 1.4826 / math.sqrt(2)
    return float(lo), float(hi), noise


def analyze(
    shunt: Waveform | None = None, marker: Waveform | None = None, *, shunt_ohms: float | None = None,
    supply_volts: float, marker_threshold: float | None = None, burden_correction: bool = True,
    wiring: str = "low_side", amplifier_gain: float = 1.0, shunt_ref: Waveform | None = None,
    current: Waveform | None = None, burden_ohms: float = 0.0,
) -> PowerReport:
    """Analyse one capture. `shunt_ref` is the second channel for `high_side` measured as CH1 - CH2.

    Give either `shunt` (volts across the shunt, with `shunt_ohms` and the wiring) or `current` (amperes,
    from a meter; `burden_ohms` is the resistance between the supply and the board whose drop to subtract).
    """
    warnings: list[str] = []
    if current is not None:  # a meter: amperes already, no shunt arithmetic
        if shunt is not None or shunt_ref is not None:
            raise HilError("give analyze either shunt volts or current=, not both")
        if not is_current(current):
            raise HilError(f"current= waveform {current.channel} is not marked as amperes (settings['unit'] == "
                           "'A'); pass shunt volts as the first argument with shunt_ohms")
        if not supply_volts > 0:
            raise HilError(f"supply_volts must be positive, got {supply_volts!r}")
        if not (burden_ohms >= 0 and math.isfinite(burden_ohms)):
            raise HilError(f"burden_ohms must be >= 0, got {burden_ohms!r}")
        primary = measured = current
        wiring = CURRENT_INPUT
        scale = 1.0  # the samples are amperes
        power = current_power_series(current.volts, supply_volts=supply_volts, burden_ohms=burden_ohms)
    else:
        if shunt is None:
            raise HilError("analyze needs a shunt waveform (volts) or current= (amperes)")
        if is_current(shunt):
            raise HilError(f"waveform {shunt.channel} holds current in A, not shunt volts; pass it as current=")
        if shunt_ohms is None:
            raise HilError("shunt_ohms is required to analyse shunt volts")
        if wiring not in WIRINGS:
            raise HilError(f"wiring must be one of {', '.join(WIRINGS)}, got {wiring!r}")
        if not shunt_ohms > 0:
            raise HilError(f"shunt_ohms must be positive, got {shunt_ohms!r}")
        if not supply_volts > 0:
            raise HilError(f"supply_volts must be positive, got {supply_volts!r}")
        gain = float(amplifier_gain) if wiring == "amplifier" else 1.0
        if not gain > 0:
            raise HilError(f"amplifier_gain must be positive, got {amplifier_gain!r}")
        if shunt_ref is not None and wiring != "high_side":
            raise HilError("shunt_ref (a second shunt channel) only applies to wiring='high_side'")
        primary = shunt
        measured = differential(shunt, shunt_ref) if shunt_ref is not None else shunt
        scale = 1.0 / (gain * shunt_ohms)  # A per volt at the scope input
        power = power_series(measured.volts, shunt_ohms=shunt_ohms, supply_volts=supply_volts, gain=gain,
                             burden_correction=burden_correction)
        if shunt_ref is not None:
            warnings.append(
                f"high-side CH{shunt.channel} - CH{shunt_ref.channel}: each channel resolves only "
                f"{shunt.step_v * 1e3:.3g} mV at the 5 V common mode; a differential probe or amplifier is better"
            )
    if marker is not None:
        _check_aligned(primary, marker, "marker")
    logic_marker = marker is not None and is_logic(marker)
    if logic_marker:  # the meter's input already applied its threshold: 0/1, cut in the middle
        marker_threshold = None

    n, dt, t0 = len(measured), measured.dt, measured.t0
    v = measured.volts
    resolution_a = measured.step_v * scale

    # ---- windows --------------------------------------------------------------------------------
    if marker is not None:
        source = "marker"
        mlo, mhi, _ = _two_levels(marker.volts)
        threshold = marker_threshold if marker_threshold is not None else (0.5 if logic_marker else (mlo + mhi) / 2)
        band = HYSTERESIS * max(mhi - mlo, 1e-12)
        signal = marker.volts
        found = mhi - mlo > 0 and mlo < threshold < mhi
    else:  # activity above idle, found on the shunt voltage itself (current = v * scale)
        source = "current"
        vlo, vhi, noise = _two_levels(v)
        threshold = (vlo + vhi) / 2
        band = HYSTERESIS * (vhi - vlo)
        signal = v
        found = (vhi - vlo) > max(8 * noise, 2 * measured.step_v)
    if found:
        rises, falls, state0 = _hysteresis_edges(signal, threshold, band)
        r_pos = _crossing_times(signal, rises, threshold, True)
        f_pos = _crossing_times(signal, falls, threshold, False)
    else:
        r_pos = f_pos = np.zeros(0)
        state0 = 0
    # complete windows: a rise followed by the next fall
    j = np.searchsorted(f_pos, r_pos, side="right")
    ok = j < f_pos.size
    starts, ends = r_pos[ok], f_pos[j[ok]]
    if starts.size > 1:  # a rise without its own fall (merged) would reuse a fall: keep the last rise
        uniq = np.concatenate((ends[1:] != ends[:-1], [True]))
        starts, ends = starts[uniq], ends[uniq]

    # every sum over samples is a difference of prefix sums at a few boundaries (one reduceat pass)
    active_spans = _active_spans(r_pos, f_pos, state0, n)
    guard = EDGE_GUARD_SAMPLES
    span_bounds = [(max(math.floor(a + 0.5) - guard, 0), min(math.ceil(b + 0.5) + guard, n))
                   for a, b in active_spans]  # sample k covers positions [k - 0.5, k + 0.5)
    win_k = [np.minimum(np.clip(p + 0.5, 0.0, n).astype(np.int64), n - 1) for p in (starts, ends)]
    prefix = _PrefixSums(power, np.concatenate([np.ravel(span_bounds).astype(np.int64), *win_k]))

    def integral(pos: np.ndarray) -> np.ndarray:
        """Sum of power * dt from the start of sample 0's interval to fractional sample position `pos`."""
        u = np.clip(pos + 0.5, 0.0, n)
        k = np.minimum(u.astype(np.int64), n - 1)
        return (prefix.at(k) + (u - k) * power[k]) * dt

    energy = integral(ends) - integral(starts)  # J
    widths = (ends - starts) * dt
    # idle: everything outside any active span (also partial ones at the record edges) minus guards
    active_count = sum(hi - lo for lo, hi in span_bounds)
    active_sum = sum(prefix.at(hi) - prefix.at(lo) for lo, hi in span_bounds)
    idle_count = n - active_count
    total = prefix.at(n)
    idle_power = (total - active_sum) / idle_count if idle_count > 0 else math.nan
    active_power = float(energy.sum() / widths.sum()) if widths.size and widths.sum() > 0 else math.nan
    avg_power = total / n
    idle_noise_a = _idle_noise(v, active_spans, n) * scale if idle_count > 0 else math.nan
    dyn_energy = energy - idle_power * widths

    # ---- validity -------------------------------------------------------------------------------
    spw = int(np.floor(widths.min() / dt)) if widths.size else 0
    clipped = bool(primary.clipped or (shunt_ref is not None and shunt_ref.clipped))
    reason = None
    if clipped and current is not None:
        reason = (f"current channel {measured.channel} over range ({measured.idn}); "
                  "the meter's largest range is exceeded")
    elif clipped:
        reason = (f"shunt channel {measured.channel} clipped at the ADC rails; "
                  "increase volts/div or fix the offset")
    elif starts.size == 0:
        reason = (f"no inference window found on the {source} "
                  f"({f'threshold {threshold:.4g} V' if marker is not None else 'no activity above idle'})")
    elif spw < MIN_SAMPLES_PER_WINDOW:
        reason = (f"only {spw} samples in the shortest inference window (need >= {MIN_SAMPLES_PER_WINDOW}); "
                  "raise the sample rate or record length")
    elif idle_count <= 0:
        reason = "no idle samples outside the inference windows; widen the capture"
    mean_current = avg_power / supply_volts
    if mean_current > 0 and resolution_a > COARSE_RESOLUTION * mean_current:
        warnings.append(f"current resolution {resolution_a * 1e3:.3g} mA is coarse for a mean current of "
                        f"{mean_current * 1e3:.3g} mA; "
                        + ("the meter's range is too wide for this board" if current is not None
                           else "lower volts/div, use a 12-bit scope or an amplifier"))
    if marker is not None and marker.clipped:
        warnings.append(f"marker channel {marker.channel} clipped (harmless for edge timing)")

    # ---- uncertainty ----------------------------------------------------------------------------
    q = resolution_a / math.sqrt(12)  # quantisation noise of one sample, A rms
    sigma = idle_noise_a if math.isfinite(idle_noise_a) else q
    n_win = float(np.mean(widths) / dt) if widths.size else 0.0
    u_energy = supply_volts * math.sqrt((sigma * dt) ** 2 * n_win + (q * n_win * dt) ** 2)
    u_power = supply_volts * math.sqrt(sigma**2 / max(idle_count, 1) + q**2)

    windows = [InferenceWindow(float(t0 + s * dt), float(t0 + e * dt), float(en * 1e3), float(de * 1e3))
               for s, e, en, de in zip(starts, ends, energy, dyn_energy, strict=True)]
    marker_prov = marker.provenance() if marker is not None else None
    if current is not None:
        params = {"input": CURRENT_INPUT, "shunt_ohms": None, "supply_volts": supply_volts,
                  "marker_threshold": marker_threshold, "threshold_used": float(threshold),
                  "burden_ohms": burden_ohms, "wiring": wiring, "amplifier_gain": None}
        prov = {"shunt": None, "current": current.provenance(), "marker": marker_prov, "shunt_ref": None}
    else:
        params = {"shunt_ohms": shunt_ohms, "supply_volts": supply_volts, "marker_threshold": marker_threshold,
                  "threshold_used": float(threshold), "burden_correction": burden_correction, "wiring": wiring,
                  "amplifier_gain": gain}
        prov = {"shunt": shunt.provenance(), "marker": marker_prov,
                "shunt_ref": shunt_ref.provenance() if shunt_ref is not None else None}
    return PowerReport(
        valid=reason is None, reason=reason, wiring=wiring, window_source=source,
        n_inferences=int(starts.size),
        avg_power_mw=float(avg_power * 1e3), idle_power_mw=float(idle_power * 1e3),
        active_power_mw=float(active_power * 1e3), dynamic_power_mw=float((active_power - idle_power) * 1e3),
        energy_per_inference_mj=Stats.of(energy * 1e3),
        dynamic_energy_per_inference_mj=Stats.of(dyn_energy * 1e3),
        pulse_width_ms=Stats.of(widths * 1e3), samples_per_window=spw, clipped=clipped,
        current_resolution_ma=float(resolution_a * 1e3), idle_noise_ma=float(idle_noise_a * 1e3),
        power_uncertainty_mw=float(u_power * 1e3), energy_uncertainty_mj=float(u_energy * 1e3),
        windows=windows, warnings=warnings, parameters=params, provenance=prov,
    )


class _PrefixSums:
    """sum(x[:k]) for a given set of k, from one `np.add.reduceat` pass instead of a full cumsum."""

    def __init__(self, x: np.ndarray, ks: np.ndarray) -> None:
        n = x.size
        self.ks = np.unique(np.concatenate(([0, n], np.clip(ks, 0, n)))).astype(np.int64)
        inner = self.ks[self.ks < n]
        seg = np.add.reduceat(x, inner) if n else np.zeros(0)
        self.sums = np.concatenate(([0.0], np.cumsum(seg)))  # prefix at self.ks (last one is n)

    def at(self, k):
        return self.sums[np.searchsorted(self.ks, k)]


def _active_spans(rises: np.ndarray, falls: np.ndarray, state0: int, n: int) -> list[tuple[float, float]]:
    """All active spans as (start, end) fractional positions, including partial ones at the record edges."""
    events = sorted([(float(r), 1) for r in rises] + [(float(f), 0) for f in falls])
    spans, start = [], (-0.5 if state0 else None)
    for pos, kind in events:
        if kind == 1 and start is None:
            start = pos
        elif kind == 0 and start is not None:
            spans.append((start, pos))
            start = None
    if start is not None:
        spans.append((start, n - 0.5))
    return spans


def _idle_noise(v: np.ndarray, spans: list[tuple[float, float]], n: int) -> float:
    """Standard deviation of `v` outside the active spans (strided subsample for speed)."""
    step = max(1, n // _STATS_SAMPLES)
    sub = v[::step]
    mask = np.ones(sub.size, bool)
    guard = EDGE_GUARD_SAMPLES + step
    for a, b in spans:  # subsample i is sample i * step
        mask[max(math.ceil((a - guard) / step), 0):max(math.ceil((b + guard) / step), 0)] = False
    vals = sub[mask]
    return float(vals.std(ddof=1)) if vals.size > 1 else math.nan


@dataclass(frozen=True)
class TimestampWindow:
    """Energy between an MLPerf Tiny DUT's two timestamp edges (energy mode: the GPIO's falling edges around
    `infer N W`'s N inferences), as the EnergyRunner defines it: the window's energy divided by N."""

    valid: bool
    reason: str | None
    edges: int  # falling edges in the record
    window_s: float
    avg_power_mw: float
    energy_per_inference_mj: float
    latency_ms: float  # the window over N
    # after the second edge the DUT waits for the host's next command: its average power there is the idle power
    # (NaN, with `idle_reason`, when the record holds too little of it)
    idle_power_mw: float = math.nan
    idle_reason: str | None = None
    capture_power_mw: float = math.nan  # the whole record's average (warm-ups and idle included)

    @property
    def dynamic_power_mw(self) -> float:
        """Power above idle inside the window."""
        return self.avg_power_mw - self.idle_power_mw

    @property
    def dynamic_energy_per_inference_mj(self) -> float:
        """Energy above idle of one inference: the window's energy less the idle power over it, over N."""
        return self.energy_per_inference_mj - self.idle_power_mw * self.latency_ms / 1e3


def analyze_timestamps(shunt: Waveform, marker: Waveform, *, iterations: int, shunt_ohms: float,
                       supply_volts: float, wiring: str = "low_side", amplifier_gain: float = 1.0,
                       expected_latency_s: float | None = None, latency_tolerance: float = 0.05) -> TimestampWindow:
    """Energy per inference between the two timestamp edges of one `infer N W` on the marker channel.

    The record must hold exactly two falling edges (the DUT's timestamps before and after the N inferences):
    fewer, or more, do not match the iterations the host asked for, and the capture is invalid with that reason,
    as it is when the window holds fewer than MIN_SAMPLES_PER_WINDOW samples or, given `expected_latency_s`,
    the window over N is further than `latency_tolerance` from it.
    """
    if iterations < 1:
        raise HilError(f"iterations must be at least 1, got {iterations}")
    if wiring not in WIRINGS:
        raise HilError(f"wiring must be one of {', '.join(WIRINGS)}, got {wiring!r}")
    _check_aligned(shunt, marker, "marker")
    gain = float(amplifier_gain) if wiring == "amplifier" else 1.0
    power = power_series(shunt.volts, shunt_ohms=shunt_ohms, supply_volts=supply_volts, gain=gain)

    def invalid(reason: str, edges: int, window_s: float = math.nan) -> TimestampWindow:
        return TimestampWindow(False, reason, edges, window_s, math.nan, math.nan, math.nan)

    # the timestamp line idles high (open drain, pulled up) with a short low pulse per edge: its idle level is
    # the median, its pulse level the minimum (a percentile would miss a microsecond pulse in a long record)
    hi, lo = float(np.median(marker.volts)), float(np.min(marker.volts))
    noise = _two_levels(marker.volts)[2]
    threshold = (lo + hi) / 2
    if not hi - lo > max(10 * noise, 1e-9):
        return invalid("the marker channel shows no timestamp edge (a flat line): is the timestamp GPIO wired "
                       "to it, and the DUT built in energy mode?", 0)
    rises, falls, _ = _hysteresis_edges(marker.volts, threshold, HYSTERESIS * (hi - lo))
    if falls.size != 2:
        return invalid(f"the scope saw {falls.size} timestamp edges where one 'infer {iterations}' makes 2: the edges "
                       "do not match the iterations", int(falls.size))
    start, end = (float(x) for x in _crossing_times(marker.volts, falls, threshold, rising=False))
    window_s = (end - start) * shunt.dt
    samples = int(math.floor(end) - math.ceil(start))
    if samples < MIN_SAMPLES_PER_WINDOW:
        return invalid(f"the timestamp window holds {samples} samples, fewer than {MIN_SAMPLES_PER_WINDOW}: "
                       "sample faster or run more iterations", 2, window_s)
    # midpoint rule with fractional samples at both ends (sample k stands for [k - 1/2, k + 1/2))
    a, b = start + 0.5, min(end + 0.5, power.size - 1e-9)
    ia, ib = int(math.floor(a)), int(math.floor(b))
    joules = float(np.sum(power[ia + 1:ib]) + power[ia] * (ia + 1 - a) + power[ib] * (b - ib)) * shunt.dt
    latency_s = window_s / iterations
    if expected_latency_s is not None and expected_latency_s > 0 \
            and abs(latency_s - expected_latency_s) > latency_tolerance * expected_latency_s:
        return invalid(f"the timestamp window over {iterations} is {latency_s * 1e3:.4g} ms an inference, the DUT's "
                       f"own timer says {expected_latency_s * 1e3:.4g} ms: the edges do not match the iterations",
                       2, window_s)
    idle_mw, idle_reason = _idle_after(power, rises, end)
    return TimestampWindow(True, None, 2, window_s, joules / window_s * 1e3, joules / iterations * 1e3,
                           latency_s * 1e3, idle_mw, idle_reason, float(np.mean(power)) * 1e3)


def _idle_after(power: np.ndarray, rises: np.ndarray, end: float) -> tuple[float, str | None]:
    """Average power (mW) after the last timestamp's pulse, where the DUT waits for the host: the idle power."""
    after = rises[rises > end]
    if after.size == 0:
        return math.nan, "the record ends before the last timestamp's pulse does: no idle time after the window"
    start = int(after[0]) + EDGE_GUARD_SAMPLES
    if power.size - start < MIN_SAMPLES_PER_WINDOW:
        return math.nan, (f"the record holds {max(power.size - start, 0)} samples after the last timestamp, fewer "
                          f"than {MIN_SAMPLES_PER_WINDOW}: too little idle time to measure")
    return float(np.mean(power[start:])) * 1e3, None
