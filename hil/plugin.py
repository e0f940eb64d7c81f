"""The `hil` pytest plugin (entry point `pytest11`): options, fixtures and hooks over `hil.campaign`.

`pytest -m hil` measures every model variant on the bench in `--bench` (virtual by default) and asserts
the budgets in `--budgets`. The campaign records every figure at once; this plugin parametrizes the tests,
stores each test's outcome per (variant, metric), and at the end closes the run, writes the report and
applies the gate. Under pytest-xdist each worker takes one board+scope pair of the bench and each variant
runs on one worker; all of them record into one run (the controller hands them the session id).
"""

from __future__ import annotations

import contextlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.budgets import Verdict
from hil.campaign import OPTIONS, Campaign, CampaignOptions, Skipped, cross_checks
from hil.embedded import manager_dies_with_pytest
from hil.errors import USER_ERRORS

SESSION_KEY = "hil_session_uid"
CAMPAIGN = pytest.StashKey[Campaign]()
FINISH = pytest.StashKey[Any]()
CROSS_CHECKS = ("pulse_vs_latency_pct", "output_agreement")  # the `check` parameter of the cross-check test
CASE_PROPERTY = "hil_case"  # (variant, metric) of a test, carried in its report's user_properties


# ------------------------------------------------------------------------------------------------ options
def pytest_addoption(parser: pytest.Parser) -> None:
    """The `hil` option group (hil.campaign.OPTIONS, shared with `hil measure`); also the `hil_options` fixture."""
    g = parser.getgroup("hil", "TinyML hardware-in-the-loop (pytest -m hil)")
    for flag, kwargs in OPTIONS:
        g.addoption(flag, **kwargs)


def options_from(config: pytest.Config) -> CampaignOptions:
    """The campaign options from pytest's command line."""
    return CampaignOptions.from_values(config.getoption)


def _campaign(config: pytest.Config) -> Campaign:
    """This process's campaign, created on first use and kept in the config's stash."""
    if CAMPAIGN not in config.stash:
        workerinput = getattr(config, "workerinput", None)
        worker = None if workerinput is None else int(str(workerinput["workerid"]).removeprefix("gw"))
        session = workerinput.get(SESSION_KEY) if workerinput else None
        config.stash[CAMPAIGN] = Campaign(options_from(config), session=session or uuid.uuid4().hex,
                                          worker=worker, progress=_progress(config, worker))
    return config.stash[CAMPAIGN]


def _progress(config: pytest.Config, worker: int | None) -> Callable[[str], None]:
    """Progress lines on the terminal (not from xdist workers, whose output is captured)."""

    def show(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or worker is not None:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(f"[hil] {line}")

    return show


def _hil_run(config: pytest.Config) -> bool:
    markexpr = config.getoption("markexpr", "") or ""
    return "hil" in markexpr and "not hil" not in markexpr


# ------------------------------------------------------------------------------------------------ hooks
def pytest_configure(config: pytest.Config) -> None:
    """Markers; on a `-m hil` run the options are checked first and junit.xml defaults into the report dir."""
    config.addinivalue_line("markers", "hil: budget tests that run model variants on a bench")
    config.addinivalue_line("markers", "slow: tests that take more than a few seconds")
    manager_dies_with_pytest()  # pytest-embedded's session manager process: never left orphaned by a SIGKILL
    if _hil_run(config) and not hasattr(config, "workerinput"):
        _check_path_options(config)
        try:
            _campaign(config).options.validate()
            _campaign(config).options.check_outputs()
        except USER_ERRORS as exc:
            raise pytest.UsageError(f"hil: {exc}") from None
        if not getattr(config.option, "xmlpath", None):
            config.option.xmlpath = str(Path(config.getoption("--report-dir")) / "junit.xml")
        config.pluginmanager.register(_OutcomeRecorder(config), "hil-outcomes")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "hil-xdist")


PATH_OPTIONS = ("--bench", "--budgets", "--models-config", "--models-dir", "--results-db", "--report-dir")


