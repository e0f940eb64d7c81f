"""`pytest -m hil` end to end, run as a user runs it (a subprocess) on the virtual bench with a tiny matrix.

Covers the main job's promises: a tightened budget fails exactly its test with a message naming variant,
metric, value and budget; the gate passes against an unchanged run and fails when a variant gets slower;
a run killed mid-way keeps every finished row and the next run starts cleanly; the report is written.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_CONFIG
from tests.harness.helpers import quiet_bench

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
VARIANTS = "baseline-int8,baseline-dynamic"
BUDGETS = {
    "version": 1,
    "defaults": {
        "latency_ms": {"max": 100},  # the tiny float CNN: 63 ms on the virtual ESP32
        "energy_mj": {"max": 200},
        "power_mw": {"max": 3000},
        "accuracy": {"min": 30},
        "flash_kb": {"max": 100},
        "arena_kb": {"max": 100},
    },
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny variant matrix, budgets and a bench file; the factory output is shared by every run here."""
    ws = tmp_path_factory.mktemp("hil")
    (ws / "variants.yaml").write_text(
        yaml.safe_dump({**TINY_CONFIG, "variants": {"baseline": ["no_opt", "dynamic", "int8"]}})
    )
    (ws / "budgets.yaml").write_text(yaml.safe_dump(BUDGETS))
    bench = quiet_bench()
    bench["boards"] = bench["boards"][:1]
    (ws / "bench.yaml").write_text(yaml.safe_dump(bench))
    return ws


def hil_args(ws: Path, *extra: str, budgets: str = "budgets.yaml", bench: str = "bench.yaml") -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-m", "hil", "-p", "no:cacheprovider", "-q", "tests/hil",
        f"--models-config={ws / 'variants.yaml'}", f"--models-dir={ws / 'models'}", f"--budgets={ws / budgets}",
        f"--bench={ws / bench}", f"--variants={VARIANTS}", f"--results-db={ws / 'results.sqlite'}",
        f"--report-dir={ws / 'report'}", "--trials=2", "--window=0.3", "--warmup=1", "--accuracy-samples=40",
        *extra,
    ]  # fmt: skip


def run_hil(ws: Path, *extra: str, **kw: str) -> subprocess.CompletedProcess:
    return subprocess.run(hil_args(ws, *extra, **kw), cwd=ROOT, capture_output=True, text=True, timeout=900)


def passed_runs(ws: Path) -> list[int]:
    """Ids of the passing runs in the workspace's database, making one first if there is none (test order)."""
    db = ws / "results.sqlite"
    ids = [rid for (rid,) in rows(db, "SELECT id FROM runs WHERE status='passed'")] if db.is_file() else []
    if not ids:
        r = run_hil(ws)
        assert r.returncode == 0, r.stdout[-3000:]
        ids = [rid for (rid,) in rows(db, "SELECT id FROM runs WHERE status='passed'")]
    return ids


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql).fetchall()


