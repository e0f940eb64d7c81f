"""The campaign without pytest: `hil measure` measures, judges and records variants on the virtual bench.

Also: per-board settings resolved once (`StationSpec`) reach the virtual bench and the measurement, and bad
options are refused before anything is measured.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from hil.bench import load_bench, parse_bench
from hil.campaign import Campaign, CampaignOptions
from hil.cli import main
from hil.errors import HilError
from hil.results import ResultsStore
from models.artifacts import load_artifacts
from tests.conftest import TINY_CONFIG
from tests.harness.helpers import BUDGETS, ROOT, make_workspace, measure_args


@pytest.fixture
def workspace(baseline_build: Path, tmp_path: Path) -> Path:
    """A copy of the built baseline variants, their cache and matrix (a campaign rewrites the folder), budgets
    and a bench of one virtual board."""
    return make_workspace(baseline_build, tmp_path)


@pytest.mark.slow
def test_hil_measure_records_judges_and_reports_without_pytest(workspace: Path, capsys) -> None:
    rc = main(measure_args(workspace, "--variants=baseline-int8,baseline-no_opt,baseline-dynamic"))
    out = capsys.readouterr().out
    assert rc == 1, out  # baseline-no_opt breaks its 1 KB flash budget
    assert "baseline-int8: passed" in out
    assert "baseline-no_opt: FAILED 1/" in out and "flash_kb = " in out and "exceeds budget max 1.000 KB" in out
    assert "baseline-dynamic: skipped: baseline-dynamic is not deployable on TFLite Micro" in out
    with ResultsStore(workspace / "results.sqlite") as store:
        (run,) = store.runs()
        assert run.status == "failed" and run.simulated
        figures = {m.metric: m for m in store.measurements(run.id) if m.variant == "baseline-int8"}
        assert {"latency_ms", "energy_mj", "power_mw", "accuracy", "flash_kb", "arena_kb"} <= set(figures)
        assert all(figures[m].valid for m in ("latency_ms", "energy_mj", "accuracy"))
        assert 0 < figures["latency_ms"].value < 50 and figures["energy_mj"].value > 0
        outcomes = {(o.variant, o.metric): o for o in store.outcomes(run.id)}
        assert outcomes[("baseline-int8", "energy_mj")].outcome == "passed"
        assert outcomes[("baseline-int8", "pulse_vs_latency_pct")].outcome == "passed"
        assert outcomes[("baseline-no_opt", "flash_kb")].outcome == "failed"
        assert outcomes[("baseline-dynamic", "latency_ms")].outcome == "skipped"
        assert {o.test for o in outcomes.values()} == {"hil measure"}
        recorded = {r.variant: r for r in store.variants(run.id)}
        blob = load_artifacts(workspace / "models")["baseline-int8"].model_bytes()
        assert recorded["baseline-int8"].sha256 == hashlib.sha256(blob).hexdigest()
        assert recorded["baseline-int8"].factory["size_bytes"] == len(blob)
        assert recorded["baseline-dynamic"].factory["tflm_ok"] is False
    md = (workspace / "report" / "report.md").read_text()
    assert "FAIL 1/" in md and "skipped: baseline-dynamic is not deployable" in md


@pytest.mark.slow
def test_a_cached_model_changed_on_disk_is_refused_not_measured(workspace: Path) -> None:
    """Bytes of a cached .tflite changed after the factory built it: the sha256 no longer matches, no figure."""
    blob = load_artifacts(workspace / "models")["baseline-int8"].model_bytes()
    (cached,) = [p for p in (workspace / "cache").rglob("model.tflite") if p.read_bytes() == blob]
    cached.write_bytes(blob[:-1] + bytes([blob[-1] ^ 0xFF]))
    campaign = Campaign(_options(workspace, variants=["baseline-int8"]))
    try:
        with pytest.raises(HilError, match="changed after the factory built it"):
            campaign.measure("baseline-int8")
    finally:
        campaign.close()
    with ResultsStore(workspace / "results.sqlite") as store:
        rows = store.measurements(store.runs()[-1].id)
    assert rows and all(not m.valid and "changed after the factory built it" in m.reason for m in rows)


def _options(ws: Path, **kw) -> CampaignOptions:
    defaults = dict(bench=ws / "bench.yaml", budgets=ws / "budgets.yaml", models_config=ws / "variants.yaml",
                    models_dir=ws / "models", results_db=ws / "results.sqlite", report_dir=ws / "report",
                    trials=2, window=0.2, warmup=1, accuracy_samples=20)
    return CampaignOptions(**{**defaults, **kw})


@pytest.mark.slow
def test_a_boards_own_scope_channels_and_high_side_wiring_are_honoured(workspace: Path) -> None:
    """A board with its own scope on CH3/CH4 and a high-side shunt: the virtual bench wires CH3/CH4 and the
    capture is analysed as high-side; the bench's top-level scope (CH1/CH2) is not used."""
    bench = yaml.safe_load((workspace / "bench.yaml").read_text())
    board = bench["boards"][0]
    board["baud"] = 921600
    board["scope"] = {"resource": "virtual", "sim_dialect": "keysight", "shunt_channel": 3, "marker_channel": 4}
    board["shunt"] = {"ohms": 0.1, "wiring": "high_side"}
    (workspace / "own.yaml").write_text(yaml.safe_dump(bench))
    spec = load_bench(workspace / "own.yaml").station()
    assert (spec.scope.shunt_channel, spec.scope.marker_channel, spec.shunt.wiring, spec.baud) == (3, 4, "high_side",
                                                                                                 921600)
    campaign = Campaign(_options(workspace, variants=["baseline-int8"], bench=workspace / "own.yaml"))
    try:
        figures = campaign.measure("baseline-int8")
    finally:
        campaign.close()
    assert figures["energy_mj"].valid and figures["pulse_vs_latency_pct"].value < 2.0
    with ResultsStore(workspace / "results.sqlite") as store:
        run = store.runs()[-1]
        power = next(a.path for a in store.artifacts(run.id, "baseline-int8", "power"))
    analysis = json.loads(power.read_text())
    assert analysis["wiring"] == "high_side" and analysis["parameters"]["shunt_ohms"] == 0.1
    assert analysis["provenance"]["shunt"]["channel"] == 3 and analysis["provenance"]["marker"]["channel"] == 4
    assert "KEYSIGHT" in analysis["provenance"]["shunt"]["idn"].upper()


