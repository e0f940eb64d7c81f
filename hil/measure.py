"""Measurement procedures: timed inference with a scope capture (power, energy), and on-device accuracy.

The same code runs on a real bench and on the virtual one: it only talks to a `DutClient` and an
`Oscilloscope`. Each power figure is the median over trials, with its spread (max - min) across trials.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from hil.bench import StationSpec
from hil.errors import HilError
from hil.power import MIN_SAMPLES_PER_WINDOW, PowerReport, TimestampWindow, analyze, analyze_timestamps
from hil.protocol import DutClient, InferResult
from hil.wire import INFER_MAX_GAP_MS, INFER_MAX_N, MAX_INFERENCE_S
from instruments.oscilloscope import TriggerTimeout

MARKER_LOGIC_V = 3.3
RANGING_FULL_SCALE_V = 0.25  # first look at the shunt: 5 A through 0.05 ohm
PRE_TRIGGER_FRACTION = 0.08
MAX_RERANGES = 3
# What a current capture gives besides the board's own latency (skipped where no current is measured).
POWER_METRICS = ("power_mw", "idle_power_mw", "active_power_mw", "dynamic_power_mw", "energy_mj",
                 "dynamic_energy_mj", "pulse_width_ms", "pulse_vs_latency_pct")
# A power meter measuring beside the scope: its own figures and how far its energy is from the scope's.
METER_METRICS = ("meter_energy_mj", "meter_power_mw", "meter_vs_scope_energy_pct")
# The scope's pulse width and the board's cycle-counter latency measure the same thing (the reference
# study's cross-check); 2 % allows for the marker GPIO toggling around Invoke() and sampling.
PULSE_VS_LATENCY_MAX_PCT = 2.0
# The capture plan: the scope's record is lengthened (up to SCOPE_MAX_POINTS, which every supported scope's memory
# holds and a slow link transfers in a few seconds) until the shortest inference window has this many samples.
SCOPE_MAX_POINTS = 1_000_000
SAMPLES_PER_WINDOW_TARGET = 2 * MIN_SAMPLES_PER_WINDOW
RECORD_MARGIN = 1.15  # the record spans every inference of a capture with this margin after its pre-trigger part


@dataclass(frozen=True)
class Settings:
    """How one variant is measured (pytest options `--inferences`, `--warmup`, `--trials`, ...)."""

    inferences: int | None = None  # None: enough for a window of `window_s`
    warmup: int = 5
    trials: int = 5
    window_s: float = 1.0
    gap_ms: int | None = None  # None: a quarter of the latency, 1 to 1000 ms (idle power between windows)
    record_points: int = 50_000  # the scope's record at least; the plan lengthens it for short inferences


@dataclass(frozen=True)
class Figure:
    """One metric of one variant: median over trials, spread, validity."""

    value: float | None
    spread: float | None = None
    trials: int = 1
    valid: bool = True
    reason: str | None = None
    skipped: bool = False  # cannot be measured on this bench by design (the reason says why); never a failure
    values: tuple[float, ...] = ()  # the per-trial values the median was taken over (kept in the results database)

    @classmethod
    def not_measurable(cls, reason: str) -> Figure:
        return cls(None, valid=False, reason=reason, skipped=True)


@dataclass
class Trial:
    """One capture: the board's latencies, the scope's waveforms and their analysis."""

    infer: InferResult
    report: PowerReport
    shunt: object  # instruments.waveform.Waveform
    marker: object
    void: str | None = None  # why the capture does not show what the board ran (reset, missed inferences ...)
    full_scale: float = 0.0  # the shunt channel's full scale it was taken at
    meter_report: PowerReport | None = None  # the power meter's analysis of the same run (scope and meter)


@dataclass
class PowerMeasurement:
    """All trials of one variant, and the figures derived from them."""

    n: int
    warmup: int
    gap_ms: int
    trials: list[Trial] = field(default_factory=list)

    @staticmethod
    def _meter_figures(both: list[Trial]) -> dict[str, Figure]:
        """The meter's energy and power beside the scope's, and how far apart their energies are."""
        if not both:
            bad = Figure(None, valid=False, reason="no trial with a valid scope and meter capture")
            return dict.fromkeys(METER_METRICS, bad)
        m = [t.meter_report for t in both]
        apart = [(mr.energy_per_inference_mj.mean - t.report.energy_per_inference_mj.mean)
                 / t.report.energy_per_inference_mj.mean * 100 for t, mr in zip(both, m, strict=True)]
        return {"meter_energy_mj": _median([x.energy_per_inference_mj.mean for x in m]),
                "meter_power_mw": _median([x.avg_power_mw for x in m]),
                "meter_vs_scope_energy_pct": _median(apart)}

    def figures(self) -> dict[str, Figure]:
        """Median and spread per metric over the valid trials; every metric invalid if none is valid.

        Latency comes from every trial whose capture is not void: a void capture disagrees with the board's
        report, and which of the two is wrong cannot be told.
        """
        valid = [t for t in self.trials if t.report.valid]
        agreed = [t for t in self.trials if t.void is None]
        if agreed:
            out = {
                "latency_ms": _median([t.infer.mean_us / 1e3 for t in agreed]),
                "latency_p95_ms": _median([float(np.percentile(t.infer.latency_ms, 95)) for t in agreed]),
            }
        else:
            reason = self.trials[0].void if self.trials else "no capture"
            void = Figure(None, trials=len(self.trials), valid=False,
                          reason=f"every capture was void, so the board's latencies are not confirmed: {reason}")
            out = {"latency_ms": void, "latency_p95_ms": void}
        if not valid:
            reason = self.trials[0].report.reason if self.trials else "no capture"
            bad = Figure(None, trials=len(self.trials), valid=False, reason=f"power capture invalid: {reason}")
            return {**out, **dict.fromkeys(POWER_METRICS, bad)}
        both = [t for t in valid if t.meter_report is not None and t.meter_report.valid]
        if any(t.meter_report is not None for t in self.trials):
            out.update(self._meter_figures(both))
        r = [t.report for t in valid]
        out.update(
            power_mw=_median([x.avg_power_mw for x in r]),
            idle_power_mw=_median([x.idle_power_mw for x in r]),
            active_power_mw=_median([x.active_power_mw for x in r]),
            dynamic_power_mw=_median([x.dynamic_power_mw for x in r]),
            energy_mj=_median([x.energy_per_inference_mj.mean for x in r]),
            dynamic_energy_mj=_median([x.dynamic_energy_per_inference_mj.mean for x in r]),
            pulse_width_ms=_median([x.pulse_width_ms.mean for x in r]),
            pulse_vs_latency_pct=_median(
                [
                    abs(t.report.pulse_width_ms.mean - t.infer.mean_us / 1e3) / (t.infer.mean_us / 1e3) * 100
                    for t in valid
                ]
            ),
        )
        return out


def _median(values: list[float]) -> Figure:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return Figure(None, trials=len(values), valid=False, reason="no finite value in any trial")
    return Figure(statistics.median(finite), max(finite) - min(finite), len(finite), values=tuple(finite))


@dataclass(frozen=True)
class CapturePlan:
    """How every capture of a variant runs: `infer n 0 gap_ms`, the scope's record, the time allowed for it."""

    n: int
    gap_ms: int
    period_s: float  # one inference and its gap
    record_points: int
    timeout_s: float

    @property
    def record_s(self) -> float:
        """The scope's record: every inference of the capture, with margin."""
        return _record_s(self.n, self.period_s)


