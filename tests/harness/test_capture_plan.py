"""The capture plan fits any latency the firmware can time: the gap within the firmware's 0..1000 ms, at least two
inferences, a record the scope's memory holds with enough samples per inference; one clear error where nothing fits.

End to end: TFLM's person_detect on the ESP32's reference kernels (4.08 s an inference, Espressif's published
figure) measured on the virtual bench with valid latency, power and energy. The model comes from ../shared/data;
that test skips with the reason where it is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hil.bench import parse_bench
from hil.campaign import CampaignOptions
from hil.errors import HilError
from hil.measure import SCOPE_MAX_POINTS, Settings, measure_power, plan_capture
from hil.power import MIN_SAMPLES_PER_WINDOW
from hil.station import open_station
from tests.harness.helpers import quiet_bench

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PERSON_DETECT = SHARED / "person_detect.tflite"

# from the timer's resolution to the firmware's 10 s limit; 4.084 s: person_detect, ESP32, reference kernels
LATENCIES_S = [1e-6, 20e-6, 0.3e-3, 4e-3, 0.38, 1.02, 4.084, 9.99, 10.0]


@pytest.mark.parametrize("latency_s", LATENCIES_S)
@pytest.mark.parametrize("window_s", [0.05, 1.0, 10.0])
def test_every_latency_the_firmware_times_gets_a_plan_within_its_limits(latency_s: float, window_s: float) -> None:
    plan = plan_capture(latency_s, Settings(window_s=window_s))
    assert 1 <= plan.gap_ms <= 1000  # `infer N W GAP_MS`: GAP_MS <= 1000, and >= 1 ms of idle to measure
    assert 2 <= plan.n <= 1000
    assert plan.period_s == pytest.approx(latency_s + plan.gap_ms / 1e3)
    assert plan.record_points <= SCOPE_MAX_POINTS
    record_s = plan.n * plan.period_s / (1 - 0.08) * 1.15  # measure._configure's record, every inference in it
    assert plan.record_s == pytest.approx(record_s)
    samples = plan.record_points / record_s * min(max(latency_s, 1e-6), plan.gap_ms / 1e3)
    assert samples >= MIN_SAMPLES_PER_WINDOW  # power.analyze accepts the shortest window
    assert plan.timeout_s > (plan.n + 5) * plan.period_s  # the trigger wait outlasts the run and its warm-up


def test_a_slow_model_waits_the_longest_gap_the_firmware_takes() -> None:
    """The bug: a quarter of 4.084 s is 1021 ms, which the firmware refuses (E_ARGS GAP_MS)."""
    plan = plan_capture(4.084, Settings())
    assert plan.gap_ms == 1000 and plan.n == 2


@pytest.mark.parametrize(
    ("latency_s", "settings", "message"),
    [
        (12.0, Settings(), "the board reports 12 s an inference; the firmware times 0 to 10 s"),
        (-1e-3, Settings(), "the board reports -0.001 s an inference"),
        (4e-3, Settings(gap_ms=1500), "a gap of 1500 ms between inferences is outside the firmware's 0 to 1000 ms"),
        (1e-6, Settings(inferences=1000), "--inferences 1000: a capture of 1000 inferences of 0.001 ms needs"),
    ],
)
def test_where_no_plan_fits_one_error_says_why(latency_s: float, settings: Settings, message: str) -> None:
    with pytest.raises(HilError) as err:
        plan_capture(latency_s, settings)
    assert str(err.value).startswith(message), err.value


def test_a_record_too_long_for_the_memory_is_met_with_fewer_inferences() -> None:
    """1 us inferences in a 10 s window: 1000 of them would need ~50 M samples; fewer fit, and say so in n."""
    plan = plan_capture(1e-6, Settings(window_s=10.0))
    assert 2 <= plan.n < 1000 and plan.record_points <= SCOPE_MAX_POINTS
    assert plan.record_points / plan.record_s * 1e-6 >= MIN_SAMPLES_PER_WINDOW


def test_the_inferences_asked_for_are_kept_when_they_fit() -> None:
    plan = plan_capture(4e-3, Settings(inferences=7))
    assert plan.n == 7 and plan.gap_ms == 1 and plan.record_points == Settings().record_points


@pytest.mark.skipif(not PERSON_DETECT.is_file(),
                    reason=f"{PERSON_DETECT} is absent (the shared data folder ../shared/data)")
def test_person_detect_on_reference_kernels_is_measured_end_to_end_with_valid_figures() -> None:
    """Over 4 s an inference (reference kernels on an ESP32 clocked at 160 MHz), with the campaign's own settings
    (5 trials, 5 warm-ups, 1 s window): before the plan it stopped at `E_ARGS GAP_MS ... got '1021'`. Simulated
    time: the ~200 s of inference cost no wall time."""
    from hil.profiling import estimate

    bench = quiet_bench()
    bench["boards"] = [{**bench["boards"][0], "kernels": "reference", "cpu_mhz": 160}]
    expected_ms = estimate(PERSON_DETECT.read_bytes(), chip="esp32", kernels="reference", cpu_mhz=160).total_us / 1e3
    assert expected_ms > 4000  # a quarter of it is past the firmware's longest gap
    config = parse_bench(bench)
    with open_station(config, config.boards[0].name) as station:
        station.flash(PERSON_DETECT.read_bytes(), source="person_detect")
        with station.dut() as dut, station.scope() as scope:
            assert dut.require_model().model_ok
            m = measure_power(dut, scope, station.spec, CampaignOptions().settings())
    figures = m.figures()
    assert m.gap_ms == 1000 and m.n == 2 and len(m.trials) == 5
    assert all(t.void is None and t.report.valid for t in m.trials), [t.void or t.report.reason for t in m.trials]
    for metric in ("latency_ms", "latency_p95_ms", "power_mw", "idle_power_mw", "energy_mj", "pulse_width_ms"):
        assert figures[metric].valid and figures[metric].trials == 5, (metric, figures[metric])
    latency_ms = figures["latency_ms"].value
    assert latency_ms == pytest.approx(expected_ms, rel=0.02)  # the virtual board's cost model
    assert figures["pulse_width_ms"].value == pytest.approx(latency_ms, rel=0.02)  # the scope agrees
    power_mw, energy_mj = figures["power_mw"].value, figures["energy_mj"].value
    active_mw = figures["active_power_mw"].value
    assert figures["idle_power_mw"].value < power_mw < active_mw
    assert energy_mj == pytest.approx(active_mw * latency_ms / 1e3, rel=0.02)  # energy = active power x time
    assert math.isfinite(energy_mj) and energy_mj > 0
