"""The `hil` pytest plugin (entry point `pytest11`): bench options, fixtures, results, gate and report.

`pytest -m hil` measures every model variant on the bench in `--bench` (virtual by default) and asserts
the budgets in `--budgets`. Every finished measurement is written to the results database at once; at
the end of the session the run is closed, the report is written and, with `--baseline`, the gate decides.
Under pytest-xdist each worker takes one board+scope pair of the bench and each variant runs on one worker.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.errors import USER_ERRORS, HilError
from hil.filelock import file_lock

SESSION_KEY = "hil_session_uid"


# ------------------------------------------------------------------------------------------------ options
def pytest_addoption(parser: pytest.Parser) -> None:
    """The `hil` option group; each option is also reachable through the `hil_options` fixture."""
    g = parser.getgroup("hil", "TinyML hardware-in-the-loop (pytest -m hil)")
    g.addoption("--bench", default="bench.yaml", help="bench file (default: %(default)s, the virtual bench)")
    g.addoption("--budgets", default="budgets.yaml", help="budget file (default: %(default)s)")
    g.addoption(
        "--variants",
        action="append",
        default=None,
        metavar="NAMES",
        help="comma-separated variants, recipes or reference-study names (default: the whole matrix)",
    )
    g.addoption("--models-config", default=None, help="variant matrix (default: models/variants.yaml)")
    g.addoption("--models-dir", default="artifacts/models", help="factory output folder (default: %(default)s)")
    g.addoption("--data", default="digits", help="data set: digits | svhn:PATH | mnist:PATH | fashion:PATH")
    g.addoption("--inferences", type=int, default=None, help="timed inferences per capture (default: --window)")
    g.addoption(
        "--window",
        type=float,
        default=1.0,
        help="seconds of timed inference per capture when --inferences is not given (default: %(default)s; "
        "MLPerf Tiny practice on a real bench: 10)",
    )
    g.addoption("--warmup", type=int, default=5, help="warm-up inferences before each capture (default: 5)")
    g.addoption(
        "--flash-app",
        action="store_true",
        help="build the benchmark firmware (ESP-IDF) and flash the app once before measuring (real boards)",
    )
    g.addoption("--trials", type=int, default=5, help="captures per variant; median reported (default: 5)")
    g.addoption("--accuracy-samples", type=int, default=0, help="test images streamed to the device (0 = all)")
    g.addoption("--results-db", default="reports/results.sqlite", help="results history (default: %(default)s)")
    g.addoption("--report-dir", default="reports/latest", help="report folder (default: %(default)s)")
    g.addoption("--baseline", default=None, metavar="RUN", help="gate against a run id or latest-main")
    g.addoption("--gate", action="append", default=[], metavar="METRIC:TOL", help="e.g. energy_mj:5%%")


@dataclass(frozen=True)
class HilOptions:
    """The `hil` command-line options, resolved."""

    bench: Path
    budgets: Path
    variants: list[str] | None
    models_config: Path
    models_dir: Path
    data: str
    inferences: int | None
    window: float
    warmup: int
    trials: int
    flash_app: bool
    accuracy_samples: int
    results_db: Path
    report_dir: Path
    baseline: str | None
    gate: list[str]

    @classmethod
    def from_config(cls, config: pytest.Config) -> HilOptions:
        from models.registry import DEFAULT_CONFIG

        opt = config.getoption
        names = [n.strip() for chunk in (opt("--variants") or []) for n in chunk.split(",") if n.strip()]
        return cls(
            bench=Path(opt("--bench")),
            budgets=Path(opt("--budgets")),
            variants=names or None,
            models_config=Path(opt("--models-config") or DEFAULT_CONFIG),
            models_dir=Path(opt("--models-dir")),
            data=opt("--data"),
            inferences=opt("--inferences"),
            window=opt("--window"),
            warmup=opt("--warmup"),
            trials=opt("--trials"),
            flash_app=opt("--flash-app"),
            accuracy_samples=opt("--accuracy-samples"),
            results_db=Path(opt("--results-db")),
            report_dir=Path(opt("--report-dir")),
            baseline=opt("--baseline"),
            gate=list(opt("--gate")),
        )

    def tolerances(self) -> list[str]:
        """`--gate METRIC:TOL` in the `METRIC=TOL` form of `hil gate --tolerance`."""
        return [g.replace(":", "=", 1) if "=" not in g else g for g in self.gate]


# ------------------------------------------------------------------------------------------------ session
def _worker_index(config: pytest.Config) -> int | None:
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else int(str(workerinput["workerid"]).removeprefix("gw"))


class Skipped(Exception):
    """The variant cannot run on the bench (e.g. TFLM cannot allocate it); carries the reason."""


class HilSession:
    """One process's view of the HIL run: bench station, factory artifacts, measurements, results."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.options = HilOptions.from_config(config)
        workerinput = getattr(config, "workerinput", None)
        self.uid: str = workerinput[SESSION_KEY] if workerinput and SESSION_KEY in workerinput else uuid.uuid4().hex
        self.worker = _worker_index(config)
        self.phases: dict[str, float] = defaultdict(float)
        self.suite_properties: dict[str, Any] = {}
        self._bench = None
        self._station = None
        self._store = None
        self._run_id: int | None = None
        self._table = None
        self._dataset = None
        self._measured: dict[str, dict[str, Any]] = {}
        self._skipped: dict[str, str] = {}
        self._failed: dict[str, str] = {}
        self.hellos: dict[str, Any] = {}  # variant -> the board's hello after flashing it
        self._no_app: str | None = None  # why the app could not be built (--flash-app without ESP-IDF)
        self._plan = None

    # -- configuration --------------------------------------------------------------------------------
    def plan(self) -> tuple[list[str], Any]:
        """(selected variant names, budgets), validated: the test parameters. Cheap: no model is built."""
        if self._plan is None:
            from hil.budgets import load_budgets
            from models.registry import load_registry

            registry = load_registry(self.options.models_config)
            selected = [v.name for v in registry.select(self.options.variants)]
            budgets = load_budgets(self.options.budgets)
            budgets.check_variants([v.name for v in registry.variants()])
            self._plan = (selected, budgets)
        return self._plan

    @property
    def bench(self):
        """The bench configuration (`--bench`)."""
        if self._bench is None:
            from hil.bench import load_bench

            self._bench = load_bench(self.options.bench)
        return self._bench

    def progress(self, line: str) -> None:
        """Show progress of long work on the terminal (not from xdist workers, whose output is captured)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.worker is not None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(f"[hil] {line}")

    # -- results --------------------------------------------------------------------------------------
    @property
    def store(self):
        """The results database (`--results-db`)."""
        if self._store is None:
            from hil.results import ResultsStore

            self._store = ResultsStore(self.options.results_db)
        return self._store

    def find_run(self) -> int | None:
        """This session's run in the database, if any process of the session created it."""
        if not self.options.results_db.is_file():
            return None
        for run in self.store.runs():
            if run.flags.get("session") == self.uid:
                return run.id
        return None

    @property
    def run_id(self) -> int:
        """This session's run id, created by the first process that needs it."""
        if self._run_id is None:
            with file_lock(self.options.results_db.with_suffix(".lock")):
                self._run_id = self.find_run()
                if self._run_id is None:
                    selected, budgets = self.plan()
                    flags = {
                        "session": self.uid,
                        "variants": selected,
                        "trials": self.options.trials,
                        "warmup": self.options.warmup,
                        "inferences": self.options.inferences,
                        "window_s": self.options.window,
                        "accuracy_samples": self.options.accuracy_samples,
                        "data": self.options.data,
                    }
                    meta = {
                        "models_dir": str(self.options.models_dir.resolve()),
                        "bench_name": str(self.options.bench),
                        "simulated": self.bench.is_virtual,
                        "budgets": {
                            v: {m: {"min": lim.min, "max": lim.max} for m, lim in budgets.for_variant(v).items()}
                            for v in selected
                        },
                    }
                    self._run_id = self.store.start_run(
                        bench=str(self.options.bench), simulated=self.bench.is_virtual, flags=flags, meta=meta
                    )
        return self._run_id

    @property
    def run_dir(self) -> Path:
        """Where this run's waveforms and power reports are kept (next to the database)."""
        return self.options.results_db.parent / "runs" / str(self.run_id)

    # -- factory --------------------------------------------------------------------------------------
    def variants_table(self):
        """The factory's metrics for the selected variants, building whatever is missing (cached)."""
        if self._table is None:
            from models.factory import build

            selected, _ = self.plan()
            t0 = time.perf_counter()
            lock = self.options.models_dir.parent / f".{self.options.models_dir.name}.lock"
            with file_lock(lock):
                self.progress(f"model factory: {len(selected)} variants into {self.options.models_dir}")
                self._table = build(
                    self.options.models_config,
                    self.options.models_dir,
                    self.options.data,
                    selected,
                    progress=self.progress,
                )
            self.phases["factory_s"] += time.perf_counter() - t0
        return self._table

    def dataset(self):
        """The data set's test split for on-device accuracy."""
        if self._dataset is None:
            from models.datasets import load
            from models.registry import load_registry

            seed = load_registry(self.options.models_config).config.seed
            self._dataset = load(self.options.data, seed=seed)
        return self._dataset

    # -- bench ----------------------------------------------------------------------------------------
    @property
    def station(self):
        """This process's board+scope pair: xdist worker k takes board k of the bench."""
        if self._station is None:
            from hil.station import Station

            boards = self.bench.boards
            index = self.worker or 0
            if index >= len(boards):
                raise HilError(
                    f"xdist worker gw{index} has no board: {self.options.bench} lists {len(boards)} "
                    f"board(s); run with -n {len(boards)} or fewer"
                )
            station = Station(self.bench, boards[index].name).start()
            if self.options.flash_app:
                from hil.station import AppUnavailable

                try:
                    station.install_app()
                except AppUnavailable as exc:
                    station.stop()
                    self._no_app = str(exc)
                    raise Skipped(f"the benchmark app cannot be built: {exc}") from None
            self._station = station
        return self._station

    def measure(self, variant: str) -> dict[str, Any]:
        """All figures of one variant (metric -> hil.measure.Figure), measured once and recorded at once."""
        if self._no_app is not None:
            raise Skipped(f"the benchmark app cannot be built: {self._no_app}")
        if variant in self._skipped:
            raise Skipped(self._skipped[variant])
        if variant in self._failed:
            raise HilError(self._failed[variant])
        if variant not in self._measured:
            try:
                self._measured[variant] = self._measure(variant)
            except Skipped as exc:
                self._skipped[variant] = str(exc)
                self._record_missing(variant, str(exc), skipped=True)
                raise
            except USER_ERRORS as exc:
                self._failed[variant] = f"{variant}: {exc}"
                self._record_missing(variant, f"measurement failed: {exc}", skipped=False)
                raise HilError(self._failed[variant]) from None
        return self._measured[variant]

    def _record_missing(self, variant: str, reason: str, *, skipped: bool) -> None:
        """Every budgeted metric not measured yet gets a row with the reason: nothing is silently absent."""
        _, budgets = self.plan()
        done = {m.metric for m in self.store.measurements(self.run_id) if m.variant == variant}
        for metric in budgets.for_variant(variant):
            if metric not in done:
                self.store.record(self.run_id, variant, metric, None, valid=False, reason=reason, skipped=skipped)

    def _measure(self, variant: str) -> dict[str, Any]:
        from hil.measure import Figure, Settings, measure_accuracy, measure_power

        table = self.variants_table().set_index("variant")
        row = table.loc[variant]
        if not bool(row["tflm_ok"]):
            raise Skipped(f"{variant} is not deployable on TFLite Micro: {row['tflm_error']}")
        model = (self.options.models_dir / f"{variant}.tflite").read_bytes()
        arena = int(row["arena_bytes"]) if row["arena_bytes"] == row["arena_bytes"] else None
        station, store, run_id = self.station, self.store, self.run_id

        t0 = time.perf_counter()
        self.progress(f"{variant}: flashing {len(model):,} bytes to {station.board.name}")
        station.flash(model, arena_bytes=arena, source=variant)
        self.phases["flash_s"] += time.perf_counter() - t0
        figures: dict[str, Figure] = {}

        def keep(metric: str, fig: Figure) -> None:
            figures[metric] = fig
            store.record(run_id, variant, metric, fig.value, valid=fig.valid, reason=fig.reason,
                         trials=fig.trials, spread=fig.spread)  # fmt: skip

        keep("flash_kb", Figure(len(model) / 1024))
        keep("accuracy_host", Figure(float(row["accuracy"]) * 100))
        with station.dut() as dut:
            hello = dut.hello_info
            assert hello is not None
            self.hellos[variant] = hello
            self._note_suite(hello, station)
            if not hello.model_ok:  # the host runtime runs it, so the board refusing it is a failure
                raise HilError(f"the board refused the model: {hello.model_error}")
            keep("arena_kb", Figure((hello.arena_used or 0) / 1024))
            t1 = time.perf_counter()
            with station.scope() as scope:
                self.suite_properties.setdefault("scope_idn", scope.idn)
                settings = Settings(
                    inferences=self.options.inferences,
                    warmup=self.options.warmup,
                    trials=self.options.trials,
                    window_s=self.options.window,
                )
                power = measure_power(
                    dut,
                    scope,
                    self.bench,
                    settings,
                    channels=station.scope_config,
                    progress=lambda s: self.progress(f"{variant}: {s}"),
                )
            self.phases["power_s"] += time.perf_counter() - t1
            for metric, fig in power.figures().items():
                keep(metric, fig)
            self._save_traces(variant, power)
            t2 = time.perf_counter()
            ds = self.dataset()
            n = self.options.accuracy_samples or len(ds.x_test)
            self.progress(f"{variant}: streaming {n} test images for on-device accuracy")
            host = self.options.models_dir / f"{variant}.tflm-outputs.npy"
            acc = measure_accuracy(dut, ds.x_test[:n], ds.y_test[:n], host_outputs=np.load(host))
            self.phases["accuracy_s"] += time.perf_counter() - t2
        keep("accuracy", Figure(acc.accuracy_pct, trials=acc.samples))
        keep("output_agreement", Figure(acc.agreement_pct, trials=acc.samples))
        keep("output_cosine", Figure(acc.cosine, trials=acc.samples))
        return figures

    def _save_traces(self, variant: str, power) -> None:
        """Keep the median-energy trial's waveforms and analysis, so the report can plot them later."""
        valid = [t for t in power.trials if t.report.valid] or power.trials
        if not valid:
            return
        valid.sort(key=lambda t: t.report.energy_per_inference_mj.mean if t.report.valid else 0.0)
        trial = valid[len(valid) // 2]
        folder = self.run_dir
        folder.mkdir(parents=True, exist_ok=True)
        for kind, wf in (("trace_shunt", trial.shunt), ("trace_marker", trial.marker)):
            path = wf.save(folder / f"{variant}-{kind.removeprefix('trace_')}.npz")
            self.store.add_artifact(self.run_id, variant, kind, path)
        report = folder / f"{variant}-power.json"
        report.write_text(json.dumps(trial.report.to_dict()))
        self.store.add_artifact(self.run_id, variant, "power", report)

    def _note_suite(self, hello, station) -> None:
        self.suite_properties.update(
            board=station.board.name,
            board_id=hello.board_id,
            firmware=hello.firmware,
            simulated=station.simulated or hello.simulated,
        )

    def close(self) -> None:
        """Stop the station and leave this process's phase times in the run's metadata."""
        if self._station is not None:
            self._station.stop()
            self._station = None
        if self._run_id is not None:
            who = f"gw{self.worker}" if self.worker is not None else "main"
            self.store.update_meta(
                self._run_id,
                **{f"phases_{who}": dict(self.phases), f"variants_{who}": sorted(self._measured)},
                **self.suite_properties,
            )


def _session(config: pytest.Config) -> HilSession:
    hs = getattr(config, "_hil_session", None)
    if hs is None:
        hs = config._hil_session = HilSession(config)  # type: ignore[attr-defined]
    return hs


# ------------------------------------------------------------------------------------------------ hooks
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers and, on the controller of a `-m hil` run, default junit.xml into the report dir."""
    config.addinivalue_line("markers", "hil: budget tests that run model variants on a bench")
    config.addinivalue_line("markers", "slow: tests that take more than a few seconds")
    markexpr = config.getoption("markexpr", "") or ""
    if "hil" in markexpr and "not hil" not in markexpr and not getattr(config.option, "xmlpath", None):
        if not hasattr(config, "workerinput"):
            config.option.xmlpath = str(Path(config.getoption("--report-dir")) / "junit.xml")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "hil-xdist")


class _XdistHooks:
    """Hands this session's id to every xdist worker, so all of them record into one run."""

    @pytest.hookimpl
    def pytest_configure_node(self, node) -> None:
        node.workerinput[SESSION_KEY] = _session(node.config).uid


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `variant` (and `metric`, from the budgets) with readable ids grouped per variant."""
    if "variant" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("hil") is None:
        return
    try:
        selected, budgets = _session(metafunc.config).plan()
    except USER_ERRORS as exc:
        raise pytest.UsageError(str(exc)) from None
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")

    def group(v: str) -> list[pytest.MarkDecorator]:
        return [pytest.mark.xdist_group(v)] if xdist else []

    if "metric" in metafunc.fixturenames:
        params = [pytest.param(v, m, id=f"{v}-{m}", marks=group(v)) for v, m, _limit in budgets.cases(selected)]
        metafunc.parametrize(("variant", "metric"), params)
    else:
        metafunc.parametrize("variant", [pytest.param(v, id=v, marks=group(v)) for v in selected])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the run, write the report and apply the gate (the controller, or a single process)."""
    hs = getattr(session.config, "_hil_session", None)
    if hs is None:
        return
    try:
        hs.close()
    except USER_ERRORS:
        pass
    if hs.worker is not None:
        return
    run_id = hs.find_run()
    if run_id is None:
        return
    interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
    status = "interrupted" if interrupted else "passed" if exitstatus == 0 else "failed"
    store = hs.store
    store.finish_run(run_id, status)
    t0 = time.perf_counter()
    try:
        from hil.report import write_report

        tolerances = None
        if hs.options.baseline:
            from hil.gate import compare, parse_tolerances

            tolerances = parse_tolerances(hs.options.tolerances())
            hs.gate_result = compare(store, run_id, hs.options.baseline, tolerances)
            if hs.gate_result.failed and session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        hs.report_path = write_report(
            store, run_id, hs.options.report_dir, baseline=hs.options.baseline, tolerances=tolerances
        )
    except USER_ERRORS as exc:
        hs.report_error = str(exc)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
    store.update_meta(run_id, phases_report={"report_s": time.perf_counter() - t0})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The figures of this run, the time per phase, the gate verdict and where the report is."""
    hs = getattr(config, "_hil_session", None)
    if hs is None or hs.worker is not None:
        return
    run_id = hs.find_run()
    if run_id is None:
        return
    from hil.report import summary_table

    tr = terminalreporter
    tr.section("hil results")
    tr.write_line(summary_table(hs.store, run_id))
    phases: dict[str, float] = defaultdict(float)
    meta = hs.store.run(run_id).meta
    for key, value in meta.items():
        if key.startswith("phases_") and isinstance(value, dict):
            for phase, seconds in value.items():
                phases[phase] += float(seconds)
    if phases:
        tr.write_line("time per phase (summed over workers): " + ", ".join(
            f"{k.removesuffix('_s')} {v:.1f} s" for k, v in phases.items()))  # fmt: skip
    seen: dict[str, list[str]] = defaultdict(list)
    for key, value in meta.items():
        if key.startswith("variants_") and isinstance(value, list):
            for v in value:
                seen[v].append(key.removeprefix("variants_"))
    twice = {v: w for v, w in seen.items() if len(w) > 1}
    if twice:
        tr.write_line(
            "hil: warning: variants measured by several workers (run pytest-xdist with --dist loadgroup): "
            + ", ".join(f"{v} ({', '.join(w)})" for v, w in sorted(twice.items())),
            yellow=True,
        )
    gate = getattr(hs, "gate_result", None)
    if gate is not None:
        tr.section("hil gate")
        tr.write_line(gate.table())
        tr.write_line("gate: FAILED" if gate.failed else "gate: passed")
    if getattr(hs, "report_error", None):
        tr.write_line(f"hil: error: {hs.report_error}", red=True)
    elif getattr(hs, "report_path", None):
        tr.write_line(f"report: {hs.report_path}  (results database: {hs.options.results_db}, run {run_id})")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def hil_session(request: pytest.FixtureRequest) -> HilSession:
    """The HIL run of this process."""
    return _session(request.config)


@pytest.fixture(scope="session")
def hil_options(hil_session: HilSession) -> HilOptions:
    """The `hil` command-line options."""
    return hil_session.options


@pytest.fixture(scope="session")
def bench(hil_session: HilSession):
    """The bench configuration (hil.bench.BenchConfig)."""
    return _user_errors_as_failures(lambda: hil_session.bench)


@pytest.fixture(scope="session")
def budgets(hil_session: HilSession):
    """The validated budgets (hil.budgets.Budgets)."""
    return hil_session.plan()[1]


@pytest.fixture(scope="session")
def variants(hil_session: HilSession):
    """The factory's metrics table of the selected variants (pandas), built or taken from the cache."""
    return _user_errors_as_failures(hil_session.variants_table)


@pytest.fixture
def measurement(hil_session: HilSession, variant: str, variants, record_testsuite_property) -> dict[str, Any]:
    """metric -> Figure for `variant`, measured once per session (flash, capture, accuracy) and recorded."""
    try:
        figures = _user_errors_as_failures(lambda: hil_session.measure(variant))
    except Skipped as exc:
        pytest.skip(str(exc))
    if hil_session.worker is None:
        for key, value in hil_session.suite_properties.items():
            record_testsuite_property(key, value)
    return figures


@pytest.fixture
def station(hil_session: HilSession, measurement):
    """The board+scope pair that measured the current variant (its model is on the board)."""
    return hil_session.station


@pytest.fixture
def board(hil_session: HilSession, variant: str, measurement):
    """The board's `hello` (hil.protocol.Hello) with the current variant's model flashed and handshaken."""
    return hil_session.hellos[variant]


@pytest.fixture
def hil_dut(station) -> Iterator[Any]:
    """An open protocol client (hil.protocol.DutClient) to the board running the current variant.

    Named `hil_dut` because `dut` is pytest-embedded's fixture (its serial `dut.expect`), usable alongside.
    """
    with station.dut() as client:
        yield client


@pytest.fixture
def scope(station) -> Iterator[Any]:
    """An open oscilloscope driver (instruments.scope.Oscilloscope) of the current variant's station."""
    with station.scope() as instrument:
        yield instrument


def _user_errors_as_failures(fn: Callable[[], Any]) -> Any:
    """A user mistake in a fixture (bad bench file, unreachable board) fails the test with one line."""
    try:
        return fn()
    except USER_ERRORS as exc:
        pytest.fail(f"hil: {exc}", pytrace=False)