def _check_path_options(config: pytest.Config) -> None:
    """`--bench /elsewhere/b.yaml` (space-separated): pytest reads the value as a test path before this plugin's
    options are known, and moves its rootdir there. Say so and give the form that works, instead of the
    "import file mismatch" pytest would end with."""
    args, here = list(config.invocation_params.args), config.invocation_params.dir
    for option, value in zip(args, args[1:], strict=False):
        if option in PATH_OPTIONS and not (here / value).resolve().is_relative_to(here):
            raise pytest.UsageError(
                f"hil: {option} {value}: a path outside {here} after a space is taken by pytest for a test path "
                f"(its rootdir moves to {config.rootpath}); write {option}={value}"
            )


class _XdistHooks:
    """Hands this session's id to every xdist worker, so all of them record into one run."""

    @pytest.hookimpl
    def pytest_configure_node(self, node) -> None:
        node.workerinput[SESSION_KEY] = _campaign(node.config).session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `variant` (with `metric` from the budgets, or `check`) with ids grouped per variant."""
    if "variant" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("hil") is None:
        return
    try:
        selected, budgets = _campaign(metafunc.config).plan()
    except USER_ERRORS as exc:
        raise pytest.UsageError(f"hil: {exc}") from None
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")

    def group(v: str) -> list[pytest.MarkDecorator]:
        return [pytest.mark.xdist_group(v)] if xdist else []

    if "metric" in metafunc.fixturenames:
        params = [pytest.param(v, m, id=f"{v}-{m}", marks=group(v)) for v, m, _limit in budgets.cases(selected)]
        metafunc.parametrize(("variant", "metric"), params)
    elif "check" in metafunc.fixturenames:
        params = [pytest.param(v, c, id=f"{v}-{c}", marks=group(v)) for v in selected for c in CROSS_CHECKS]
        metafunc.parametrize(("variant", "check"), params)
    else:
        metafunc.parametrize("variant", [pytest.param(v, id=v, marks=group(v)) for v in selected])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Tag the report of a budget or cross-check test with its (variant, metric), for the outcome store."""
    outcome = yield
    params = getattr(getattr(item, "callspec", None), "params", {})
    metric = params.get("metric") or params.get("check")
    if "variant" in params and metric:
        report = outcome.get_result()
        report.user_properties.append((CASE_PROPERTY, [params["variant"], metric]))