def _record_s(n: int, period_s: float) -> float:
    return n * period_s / (1 - PRE_TRIGGER_FRACTION) * RECORD_MARGIN


def plan_capture(latency_s: float, settings: Settings, *, scope: bool = True) -> CapturePlan:
    """A capture plan for inferences of `latency_s`, within the firmware's limits (at most 1000 inferences, a gap
    of 0 to 1000 ms) and the scope's memory (SCOPE_MAX_POINTS, enough samples in every inference window).

    A quarter of the latency idles after each inference (1 to 1000 ms); `--window` of inference time sets how
    many, at least two; a record too long for the memory is met with fewer inferences. One HilError where
    nothing fits: an inference the firmware cannot time, a gap or an `--inferences` beyond what fits.
    """
    if not 0 <= latency_s <= MAX_INFERENCE_S:
        raise HilError(f"the board reports {latency_s:g} s an inference; the firmware times 0 to "
                       f"{MAX_INFERENCE_S:g} s, so no capture can be planned")
    latency_s = max(latency_s, 1e-6)  # below the timer's resolution: plan for one microsecond
    if settings.gap_ms is not None and not 0 <= settings.gap_ms <= INFER_MAX_GAP_MS:
        raise HilError(f"a gap of {settings.gap_ms} ms between inferences is outside the firmware's 0 to "
                       f"{INFER_MAX_GAP_MS} ms")
    gap_ms = settings.gap_ms if settings.gap_ms is not None else min(max(1, round(latency_s * 1e3 / 4)),
                                                                      INFER_MAX_GAP_MS)
    period_s = latency_s + gap_ms / 1e3
    n = min(settings.inferences or max(2, math.ceil(settings.window_s / period_s)), INFER_MAX_N)
    points = settings.record_points
    if scope:
        shortest = min(latency_s, gap_ms / 1e3) if gap_ms else latency_s  # idle samples matter as much

        def needed(count: int) -> int:  # points for SAMPLES_PER_WINDOW_TARGET samples in the shortest window
            return math.ceil(_record_s(count, period_s) / shortest * SAMPLES_PER_WINDOW_TARGET)

        most = math.floor(n * SCOPE_MAX_POINTS / needed(n)) - 1  # the most inferences the memory holds
        if needed(n) > SCOPE_MAX_POINTS and settings.inferences and most >= 2:
            raise HilError(f"--inferences {settings.inferences}: a capture of {settings.inferences} inferences of "
                           f"{latency_s * 1e3:.4g} ms needs {needed(n):,} scope samples, more than the "
                           f"{SCOPE_MAX_POINTS:,} the harness records; pass --inferences {most} or fewer, or "
                           "leave it out")
        if needed(n) > SCOPE_MAX_POINTS and not settings.inferences:
            n = max(2, most)
        if needed(n) > SCOPE_MAX_POINTS:
            raise HilError(f"no capture plan fits inferences of {latency_s * 1e6:.4g} us with {gap_ms} ms gaps: "
                           f"{n} of them need {needed(n):,} scope samples, more than the {SCOPE_MAX_POINTS:,} "
                           "the harness records")
        points = max(points, needed(n))
    timeout_s = (n + settings.warmup) * period_s * 2 + 5.0
    return CapturePlan(n, gap_ms, period_s, points, timeout_s)


