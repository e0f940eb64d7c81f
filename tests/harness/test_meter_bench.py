"""Power meters on the virtual bench: each example bench (a simulated PPK2, Otii or Joulescope beside the
simulated scope on one virtual ESP32) measures through the same campaign, and the meter's energy per
inference matches the scope's on the same runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hil.campaign import Campaign, CampaignOptions
from hil.results import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = {"version": 1, "defaults": {"energy_mj": {"max": 1000}, "latency_ms": {"max": 1000}}}


def _campaign(ws: Path, bench: Path, **kw) -> Campaign:
    return Campaign(CampaignOptions(bench=bench, budgets=ws / "budgets.yaml", models_config=ws / "variants.yaml",
                                    models_dir=ws / "models", results_db=ws / "r.sqlite", report_dir=ws / "report",
                                    trials=2, window=1.0, warmup=1, accuracy_samples=20,  # > the PPK2 backlog
                                    variants=["baseline-int8"], **kw))


@pytest.fixture
def workspace(baseline_build: Path, tmp_path: Path) -> Path:
    shutil.copytree(baseline_build, tmp_path, dirs_exist_ok=True)
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(BUDGETS))
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("meter", ["ppk2", "otii", "joulescope"])
def test_the_meter_and_the_scope_agree_on_energy_per_inference(workspace: Path, meter: str) -> None:
    campaign = _campaign(workspace, ROOT / "examples" / f"bench-esp32-{meter}.yaml")
    try:
        figures = campaign.measure("baseline-int8")
    finally:
        campaign.close()
    assert figures["energy_mj"].valid and figures["meter_energy_mj"].valid, figures["meter_energy_mj"]
    assert abs(figures["meter_vs_scope_energy_pct"].value) < 1.0
    assert figures["meter_energy_mj"].value == pytest.approx(figures["energy_mj"].value, rel=0.01)
    with ResultsStore(workspace / "r.sqlite") as store:
        run = store.runs()[-1]
    assert meter.upper()[:4] in str(run.meta.get("meter_idn", "")).upper() or run.meta.get("meter_idn")


@pytest.mark.slow
def test_a_meter_alone_measures_when_the_bench_has_no_scope(workspace: Path) -> None:
    bench = yaml.safe_load((ROOT / "examples" / "bench-esp32-ppk2.yaml").read_text())
    bench["scope"] = None
    (workspace / "meter-only.yaml").write_text(yaml.safe_dump(bench))
    campaign = _campaign(workspace, workspace / "meter-only.yaml")
    try:
        figures = campaign.measure("baseline-int8")
    finally:
        campaign.close()
    assert figures["energy_mj"].valid and figures["pulse_vs_latency_pct"].value < 2.0
    assert "meter_energy_mj" not in figures  # nothing to compare with
    assert figures["latency_ms"].value == pytest.approx(figures["pulse_width_ms"].value, rel=0.02)
