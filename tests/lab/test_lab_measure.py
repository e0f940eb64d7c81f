"""`hil measure` on the virtual lab: a bench with `lab:` reserves places through labgrid, measures the variants
as places free up (one campaign per place, one run), records where each was measured, and, when an exporter dies
mid-measurement, measures the cut variant again elsewhere with nothing of the cut attempt left valid."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from hil.campaign import CampaignOptions
from hil.lab.campaign import run_on_lab
from hil.lab.virtual import VirtualLab
from hil.results import ResultsStore
from tests.harness.helpers import BUDGETS, quiet_bench
from tests.lab.conftest import lab_or_skip, who

VARIANTS = ["baseline-int8", "baseline-no_opt"]


def _workspace(build: Path, folder: Path, address: str, places: int | str) -> CampaignOptions:
    shutil.copytree(build, folder, dirs_exist_ok=True)
    bench = quiet_bench()
    bench["boards"] = bench["boards"][:1]
    bench["lab"] = {"coordinator": address, "tags": {"board": "esp32"}, "places": places, "max_failures": 1}
    (folder / "bench.yaml").write_text(yaml.safe_dump(bench))
    (folder / "budgets.yaml").write_text(yaml.safe_dump({**BUDGETS, "variants": {}}))
    return CampaignOptions(bench=folder / "bench.yaml", budgets=folder / "budgets.yaml",
                           models_config=folder / "variants.yaml", models_dir=folder / "models",
                           results_db=folder / "r.sqlite", report_dir=folder / "report", trials=2, window=0.2,
                           warmup=1, accuracy_samples=10, variants=VARIANTS)


@pytest.mark.slow
def test_hil_measure_on_the_lab_measures_every_variant_and_records_its_place(baseline_build: Path,
                                                                            tmp_path: Path) -> None:
    lab_or_skip()
    held: list[dict] = []
    with VirtualLab(time_scale=0.0) as lab:
        options = _workspace(baseline_build, tmp_path / "ws", lab.address, 2)

        def progress(line: str) -> None:
            if "flashing" in line and not held:
                held.append(who(lab.address))  # the real labgrid-client, during the run

        finish, verdicts, report = run_on_lab(options, progress=progress)
        ids = {p.name: p.tags["board_id"] for p in lab.places}
        assert who(lab.address) == {}  # everything released at the end
    assert finish.status == "passed", verdicts
    assert held and len(held[0]) == 2 and all("hil" in holder for holder in held[0].values())
    with ResultsStore(options.results_db) as store:
        (run,) = store.runs()
        where = run.meta["lab"]["variants"]
        assert set(where) == set(VARIANTS)
        for variant in VARIANTS:
            place = where[variant]["place"]
            assert where[variant]["host"] == "127.0.0.1" and where[variant]["board_id"] == ids[place]
            figures = {m.metric: m for m in store.measurements(run.id) if m.variant == variant}
            assert figures["latency_ms"].valid and figures["energy_mj"].valid and figures["accuracy"].valid
        assert run.meta["simulated"] is True  # the virtual lab's boards say so in hello
    assert report.dispatch_overhead_s < 1.0


@pytest.mark.slow
def test_a_dead_exporter_cuts_its_variant_which_is_measured_again_elsewhere(baseline_build: Path,
                                                                            tmp_path: Path) -> None:
    """The exporter of the first place to start a capture is killed: that place leaves the run with the reason,
    the variant is measured again on a place of the other exporter, and its recorded figures are the second
    attempt's."""
    lab_or_skip()
    killed: list[str] = []
    lock = threading.Lock()
    with VirtualLab(time_scale=0.0) as lab:
        options = _workspace(baseline_build, tmp_path / "ws", lab.address, "all")

        def progress(line: str) -> None:
            with lock:
                if not killed and "trial 1/" in line and line.startswith("vlab-"):
                    place = line.split(":")[0]  # vlab-E-K: place K of exporter E
                    killed.append(place)
                    lab.kill_exporter(f"vlab-exporter-{place.split('-')[1]}")
                    killed.append(datetime.now(UTC).isoformat(timespec="milliseconds"))  # as the store writes it

        finish, verdicts, report = run_on_lab(options, progress=progress)
    assert killed, "no capture started"
    exporter = killed[0].split("-")[1]
    dead = f"vlab-exporter-{exporter}"
    # every place of the dead exporter that was measuring is cut (the one that triggered the kill among them)
    cut = {c.where.place: c.key for c in report.cut}
    assert killed[0] in cut and all(p.split("-")[1] == exporter for p in cut), cut
    assert all(dead in report.lost[p] for p in cut)
    with ResultsStore(options.results_db) as store:
        (run,) = store.runs()
        lab_meta = run.meta["lab"]
        assert {c["variant"] for c in lab_meta["cut"]} == set(cut.values())
        for variant in cut.values():
            again = lab_meta["variants"][variant]["place"]
            assert again.split("-")[1] != exporter  # measured again on the exporter that still runs
            figures = {m.metric: m for m in store.measurements(run.id) if m.variant == variant}
            assert figures["latency_ms"].valid and figures["energy_mj"].valid and figures["accuracy"].valid
            # every valid figure of a cut variant was recorded after the kill: nothing of the cut attempt stands
            stale = [m.metric for m in figures.values() if m.valid and m.recorded_at < killed[1]]
            assert not stale, (variant, stale)
    assert finish.status == "passed", verdicts
    md = (options.report_dir / "report.md").read_text()
    assert f"cut: {cut[killed[0]]} on {killed[0]}" in md and dead in md  # the report names the lost place and why


def test_the_queue_starts_the_slowest_variants_first(baseline_build: Path, tmp_path: Path) -> None:
    """The float model (several times the int8 one's latency on the virtual ESP32) goes first, the variant TFLM
    cannot run last: no place is left with a long measurement while the others wait."""
    from hil.campaign import Campaign
    from hil.lab.campaign import longest_first
    from hil.profiling import estimate

    options = _workspace(baseline_build, tmp_path / "ws", "127.0.0.1:1", 1)
    campaign = Campaign(replace(options, variants=["baseline-int8", "baseline-dynamic", "baseline-no_opt"]))
    arts = campaign.artifacts()
    slow, fast = (estimate(arts[v].model_bytes()).total_us for v in ("baseline-no_opt", "baseline-int8"))
    assert slow > 2 * fast
    assert longest_first(campaign, ["baseline-int8", "baseline-dynamic", "baseline-no_opt"]) == [
        "baseline-no_opt", "baseline-int8", "baseline-dynamic"]