def _configure(scope, spec: StationSpec, n: int, period_s: float, shunt_full_scale_v: float, points: int) -> None:
    """Shunt channel from slightly below 0 V to `shunt_full_scale_v`, marker at logic levels, trigger on it."""
    sc = spec.scope
    span_div = scope.adc_span_div
    scope.configure_channel(sc.shunt_channel, shunt_full_scale_v * 1.1 / span_div, shunt_full_scale_v * 0.45)
    scope.configure_channel(sc.marker_channel, 1.5 * MARKER_LOGIC_V / span_div, MARKER_LOGIC_V / 2)
    window = _record_s(n, period_s)  # every inference in the record, with margin
    scope.configure_timebase(
        window / scope.horizontal_divisions,
        record_points=points,
        position_s=(0.5 - PRE_TRIGGER_FRACTION) * window,
    )
    scope.configure_trigger(sc.marker_channel, MARKER_LOGIC_V / 2, "rising")


def _capture(scope, dut: DutClient, spec: StationSpec, n: int, warmup: int, gap_ms: int, timeout_s: float,
             meter=None, meter_s: float | None = None) -> Trial:
    """One armed capture of `infer n` by the scope, the meter or both at once; void (and invalid) when the
    capture cannot be the run the board reports."""
    if warmup:
        # Warm up before arming: warm-up inferences in the pre-trigger part of the record would count as idle.
        dut.infer(warmup, 0, 0)
    resyncs = dut.resyncs
    if meter is not None:
        meter.arm()
    if scope is not None:
        scope.arm()
    result = dut.infer(n, 0, gap_ms)
    meter_report = None
    if meter is not None:
        current, logic = meter.capture(meter_s, timeout_s=timeout_s)
        meter_report = analyze(current=current, marker=logic, supply_volts=spec.supply_volts,
                               burden_ohms=spec.shunt.ohms if scope is not None else 0.0)  # in series with it
    if scope is not None:
        sc = spec.scope
        scope.wait_for_trigger(timeout_s=timeout_s)
        shunt, marker = scope.fetch(sc.shunt_channel, sc.marker_channel)
        report = analyze(
            shunt,
            marker,
            shunt_ohms=spec.shunt.ohms,
            supply_volts=spec.supply_volts,
            wiring=spec.shunt.wiring,  # high_side: one differential channel, the same arithmetic, labelled so
            amplifier_gain=spec.shunt.gain,
            marker_threshold=MARKER_LOGIC_V / 2,
        )
    else:
        report, shunt, marker, meter_report = meter_report, current, logic, None
    void = _void_reason(report, result, n, dut.resyncs - resyncs)
    if void is not None and report.valid:
        report = replace(report, valid=False, reason=f"capture void: {void}")
    return Trial(result, report, shunt, marker, void, meter_report=meter_report)


