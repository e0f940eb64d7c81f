"""The budget tests users run: `pytest -m hil` measures every variant on the bench and checks its budgets.

Parametrized by the `hil` plugin over variant x budget (ids like `test_budget[pruned-int8-energy_mj]`) and
variant x cross-check (`test_cross_check[pruned-int8-pulse_vs_latency_pct]`). The verdicts come from the
same functions `hil measure` uses (`hil.budgets.judge`, `hil.campaign.cross_checks`). Variants TFLite Micro
cannot run are skipped with the runtime's reason.
"""

from __future__ import annotations

import zlib

import pytest

from hil.budgets import judge

pytestmark = pytest.mark.hil


def _record(record_property, variant: str, metric: str, figure, simulated: bool) -> None:
    from hil.metrics import metric as lookup

    record_property("variant", variant)
    record_property("metric", metric)
    record_property("value", figure.value)
    record_property("unit", lookup(metric).unit)
    record_property("trials", figure.trials)
    record_property("spread", figure.spread)
    record_property("simulated", simulated)


def test_budget(variant: str, metric: str, measurement, budgets, bench, record_property) -> None:
    """One budget of one variant: the median measured value is within the limit."""
    figure = measurement[metric]
    limit = budgets.for_variant(variant)[metric]
    _record(record_property, variant, metric, figure, bench.is_virtual)
    record_property("budget", limit.describe())
    verdict = judge(limit, figure.value, valid=figure.valid, reason=figure.reason, skipped=figure.skipped)
    if verdict.outcome == "skipped":
        pytest.skip(verdict.message)
    if verdict.failed:
        pytest.fail(verdict.message, pytrace=False)


def test_cross_check(variant: str, check: str, measurement, check_verdict, bench, record_property) -> None:
    """Scope pulse width vs the board's reported latency, and device outputs vs the host TFLM runtime's."""
    _record(record_property, variant, check, measurement[check], bench.is_virtual)
    if check_verdict.outcome == "skipped":
        pytest.skip(check_verdict.message)
    if check_verdict.failed:
        pytest.fail(check_verdict.message, pytrace=False)


def test_board_runs_the_flashed_variant(variant: str, board, variants, hil_dut) -> None:
    """The board reports the model the factory built for this variant (size and CRC32) and still answers."""
    from hil.dut.mlperf_tiny import HELLO_PROTOCOL

    blob = variants[variant].model_bytes()
    if board.model is None and board.protocol == HELLO_PROTOCOL:
        pytest.skip("an MLPerf Tiny DUT does not say which model it runs (its protocol has no model checksum)")
    assert board.model is not None, f"{variant}: the board reports no model"
    assert board.model.bytes == len(blob)
    assert int(board.model.crc32, 16) == zlib.crc32(blob)
    assert hil_dut.infer(2).n == 2