class _OutcomeRecorder:
    """Stores each budget/cross-check test's outcome; on the controller, which sees every worker's reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        case = dict(report.user_properties).get(CASE_PROPERTY)
        if case is None or (report.when != "call" and not (report.failed or report.skipped)):
            return
        variant, metric = case
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr or "")
            verdict = Verdict("skipped", reason.removeprefix("Skipped: "))
        else:
            verdict = Verdict("failed" if report.failed else "passed", _message(report) if report.failed else "")
        with contextlib.suppress(*USER_ERRORS):  # the database itself failed: the session's end reports it
            _campaign(self.config).recorder.record_outcome(variant, metric, verdict, test=report.nodeid)


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    return text.removeprefix("Failed: ").strip().splitlines()[0] if text.strip() else "failed"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Close the run, apply the gate and write the report (the controller, or a single process)."""
    config = session.config
    if CAMPAIGN not in config.stash:
        return
    campaign = config.stash[CAMPAIGN]
    with contextlib.suppress(*USER_ERRORS):
        campaign.close()
    if campaign.worker is not None:
        return
    interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
    status = "interrupted" if interrupted else "passed" if exitstatus == 0 else "failed"
    try:
        finish = campaign.finish(status)
    except USER_ERRORS as exc:
        config.stash[FINISH] = exc
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    config.stash[FINISH] = finish
    if finish.gate is not None and finish.gate.failed and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if finish.report_error and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The figures of this run, the time per phase, the gate verdict and where the report is."""
    finish = config.stash.get(FINISH, None)
    tr = terminalreporter
    if isinstance(finish, Exception):
        tr.write_line(f"hil: error: {finish}", red=True)
        return
    if finish is None or finish.run_id is None:
        return
    from hil.report import summary_table

    store = config.stash[CAMPAIGN].recorder.store
    tr.section("hil results")
    tr.write_line(summary_table(store, finish.run_id))
    meta = store.run(finish.run_id).meta
    phases: dict[str, float] = defaultdict(float)
    seen: dict[str, list[str]] = defaultdict(list)
    for key, value in meta.items():
        if key.startswith("phases_") and isinstance(value, dict):
            for phase, seconds in value.items():
                phases[phase] += float(seconds)
        if key.startswith("variants_") and isinstance(value, list):
            for v in value:
                seen[v].append(key.removeprefix("variants_"))
    if phases:
        tr.write_line("time per phase (summed over workers): " + ", ".join(
            f"{k.removesuffix('_s')} {v:.1f} s" for k, v in phases.items()))  # fmt: skip
    twice = {v: w for v, w in seen.items() if len(w) > 1}
    if twice:
        tr.write_line("hil: warning: variants measured by several workers (run pytest-xdist with --dist loadgroup): "
                      + ", ".join(f"{v} ({', '.join(w)})" for v, w in sorted(twice.items())), yellow=True)
    if finish.gate is not None:
        tr.section("hil gate")
        tr.write_line(finish.gate.table())
        tr.write_line("gate: FAILED" if finish.gate.failed else "gate: passed")
    if finish.report_error:
        tr.write_line(f"hil: error: {finish.report_error}", red=True)
    if finish.report_path:
        tr.write_line(f"report: {finish.report_path}  (results database: {store.path}, run {finish.run_id})")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def hil_campaign(request: pytest.FixtureRequest) -> Campaign:
    """This process's measurement campaign (hil.campaign.Campaign)."""
    return _campaign(request.config)


@pytest.fixture(scope="session")
def hil_options(hil_campaign: Campaign) -> CampaignOptions:
    """The `hil` command-line options."""
    return hil_campaign.options


@pytest.fixture(scope="session")
def bench(hil_campaign: Campaign):
    """The bench configuration (hil.bench.BenchConfig)."""
    return _user_errors_as_failures(lambda: hil_campaign.bench)


@pytest.fixture(scope="session")
def budgets(hil_campaign: Campaign):
    """The validated budgets (hil.budgets.Budgets)."""
    return hil_campaign.plan()[1]


@pytest.fixture(scope="session")
def variants(hil_campaign: Campaign):
    """The factory's artifacts of the selected variants (models.artifacts.ArtifactSet), built or cached."""
    return _user_errors_as_failures(hil_campaign.artifacts)


@pytest.fixture
def measurement(hil_campaign: Campaign, variant: str, variants, record_testsuite_property) -> dict[str, Any]:
    """metric -> Figure for `variant`, measured once per session (flash, capture, accuracy) and recorded."""
    try:
        figures = _user_errors_as_failures(lambda: hil_campaign.measure(variant))
    except Skipped as exc:
        pytest.skip(str(exc))
    if hil_campaign.worker is None:
        for key, value in hil_campaign.suite.items():
            record_testsuite_property(key, value)
    return figures


@pytest.fixture
def check_verdict(variant: str, check: str, measurement) -> Verdict:
    """The verdict of cross-check `check` on the current variant's figures (hil.campaign.cross_checks)."""
    return cross_checks(variant, measurement)[check]


@pytest.fixture
def station(hil_campaign: Campaign, measurement):
    """The board+scope pair that measured the current variant (its model is on the board)."""
    return hil_campaign.station


@pytest.fixture
def board(hil_campaign: Campaign, variant: str, measurement):
    """The board's `hello` (hil.protocol.Hello) with the current variant's model flashed and handshaken."""
    return hil_campaign.hellos[variant]


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