def test_the_bench_resolves_each_boards_settings_once() -> None:
    bench = parse_bench({"supply_volts": 5.0, "shunt": {"ohms": 0.05},
                         "boards": [{"name": "a"}, {"name": "b", "supply_volts": 3.3, "shunt": {"ohms": 1.0},
                                                    "scope": {"shunt_channel": 3, "marker_channel": 4}}]})
    a, b = bench.stations()
    assert (a.supply_volts, a.shunt.ohms, a.scope.shunt_channel) == (5.0, 0.05, 1)
    assert (b.supply_volts, b.shunt.ohms, b.scope.shunt_channel, b.scope.marker_channel) == (3.3, 1.0, 3, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"trials": 0}, "--trials must be a whole number from 1 to 1000, got 0"),
        ({"trials": 10**6}, "--trials must be a whole number from 1 to 1000, got 1000000"),
        ({"window": 0.0}, "--window must be a number of seconds above 0 and at most 3600, got 0.0"),
        ({"window": float("inf")}, "--window must be a number of seconds above 0 and at most 3600, got inf"),
        ({"window": float("nan")}, "--window must be a number of seconds above 0 and at most 3600, got nan"),
        ({"window": -1.0}, "--window must be a number of seconds above 0 and at most 3600, got -1.0"),
        ({"window": 1e9}, "--window must be a number of seconds above 0 and at most 3600, got 1000000000.0"),
        ({"inferences": -5}, "--inferences must be a whole number from 1 to 1000, got -5"),
        ({"inferences": 1001}, "--inferences must be a whole number from 1 to 1000, got 1001"),
        ({"accuracy_samples": -1}, "--accuracy-samples must be zero or a positive whole number, got -1"),
        ({"warmup": -1}, "--warmup must be a whole number from 0 to 100, got -1"),
        ({"warmup": 101}, "--warmup must be a whole number from 0 to 100, got 101"),  # the firmware's `infer N W`
        ({"trials": True}, "--trials must be a whole number from 1 to 1000, got True"),
        ({"variants": []}, "--variants names no variant"),
        ({"gate": ["energy_mj=5%"]}, "--gate needs --baseline"),
        ({"gate": ["energy_mj=abc"], "baseline": "latest-main"}, "bad tolerance 'energy_mj=abc'"),
        ({"gate": ["nosuch=5%"], "baseline": "latest-main"}, "unknown metric 'nosuch'"),
    ],
)
def test_bad_options_are_refused_before_anything_is_measured(change: dict, message: str, tmp_path: Path) -> None:
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    campaign = Campaign(CampaignOptions(models_config=tmp_path / "variants.yaml", results_db=tmp_path / "r.sqlite",
                                        budgets=ROOT / "budgets.yaml", **change))
    with pytest.raises(HilError, match=message.replace("(", r"\(").replace("'", ".")):
        campaign.plan()
    assert not (tmp_path / "r.sqlite").exists()


