"""The results history: every run and every measurement in one SQLite file (WAL mode, stdlib `sqlite3`).

Each row is committed as it is recorded, so a killed run keeps every finished measurement, and several
pytest-xdist workers can write to the same file (WAL + busy timeout).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.errors import HilError
from hil.metrics import METRICS

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_RESULTS_DB = "reports/results.sqlite"
SCHEMA_VERSION = 3  # 2: variants (factory row + sha256 per variant), outcomes; 3: trials (every trial's value)
STATUSES = ("running", "passed", "failed", "interrupted")
MAIN_BRANCHES = ("main", "master")
# Reason prefix of a measurement that cannot be taken by design (e.g. a variant TFLM cannot run): it is
# invalid, but the gate does not fail on it while the baseline was skipped too.
SKIPPED_PREFIX = "skipped: "
BUSY_TIMEOUT_MS = 30_000
# Each table and the schema version that added it: a file of that version or newer without it is damaged.
_TABLES = {"runs": 1, "measurements": 1, "artifacts": 1, "variants": 2, "outcomes": 2, "trials": 3}
_DAMAGED_HINT = "restore it from a backup or pass another --results-db/--db path"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NULL,
    git_commit TEXT NOT NULL,
    git_branch TEXT NOT NULL,
    bench TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed', 'interrupted')),
    flags TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS measurements (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    variant TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NULL,
    unit TEXT NOT NULL,
    valid INTEGER NOT NULL,
    reason TEXT NULL,
    trials INTEGER NOT NULL DEFAULT 1,
    spread REAL NULL,
    recorded_at TEXT NOT NULL,
    UNIQUE (run_id, variant, metric)
);
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    variant TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    UNIQUE (run_id, variant, kind, path)
);
CREATE TABLE IF NOT EXISTS variants (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    variant TEXT NOT NULL,
    sha256 TEXT NULL,
    station TEXT NOT NULL DEFAULT '',
    factory TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, variant)
);
CREATE TABLE IF NOT EXISTS outcomes (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    variant TEXT NOT NULL,
    metric TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('passed', 'failed', 'skipped')),
    message TEXT NOT NULL DEFAULT '',
    test TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, variant, metric)
);
CREATE TABLE IF NOT EXISTS trials (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    variant TEXT NOT NULL,
    metric TEXT NOT NULL,
    trial INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_id, variant, metric, trial)
);
CREATE INDEX IF NOT EXISTS measurements_by_variant_metric ON measurements (variant, metric);
CREATE INDEX IF NOT EXISTS runs_by_branch ON runs (git_branch, status);
"""


@dataclass(frozen=True)
class Run:
    """One harness session (`pytest -m hil`): when, which commit and bench, how it ended."""

    id: int
    started_at: str
    finished_at: str | None
    git_commit: str
    git_branch: str
    bench: str
    simulated: bool
    status: str
    flags: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """One figure of one variant in one run; `valid` False carries the reason and usually no value."""

    id: int
    run_id: int
    variant: str
    metric: str
    value: float | None
    unit: str
    valid: bool
    reason: str | None
    trials: int
    spread: float | None
    recorded_at: str

    @property
    def skipped(self) -> bool:
        """True for a measurement that cannot be taken by design (recorded with `skipped=True`)."""
        return not self.valid and (self.reason or "").startswith(SKIPPED_PREFIX)


@dataclass(frozen=True)
class VariantRecord:
    """What a run measured for one variant: the model's sha256, the station, and the factory's row then."""

    run_id: int
    variant: str
    sha256: str | None
    station: str
    factory: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """The verdict of one test of one variant (a budget, or a cross-check) as pytest or `hil measure` gave it."""

    run_id: int
    variant: str
    metric: str
    outcome: str
    message: str
    test: str


@dataclass(frozen=True)
class Artifact:
    """A file a run produced for a variant (`kind` e.g. 'trace' -> .npz waveform, 'roc' -> .png)."""

    run_id: int
    variant: str
    kind: str
    path: Path


def crashed(meta: dict[str, Any]) -> bool:
    """A run that a process ended in an unexpected error (hil.campaign's `crashes_*` meta): it never passes and is
    never a baseline, whatever its tests said."""
    return any(key.startswith("crashes_") and value for key, value in meta.items())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_identity() -> tuple[str, str]:
    """(commit, branch) of the checkout in the cwd; CI variables name the branch of a detached checkout."""
    commit = _git("rev-parse", "HEAD") or os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA")
    branch = os.environ.get("HIL_GIT_BRANCH")
    if not branch:
        head = _git("rev-parse", "--abbrev-ref", "HEAD")
        branch = head if head and head != "HEAD" else None
    branch = branch or os.environ.get("GITHUB_REF_NAME") or os.environ.get("CI_COMMIT_REF_NAME")
    return commit or "unknown", branch or "unknown"