def test_run_passes_records_everything_and_writes_the_report(workspace: Path) -> None:
    r = run_hil(workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "skipped" in r.stdout and "baseline-dynamic is not deployable on TFLite Micro" in r.stdout
    assert "hil results" in r.stdout and "(simulated)" in r.stdout
    db = workspace / "results.sqlite"
    ((run_id, status, simulated),) = rows(db, "SELECT id, status, simulated FROM runs")
    assert (status, simulated) == ("passed", 1)
    measured = dict(
        rows(db, f"SELECT metric, value FROM measurements WHERE run_id={run_id} AND variant='baseline-int8'")
    )
    assert 0 < measured["latency_ms"] < 50 and measured["energy_mj"] > 0 and measured["accuracy"] > 30
    assert measured["pulse_vs_latency_pct"] < 2
    skipped = rows(db, f"SELECT reason FROM measurements WHERE run_id={run_id} AND variant='baseline-dynamic'")
    assert skipped and all(reason.startswith("skipped: ") for (reason,) in skipped)
    report = workspace / "report"
    assert (report / "report.html").is_file() and (report / "report.md").is_file()
    assert (report / "results.csv").is_file() and (report / "junit.xml").is_file()


def test_tightened_budget_fails_exactly_its_test(workspace: Path) -> None:
    tight = yaml.safe_load((workspace / "budgets.yaml").read_text())
    tight["variants"] = {"baseline-int8": {"latency_ms": {"max": 0.05}}}
    (workspace / "tight.yaml").write_text(yaml.safe_dump(tight))
    r = run_hil(workspace, budgets="tight.yaml")
    assert r.returncode == 1
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAILED ")]
    assert failed == [
        "FAILED tests/hil/test_budgets.py::test_budget[baseline-int8-latency_ms] - " + failed[0].split(" - ", 1)[1]
    ], r.stdout[-3000:]
    assert "baseline-int8 latency_ms = " in r.stdout and "ms exceeds budget max 0.050 ms" in r.stdout


def test_gate_passes_unchanged_and_fails_when_a_variant_is_slower(workspace: Path) -> None:
    """Three baseline runs (the fewest the gate estimates noise from); an unchanged session passes, a session
    whose baseline-int8 is injected 50 % slower fails at the session's end and in `hil gate`."""
    gate = [sys.executable, "-m", "hil.cli", "gate", "--db", str(workspace / "results.sqlite")]
    tolerances = ["--tolerance", "latency_ms=5%", "energy_mj=5%", "accuracy=0.5pp"]
    while len(passed_runs(workspace)) < 3:
        assert run_hil(workspace).returncode == 0
    window = ",".join(map(str, passed_runs(workspace)[:3]))

    same = run_hil(workspace, f"--baseline={window}", "--gate=latency_ms:5%", "--gate=energy_mj:5%")
    assert same.returncode == 0, same.stdout[-3000:]
    assert "gate: passed" in same.stdout

    slower = run_hil(workspace, f"--baseline={window}", "--gate=latency_ms:5%", "--inject=baseline-int8:latency=1.5")
    assert slower.returncode == 1
    assert "gate: FAILED" in slower.stdout

    g = subprocess.run(
        [*gate, "--baseline", window, "--run", "latest", *tolerances], capture_output=True, text=True, cwd=ROOT
    )
    assert g.returncode == 1, g.stdout + g.stderr
    regression = [line for line in g.stdout.splitlines() if "REGRESSION" in line and "latency_ms" in line]
    assert any(line.startswith("baseline-int8") for line in regression), g.stdout


def test_killed_run_keeps_finished_rows_and_the_next_run_starts_cleanly(workspace: Path) -> None:
    db = workspace / "results.sqlite"
    passed_runs(workspace)
    before = rows(db, "SELECT COALESCE(MAX(id), 0) FROM runs")[0][0]
    proc = subprocess.Popen(hil_args(workspace, "--trials=5", "--window=1"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = rows(db, f"SELECT COUNT(*) FROM measurements WHERE run_id > {before}")[0][0]
            if done >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed = rows(db, f"SELECT id FROM runs WHERE id > {before}")
    assert len(killed) == 1
    (killed_id,) = killed[0]
    kept = rows(db, f"SELECT variant, metric, value FROM measurements WHERE run_id = {killed_id}")
    assert len(kept) >= 2

    again = run_hil(workspace)
    assert again.returncode == 0, again.stdout[-3000:]
    assert rows(db, f"SELECT variant, metric, value FROM measurements WHERE run_id = {killed_id}") == kept
    assert rows(db, f"SELECT status FROM runs WHERE id = {killed_id}") == [("interrupted",)]
    assert rows(db, f"SELECT status FROM runs WHERE id > {killed_id}") == [("passed",)]


def test_each_variant_is_measured_on_exactly_one_board_with_xdist(workspace: Path) -> None:
    """`pytest -n 2 --dist loadgroup`: worker k takes board k, and every variant runs on one board only."""
    (workspace / "two-boards.yaml").write_text(yaml.safe_dump(quiet_bench()))
    r = run_hil(workspace, "-n", "2", "--dist", "loadgroup", "--variants=baseline-no_opt", bench="two-boards.yaml")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "measured by several workers" not in r.stdout
    import json

    (meta,) = rows(workspace / "results.sqlite", "SELECT meta FROM runs ORDER BY id DESC LIMIT 1")[0:1]
    meta = json.loads(meta[0])
    per_worker = [set(meta.get(f"variants_gw{k}", [])) for k in (0, 1)]
    assert per_worker[0].isdisjoint(per_worker[1])
    assert per_worker[0] | per_worker[1] == {"baseline-int8", "baseline-no_opt"}


def test_flash_app_without_esp_idf_skips_with_the_install_hint(workspace: Path, tiny_variants) -> None:
    """A real board (here a pty the harness cannot tell from a USB-UART) with --flash-app and no ESP-IDF."""
    from hil.sim.board import VirtualBoard

    bench = yaml.safe_load((workspace / "bench.yaml").read_text())
    with VirtualBoard(tiny_variants["baseline-int8"].read_bytes(), boot_s=0.05).start(tcp_port=None) as board:
        bench["boards"][0]["port"] = board.pty_path
        (workspace / "real.yaml").write_text(yaml.safe_dump(bench))
        env = {k: v for k, v in os.environ.items() if k != "IDF_PATH"}
        r = subprocess.run(
            hil_args(workspace, "--flash-app", "--variants=baseline-int8", bench="real.yaml"),
            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:]
    assert "failed" not in r.stdout.splitlines()[-1]
    assert "skipped" in r.stdout.splitlines()[-1]
    assert "the benchmark app cannot be built: ESP-IDF not found: IDF_PATH is not set" in r.stdout
