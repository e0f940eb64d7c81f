"""`hil history` and `hil gate` on a real results database: tables, exit codes 0/1/2, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil.cli import main
from hil.results import ResultsStore

VARIANTS = {"baseline-int8": (16.37, 22.59, 99.24), "distilled-int8": (4.447, 6.138, 99.5)}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Five main-branch runs; in the fifth, distilled-int8 is 10 % slower and baseline-float16 is invalid."""
    path = tmp_path / "reports" / "results.sqlite"
    with ResultsStore(path) as store:
        for k in range(5):
            run = store.start_run(bench="bench.yaml", simulated=True, git_commit=f"{k}" * 40, git_branch="main")
            for variant, (latency, energy, accuracy) in VARIANTS.items():
                slow = 1.10 if (k == 4 and variant == "distilled-int8") else 1.0
                store.record(run, variant, "latency_ms", latency * slow)
                store.record(run, variant, "energy_mj", energy)
                store.record(run, variant, "accuracy", accuracy)
            if k == 4:
                store.record(run, "baseline-float16", "latency_ms", None, valid=False, reason="E_MODEL: float16")
            store.finish_run(run, "passed")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_history_runs_lists_status_and_counts(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "history", "--db", str(db), "--runs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "run",
        "started",
        "(UTC)",
        "finished",
        "commit",
        "branch",
        "bench",
        "simulated",
        "status",
        "measurements",
        "invalid",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4", "5"]
    assert lines[5].split()[-2:] == ["7", "1"] and "passed" in lines[5] and "44444444" in lines[5]


def test_history_of_one_metric_has_a_column_per_variant(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "history", "--db", str(db), "--metric", "latency_ms")
    assert code == 0
    header, *rows = out.splitlines()
    assert "baseline-int8" in header and "distilled-int8" in header and "baseline-float16" in header
    assert len(rows) == 5 and all(" sim " in f" {r} " for r in rows)
    assert rows[4].split()[-3:] == ["16.37", "4.892", "INVALID"]


def test_history_of_one_variant_and_metric_shows_the_change(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "history", "--db", str(db), "--variant", "distilled-int8", "--metric", "latency_ms")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[-3:] == ["(ms)", "change", "%"]
    assert rows[3].split()[-1] in ("+0.00", "-0.00") and rows[4].split()[-1] == "+10.00"


def test_history_without_filters_has_a_row_per_run_and_variant(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "history", "--db", str(db), "--last", "2")
    assert code == 0
    header, *rows = out.splitlines()
    assert "latency_ms (ms)" in header and "energy_mj (mJ)" in header and "accuracy (%)" in header
    assert [r.split()[0] for r in rows] == ["4", "4", "5", "5", "5"]


def test_gate_passes_between_identical_runs(db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_json = tmp_path / "gate" / "gate.json"
    code, out, err = run_cli(
        capsys,
        "gate",
        "--db",
        str(db),
        "--run",
        "4",
        "--baseline",
        "1-3",
        "--tolerance",
        "energy_mj=5%",
        "latency_ms=5%",
        "--tolerance",
        "accuracy=0.5pp",
        "--json",
        str(out_json),
    )
    assert (code, err) == (0, "")
    assert "gate passed: 6 figures, 1 session(s)" in out and "REGRESSION" not in out
    data = json.loads(out_json.read_text())
    assert data["failed"] is False and data["window"] == [1, 2, 3] and data["run"]["id"] == 4


def test_gate_fails_on_regression_and_invalid(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "gate",
        "--db",
        str(db),
        "--baseline",
        "latest-main",
        "--tolerance",
        "energy_mj=5%",
        "latency_ms=5%",
        "accuracy=0.5pp",
    )
    assert code == 1
    assert "baseline 4 run(s) 1..4 on main" in out and "run      5:" in out
    regression = next(x for x in out.splitlines() if "REGRESSION" in x)
    assert regression.split()[:2] == ["distilled-int8", "latency_ms"]
    invalid = next(x for x in out.splitlines() if "INVALID" in x)
    assert invalid.startswith("baseline-float16") and "E_MODEL: float16" in invalid
    assert "gate FAILED: 1 REGRESSION, 1 INVALID of 7 figures" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gate", "--baseline", "1", "--tolerance", "energy_mj=lots"], "bad tolerance 'energy_mj=lots'"),
        (["gate", "--baseline", "42"], "no run 42"),
        (["gate", "--baseline", "yesterday"], "no finished run on branch yesterday before run 5"),
        (["gate", "--baseline", "3", "--run", "3"], "run 3 is the run being gated"),
        (["gate", "--baseline", "1-4", "--alpha", "2"], "--alpha 2.0: the false-alarm rate per merge"),
        (["history", "--metric", "speed"], "unknown metric 'speed'"),
        (["history", "--last", "-1"], "--last -1"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *argv[:1], "--db", str(db), *argv[1:])
    assert code == 2 and out == ""
    assert err.startswith("hil: error: ") and message in err and err.count("\n") == 1


def test_missing_database_is_a_user_error_and_is_not_created(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "none" / "results.sqlite"
    for argv in (["history", "--db", str(missing)], ["gate", "--db", str(missing), "--baseline", "1"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "no results database" in err
    assert not missing.parent.exists()


def test_installed_command_exit_codes_without_traceback(db: Path, tmp_path: Path) -> None:
    """The real entry point in a subprocess: 0 pass, 1 regression, 2 user error, and never a traceback."""

    def hil(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hil.cli", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=60
        )

    passed = hil("gate", "--db", str(db), "--run", "4", "--baseline", "1-3", "--tolerance", "latency_ms=5%")
    failed = hil("gate", "--db", str(db), "--baseline", "2-4", "--tolerance", "latency_ms=5%")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"\x00garbage" * 512)
    broken = hil("gate", "--db", str(junk), "--baseline", "1")
    assert [p.returncode for p in (passed, failed, broken)] == [0, 1, 2]
    assert "not a results database" in broken.stderr
    for p in (passed, failed, broken):
        assert "Traceback" not in p.stdout + p.stderr