def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat, counting after the "(comm)" field


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    now = _process_start(pid)
    return start is None or now is None or now == start


class ResultsStore:
    """The results database at `path` (created with its parent folders unless `create` is False).

    `readonly=True` (the read commands: report, history, gate, noise, changes) opens an existing file read-only:
    nothing is created, upgraded or marked, and a file without the schema is an error, not a new database."""

    def __init__(self, path: str | Path = DEFAULT_RESULTS_DB, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if (readonly or not create) and not self.path.is_file():
            raise HilError(f"{self.path}: no results database; run `pytest -m hil` first or pass --db PATH")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        target = f"{self.path.resolve().as_uri()}?mode=ro" if readonly else self.path
        try:
            self._conn = sqlite3.connect(
                target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False,
                uri=readonly,
            )
        except sqlite3.Error as exc:
            raise HilError(f"{self.path}: cannot open the results database: {exc}") from None
        try:
            self._setup()
        except HilError:
            self._conn.close()
            raise
        except sqlite3.OperationalError as exc:  # locked beyond the busy timeout, read-only folder ...
            self._conn.close()
            raise HilError(f"{self.path}: cannot use the results database: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            self._conn.close()
            raise HilError(
                f"{self.path}: not a results database ({exc}); pass another --results-db/--db path"
            ) from None
        if not readonly:
            self.mark_interrupted()

    # -- connection -----------------------------------------------------------------------------------

    def _setup(self) -> None:
        c = self._conn
        c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = c.execute("PRAGMA user_version").fetchone()[0]  # first read: fails on a non-SQLite file
        if version > SCHEMA_VERSION:
            raise HilError(
                f"{self.path}: results schema version {version} is newer than this harness supports "
                f"({SCHEMA_VERSION}); upgrade tinyml-hil or pass another --results-db/--db path"
            )
        if self.readonly:
            self._readable(version)
            return
        if c.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            c.execute("PRAGMA journal_mode = WAL")
        c.execute("PRAGMA synchronous = NORMAL")
        c.execute("PRAGMA foreign_keys = ON")
        if version == SCHEMA_VERSION:
            self._missing_tables(version)
            return
        with self._write():
            version = c.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            if version == SCHEMA_VERSION:
                return
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            foreign = tables - set(_TABLES)
            if foreign:
                raise HilError(
                    f"{self.path}: not a results database (it holds tables {', '.join(sorted(foreign))}); "
                    "pass another --results-db/--db path"
                )
            if version:
                self._missing_tables(version)  # an older file without a table it had is damaged, not upgraded
            for statement in _SCHEMA.split(";"):  # IF NOT EXISTS: upgrades versions 1 and 2 in place
                if statement.strip():
                    c.execute(statement)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _missing_tables(self, version: int) -> list[str]:
        """The tables a file of schema `version` lacks although older ones have them (damaged: HilError), and
        those its version predates (returned)."""
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        lost = [t for t, since in _TABLES.items() if t not in tables and since <= max(version, 1)]
        if lost:
            raise HilError(f"{self.path}: damaged results database: table {', '.join(lost)} is missing; "
                           f"{_DAMAGED_HINT}")
        return [t for t in _TABLES if t not in tables]

    def _readable(self, version: int) -> None:
        """Check a file opened read-only; tables an older schema lacks become empty TEMP tables (nothing is
        written to the file)."""
        c = self._conn
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 and not tables:
            raise HilError(f"{self.path}: empty, not a results database yet; record a run first (`pytest -m hil` "
                           "or `hil measure`) or pass another --db path")
        foreign = tables - set(_TABLES)
        if version == 0 and foreign:
            raise HilError(f"{self.path}: not a results database (it holds tables {', '.join(sorted(foreign))}); "
                           "pass another --results-db/--db path")
        for table in self._missing_tables(version):
            statement = next(st for st in _SCHEMA.split(";") if f"CREATE TABLE IF NOT EXISTS {table} (" in st)
            c.execute(statement.replace("CREATE TABLE", "CREATE TEMP TABLE", 1))

    def _json(self, row: dict[str, Any], column: str, what: str) -> dict[str, Any]:
        """A JSON column of a row as a dict; text that is not a JSON object is a damaged database (HilError)."""
        try:
            value = json.loads(row[column] or "{}")
        except ValueError as exc:
            value = exc
        if not isinstance(value, dict):
            reason = f"not JSON ({value})" if isinstance(value, Exception) else f"a JSON {type(value).__name__}"
            raise HilError(f"{self.path}: damaged results database: {what} column {column} is {reason}, "
                           f"expected a JSON object; {_DAMAGED_HINT}")
        return value

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed write transaction (BEGIN IMMEDIATE takes the write lock up front: no deadlocks)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, args)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            except sqlite3.DatabaseError as exc:  # a missing column, malformed JSON, a corrupt page ...
                raise HilError(f"{self.path}: damaged results database ({exc}); {_DAMAGED_HINT}") from None

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite when the last connection closes)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -----------------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        bench: str,
        simulated: bool,
        flags: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        git_commit: str | None = None,
        git_branch: str | None = None,
    ) -> int:
        """Record a new run with status 'running' and return its id; pid and host go into meta."""
        if git_commit is None or git_branch is None:
            commit, branch = git_identity()
            git_commit = git_commit or commit
            git_branch = git_branch or branch
        pid = os.getpid()
        meta = {**(meta or {}), "pid": pid, "host": socket.gethostname(), "pid_start": _process_start(pid)}
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO runs (started_at, git_commit, git_branch, bench, simulated, status, flags, meta)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    _now(),
                    git_commit,
                    git_branch,
                    str(bench),
                    int(bool(simulated)),
                    json.dumps(flags or {}, default=str),
                    json.dumps(meta, default=str),
                ),
            )
            return int(cur.lastrowid)  # type: ignore[arg-type]

    def finish_run(self, run_id: int, status: str) -> None:
        """Close a run with its final status ('passed', 'failed' or 'interrupted')."""
        if status not in STATUSES or status == "running":
            raise HilError(f"run status {status!r} is not a final status; use passed, failed or interrupted")
        self.run(run_id)
        with self._write() as c:
            c.execute("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?", (status, _now(), run_id))

    def update_meta(self, run_id: int, **kv: Any) -> None:
        """Merge keys into a run's metadata (firmware hash, scope IDN, board id, phase times ...)."""
        with self._write() as c:
            row = c.execute("SELECT meta FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise HilError(f"no run {run_id} in {self.path}")
            meta = {**self._json({"meta": row[0]}, "meta", f"run {run_id}:"), **kv}
            c.execute("UPDATE runs SET meta = ? WHERE id = ?", (json.dumps(meta, default=str), run_id))

    def mark_interrupted(self) -> list[int]:
        """Mark 'running' runs of this host whose process is gone as 'interrupted'; return their ids."""
        host = socket.gethostname()
        dead = []
        for r in self._read("SELECT id, meta FROM runs WHERE status = 'running'"):
            try:
                meta = self._json(r, "meta", f"run {r['id']}:")
            except HilError:
                continue  # not this housekeeping's business: the read commands name the damaged run
            pid = meta.get("pid")
            if meta.get("host") == host and isinstance(pid, int) and not _alive(pid, meta.get("pid_start")):
                dead.append(r["id"])
        if dead:
            with self._write() as c:
                c.executemany(
                    "UPDATE runs SET status = 'interrupted' WHERE id = ? AND status = 'running'",
                    [(i,) for i in dead],
                )
        return dead

    def _run(self, row: dict[str, Any]) -> Run:
        return Run(
            id=row["id"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            git_commit=row["git_commit"],
            git_branch=row["git_branch"],
            bench=row["bench"],
            simulated=bool(row["simulated"]),
            status=row["status"],
            flags=self._json(row, "flags", f"run {row['id']}:"),
            meta=self._json(row, "meta", f"run {row['id']}:"),
        )

    def runs(self, limit: int | None = None) -> list[Run]:
        """Runs, oldest first; `limit` keeps the newest N."""
        sql = "SELECT * FROM runs ORDER BY id DESC" + (" LIMIT ?" if limit else "")
        rows = self._read(sql, (int(limit),) if limit else ())
        return [self._run(r) for r in reversed(rows)]

    def run(self, run_id: int) -> Run:
        """One run by id; an unknown id is a HilError."""
        rows = self._read("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        if not rows:
            raise HilError(f"no run {run_id} in {self.path}; see `hil history --runs`")
        return self._run(rows[0])

    def resolve(self, ref: int | str, *, before: int | None = None) -> int:
        """A run id from a reference: an id, `latest`, or `latest-main` (newest finished run on main/master).

        `before` restricts `latest`/`latest-main` to runs older than that id (a run is not its own baseline).
        """
        text = str(ref).strip()
        if text.isdigit():
            return self.run(int(text)).id
        older = "" if before is None else f" AND id < {int(before)}"
        if text == "latest":
            rows = self._read(f"SELECT id FROM runs WHERE 1 = 1{older} ORDER BY id DESC LIMIT 1")
            what = "no run"
        elif text == "latest-main":
            branches = ", ".join(f"'{b}'" for b in MAIN_BRANCHES)
            rows = self._read(
                f"SELECT id, meta FROM runs WHERE git_branch IN ({branches}) AND status IN ('passed', 'failed')"
                f"{older} ORDER BY id DESC"
            )
            rows = [r for r in rows if not crashed(self._json(r, "meta", f"run {r['id']}:"))][:1]  # no crashed run
            what = "no finished run on branch main or master"
        else:
            raise HilError(f"unknown run reference {text!r}; use a run id, 'latest' or 'latest-main'")
        if not rows:
            where = f" before run {before}" if before is not None else ""
            raise HilError(f"{what}{where} in {self.path} (reference {text!r})")
        return int(rows[0]["id"])

    # -- measurements ---------------------------------------------------------------------------------

    def record(
        self,
        run_id: int,
        variant: str,
        metric: str,
        value: float | None,
        *,
        unit: str | None = None,
        valid: bool = True,
        reason: str | None = None,
        trials: int = 1,
        spread: float | None = None,
        skipped: bool = False,
        values: Sequence[float] = (),
    ) -> None:
        """Store one figure in its own committed transaction (recording it again replaces it).

        `skipped=True` records a measurement that cannot be taken by design (reason required, value none);
        `values` are the figure's per-trial values (the gate estimates noise from them), kept with it.
        """
        if skipped:
            if not reason:
                raise HilError(f"{variant} {metric}: a skipped measurement needs a reason")
            valid, value = False, None
            reason = reason if reason.startswith(SKIPPED_PREFIX) else SKIPPED_PREFIX + reason
        if unit is None:
            unit = METRICS[metric].unit if metric in METRICS else ""
        if value is not None:
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite: not a figure
                valid, reason, value = False, reason or f"non-finite value {value}", None
        if valid and value is None:
            valid, reason = False, reason or "no value"
        with self._write() as c:
            c.execute(
                "INSERT INTO measurements (run_id, variant, metric, value, unit, valid, reason, trials,"
                " spread, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, variant, metric) DO UPDATE SET value = excluded.value,"
                " unit = excluded.unit, valid = excluded.valid, reason = excluded.reason,"
                " trials = excluded.trials, spread = excluded.spread, recorded_at = excluded.recorded_at",
                (
                    run_id,
                    variant,
                    metric,
                    value,
                    unit,
                    int(bool(valid)),
                    reason,
                    int(trials),
                    None if spread is None else float(spread),
                    _now(),
                ),
            )
            c.execute("DELETE FROM trials WHERE run_id = ? AND variant = ? AND metric = ?", (run_id, variant, metric))
            kept = [float(v) for v in values if v is not None and math.isfinite(float(v))] if valid else []
            c.executemany(
                "INSERT INTO trials (run_id, variant, metric, trial, value) VALUES (?, ?, ?, ?, ?)",
                [(run_id, variant, metric, i, v) for i, v in enumerate(kept)],
            )

    def measurements(self, run_id: int) -> list[Measurement]:
        """Every measurement of a run, in the order they were recorded."""
        rows = self._read("SELECT * FROM measurements WHERE run_id = ? ORDER BY id", (int(run_id),))
        return [Measurement(**{**r, "valid": bool(r["valid"])}) for r in rows]

    def trial_values(self, run_id: int) -> dict[tuple[str, str], list[float]]:
        """Per-trial values of each valid figure of a run; a figure stored without them (schema 2 and older,
        or a single-value figure) counts as one value, its own."""
        out: dict[tuple[str, str], list[float]] = {}
        for r in self._read("SELECT variant, metric, value FROM trials WHERE run_id = ? ORDER BY variant, metric, "
                            "trial", (int(run_id),)):
            out.setdefault((r["variant"], r["metric"]), []).append(float(r["value"]))
        for m in self.measurements(run_id):
            if m.valid and m.value is not None:
                out.setdefault((m.variant, m.metric), [float(m.value)])
            else:
                out.pop((m.variant, m.metric), None)
        return out

    def history(self, variant: str | None = None, metric: str | None = None) -> pd.DataFrame:
        """Long table of measurements with their run (one row per run, variant, metric), oldest first;
        `remeasure_of` names the run a gate re-measurement belongs to (None for an ordinary run)."""
        import pandas as pd

        sql = (
            "SELECT r.id AS run_id, r.started_at, r.git_commit, r.git_branch, r.bench, r.simulated, r.status,"
            " json_extract(r.flags, '$.remeasure_of') AS remeasure_of,"
            " m.variant, m.metric, m.value, m.unit, m.valid, m.reason, m.trials, m.spread"
            " FROM measurements m JOIN runs r ON r.id = m.run_id WHERE 1 = 1"
        )
        args: list[Any] = []
        if variant is not None:
            sql += " AND m.variant = ?"
            args.append(variant)
        if metric is not None:
            sql += " AND m.metric = ?"
            args.append(metric)
        rows = self._read(sql + " ORDER BY r.id, m.id", tuple(args))
        columns = [
            "run_id",
            "started_at",
            "git_commit",
            "git_branch",
            "bench",
            "simulated",
            "status",
            "remeasure_of",
            "variant",
            "metric",
            "value",
            "unit",
            "valid",
            "reason",
            "trials",
            "spread",
        ]
        df = pd.DataFrame(rows, columns=columns)
        df["simulated"] = df["simulated"].astype(bool)
        df["valid"] = df["valid"].astype(bool)
        df["value"] = df["value"].astype(float)
        return df

    # -- variants and outcomes ------------------------------------------------------------------------

    def record_variant(
        self, run_id: int, variant: str, *, sha256: str | None, station: str, factory: dict[str, Any]
    ) -> None:
        """Keep the factory row and sha256 of a variant as measured: the run's report never reads the factory."""
        with self._write() as c:
            c.execute(
                "INSERT INTO variants (run_id, variant, sha256, station, factory) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, variant) DO UPDATE SET sha256 = excluded.sha256,"
                " station = excluded.station, factory = excluded.factory",
                (run_id, variant, sha256, station, json.dumps(factory, default=str)),
            )

    def variants(self, run_id: int) -> list[VariantRecord]:
        """The variants a run measured, in the order they were recorded."""
        rows = self._read("SELECT * FROM variants WHERE run_id = ? ORDER BY rowid", (int(run_id),))
        return [VariantRecord(r["run_id"], r["variant"], r["sha256"], r["station"],
                              self._json(r, "factory", f"run {r['run_id']} variant {r['variant']}:")) for r in rows]

    def record_outcome(
        self, run_id: int, variant: str, metric: str, outcome: str, message: str = "", *, test: str = ""
    ) -> None:
        """Store a test's verdict for (variant, metric); a later verdict for the same pair replaces it."""
        if outcome not in ("passed", "failed", "skipped"):
            raise HilError(f"outcome {outcome!r} is not passed, failed or skipped")
        with self._write() as c:
            c.execute(
                "INSERT INTO outcomes (run_id, variant, metric, outcome, message, test) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, variant, metric) DO UPDATE SET outcome = excluded.outcome,"
                " message = excluded.message, test = excluded.test",
                (run_id, variant, metric, outcome, message or "", test or ""),
            )

    def outcomes(self, run_id: int) -> list[Outcome]:
        """Every stored verdict of a run."""
        rows = self._read("SELECT * FROM outcomes WHERE run_id = ? ORDER BY rowid", (int(run_id),))
        return [Outcome(**r) for r in rows]

    # -- artifacts ------------------------------------------------------------------------------------

    def add_artifact(self, run_id: int, variant: str | None, kind: str, path: str | Path) -> None:
        """Remember a file of a run (variant None = whole run); paths under the db folder stay relative."""
        p = Path(path).absolute()
        base = self.path.parent.absolute()
        stored = str(p.relative_to(base)) if p.is_relative_to(base) else str(p)
        with self._write() as c:
            c.execute(
                "INSERT OR IGNORE INTO artifacts (run_id, variant, kind, path) VALUES (?, ?, ?, ?)",
                (run_id, variant or "", kind, stored),
            )

    def artifacts(self, run_id: int, variant: str | None = None, kind: str | None = None) -> list[Artifact]:
        """Files of a run (optionally of one variant / kind), with absolute paths."""
        sql, args = "SELECT * FROM artifacts WHERE run_id = ?", [int(run_id)]
        if variant is not None:
            sql += " AND variant = ?"
            args.append(variant)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        base = self.path.parent.absolute()
        return [
            Artifact(r["run_id"], r["variant"], r["kind"], base / r["path"])
            for r in self._read(sql + " ORDER BY id", tuple(args))
        ]
