"""The capture procedure's cross-checks: a capture that cannot be the run the board reports is void, measured
once more, and never becomes a valid figure (a board reset mid-capture, inferences the scope did not see)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.bench import load_bench
from hil.measure import Settings, measure_power
from hil.protocol import DutClient
from hil.sim.bench import VirtualBench
from instruments.scope import open_scope

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(warmup=0, trials=2, window_s=0.15)


def _measure(model: Path, fault: dict[str, int] | None = None, repeat: int = 1):
    """measure_power on a virtual bench; `fault` (command -> count) is armed right after the ranging capture
    `repeat` times, so it fires during the first trial's capture (and its re-measurement when repeat > 1)."""
    config = load_bench(ROOT / "bench.yaml")
    lines: list[str] = []
    with VirtualBench(config, model, boot_s=0.05) as vb, DutClient(vb.port, margin_s=0.5) as dut, \
            open_scope(vb.resource) as scope:

        def progress(line: str) -> None:
            lines.append(line)
            armed = sum("ranging" in x or "capture void" in x for x in lines)
            if fault and armed <= repeat and ("ranging" in line or "capture void" in line):
                vb.board.faults.reset_on.update(fault)

        m = measure_power(dut, scope, config.station(), SETTINGS, progress=progress)
        return m, lines, dut.resyncs


@pytest.mark.slow
def test_a_reset_during_a_capture_voids_it_and_the_remeasured_figure_is_right(tiny_variants) -> None:
    clean, _, _ = _measure(tiny_variants["baseline-int8"])
    faulty, lines, resyncs = _measure(tiny_variants["baseline-int8"], {"infer": 1})
    assert resyncs == 1
    assert any("capture void (the board reset or the serial link resynchronised" in x for x in lines), lines
    assert all(t.report.valid and t.void is None for t in faulty.trials)  # the void one was measured again
    assert all(t.report.n_inferences >= faulty.n for t in faulty.trials)
    power, reference = faulty.figures()["power_mw"].value, clean.figures()["power_mw"].value
    assert power == pytest.approx(reference, rel=0.05)


@pytest.mark.slow
def test_a_capture_void_twice_stays_invalid_with_its_reason(tiny_variants) -> None:
    m, lines, resyncs = _measure(tiny_variants["baseline-int8"], {"infer": 1}, repeat=2)
    assert resyncs == 2
    first = m.trials[0]
    assert not first.report.valid and first.void is not None
    assert first.report.reason.startswith("capture void: the board reset")
    assert m.trials[1].report.valid  # the next trial is clean again
    figures = m.figures()
    assert figures["power_mw"].valid and figures["power_mw"].trials == 1  # only the valid trial counts
