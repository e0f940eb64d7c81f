"""The virtual board against published ESP32-family figures: TFLM's person_detect on six (chip, kernels) pairs.

Published: esp-tflite-micro README, "Performance Comparison" (invoke() time of the person_detection example).
The model file is TFLM's own, from ../shared/data; the tests skip with the reason where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.bench import parse_bench
from hil.protocol import DutClient
from hil.sim.bench import VirtualBench
from hil.sim.board import VirtualBoard

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PERSON_DETECT = SHARED / "person_detect.tflite"
pytestmark = pytest.mark.skipif(
    not PERSON_DETECT.is_file(), reason=f"{PERSON_DETECT} is absent (the shared data folder ../shared/data)"
)

# chip, kernels, clock, published invoke() ms -- typed in from the README, not read from calibration.yaml.
# "fitted": the one figure per chip without kernel-level data that sets its scale (reproduced by construction);
# "held out": a prediction. The two TFLM-reference figures on Xtensa are known misses of the model, at 0.68x of
# the published time (calibration.yaml, README "Calibration"): "known miss" checks the miss is the documented one,
# so the day the model changes either way the test says so and the README's table must follow.
PUBLISHED = [
    pytest.param("esp32", "esp-nn", 240, 380.0, "fitted"),
    pytest.param("esp32", "reference", 240, 4084.0, "known miss"),
    pytest.param("esp32s3", "esp-nn", 240, 54.0, "held out"),
    pytest.param("esp32s3", "reference", 240, 2300.0, "known miss"),
    pytest.param("esp32c3", "esp-nn", 160, 426.0, "fitted"),
    pytest.param("esp32c3", "reference", 160, 3355.0, "held out"),
]


@pytest.mark.parametrize(("chip", "kernels", "mhz", "published_ms", "status"), PUBLISHED)
def test_person_detect_latency_is_within_25_percent_of_the_published_figure(
    chip: str, kernels: str, mhz: int, published_ms: float, status: str
) -> None:
    """The virtual board's invoke() time: held-out figures within 25 %, the fitted one per chip within 1 %, the two
    known misses where the README says (0.6x to 0.75x)."""
    model = PERSON_DETECT.read_bytes()
    with VirtualBoard(model, chip=chip, kernels=kernels, boot_s=0.0).start(tcp_port=None) as b, \
            DutClient(b.pty_path) as c:  # fmt: skip
        hello = c.require_model()
        assert hello.cpu_mhz == mhz and hello.board == f"virtual-{chip}"
        r = c.infer(3, 1)
    ratio = r.mean_us / 1e3 / published_ms
    if status == "known miss":
        assert 0.6 < ratio < 0.75, f"{ratio:.3f}x: no longer the documented miss; update calibration.yaml and README"
    else:
        assert ratio == pytest.approx(1.0, rel=0.25 if status == "held out" else 0.01)


def test_the_calibration_marks_the_same_figures_fitted() -> None:
    from hil.sim.costmodel import load_calibration

    fitted = {(f["chip"], f["kernels"]) for f in load_calibration().published if f.get("fit")}
    assert fitted == {(p.values[0], p.values[1]) for p in PUBLISHED if p.values[4] == "fitted"}


def test_scope_sees_person_detect_pulses_of_the_published_width(tmp_path: Path) -> None:
    """Board + scope through the harness's own capture procedure: 380 ms pulses on the ESP32 with ESP-NN."""
    from hil.measure import Settings, measure_power
    from instruments.scope import open_scope

    config = parse_bench({"boards": [{"name": "b", "chip": "esp32", "kernels": "esp-nn"}]})
    with VirtualBench(config, PERSON_DETECT, boot_s=0.0) as vb, DutClient(vb.port) as c, \
            open_scope(vb.resource) as scope:  # fmt: skip
        m = measure_power(c, scope, vb.spec, Settings(trials=2, warmup=1, window_s=1.0))
    f = m.figures()
    assert f["pulse_width_ms"].valid and f["pulse_width_ms"].value == pytest.approx(380, rel=0.25)
    assert f["pulse_vs_latency_pct"].value < 0.5