def test_an_empty_budget_file_is_refused_rather_than_passing_green(tmp_path: Path) -> None:
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    (tmp_path / "budgets.yaml").write_text("")
    campaign = Campaign(CampaignOptions(models_config=tmp_path / "variants.yaml", budgets=tmp_path / "budgets.yaml"))
    with pytest.raises(HilError, match="budgets.yaml: no budget applies to the selected variants"):
        campaign.plan()


@pytest.mark.parametrize("option", ["--report-dir", "--models-dir", "--results-db"])
def test_unusable_output_paths_are_one_line_before_anything_is_measured(option: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump({"version": 1, "defaults": BUDGETS["defaults"]}))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    paths = {"--report-dir": tmp_path / "report", "--models-dir": tmp_path / "models",
             "--results-db": tmp_path / "results.sqlite"}
    paths[option] = blocker / "sub" if option != "--results-db" else blocker  # a folder under a file; a non-db
    argv = ["measure", f"--models-config={tmp_path / 'variants.yaml'}", f"--budgets={tmp_path / 'budgets.yaml'}",
            *(f"{k}={v}" for k, v in paths.items())]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hil: error: {option} " if option != "--results-db" else f"hil: error: {blocker}")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "models").exists()  # nothing was built


def test_pytest_refuses_an_unwritable_report_dir_before_the_session(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "a-file").write_text("x")
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "-q", "tests/hil",
                        f"--report-dir={tmp_path / 'a-file' / 'report'}", f"--results-db={tmp_path / 'r.sqlite'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"hil: --report-dir {tmp_path / 'a-file' / 'report'}: not a writable folder" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.slow
def test_two_runs_with_other_variants_in_one_checkout_do_not_pull_files_from_under_each_other(
    workspace: Path,
) -> None:
    """Run B rebuilds the shared factory folder with only its variants while run A is still measuring."""
    a = Campaign(_options(workspace, variants=["baseline-int8"], results_db=workspace / "a.sqlite"))
    b = Campaign(_options(workspace, variants=["baseline-no_opt"], results_db=workspace / "b.sqlite"))
    try:
        a.artifacts()
        b.artifacts()  # the folder now holds only baseline-no_opt
        assert "baseline-int8" not in load_artifacts(workspace / "models")
        figures = a.measure("baseline-int8")
    finally:
        a.close()
        b.close()
    assert figures["energy_mj"].valid and figures["accuracy"].valid and figures["flash_kb"].value > 0