def _void_reason(report: PowerReport, result: InferResult, n: int, resyncs: int) -> str | None:
    """Why a capture does not show the run the board reported, or None: the cross-checks of every trial."""
    if result.problem is not None:
        return f"the board's reply is inconsistent: {result.problem}"
    if resyncs:
        return "the board reset or the serial link resynchronised during the capture"
    if result.n != n:
        return f"the board reports {result.n} inferences, {n} were requested"
    if not report.valid:
        return None  # already invalid for its own reason
    if report.n_inferences < n:  # more can be warm-up inferences in the pre-trigger part of the record
        return f"the scope saw {report.n_inferences} inference windows, the board ran {n}"
    latency_ms = result.mean_us / 1e3
    off = abs(report.pulse_width_ms.mean - latency_ms) / latency_ms * 100 if latency_ms > 0 else math.inf
    if off > PULSE_VS_LATENCY_MAX_PCT:
        return (f"marker pulses average {report.pulse_width_ms.mean:.3f} ms, the board reports {latency_ms:.3f} ms "
                f"({off:.1f} % apart, max {PULSE_VS_LATENCY_MAX_PCT} %)")
    return None


def measure_power(
    dut: DutClient,
    scope,
    spec: StationSpec,
    settings: Settings = Settings(),
    *,
    meter=None,
    progress: Callable[[str], None] = lambda _: None,
) -> PowerMeasurement:
    """Range the shunt channel on a short burst, then capture `settings.trials` timed runs of `infer N W GAP`.

    `scope` may be None when `meter` (an instruments.meters current source) measures alone; with both, the
    scope's figures are the run's and the meter's are reported beside them (METER_METRICS).
    """
    plan = plan_capture(_probe_latency_s(dut), settings, scope=scope is not None)
    n, gap_ms, period_s, timeout_s = plan.n, plan.gap_ms, plan.period_s, plan.timeout_s
    settings = replace(settings, record_points=plan.record_points)

    full_scale = 0.0
    if scope is not None:  # ranging: one short burst on a wide range, then set it from what the shunt shows
        burst = min(n, 5)
        wide = RANGING_FULL_SCALE_V * spec.shunt.gain
        short = replace(settings, record_points=settings.record_points // 4)
        ranging = _triggered(lambda: _trial(scope, dut, spec, burst, 0, gap_ms, timeout_s, period_s, wide, short,
                                            progress=progress), spec, progress, "ranging")
        if ranging.report.clipped:  # a clipped peak says nothing: the trials start at the ranging range
            full_scale = ranging.full_scale
            progress(f"ranging: {ranging.report.reason}")
        else:
            peak = float(np.max(ranging.shunt.volts))
            full_scale = max(peak * 1.2, 1e-4)
            progress(f"ranging: shunt peak {peak * 1e3:.2f} mV, full scale set to {full_scale * 1e3:.2f} mV")
    else:
        progress(f"meter {meter.idn}: {n} inferences per capture")

    m = PowerMeasurement(n, settings.warmup, gap_ms)
    for trial in range(settings.trials):

        def one(fs: float = full_scale) -> Trial:
            return _trial(scope, dut, spec, n, settings.warmup, gap_ms, timeout_s, period_s, fs, settings, meter,
                          progress=progress)

        t = _triggered(one, spec, progress, f"trial {trial + 1}")
        if t.void is not None:  # measured once more; a second void capture stays recorded invalid
            progress(f"trial {trial + 1}: capture void ({t.void}); measuring it again")
            t = _triggered(one, spec, progress, f"trial {trial + 1}")
        full_scale = t.full_scale
        m.trials.append(t)
        progress(
            f"trial {trial + 1}/{settings.trials}: {n} inferences, latency {t.infer.mean_us / 1e3:.2f} ms, "
            f"energy {t.report.energy_per_inference_mj.mean:.4g} mJ"
            if t.report.valid
            else f"invalid: {t.report.reason}"
        )
    return m


def _meter_seconds(n: int, period_s: float) -> float:
    """How long a meter records from its arm: the whole run with the same margin as the scope's record."""
    return n * period_s * 1.15 + 0.02


def _triggered(capture: Callable[[], Trial], spec: StationSpec, progress: Callable[[str], None], what: str) -> Trial:
    """`capture()`, once more when the scope did not trigger (a missed edge); a second miss is the error."""
    try:
        return capture()
    except TriggerTimeout as exc:
        progress(f"{what}: {exc}; capturing it again")
    try:
        return capture()
    except TriggerTimeout as exc:
        raise TriggerTimeout(f"{exc} (twice in a row; the marker probe belongs on channel "
                             f"{spec.scope.marker_channel}, at the board's GPIO {spec.board.marker_gpio})") from None


def _trial(scope, dut: DutClient, spec: StationSpec, n: int, warmup: int, gap_ms: int, timeout_s: float,
           period_s: float, full_scale: float, settings: Settings, meter=None, *,
           progress: Callable[[str], None] = lambda _: None) -> Trial:
    """One capture, its shunt range widened (up to MAX_RERANGES times) while it clips; still clipped after
    that, it is invalid with a reason that says what the widening rules out."""
    first = full_scale
    for _attempt in range(MAX_RERANGES + 1):
        if scope is not None:
            _configure(scope, spec, n, period_s, full_scale, settings.record_points)
        t = _capture(scope, dut, spec, n, warmup, gap_ms, timeout_s, meter, _meter_seconds(n, period_s))
        if scope is None or not t.report.clipped:
            t.full_scale = full_scale
            return t
        full_scale *= 2
        progress(f"shunt channel clipped; capturing again at {full_scale * 1e3:.4g} mV full scale")
    widest = full_scale / 2
    t.report = replace(t.report, reason=(
        f"shunt channel {spec.scope.shunt_channel} still clipped at the ADC rails after widening its range "
        f"{MAX_RERANGES} times (to {widest * 1e3:.4g} mV full scale, {widest / first:g}x the first): the scope "
        "does not apply the volts/div the harness sets (check the channel's probe ratio and that its vertical "
        "settings are not changed by hand) or the board draws far more current than when ranged"))
    t.full_scale = first  # the next capture starts where this one did: no escalation past what was tried
    return t


def _probe_latency_s(dut: DutClient) -> float:
    """The longest of three inferences (`infer 3 1`), to plan the captures by. An inconsistent reply plans by its
    latencies when they are times the firmware can report (its trials are void anyway); otherwise nothing can be
    planned and the error says why."""
    probe = dut.infer(3, 1)
    lat = probe.latency_us
    if probe.problem is None:
        return probe.max_us / 1e6
    if len(lat) == 3 and all(0 <= x <= MAX_INFERENCE_S * 1e6 for x in lat):
        return max(lat) / 1e6
    raise HilError(f"the board's reply to 'infer 3 1' is inconsistent ({probe.problem}): no figure can be taken "
                   "from its timer; check the firmware (its cycle counter and the `infer` reply)")


def measure_latency(dut: DutClient, settings: Settings = Settings(), *,
                    progress: Callable[[str], None] = lambda _: None) -> dict[str, Figure]:
    """Latency from the board's own timer alone (no current capture): `settings.trials` runs of `infer N W`.

    A run whose reply is inconsistent is void: measured once more, and a second void run counts for nothing.
    """
    latency_s = max(_probe_latency_s(dut), 1e-6)
    n = min(settings.inferences or max(2, math.ceil(settings.window_s / latency_s)), INFER_MAX_N)
    runs, voids = [], []
    for trial in range(settings.trials):
        r = dut.infer(n, settings.warmup)
        if r.problem is not None:
            progress(f"trial {trial + 1}: void (the board's reply is inconsistent: {r.problem}); measuring it again")
            r = dut.infer(n, settings.warmup)
        if r.problem is not None:
            voids.append(r.problem)
            progress(f"trial {trial + 1}/{settings.trials}: void again: {r.problem}")
            continue
        runs.append(r)
        progress(f"trial {trial + 1}/{settings.trials}: {n} inferences, latency {r.mean_us / 1e3:.3f} ms")
    if not runs:
        void = Figure(None, trials=settings.trials, valid=False,
                      reason=f"every run was void, the board's reply is inconsistent: {voids[0]}")
        return {"latency_ms": void, "latency_p95_ms": void}
    if not all(r.latency_us for r in runs):  # an MLPerf Tiny DUT times a window: p95 from one-inference windows
        p95 = single_window_p95(lambda: _one_inference_window_ms(dut), progress=progress)
    else:
        p95 = _median([float(np.percentile(r.latency_ms, 95)) for r in runs])
    return {"latency_ms": _median([r.mean_us / 1e3 for r in runs]), "latency_p95_ms": p95}


P95_SINGLE_WINDOWS = 20  # one-inference windows a DUT that times only windows is asked for, for its p95


def _one_inference_window_ms(dut) -> float | None:
    """`infer 1 0` timed by the DUT's own timestamps (ms), or None when its reply is inconsistent."""
    r = dut.infer(1, 0)
    return None if r.problem is not None else r.mean_us / 1e3


def single_window_p95(one: Callable[[], float | None], runs: int = P95_SINGLE_WINDOWS, *,
                      progress: Callable[[str], None] = lambda _: None) -> Figure:
    """The 95th percentile latency of a DUT that times only windows (MLPerf Tiny): `runs` windows of one
    inference each (`one()` gives its ms, None when void); fewer than `runs` good windows make it invalid."""
    got = [x for x in (one() for _ in range(runs)) if x is not None and math.isfinite(x)]
    if len(got) < runs:
        return Figure(None, trials=runs, valid=False, reason=f"{runs - len(got)} of {runs} one-inference windows "
                      "were void, so their 95th percentile would be of the lucky ones")
    p95 = float(np.percentile(got, 95))
    progress(f"p95: {runs} one-inference windows, {min(got):.3f} to {max(got):.3f} ms, p95 {p95:.3f} ms")
    return Figure(p95, max(got) - min(got), runs, values=tuple(got))


@dataclass(frozen=True)
class AccuracyResult:
    """On-device accuracy over the protocol, and how the device's outputs compare with host TFLM's."""

    samples: int
    accuracy_pct: float
    agreement_pct: float | None
    cosine: float | None


PROGRESS_EVERY_S = 30.0  # accuracy streaming reports at least this often, besides every 100 images


def measure_accuracy(
    dut: DutClient,
    x: np.ndarray,
    y: np.ndarray,
    *,
    host_outputs: np.ndarray | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> AccuracyResult:
    """Stream every test input through `input`/`data`/`run`; compare with the host TFLM outputs if given.

    `host_outputs` are the dequantized outputs of the host TFLM runtime for the same inputs (the factory's
    `VariantArtifact.host_outputs()`).
    """
    from models.tflm import TensorSpec, dequantize_output, quantize_input

    info = dut.require_model()
    assert info.input is not None and info.output is not None
    spec_in = TensorSpec(info.input.shape, np.dtype(info.input.dtype), info.input.scale, info.input.zero_point)
    spec_out = TensorSpec(info.output.shape, np.dtype(info.output.dtype), info.output.scale, info.output.zero_point)
    xq = quantize_input(x, spec_in)
    device_out = []
    said = time.monotonic()
    for i in range(len(xq)):
        device_out.append(dequantize_output(dut.predict(xq[i : i + 1]), spec_out).reshape(-1))
        if (i + 1) % 100 == 0 or time.monotonic() - said >= PROGRESS_EVERY_S:  # a slow board still shows life
            progress(f"accuracy: {i + 1}/{len(xq)} images")
            said = time.monotonic()
    dev = np.stack(device_out)
    accuracy = float(np.mean(dev.argmax(1) == y)) * 100
    if host_outputs is None:
        return AccuracyResult(len(xq), accuracy, None, None)
    from models.evaluate import agreement, mean_cosine

    ref = np.asarray(host_outputs)[: len(dev)]
    return AccuracyResult(len(xq), accuracy, agreement(dev, ref) * 100, mean_cosine(dev, ref))


# -- MLPerf Tiny DUTs in energy mode: energy between the timestamp edges --------------------------------------

TIMESTAMP_SAMPLE_S = 2e-6  # sample interval that resolves a timestamp pulse ("held at least 1 us"; 10 us on the
#                            virtual DUT) on the marker channel
PROBE_WINDOW_S = 2.0  # the first capture, of `infer 1 0`, before the DUT's latency is known


def _timestamp_capture(scope, dut, spec: StationSpec, n: int, warmup: int, record_s: float,
                       full_scale_v: float) -> tuple[TimestampWindow, float]:
    """One armed capture of `infer n warmup` on an MLPerf Tiny DUT in energy mode: the scope triggers on the first
    timestamp's falling edge and records past the second; the window between them is analysed. Returns it with
    the shunt channel's peak volts; a clipped shunt voids it."""
    sc = spec.scope
    points = min(SCOPE_MAX_POINTS, max(10_000, math.ceil(record_s / TIMESTAMP_SAMPLE_S)))
    scope.configure_channel(sc.shunt_channel, full_scale_v * 1.1 / scope.adc_span_div, full_scale_v * 0.45)
    scope.configure_channel(sc.marker_channel, 1.5 * MARKER_LOGIC_V / scope.adc_span_div, MARKER_LOGIC_V / 2)
    scope.configure_timebase(record_s / scope.horizontal_divisions, record_points=points,
                             position_s=(0.5 - PRE_TRIGGER_FRACTION) * record_s)
    scope.configure_trigger(sc.marker_channel, MARKER_LOGIC_V / 2, "falling")
    scope.arm()
    dut.client.infer(n, warmup)
    scope.wait_for_trigger(timeout_s=record_s * 4 + 10.0)
    shunt, marker = scope.fetch(sc.shunt_channel, sc.marker_channel)
    window = analyze_timestamps(shunt, marker, iterations=n, shunt_ohms=spec.shunt.ohms,
                                supply_volts=spec.supply_volts, wiring=spec.shunt.wiring,
                                amplifier_gain=spec.shunt.gain)
    if shunt.clipped and window.valid:
        window = replace(window, valid=False, reason="the shunt channel clipped")
    return window, float(np.max(shunt.volts))


def measure_energy_windows(dut, scope, spec: StationSpec, settings: Settings = Settings(), *,
                           progress: Callable[[str], None] = lambda _: None) -> dict[str, Figure]:
    """Latency, average power and energy per inference of an MLPerf Tiny DUT in energy mode, as its EnergyRunner
    defines them: each trial one `infer N W`, its window between the two timestamp edges, the energy over N.

    A probe capture of `infer 1 0` gives the latency that sizes the trials. A trial whose edges do not match its
    iterations is void, measured once more, and a second void counts for nothing.
    """
    probe, peak = _timestamp_capture(scope, dut, spec, 1, 0, PROBE_WINDOW_S, RANGING_FULL_SCALE_V * spec.shunt.gain)
    if not probe.valid:
        raise HilError(f"the MLPerf Tiny DUT's timestamps cannot be read on the scope: {probe.reason}")
    latency_s = probe.latency_ms / 1e3
    full_scale = max(peak * 1.2, 1e-4)
    progress(f"probe: {latency_s * 1e3:.3f} ms an inference between the timestamps, shunt peak {peak * 1e3:.2f} mV")
    n = min(settings.inferences or max(2, math.ceil(settings.window_s / max(latency_s, 1e-6))), INFER_MAX_N)
    record_s = max(n * latency_s / (1 - PRE_TRIGGER_FRACTION) * RECORD_MARGIN, 1e-3)
    windows: list[TimestampWindow] = []
    voids: list[str] = []
    for trial in range(settings.trials):
        w, _ = _timestamp_capture(scope, dut, spec, n, settings.warmup, record_s, full_scale)
        if not w.valid:
            progress(f"trial {trial + 1}: void ({w.reason}); measuring it again")
            w, _ = _timestamp_capture(scope, dut, spec, n, settings.warmup, record_s, full_scale)
        if not w.valid:
            voids.append(str(w.reason))
            continue
        windows.append(w)
        progress(f"trial {trial + 1}/{settings.trials}: {n} inferences between the timestamps, "
                 f"{w.latency_ms:.3f} ms and {w.energy_per_inference_mj:.4f} mJ each")
    if not windows:
        void = Figure(None, trials=settings.trials, valid=False,
                      reason=f"every capture was void: {voids[0] if voids else 'no trial'}")
        return dict.fromkeys(ENERGY_WINDOW_METRICS, void)
    # the window holds inferences only: its average is the power inside inference windows (active_power_mw)
    out = {"latency_ms": _median([w.latency_ms for w in windows]),
           "power_mw": _median([w.capture_power_mw for w in windows]),
           "active_power_mw": _median([w.avg_power_mw for w in windows]),
           "energy_mj": _median([w.energy_per_inference_mj for w in windows])}
    idle = [w for w in windows if math.isfinite(w.idle_power_mw)]
    if idle:
        out.update(idle_power_mw=_median([w.idle_power_mw for w in idle]),
                   dynamic_power_mw=_median([w.dynamic_power_mw for w in idle]),
                   dynamic_energy_mj=_median([w.dynamic_energy_per_inference_mj for w in idle]))
    else:
        bad = Figure(None, trials=len(windows), valid=False, reason=f"no idle power: {windows[0].idle_reason}")
        out.update(dict.fromkeys(("idle_power_mw", "dynamic_power_mw", "dynamic_energy_mj"), bad))

    def one() -> float | None:  # one inference between two timestamps, for the p95
        w, _ = _timestamp_capture(scope, dut, spec, 1, 0, max(latency_s * 1.5 / (1 - PRE_TRIGGER_FRACTION), 1e-3),
                                  full_scale)
        return w.latency_ms if w.valid else None

    out["latency_p95_ms"] = single_window_p95(one, progress=progress)
    return out


# The MLPerf Tiny runner's figures, derived per trial from latency_ms and energy_mj (docs/mlperf-tiny.md).
RUNNER_METRICS = ("inferences_per_s", "energy_uj")


def runner_figures(figures: dict[str, Figure]) -> dict[str, Figure]:
    """Inferences per second and µJ per inference as the MLPerf Tiny runner states them: each window's own figure
    (N over the window, its energy over N), then the median of windows; invalid or skipped as their source is."""
    out = {}
    for name, source, f in (("inferences_per_s", "latency_ms", lambda ms: 1e3 / ms),
                            ("energy_uj", "energy_mj", lambda mj: mj * 1e3)):
        fig = figures.get(source)
        if fig is None:
            out[name] = Figure(None, valid=False, reason=f"{source} was not measured")
        elif fig.value is None or not fig.valid:
            out[name] = replace(fig, values=())
        else:
            per = [f(v) for v in (fig.values or (fig.value,)) if v > 0]
            out[name] = _median(per) if per else Figure(None, valid=False, reason=f"{source} is not positive")
    return out


# What an MLPerf Tiny DUT's energy mode gives (measure_energy_windows); the rest of POWER_METRICS is the scope's
# pulse against the board's own timer, which energy mode does not report.
ENERGY_WINDOW_METRICS = ("latency_ms", "latency_p95_ms", "power_mw", "idle_power_mw", "active_power_mw",
                         "dynamic_power_mw", "energy_mj", "dynamic_energy_mj")
