"""The emulated board kind (`port: qemu`): the firmware's STM32F405 port in qemu-system-arm behind a Station,
measured by the same campaign as any board; honest about what an emulated fake-runtime build can tell."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from hil.bench import load_bench, parse_bench
from hil.campaign import Campaign, CampaignOptions
from hil.errors import HilError
from hil.measure import Settings, measure_latency
from hil.results import ResultsStore
from hil.station import QemuStation, open_station

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench-qemu-stm32f405.yaml"
pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-g++") is None,
    reason="needs qemu-system-arm and arm-none-eabi-g++ (apt-get install qemu-system-arm gcc-arm-none-eabi "
    "libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib)",
)


def test_the_example_bench_is_an_emulated_stm32() -> None:
    bench = load_bench(EXAMPLE)
    assert bench.is_emulated and bench.boards[0].cpu_mhz == 168
    assert isinstance(open_station(bench), QemuStation)
    with pytest.raises(HilError, match="port qemu runs the STM32F405 port"):
        parse_bench({"boards": [{"port": "qemu", "chip": "esp32"}]})


def test_the_emulated_board_runs_the_flashed_model_with_repeatable_latency(tiny_variants) -> None:
    import zlib

    blob = tiny_variants["baseline-int8"].read_bytes()
    with open_station(load_bench(EXAMPLE)) as station:
        station.flash(blob, arena_bytes=8192, source="baseline-int8")
        with station.dut() as dut:
            hello = dut.hello_info
            assert hello.board == "stm32f405" and hello.model.bytes == len(blob)
            assert int(hello.model.crc32, 16) == zlib.crc32(blob)
            settings = Settings(inferences=5, warmup=1, trials=2)
            first, second = measure_latency(dut, settings), measure_latency(dut, settings)
        with pytest.raises(HilError, match="emulated in QEMU: there is no current to measure"):
            station.scope()
    assert first["latency_ms"].value > 0 and first["latency_ms"].spread == 0.0
    assert first["latency_ms"].value == second["latency_ms"].value  # -icount: instruction time, not wall time


def test_a_model_too_big_for_the_stm32_model_region_names_the_linker_script(sine_model: bytes) -> None:
    from tests.harness.sim_models import with_ballast

    big = with_ballast(sine_model, 600 * 1024)
    with open_station(load_bench(EXAMPLE)) as station:
        with pytest.raises(HilError, match=r"partition holds 524288 bytes; enlarge it in firmware/stm32f405/"
                                           r"stm32f405\.ld") as err:
            station.flash(big, source="ballast")
    assert "partitions.csv" not in str(err.value)


def test_a_fake_runtime_build_records_only_what_is_the_models(baseline_build: Path, tmp_path: Path) -> None:
    shutil.copytree(baseline_build, tmp_path, dirs_exist_ok=True)
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(
        {"version": 1, "defaults": {"latency_ms": {"max": 50}, "energy_mj": {"max": 1}, "flash_kb": {"max": 500}}}))
    options = CampaignOptions(bench=EXAMPLE, budgets=tmp_path / "budgets.yaml",
                              models_config=tmp_path / "variants.yaml", models_dir=tmp_path / "models",
                              results_db=tmp_path / "r.sqlite", trials=2,
                              window=0.1, warmup=1, accuracy_samples=10, variants=["baseline-int8"])
    campaign = Campaign(options)
    try:
        figures = campaign.measure("baseline-int8")
    finally:
        campaign.close()
    assert figures["flash_kb"].valid and not figures["flash_kb"].skipped
    host = ("flash_kb", "accuracy_host")  # the image size and the factory's own accuracy are the model's
    assert all(f.skipped and "links the fake model runner" in f.reason for m, f in figures.items() if m not in host)
    verdicts = campaign.verdicts("baseline-int8", figures)
    assert verdicts["flash_kb"].outcome == "passed" and verdicts["latency_ms"].outcome == "skipped"
    assert verdicts["output_agreement"].outcome == "skipped"
    with ResultsStore(tmp_path / "r.sqlite") as store:
        run = store.runs()[-1]
        rows = {m.metric: m for m in store.measurements(run.id)}
    assert run.simulated and run.meta["emulated"] is True
    assert rows["flash_kb"].valid and rows["flash_kb"].value > 0  # the image size is the model's
    assert rows["latency_ms"].skipped and "fake model runner" in rows["latency_ms"].reason
    assert rows["energy_mj"].skipped


@pytest.mark.slow
def test_pytest_m_hil_on_the_emulated_bench_skips_with_the_reason_never_fakes(baseline_build: Path,
                                                                             tmp_path: Path) -> None:
    """`pytest -m hil --bench examples/bench-qemu-stm32f405.yaml` end to end: flash size checked, every other
    budget skipped with the reason (this CI's firmware links the fake model runner), exit 0."""
    import subprocess
    import sys

    shutil.copytree(baseline_build, tmp_path, dirs_exist_ok=True)
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(
        {"version": 1, "defaults": {"latency_ms": {"max": 50}, "energy_mj": {"max": 1}, "flash_kb": {"max": 500}}}))
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "-q", "-rs", "tests/hil",
         f"--bench={EXAMPLE}", f"--budgets={tmp_path / 'budgets.yaml'}",
         f"--models-config={tmp_path / 'variants.yaml'}", f"--models-dir={tmp_path / 'models'}",
         f"--results-db={tmp_path / 'r.sqlite'}",
         f"--report-dir={tmp_path / 'report'}", "--variants=baseline-int8", "--trials=2", "--window=0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout and "links the fake model runner" in r.stdout  # flash_kb, the flashed model
    assert "(emulated)" in (tmp_path / "report" / "report.md").read_text()


def test_a_tflm_build_that_fails_is_an_error_not_a_skip(tmp_path: Path) -> None:
    """A bench that names a TFLM library the harness cannot link is a mistake to fix: one HilError naming the
    library, never the 'bench unavailable' skip a missing toolchain gets."""
    from hil.station import AppUnavailable

    board = {"name": "q", "chip": "stm32f405", "port": "qemu",
             "tflm": {"dir": str(tmp_path), "lib": str(tmp_path / "libtensorflow-microlite.a")}}
    station = open_station(parse_bench({"boards": [board]}))
    with pytest.raises(HilError, match=r"TFLM library .*libtensorflow-microlite\.a does not exist") as err:
        station.start()
    assert not isinstance(err.value, AppUnavailable)