def test_a_bench_outside_the_checkout_after_a_space_gets_the_form_that_works(tmp_path: Path) -> None:
    import subprocess
    import sys

    bench = tmp_path / "bench.yaml"
    shutil.copyfile(ROOT / "bench.yaml", bench)
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "--collect-only",
                        "-q", "--bench", str(bench)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4
    assert f"hil: --bench {bench}: a path outside {ROOT}" in r.stderr and f"write --bench={bench}" in r.stderr
    ok = subprocess.run([sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "--collect-only",
                         "-q", f"--bench={bench}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "tests collected" in ok.stdout


@pytest.mark.slow
def test_hil_measure_and_pytest_give_the_same_figures_to_the_last_digit(workspace: Path, capsys) -> None:
    """One code path, one simulation clock: the same variant, options and seed give identical figures."""
    import subprocess
    import sys

    args = measure_args(workspace, "--variants=baseline-int8")
    assert main(args) == 0, capsys.readouterr().out
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "-q", "tests/hil",
                        *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    with ResultsStore(workspace / "results.sqlite") as store:
        first, second = ({m.metric: m.value for m in store.measurements(run.id)} for run in store.runs())
    assert first.keys() == second.keys() and {"energy_mj", "latency_ms", "power_mw"} <= first.keys()
    assert first == second


def test_both_command_lines_default_to_the_campaign_defaults(pytestconfig: pytest.Config) -> None:
    """`hil measure` with no option and pytest without hil options give CampaignOptions() exactly."""
    from hil.cli import build_parser

    def options(namespace) -> CampaignOptions:
        return CampaignOptions.from_values(lambda flag: getattr(namespace, flag.lstrip("-").replace("-", "_")))

    assert options(build_parser().parse_args(["measure"])) == CampaignOptions()
    assert options(pytestconfig._parser.parse_known_args([])) == CampaignOptions()


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9"])
def test_an_impossible_window_is_one_usage_line_from_both_command_lines(value: str, tmp_path: Path, capsys) -> None:
    """`--window inf` passed the check and died after flashing (OverflowError); now neither command line starts."""
    import subprocess
    import sys

    db = tmp_path / "r.sqlite"
    assert main(["measure", f"--window={value}", "--variants=baseline-int8", f"--results-db={db}",
                 f"--report-dir={tmp_path / 'report'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: --window must be a number of seconds above 0 and at most 3600, got ")
    assert err.count("\n") == 1 and "Traceback" not in err
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "-q", "tests/hil",
                        f"--window={value}", f"--results-db={db}", f"--report-dir={tmp_path / 'report'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]  # pytest's usage error, not 14 test errors
    assert "hil: --window must be a number of seconds above 0 and at most 3600" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not db.exists()  # no run was started, nothing was touched


@pytest.mark.slow
def test_a_campaign_that_crashes_is_recorded_failed_keeps_its_figures_and_is_no_baseline(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """An exception escaping a variant's measurement (a bug, e.g. the OverflowError of `--window inf`): the run
    is `failed`, what it measured before the crash stays, and `latest-main` keeps the last run that did not crash."""
    import hil.measure

    monkeypatch.setenv("HIL_GIT_BRANCH", "main")
    args = measure_args(workspace, "--variants=baseline-int8")
    assert main(args) == 0, capsys.readouterr().out

    def crash(*_args, **_kw):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(hil.measure, "measure_power", crash)
    with pytest.raises(OverflowError):
        main(args)
    with ResultsStore(workspace / "results.sqlite") as store:
        good, crashed = store.runs()
        assert (good.status, crashed.status) == ("passed", "failed")
        rows = {m.metric: m for m in store.measurements(crashed.id)}
        assert rows["flash_kb"].valid and rows["arena_kb"].valid  # measured before the crash: kept
        assert not rows["energy_mj"].valid and "unexpected OverflowError" in rows["energy_mj"].reason
        assert not any(m.valid for k, m in rows.items() if k in ("latency_ms", "energy_mj", "accuracy"))
        assert store.resolve("latest-main") == good.id


@pytest.mark.slow
def test_a_session_whose_tests_passed_but_a_variant_crashed_is_not_a_pass(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin's path: it closes the run with its exit status; a crash recorded by any process overrides a
    green one (e.g. the crashed variant's tests were deselected, or ran on another xdist worker)."""
    import hil.measure

    def crash(*_args, **_kw):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(hil.measure, "measure_power", crash)
    campaign = Campaign(_options(workspace, variants=["baseline-int8"]), worker=0)  # a worker records the crash
    try:
        with pytest.raises(OverflowError):
            campaign.measure("baseline-int8")
    finally:
        campaign.close()
    controller = Campaign(_options(workspace, variants=["baseline-int8"]), session=campaign.session)
    finish = controller.finish("passed")  # what pytest_sessionfinish passes for exit status 0
    assert finish.status == "failed"
    with ResultsStore(workspace / "results.sqlite") as store:
        assert store.run(finish.run_id).status == "failed"


def test_hil_measure_refuses_a_bad_bench_file_before_building_any_model(tmp_path: Path, capsys) -> None:
    """The factory (minutes of training on a cold cache) must not run for a bench file that cannot be used."""
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump(BUDGETS))
    (tmp_path / "bench.yaml").write_text("version: 1\nboards:\n  - name: esp32-0\n    chip: esp33\n")
    rc = main(measure_args(tmp_path, "--variants=baseline-int8"))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hil: error: ") and "bench.yaml" in err and err.count("\n") == 1
    assert not (tmp_path / "models").exists() and not (tmp_path / "results.sqlite").exists()
