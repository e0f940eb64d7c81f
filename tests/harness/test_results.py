"""Results store on real SQLite files: schema, runs, measurements, artifacts, kills and concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.errors import HilError
from hil.results import SCHEMA_VERSION, ResultsStore

# A writer process: records rows 0, 1, 2 ... and prints each index once record() has returned.
WRITER = """
import os, sys, time
from hil.results import ResultsStore
db, run, variant, count, pause = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
store = ResultsStore(db)
run_id = int(run) if run != "new" else store.start_run(bench="bench.yaml", simulated=True, git_branch="main")
print(f"run {run_id}", flush=True)
while len(sys.argv) > 6 and not os.path.exists(sys.argv[6]):  # start line shared by several writers
    time.sleep(0.005)
i = 0
while count < 0 or i < count:
    store.record(run_id, variant, f"m{i:05d}", float(i), unit="ms", trials=5, spread=0.01)
    print(i, flush=True)
    i += 1
    time.sleep(pause)
store.finish_run(run_id, "passed") if run == "new" else None
"""


def writer(db: Path, run: str, variant: str, count: int, pause: float, go: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), run, variant, str(count), str(pause), *([str(go)] if go else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def raw_rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Read with a plain sqlite3 connection of its own (another process's view)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "nested" / "results.sqlite")
    yield s
    s.close()


def test_new_file_is_wal_with_schema_version(store: ResultsStore) -> None:
    assert store.path.is_file()
    assert raw_rows(store.path, "PRAGMA journal_mode")[0][0] == "wal"
    assert raw_rows(store.path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    tables = {r[0] for r in raw_rows(store.path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"runs", "measurements", "artifacts", "variants", "outcomes", "trials"}


def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    """Schema 1 (runs, measurements, artifacts) gains the variants and outcomes tables; nothing is lost."""
    import sqlite3

    path = tmp_path / "v1.sqlite"
    with ResultsStore(path) as s:
        run = s.start_run(bench="b.yaml", simulated=True, git_commit="c", git_branch="main")
        s.record(run, "v", "latency_ms", 12.5)
    with sqlite3.connect(path) as c:  # make it the version-1 file an older harness wrote
        c.execute("DROP TABLE variants")
        c.execute("DROP TABLE outcomes")
        c.execute("PRAGMA user_version = 1")
    with ResultsStore(path) as s:
        assert [m.value for m in s.measurements(run)] == [12.5]
        s.record_outcome(run, "v", "latency_ms", "passed")
        s.record_variant(run, "v", sha256="ab" * 32, station="esp32-0", factory={"size_bytes": 10})
        assert [(o.outcome, o.metric) for o in s.outcomes(run)] == [("passed", "latency_ms")]
        assert s.variants(run)[0].factory == {"size_bytes": 10}
    assert raw_rows(path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION == 3


def test_a_version_2_database_gains_the_trials_table_and_its_figures_count_as_one_value(tmp_path: Path) -> None:
    """Schema 2 kept only the median and the range: after the upgrade each old figure is one value, and new
    figures keep every trial."""
    path = tmp_path / "v2.sqlite"
    with ResultsStore(path) as s:
        old = s.start_run(bench="b.yaml", simulated=True, git_commit="c", git_branch="main")
        s.record(old, "v", "energy_mj", 2.5, trials=5, spread=0.1)
    with sqlite3.connect(path) as c:  # the version-2 file the previous harness wrote
        c.execute("DROP TABLE trials")
        c.execute("PRAGMA user_version = 2")
    with ResultsStore(path) as s:
        assert s.trial_values(old) == {("v", "energy_mj"): [2.5]}
        new = s.start_run(bench="b.yaml", simulated=True, git_commit="d", git_branch="main")
        s.record(new, "v", "energy_mj", 2.51, trials=3, spread=0.02, values=[2.50, 2.51, 2.52])
        s.record(new, "v", "latency_ms", None, valid=False, reason="no capture", values=[1.0])
        assert s.trial_values(new) == {("v", "energy_mj"): [2.50, 2.51, 2.52]}
        s.record(new, "v", "energy_mj", 2.6, values=[2.6])  # recorded again: its trials are replaced
        assert s.trial_values(new) == {("v", "energy_mj"): [2.6]}
    assert raw_rows(path, "PRAGMA user_version")[0][0] == 3


def test_run_lifecycle_and_measurements(store: ResultsStore) -> None:
    run = store.start_run(
        bench="bench.yaml",
        simulated=True,
        flags={"trials": 5},
        meta={"scope": "RIGOL"},
        git_commit="abc123",
        git_branch="feature",
    )
    store.record(run, "pruned-int8", "energy_mj", 21.5, trials=5, spread=0.2)
    store.record(run, "pruned-int8", "accuracy", 97.0)
    store.record(run, "pruned-int8", "accuracy", 96.5)  # recorded again: replaced, not duplicated
    store.record(run, "baseline-dynamic", "latency_ms", None, valid=False, reason="E_MODEL: hybrid model")
    store.record(run, "baseline-int8", "power_mw", float("nan"))
    store.update_meta(run, firmware="f00d", scope="DS1104Z")
    store.finish_run(run, "failed")

    (r,) = store.runs()
    assert (r.id, r.git_commit, r.git_branch, r.bench, r.simulated, r.status) == (
        run,
        "abc123",
        "feature",
        "bench.yaml",
        True,
        "failed",
    )
    assert r.finished_at is not None and r.finished_at >= r.started_at
    assert r.flags == {"trials": 5}
    assert r.meta["scope"] == "DS1104Z" and r.meta["firmware"] == "f00d" and r.meta["pid"] == os.getpid()

    ms = {(m.variant, m.metric): m for m in store.measurements(run)}
    assert len(ms) == 4
    energy = ms["pruned-int8", "energy_mj"]
    assert (energy.value, energy.unit, energy.valid, energy.trials, energy.spread) == (
        21.5,
        "mJ",
        True,
        5,
        0.2,
    )
    assert ms["pruned-int8", "accuracy"].value == 96.5 and ms["pruned-int8", "accuracy"].unit == "%"
    bad = ms["baseline-dynamic", "latency_ms"]
    assert (bad.valid, bad.value, bad.reason) == (False, None, "E_MODEL: hybrid model")
    nan = ms["baseline-int8", "power_mw"]
    assert not nan.valid and nan.value is None and "non-finite" in nan.reason


def test_skipped_measurements_keep_their_reason(store: ResultsStore) -> None:
    run = store.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
    store.record(run, "baseline-float16", "latency_ms", None, skipped=True, reason="TFLM cannot run float16")
    (m,) = store.measurements(run)
    assert m.skipped and not m.valid and m.reason == "skipped: TFLM cannot run float16"
    with pytest.raises(HilError, match="needs a reason"):
        store.record(run, "baseline-float16", "energy_mj", None, skipped=True)


def test_resolve_references(store: ResultsStore) -> None:
    with pytest.raises(HilError, match="no run"):
        store.resolve("latest")
    main1 = store.start_run(bench="b", simulated=True, git_commit="1", git_branch="main")
    store.finish_run(main1, "passed")
    feature = store.start_run(bench="b", simulated=True, git_commit="2", git_branch="feature")
    store.finish_run(feature, "passed")
    main_running = store.start_run(bench="b", simulated=True, git_commit="3", git_branch="master")
    assert store.resolve("latest") == main_running
    assert store.resolve("latest-main") == main1  # the master run has not finished
    store.finish_run(main_running, "failed")
    assert store.resolve("latest-main") == main_running
    assert store.resolve("latest-main", before=main_running) == main1
    assert store.resolve(str(feature)) == feature
    with pytest.raises(HilError, match="no finished run on branch main or master before run 1"):
        store.resolve("latest-main", before=main1)
    with pytest.raises(HilError, match=r"unknown run reference 'yesterday'"):
        store.resolve("yesterday")
    with pytest.raises(HilError, match="no run 99"):
        store.resolve("99")


def test_history_is_a_long_table_filtered_by_variant_and_metric(store: ResultsStore) -> None:
    for k in range(3):
        run = store.start_run(bench="b", simulated=k < 2, git_commit=str(k), git_branch="main")
        for v in ("a", "b"):
            store.record(run, v, "latency_ms", 10.0 + k)
            store.record(run, v, "energy_mj", 20.0 + k)
        store.finish_run(run, "passed")
    df = store.history(variant="b", metric="energy_mj")
    assert list(df["value"]) == [20.0, 21.0, 22.0]
    assert list(df["simulated"]) == [True, True, False]
    assert len(store.history()) == 12 and set(store.history(metric="latency_ms")["variant"]) == {"a", "b"}
    assert store.history(variant="zzz").empty


def test_artifacts_are_relative_to_the_database_folder(store: ResultsStore, tmp_path: Path) -> None:
    run = store.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
    trace = store.path.parent / "runs" / "1" / "pruned-int8.npz"
    store.add_artifact(run, "pruned-int8", "trace", trace)
    store.add_artifact(run, "pruned-int8", "trace", trace)  # idempotent
    store.add_artifact(run, None, "pareto", tmp_path / "elsewhere.png")
    stored = raw_rows(store.path, "SELECT variant, kind, path FROM artifacts ORDER BY id")
    assert stored == [
        ("pruned-int8", "trace", str(Path("runs/1/pruned-int8.npz"))),
        ("", "pareto", str(tmp_path / "elsewhere.png")),
    ]
    arts = store.artifacts(run)
    assert [a.path for a in arts] == [trace.absolute(), (tmp_path / "elsewhere.png").absolute()]
    assert [a.kind for a in store.artifacts(run, variant="pruned-int8")] == ["trace"]


def test_files_that_are_not_results_databases_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all\n" * 200)
    with pytest.raises(HilError, match=r"junk.sqlite: not a results database \(file is not a database\)"):
        ResultsStore(junk)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(HilError, match="not a results database .it holds tables customers"):
        ResultsStore(other)
    newer = tmp_path / "newer.sqlite"
    ResultsStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(HilError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        ResultsStore(newer)
    with pytest.raises(HilError, match="no results database"):
        ResultsStore(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def test_finish_run_rejects_unknown_status(store: ResultsStore) -> None:
    run = store.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
    with pytest.raises(HilError, match="not a final status"):
        store.finish_run(run, "running")
    with pytest.raises(HilError, match="no run 42"):
        store.finish_run(42, "passed")


def test_git_identity_from_ci_variables_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a git checkout
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for name in ("HIL_GIT_BRANCH", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME", "GITHUB_SHA", "CI_COMMIT_SHA"):
        monkeypatch.delenv(name, raising=False)
    with ResultsStore(tmp_path / "r.sqlite") as s:
        first = s.run(s.start_run(bench="b", simulated=True))
        monkeypatch.setenv("GITHUB_REF_NAME", "main")
        monkeypatch.setenv("GITHUB_SHA", "deadbeef")
        second = s.run(s.start_run(bench="b", simulated=True))
        monkeypatch.setenv("HIL_GIT_BRANCH", "release")
        third = s.run(s.start_run(bench="b", simulated=True))
    assert (first.git_commit, first.git_branch) == ("unknown", "unknown")
    assert (second.git_commit, second.git_branch) == ("deadbeef", "main")
    assert third.git_branch == "release"


def test_git_identity_of_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(repo)
    monkeypatch.delenv("HIL_GIT_BRANCH", raising=False)
    with ResultsStore(tmp_path / "r.sqlite") as s:
        run = s.run(s.start_run(bench="b", simulated=True))
    assert (run.git_commit, run.git_branch) == (head, "main")


def test_killed_writer_loses_no_committed_row_and_next_run_starts_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "results.sqlite"
    proc = writer(db, "new", "pruned-int8", -1, 0.002)
    try:
        run_id = int(proc.stdout.readline().split()[1])
        deadline = time.monotonic() + 30
        while raw_rows(db, "SELECT COUNT(*) FROM measurements")[0][0] < 50:
            assert time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    acknowledged = [int(line) for line in out.split()]  # rows whose record() returned before the kill
    values = [r[0] for r in raw_rows(db, "SELECT value FROM measurements WHERE run_id = ? ORDER BY id", (run_id,))]
    assert len(values) >= 50 and len(values) >= len(acknowledged)
    assert values == [float(i) for i in range(len(values))]  # no gap, no torn row
    assert set(acknowledged) <= {int(v) for v in values}
    assert raw_rows(db, "PRAGMA integrity_check")[0][0] == "ok"

    with ResultsStore(db) as store:  # opening marks the dead process's run as interrupted
        assert store.run(run_id).status == "interrupted"
        new = store.start_run(bench="bench.yaml", simulated=True, git_commit="c", git_branch="main")
        store.record(new, "pruned-int8", "energy_mj", 1.0)
        store.finish_run(new, "passed")
        assert new == run_id + 1
        assert len(store.measurements(run_id)) == len(values)
        assert [(m.metric, m.value) for m in store.measurements(new)] == [("energy_mj", 1.0)]


def test_a_live_run_is_not_marked_interrupted(store: ResultsStore) -> None:
    run = store.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
    assert store.mark_interrupted() == []
    with ResultsStore(store.path) as other:
        assert other.run(run).status == "running"
    # a run of a process that has exited, recorded with this host's name, is interrupted
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    conn = sqlite3.connect(store.path)
    meta = json.loads(conn.execute("SELECT meta FROM runs WHERE id = ?", (run,)).fetchone()[0])
    conn.execute("UPDATE runs SET meta = ? WHERE id = ?", (json.dumps({**meta, "pid": dead_pid}), run))
    conn.commit()
    conn.close()
    assert store.mark_interrupted() == [run]
    assert store.run(run).status == "interrupted"


def test_two_processes_write_one_run_concurrently(store: ResultsStore) -> None:
    run = store.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
    go = store.path.parent / "go"
    procs = [writer(store.path, str(run), v, 200, 0.001, go) for v in ("gw0-variant", "gw1-variant")]
    for p in procs:
        assert p.stdout.readline().startswith("run "), p.stderr.read()  # both are connected and waiting
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    ms = store.measurements(run)
    for variant in ("gw0-variant", "gw1-variant"):
        assert sorted(m.value for m in ms if m.variant == variant) == [float(i) for i in range(200)]
    # the two writers interleaved rather than ran one after the other
    order = [m.variant for m in ms]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches > 1
