"""A measurement campaign: the per-variant pipeline and the run it records, with or without pytest.

For every selected variant: take the factory's artifact (built or cached), flash it on the station, read
`hello`, capture power over the trials, stream the test set for on-device accuracy, and record every figure
in the results database the moment it is taken. `pytest -m hil` (the plugin) and `hil measure` (the CLI)
both drive this module; budgets and cross-checks are judged by the same functions in both.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.budgets import Budgets, Verdict, judge
from hil.errors import USER_ERRORS, HilError
from hil.filelock import file_lock
from hil.measure import PULSE_VS_LATENCY_MAX_PCT, AccuracyResult, Figure, Settings, runner_figures
from hil.wire import INFER_MAX_N, INFER_MAX_WARMUP

Progress = Callable[[str], None]

# Device outputs against host TFLM outputs: identical kernels give 100 %; ESP-NN optimised kernels round
# differently in the last bit, which can flip a near-tie.
OUTPUT_AGREEMENT_MIN_PCT = 98.0
OUTPUT_COSINE_MIN = 0.99
DEVICE_ACCURACY_METRICS = ("accuracy", "output_agreement", "output_cosine")
MAX_TRIALS = 1000  # captures per variant; more is a typo, not a measurement plan
MAX_WINDOW_S = 3600.0  # seconds of inference per capture; more is a typo (at most 1000 inferences are captured)


# The campaign's options, declared once: `pytest -m hil` adds them to its `hil` group, `hil measure` to its parser.
class Skipped(Exception):
    """The variant cannot run on the bench (e.g. TFLM cannot allocate it); carries the reason."""


@dataclass(frozen=True)
class CampaignOptions:
    """What to measure and where to record it: the `pytest -m hil` options, also `hil measure`'s."""

    bench: Path = Path("bench.yaml")
    budgets: Path = Path("budgets.yaml")
    variants: list[str] | None = None
    models_config: Path | None = None
    models_dir: Path = Path("artifacts/models")
    data: str = "digits"
    inferences: int | None = None
    window: float = 1.0
    warmup: int = 5
    trials: int = 5
    flash_app: bool = False
    accuracy_samples: int = 0
    results_db: Path = Path("reports/results.sqlite")
    report_dir: Path = Path("reports/latest")
    baseline: str | None = None
    gate: list[str] = field(default_factory=list)
    remeasure_of: int | None = None  # this run re-measures run N for the gate (hil gate --remeasure)
    noise_seed: int | None = None  # virtual bench: replay a run's bench noise (overrides virtual.noise.seed)
    inject: list[str] = field(default_factory=list)  # virtual bench: VARIANT:KIND=FACTOR regressions

    @classmethod
    def from_values(cls, get: Callable[[str], Any]) -> CampaignOptions:
        """The options from a lookup by flag (`--bench` ...): pytest's getoption, or argparse's namespace."""
        chunks = get("--variants")
        names = None if chunks is None else [n.strip() for chunk in chunks for n in chunk.split(",") if n.strip()]
        return cls(
            bench=Path(get("--bench")), budgets=Path(get("--budgets")), variants=names,
            models_config=Path(get("--models-config")) if get("--models-config") else None,
            models_dir=Path(get("--models-dir")), data=get("--data"), inferences=get("--inferences"),
            window=get("--window"), warmup=get("--warmup"), trials=get("--trials"), flash_app=get("--flash-app"),
            accuracy_samples=get("--accuracy-samples"), results_db=Path(get("--results-db")),
            report_dir=Path(get("--report-dir")), baseline=get("--baseline"), gate=list(get("--gate")),
            noise_seed=get("--noise-seed"), inject=list(get("--inject") or []),
        )

    def validate(self) -> None:
        """Every option checked before anything is measured: one HilError naming the option and the fix."""
        if self.variants is not None and not self.variants:
            raise HilError("--variants names no variant; give names such as baseline-int8, or leave it out")
        # the firmware's limits (`infer N W`: N <= 1000, W <= 100) and a bound past which a value is a typo
        for name, value, low, high in (("--trials", self.trials, 1, MAX_TRIALS),
                                       ("--warmup", self.warmup, 0, INFER_MAX_WARMUP),
                                       ("--accuracy-samples", self.accuracy_samples, 0, None),
                                       ("--inferences", self.inferences, 1, INFER_MAX_N)):
            if value is None and name == "--inferences":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low or (high and value > high):
                what = f"a whole number from {low} to {high}" if high else "zero or a positive whole number"
                raise HilError(f"{name} must be {what}, got {value}")
        window = self.window
        if (not isinstance(window, int | float) or isinstance(window, bool) or not math.isfinite(window)
                or not 0 < window <= MAX_WINDOW_S):
            raise HilError(f"--window must be a number of seconds above 0 and at most {MAX_WINDOW_S:g}, got {window}")
        if self.gate and not self.baseline:
            raise HilError("--gate needs --baseline REF (a branch such as main, whose last runs form the window, or "
                           "run ids such as 31-40) to compare with")
        self.tolerances()
        if self.noise_seed is not None and (not isinstance(self.noise_seed, int) or self.noise_seed < 0):
            raise HilError(f"--noise-seed must be zero or more, got {self.noise_seed}")
        if self.injections():
            from hil.bench import load_bench

            real = [b for b in load_bench(self.bench).boards if not b.is_virtual]
            if real:
                raise HilError(f"--inject acts on the virtual bench only, and board {real[0].name!r} of {self.bench} "
                               f"is on {real[0].port}; remove --inject (or use a virtual bench)")

    def injections(self) -> list[Any]:
        """`--inject VARIANT:KIND=FACTOR` parsed (hil.bench.Injection each); a bad token is one HilError."""
        from pydantic import ValidationError

        from hil.bench import Injection

        out = []
        for token in self.inject:
            variant, _, rest = token.partition(":")
            kind, _, factor = rest.partition("=")
            try:
                out.append(Injection(variant=variant.strip(), kind=kind.strip(), factor=float(factor)))
            except (ValueError, ValidationError):
                raise HilError(f"--inject {token!r}: expected VARIANT:KIND=FACTOR with KIND energy, power or latency "
                               "and FACTOR > 0, e.g. --inject baseline-int8:energy=1.05") from None
        return out

    def virtual_noise(self, bench: Any, session: str) -> dict[str, Any]:
        """The run's bench noise and injections, for its meta; pinned on `bench` (the station opens from it).

        The seed is --noise-seed, else `virtual.noise.seed`, else derived from the session id (every xdist
        worker of the session derives the same); --inject entries replace the bench file's for the same variant
        and kind. On a bench without a virtual board there is no noise and nothing to inject.
        """
        from hil.sim.noise import session_seed

        v = bench.virtual
        virtual = any(b.is_virtual for b in bench.boards)
        enabled = v.noise.enabled and virtual
        seed = None
        if enabled:
            seed = self.noise_seed if self.noise_seed is not None else v.noise.seed
            seed = seed if seed is not None else session_seed(session)
            v.noise = v.noise.model_copy(update={"seed": seed})
        given = {(i.variant, i.kind): i for i in self.injections()}
        v.inject = [i for i in v.inject if (i.variant, i.kind) not in given] + list(given.values())
        noise = {"enabled": enabled, "between_run_cv": v.noise.between_run_cv,
                 "shared_fraction": v.noise.shared_fraction, "trial_cv": v.noise.trial_cv, "seed": seed}
        return {"noise": noise, "inject": [i.model_dump() for i in v.inject] if virtual else []}

    def check_outputs(self) -> None:
        """The output paths are usable before anything is measured: report folder and factory folder writable,
        results database a results database. One HilError naming the option and the fix."""
        from hil.results import ResultsStore

        for option, folder in (("--report-dir", self.report_dir), ("--models-dir", self.models_dir.parent),
                               ("--results-db", self.results_db.parent)):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                raise HilError(f"{option} {folder}: not a writable folder ({exc.strerror}); pass another "
                               f"{option}") from None
        ResultsStore(self.results_db).close()  # a corrupt or foreign file is one clear error now, not later

    def tolerances(self) -> dict[str, Any]:
        """`--gate METRIC:TOL` parsed (hil.gate.Tolerance by metric)."""
        from hil.gate import parse_tolerances

        return parse_tolerances(self.gate)

    def settings(self) -> Settings:
        """The capture settings of every variant."""
        return Settings(inferences=self.inferences, warmup=self.warmup, trials=self.trials, window_s=self.window)


_DEFAULT = CampaignOptions()  # the one place the defaults live; OPTIONS shows them
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--bench", {"default": str(_DEFAULT.bench), "help": "bench file (default: %(default)s, the virtual bench)"}),
    ("--budgets", {"default": str(_DEFAULT.budgets), "help": "budget file (default: %(default)s)"}),
    ("--variants", {"action": "append", "default": None, "metavar": "NAMES",
                    "help": "comma-separated variants, recipes or reference-study names (default: the whole matrix)"}),
    ("--models-config", {"default": None, "help": "variant matrix (default: models/variants.yaml)"}),
    ("--models-dir", {"default": str(_DEFAULT.models_dir), "help": "factory output folder (default: %(default)s)"}),
    ("--data", {"default": _DEFAULT.data, "help": "data set: digits | svhn:PATH | mnist:PATH | fashion:PATH"}),
    ("--inferences", {"type": int, "default": None, "help": "timed inferences per capture (default: --window)"}),
    ("--window", {"type": float, "default": _DEFAULT.window,
                  "help": "seconds of timed inference per capture when --inferences is not given (default: "
                          "%(default)s; MLPerf Tiny practice on a real bench: 10)"}),
    ("--warmup", {"type": int, "default": _DEFAULT.warmup,
                  "help": "warm-up inferences before each capture (default: %(default)s)"}),
    ("--flash-app", {"action": "store_true",
                     "help": "build the benchmark firmware (ESP-IDF) and flash the app once before measuring"}),
    ("--trials", {"type": int, "default": _DEFAULT.trials,
                  "help": "captures per variant; median reported (default: %(default)s)"}),
    ("--accuracy-samples", {"type": int, "default": _DEFAULT.accuracy_samples,
                            "help": "test images streamed to the device (0 = all)"}),
    ("--results-db", {"default": str(_DEFAULT.results_db), "help": "results history (default: %(default)s)"}),
    ("--report-dir", {"default": str(_DEFAULT.report_dir), "help": "report folder (default: %(default)s)"}),
    ("--baseline", {"default": None, "metavar": "REF",
                    "help": "gate against a branch's last 10 runs (main, latest-main) or run ids (31-40)"}),
    ("--gate", {"action": "append", "default": [], "metavar": "METRIC:TOL", "help": "e.g. energy_mj:5%%"}),
    ("--noise-seed", {"type": int, "default": None, "metavar": "N",
                      "help": "virtual bench: the bench-noise seed, to replay a run's noise (default: "
                              "virtual.noise.seed, else a new one per run)"}),
    ("--inject", {"action": "append", "default": [], "metavar": "VARIANT:KIND=FACTOR",
                  "help": "virtual bench: inject a regression, KIND energy, power or latency "
                          "(e.g. baseline-int8:energy=1.05; repeatable)"}),
)


def cross_checks(variant: str, figures: dict[str, Figure]) -> dict[str, Verdict]:
    """The two checks every variant gets besides its budgets: scope pulse vs reported latency, device vs host."""
    out: dict[str, Verdict] = {}
    pulse = figures.get("pulse_vs_latency_pct")
    if pulse is not None:
        if pulse.skipped:
            out["pulse_vs_latency_pct"] = Verdict("skipped", pulse.reason or "not measurable here")
        elif not pulse.valid or pulse.value is None:
            out["pulse_vs_latency_pct"] = Verdict("failed", f"{variant}: no valid scope capture: {pulse.reason}")
        else:
            width, latency = figures["pulse_width_ms"].value, figures["latency_ms"].value
            ok = pulse.value <= PULSE_VS_LATENCY_MAX_PCT
            out["pulse_vs_latency_pct"] = Verdict("passed" if ok else "failed", (
                f"{variant}: scope pulse width {width:.3f} ms differs from the reported latency {latency:.3f} ms "
                f"by {pulse.value:.2f} % (max {PULSE_VS_LATENCY_MAX_PCT} %)"))
    agreement, cosine = figures.get("output_agreement"), figures.get("output_cosine")
    if agreement is not None and cosine is not None:
        if agreement.skipped:
            out["output_agreement"] = Verdict("skipped", agreement.reason or "not measurable here")
        elif agreement.value is None or cosine.value is None:
            out["output_agreement"] = Verdict("failed", f"{variant}: no host TFLM outputs to compare with")
        elif agreement.value < OUTPUT_AGREEMENT_MIN_PCT:
            out["output_agreement"] = Verdict("failed", (
                f"{variant}: device top-1 agrees with host TFLM on {agreement.value:.1f} % of "
                f"{agreement.trials} images (min {OUTPUT_AGREEMENT_MIN_PCT} %)"))
        elif cosine.value < OUTPUT_COSINE_MIN:
            out["output_agreement"] = Verdict("failed", (
                f"{variant}: mean output cosine {cosine.value:.4f} < {OUTPUT_COSINE_MIN}"))
        else:
            out["output_agreement"] = Verdict("passed", f"{variant}: device outputs match host TFLM")
    return out


class RunRecorder:
    """One run in the results database, shared by every process of a session (xdist workers) via `session`.

    Each figure is committed the moment it is recorded: a killed run keeps every finished row.
    """

    def __init__(self, db: Path, *, session: str, flags: dict[str, Any], meta: dict[str, Any], simulated: bool,
                 bench: str) -> None:
        self.db = db
        self.session = session
        self._flags, self._meta, self._simulated, self._bench = flags, meta, simulated, bench
        self._store = None
        self._run_id: int | None = None

    @property
    def store(self):
        """The results database (hil.results.ResultsStore)."""
        if self._store is None:
            from hil.results import ResultsStore

            self._store = ResultsStore(self.db)
        return self._store

    def find(self) -> int | None:
        """This session's run, if a process of the session created it."""
        if not self.db.is_file():
            return None
        return next((r.id for r in self.store.runs() if r.flags.get("session") == self.session), None)

    @property
    def run_id(self) -> int:
        """This session's run id, created by the first process that records anything."""
        if self._run_id is None:
            with file_lock(self.db.with_suffix(".lock")):
                self._run_id = self.find()
                if self._run_id is None:
                    self._run_id = self.store.start_run(bench=self._bench, simulated=self._simulated,
                                                        flags={"session": self.session, **self._flags},
                                                        meta=self._meta)
        return self._run_id

    @property
    def folder(self) -> Path:
        """Where this run's waveforms, analyses and plots are kept (next to the database)."""
        return self.db.parent / "runs" / str(self.run_id)

    def record(self, variant: str, metric: str, fig: Figure) -> None:
        self.store.record(self.run_id, variant, metric, fig.value, valid=fig.valid, reason=fig.reason,
                          trials=fig.trials, spread=fig.spread, skipped=fig.skipped, values=fig.values)

    def record_missing(self, variant: str, metrics: list[str], reason: str, *, skipped: bool) -> None:
        """Every metric not measured yet gets a row with the reason: nothing is silently absent."""
        done = {m.metric for m in self.store.measurements(self.run_id) if m.variant == variant}
        for metric in metrics:
            if metric not in done:
                self.store.record(self.run_id, variant, metric, None, valid=False, reason=reason, skipped=skipped)

    def record_outcome(self, variant: str, metric: str, verdict: Verdict, test: str = "") -> None:
        self.store.record_outcome(self.run_id, variant, metric, verdict.outcome, verdict.message, test=test)

    def keep_file(self, variant: str, kind: str, data: bytes, name: str) -> None:
        """Write a file into the run's folder and list it, so the run's report never reads the factory."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / name
        target.write_bytes(data)
        self.store.add_artifact(self.run_id, variant, kind, target)

    def save_traces(self, variant: str, power) -> None:
        """Keep the median-energy trial's waveforms and analysis, so the report can plot them later."""
        trials = [t for t in power.trials if t.report.valid] or list(power.trials)
        if not trials:
            return
        trials.sort(key=lambda t: t.report.energy_per_inference_mj.mean if t.report.valid else 0.0)
        trial = trials[len(trials) // 2]
        self.folder.mkdir(parents=True, exist_ok=True)
        for kind, wf in (("trace_shunt", trial.shunt), ("trace_marker", trial.marker)):
            path = wf.save(self.folder / f"{variant}-{kind.removeprefix('trace_')}.npz")
            self.store.add_artifact(self.run_id, variant, kind, path)
        report = self.folder / f"{variant}-power.json"
        report.write_text(json.dumps(trial.report.to_dict()))
        self.store.add_artifact(self.run_id, variant, "power", report)


@dataclass
class Finish:
    """How a run ended: its id, the report written (or why not) and the gate's result."""

    run_id: int | None
    status: str
    report_path: Path | None = None
    report_error: str | None = None
    gate: Any = None  # hil.gate.GateResult


class Campaign:
    """One process's part of a run: the plan, the station it owns, the figures it measured.

    `worker` is the xdist worker index (None: a single process); worker k measures on station k.
    """

    def __init__(self, options: CampaignOptions, *, session: str | None = None, worker: int | None = None,
                 progress: Progress = lambda _: None, station: Any = None) -> None:
        self.options = options
        self.session = session or uuid.uuid4().hex
        self.worker = worker
        self.progress = progress
        self.phases: dict[str, float] = defaultdict(float)
        self.suite: dict[str, Any] = {}  # board, firmware, scope IDN ...: the run's provenance
        self.hellos: dict[str, Any] = {}  # variant -> the board's hello after flashing it
        self._plan: tuple[list[str], Budgets] | None = None
        self._bench = None
        self._virtual: dict[str, Any] = {}  # the run's bench noise and injections (meta), set with the bench
        self._artifacts = None
        self._snapshots: dict[str, Any] = {}  # variant -> VariantSnapshot, or the error reading it
        self._dataset = None
        self._station = station  # given (a lab place's): measured on it; else worker k opens board k of the bench
        self._recorder: RunRecorder | None = None
        self._measured: dict[str, dict[str, Figure]] = {}
        self._not_measured: dict[str, Exception] = {}
        self._crashes: dict[str, str] = {}  # variant -> the unexpected error that ended its measurement
        self._no_app: str | None = None

    # -- configuration --------------------------------------------------------------------------------
    def plan(self) -> tuple[list[str], Budgets]:
        """(selected variant names, budgets), validated with the options. Cheap: nothing is built."""
        if self._plan is None:
            from hil.budgets import load_budgets
            from models.registry import DEFAULT_CONFIG, load_registry

            self.options.validate()
            registry = load_registry(self.options.models_config or DEFAULT_CONFIG)
            selected = [v.name for v in registry.select(self.options.variants)]
            budgets = load_budgets(self.options.budgets)
            budgets.check_variants([v.name for v in registry.variants()])
            if not budgets.cases(selected):  # a run that checks nothing must not pass as green
                raise HilError(f"{budgets.source}: no budget applies to the selected variants; add limits under "
                               "defaults:, e.g. `latency_ms: {max: 100}`")
            self._plan = (selected, budgets)
        return self._plan

    @property
    def bench(self):
        """The bench configuration (hil.bench.BenchConfig), with this session's noise seed and injections
        pinned on it, so every station opened from it draws the session's noise."""
        if self._bench is None:
            from hil.bench import load_bench

            bench = load_bench(self.options.bench)
            self._virtual = self.options.virtual_noise(bench, self.session)
            self._bench = bench
        return self._bench

    @property
    def recorder(self) -> RunRecorder:
        """The run this campaign records into."""
        if self._recorder is None:
            selected, budgets = self.plan()
            o = self.options
            flags = {"variants": selected, "trials": o.trials, "warmup": o.warmup, "inferences": o.inferences,
                     "window_s": o.window, "accuracy_samples": o.accuracy_samples, "data": o.data}
            if o.remeasure_of is not None:
                flags["remeasure_of"] = o.remeasure_of
            if o.noise_seed is not None:  # pinned by the user: its re-measurements are pinned from it too
                flags["noise_seed"] = o.noise_seed
            flags.update(budgets=str(o.budgets), models_config=str(o.models_config or ""),
                         models_dir=str(o.models_dir))
            meta = {"bench_name": str(o.bench), "simulated": self.bench.is_virtual or self.bench.is_emulated,
                    "emulated": self.bench.is_emulated, "faults": self.bench.virtual.faults.armed(),
                    **self._virtual,  # noise and inject, as pinned on the bench config
                    "budgets": {v: {m: {"min": lim.min, "max": lim.max} for m, lim in budgets.for_variant(v).items()}
                                for v in selected}}
            self._recorder = RunRecorder(o.results_db, session=self.session, flags=flags, meta=meta,
                                         simulated=meta["simulated"], bench=str(o.bench))
        return self._recorder

    # -- inputs ---------------------------------------------------------------------------------------
    def artifacts(self):
        """The factory's artifacts (models.artifacts.ArtifactSet), building whatever is missing (cached)."""
        if self._artifacts is None:
            from models.artifacts import load_artifacts
            from models.factory import build

            selected, _ = self.plan()
            t0 = time.perf_counter()
            o = self.options
            with file_lock(o.models_dir.parent / f".{o.models_dir.name}.lock"):
                self.progress(f"model factory: {len(selected)} variants into {o.models_dir}")
                build(o.models_config or _default_config(), o.models_dir, o.data, selected, progress=self.progress)
                self._artifacts = load_artifacts(o.models_dir)
                # read while the folder is locked: another run rebuilding it later changes nothing here
                for name in selected:
                    try:
                        self._snapshots[name] = self._artifacts[name].snapshot()
                    except USER_ERRORS as exc:
                        self._snapshots[name] = exc
            self.phases["factory_s"] += time.perf_counter() - t0
        return self._artifacts

    def adopt(self, source: Campaign) -> None:
        """Take `source`'s built artifacts, snapshots and data set: one factory build for many places' campaigns
        of the same run (they only read them)."""
        source.artifacts()
        self._artifacts, self._snapshots, self._dataset = source._artifacts, source._snapshots, source.dataset()

    def invalidate(self, variant: str, reason: str) -> None:
        """Mark every figure this run recorded for `variant` invalid with `reason` (a measurement cut short: none
        of it may stand as valid, whatever a later measurement records over it)."""
        rec = self.recorder
        for m in rec.store.measurements(rec.run_id):
            if m.variant == variant and m.valid:
                rec.store.record(rec.run_id, variant, m.metric, None, valid=False, reason=reason)
        self._measured.pop(variant, None)
        self._not_measured.pop(variant, None)

    def snapshot(self, variant: str):
        """The variant's files as read right after the build (models.artifacts.VariantSnapshot)."""
        self.artifacts()
        snap = self._snapshots.get(variant)
        if snap is None:
            raise HilError(f"{variant} is not among the selected variants")
        if isinstance(snap, Exception):
            raise snap
        return snap

    def dataset(self):
        """The data set's test split, for on-device accuracy."""
        if self._dataset is None:
            from models.datasets import load
            from models.registry import load_registry

            seed = load_registry(self.options.models_config or _default_config()).config.seed
            self._dataset = load(self.options.data, seed=seed)
        return self._dataset

    @property
    def station(self):
        """This process's station (hil.station.Station): worker k takes board k of the bench."""
        if self._station is None:
            from hil.station import AppUnavailable, open_station

            boards = self.bench.boards
            index = self.worker or 0
            if index >= len(boards):
                raise HilError(f"xdist worker gw{index} has no board: {self.options.bench} lists {len(boards)} "
                               f"board(s); run with -n {len(boards)} or fewer")
            station = open_station(self.bench, boards[index].name).start()
            armed = self.bench.virtual.faults.armed() if station.simulated and station.board.is_virtual else []
            if armed:
                self.progress(f"{station.spec.name}: faults injected (virtual.faults, docs/faults.md): "
                              + "; ".join(armed))
            if self.options.flash_app:
                try:
                    station.install_app()
                except AppUnavailable as exc:
                    station.stop()
                    self._no_app = str(exc)
                    raise Skipped(f"the benchmark app cannot be built: {exc}") from None
            self._station = station
        return self._station

    # -- measuring ------------------------------------------------------------------------------------
    def measure(self, variant: str) -> dict[str, Figure]:
        """All figures of one variant (metric -> Figure), measured once and recorded as they are taken.

        Raises Skipped when the variant cannot run here, HilError when its measurement failed; either way
        every budgeted metric not measured gets a row with the reason, and a second call raises the same.
        """
        if self._no_app is not None:
            raise Skipped(f"the benchmark app cannot be built: {self._no_app}")
        if variant in self._not_measured:
            raise self._not_measured[variant]
        if variant not in self._measured:
            _, budgets = self.plan()
            metrics = list(budgets.for_variant(variant))
            try:
                self._measured[variant] = self._measure(variant)
            except Skipped as exc:
                self._not_measured[variant] = exc
                self.recorder.record_missing(variant, metrics, str(exc), skipped=True)
                raise
            except USER_ERRORS as exc:
                error = HilError(f"{variant}: {exc}")
                self._not_measured[variant] = error
                self.recorder.record_missing(variant, metrics, f"measurement failed: {exc}", skipped=False)
                raise error from None
            except Exception as exc:  # a bug or an unforeseen fault: recorded once, never re-measured per test
                error = HilError(f"{variant}: unexpected {type(exc).__name__}: {exc}")
                self._not_measured[variant] = error
                self.recorder.record_missing(variant, metrics, f"measurement failed: {error}", skipped=False)
                self._crashes[variant] = str(error)  # in the run's meta at once: the run can no longer pass
                who = f"gw{self.worker}" if self.worker is not None else "main"
                self.recorder.store.update_meta(self.recorder.run_id, **{f"crashes_{who}": dict(self._crashes)})
                raise
        return self._measured[variant]

    def _measure(self, variant: str) -> dict[str, Figure]:
        from hil.measure import POWER_METRICS

        arts = self.artifacts()
        art = arts[variant]
        rec = self.recorder
        station = self.station
        if "factory" not in rec.store.run(rec.run_id).meta:
            rec.store.update_meta(rec.run_id, factory=arts.meta, models_dir=str(arts.folder.resolve()))
        rec.store.record_variant(rec.run_id, variant, sha256=art.sha256, station=station.spec.name, factory=art.row)
        snap = self.snapshot(variant)
        if snap.roc_png is not None:
            rec.keep_file(variant, "roc", snap.roc_png, f"{variant}-roc.png")
        if snap.weights_png is not None:
            rec.keep_file(variant, "weights", snap.weights_png, f"{art.recipe}-weights.png")
        if not art.tflm_ok or snap.model is None:
            raise Skipped(f"{variant} is not deployable on TFLite Micro: {art.tflm_error}")
        model = snap.model
        figures: dict[str, Figure] = {}

        def keep(metric: str, fig: Figure) -> None:
            figures[metric] = fig
            rec.record(variant, metric, fig)

        t0 = time.perf_counter()
        self.progress(f"{variant}: flashing {len(model):,} bytes to {station.spec.name}")
        station.flash(model, arena_bytes=art.arena_bytes, source=variant)
        self.phases["flash_s"] += time.perf_counter() - t0
        keep("flash_kb", Figure(len(model) / 1024))
        if art.accuracy is not None:
            keep("accuracy_host", Figure(art.accuracy * 100))
        with station.dut() as dut:
            hello = dut.hello_info
            if hello is None:
                raise HilError(f"{station.spec.name}: no hello from the board after flashing")
            self.hellos[variant] = hello
            self.suite.update(board=station.spec.name, board_id=hello.board_id, firmware=hello.firmware,
                              protocol=hello.protocol, simulated=station.simulated or hello.simulated)
            if not hello.model_ok:  # the host runtime runs it, so the board refusing it is a failure
                raise HilError(f"the board refused the model: {hello.model_error}")
            unavailable = station.model_figures_unavailable(hello)
            if unavailable is not None:  # every figure of the model on this board would be wrong: none is taken
                for metric in ("arena_kb", "latency_ms", "latency_p95_ms", *POWER_METRICS, *DEVICE_ACCURACY_METRICS):
                    keep(metric, Figure.not_measurable(unavailable))
                return figures
            keep("arena_kb", Figure(hello.arena_used / 1024) if hello.arena_used is not None else
                 Figure.not_measurable(f"{station.spec.name} does not report its tensor arena"))
            try:
                with _board_failures_said_plainly(station.spec.name, dut):
                    acc = self._measure_on_board(variant, station, dut, snap, keep)
                    self._keep_profile(variant, station, dut, model)
                for metric, fig in runner_figures(figures).items():
                    keep(metric, fig)
            finally:  # how hard the serial link had to work for these figures (provenance)
                self.suite.setdefault("serial_link", {})[variant] = {"resyncs": dut.resyncs,
                                                                     "corrupted_replies": dut.garbage}
        keep("accuracy", Figure(acc.accuracy_pct, trials=acc.samples))
        keep("output_agreement", Figure(acc.agreement_pct, trials=acc.samples))
        keep("output_cosine", Figure(acc.cosine, trials=acc.samples))
        return figures

    def _keep_profile(self, variant: str, station, dut, model: bytes) -> None:
        """The board's per-layer profile of one inference (`profile`), kept as a file of the run for the report and
        the gate; a board that cannot profile says why in the progress, and no figure changes."""
        from hil.profiling import from_board
        from hil.protocol import DutError, DutTimeout

        if not hasattr(dut, "profile"):  # an MLPerf Tiny DUT has no such command
            return
        try:
            prof = dut.profile()
        except DutTimeout:
            raise
        except DutError as exc:
            self.progress(f"{variant}: no per-layer profile: {exc}")
            return
        kind = " (simulated)" if station.simulated else " (emulated)" if station.emulated else ""
        layers = from_board(prof, model, source=f"{station.spec.name} profile{kind}")
        self.recorder.keep_file(variant, "profile", layers.to_json().encode(), f"{variant}-profile.json")

    def _measure_timestamp_windows(self, variant: str, station, dut, keep: Callable[[str, Figure], None]) -> None:
        """An MLPerf Tiny DUT in energy mode: latency, power and energy between its timestamp edges on the scope, idle
        power after them; the pulse-against-timer cross-check, which needs the DUT's own latency, is not measurable."""
        from hil.measure import POWER_METRICS, measure_energy_windows

        with _opened(station.scope()) as scope:
            self.suite.setdefault("scope_idn", scope.idn)
            figures = measure_energy_windows(dut, scope, station.spec, self.options.settings(),
                                             progress=lambda s: self.progress(f"{variant}: {s}"))
        for metric, fig in figures.items():
            keep(metric, fig)
        why = ("an MLPerf Tiny DUT's energy mode reports no latency of its own to hold the timestamp window against "
               "(its edges are the only clock)")
        for metric in POWER_METRICS:
            if metric not in figures:
                keep(metric, Figure.not_measurable(why))

    def _measure_on_board(self, variant: str, station, dut, snap,
                          keep: Callable[[str, Figure], None]) -> AccuracyResult:
        """Latency and power (or latency alone) recorded through `keep`, then the on-device accuracy."""
        from hil.measure import METER_METRICS, POWER_METRICS, measure_accuracy, measure_latency, measure_power
        from instruments.errors import InstrumentError

        rec = self.recorder
        t1 = time.perf_counter()
        if station.measures_power and not getattr(dut, "per_inference_latency", True):
            self._measure_timestamp_windows(variant, station, dut, keep)
        elif station.measures_power:
            power, failure = None, None
            with _opened(station.scope()) as scope, _opened(station.meter()) as meter:
                if scope is not None:
                    self.suite.setdefault("scope_idn", scope.idn)
                if meter is not None:
                    self.suite.setdefault("meter_idn", meter.idn)
                try:
                    power = measure_power(dut, scope, station.spec, self.options.settings(), meter=meter,
                                          progress=lambda s: self.progress(f"{variant}: {s}"))
                except InstrumentError as exc:  # the instrument failed, not the board: keep what the board gives
                    failure = f"power not measured: {exc}"
                finally:
                    recoveries = getattr(scope, "recoveries", [])  # transfers retried on a new connection
                    for recovery in recoveries:
                        self.progress(f"{variant}: scope: {recovery}")
                        self.suite.setdefault("scope_recoveries", []).append(f"{variant}: {recovery}")
                    recoveries.clear()
            if power is not None:
                for metric, fig in power.figures().items():
                    keep(metric, fig)
                rec.save_traces(variant, power)
            else:
                self.progress(f"{variant}: {failure}; latency from the board's own timer, then accuracy")
                for metric in POWER_METRICS + (METER_METRICS if meter is not None else ()):
                    keep(metric, Figure(None, valid=False, reason=failure))
                for metric, fig in measure_latency(dut, self.options.settings(),
                                                   progress=lambda s: self.progress(f"{variant}: {s}")).items():
                    keep(metric, fig)
        else:
            for metric, fig in measure_latency(dut, self.options.settings(),
                                               progress=lambda s: self.progress(f"{variant}: {s}")).items():
                keep(metric, fig)
            for metric in POWER_METRICS:
                keep(metric, Figure.not_measurable(station.no_power_reason))
        self.phases["power_s"] += time.perf_counter() - t1
        t2 = time.perf_counter()
        ds = self.dataset()
        n = self.options.accuracy_samples or len(ds.x_test)
        self.progress(f"{variant}: streaming {n} test images for on-device accuracy")
        acc = measure_accuracy(dut, ds.x_test[:n], ds.y_test[:n], host_outputs=snap.host_outputs,
                               progress=lambda message: self.progress(f"{variant}: {message}"))
        self.phases["accuracy_s"] += time.perf_counter() - t2
        return acc

    def verdicts(self, variant: str, figures: dict[str, Figure]) -> dict[str, Verdict]:
        """Every budget of the variant and its cross-checks, judged on its figures."""
        _, budgets = self.plan()
        out = {}
        for metric, limit in budgets.for_variant(variant).items():
            fig = figures.get(metric)
            out[metric] = (judge(limit, fig.value, valid=fig.valid, reason=fig.reason, skipped=fig.skipped)
                           if fig is not None else judge(limit, None))
        return {**out, **cross_checks(variant, figures)}

    # -- ending ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the station and leave this process's phase times and variants in the run's metadata."""
        if self._station is not None:
            self._station.stop()
            self._station = None
        rec = self._recorder
        if rec is not None and rec.find() is not None:
            who = f"gw{self.worker}" if self.worker is not None else "main"
            rec.store.update_meta(rec.run_id, **{f"phases_{who}": dict(self.phases),
                                                 f"variants_{who}": sorted(self._measured)}, **self.suite)

    def finish(self, status: str) -> Finish:
        """Close the run with `status`, apply the gate and write the report (the controller only)."""
        rec = self.recorder
        run_id = rec.find()
        if run_id is None:
            return Finish(None, status)
        store = rec.store
        from hil.results import crashed

        if status == "passed" and crashed(store.run(run_id).meta):  # any process's unexpected error: no pass
            status = "failed"
        done = Finish(run_id, status)
        t0 = time.perf_counter()
        tolerances = None
        errors = []
        if self.options.baseline:
            from hil.gate import compare

            try:
                tolerances = self.options.tolerances()
                done.gate = compare(store, run_id, self.options.baseline, tolerances)
            except USER_ERRORS as exc:
                errors.append(f"gate: {exc}")
                done.status = "failed" if status == "passed" else status
            else:
                if done.gate.failed and status == "passed":
                    done.status = "failed"
        store.finish_run(run_id, done.status)
        try:
            from hil.report import write_report

            gated = done.gate is not None
            done.report_path = write_report(store, run_id, self.options.report_dir,
                                            baseline=self.options.baseline if gated else None,
                                            tolerances=tolerances if gated else None)
        except USER_ERRORS as exc:
            errors.append(f"report: {exc}")
        except OSError as exc:
            errors.append(f"report: cannot write {self.options.report_dir} ({exc.strerror}); pass another --report-dir")
        done.report_error = "; ".join(errors) or None
        store.update_meta(run_id, phases_report={"report_s": time.perf_counter() - t0})
        return done


@contextlib.contextmanager
def _board_failures_said_plainly(name: str, dut) -> Iterator[None]:
    """A protocol failure of a board that had answered, said as what the lab does next: a board that stopped
    answering or keeps resetting is not a wrong port or baud, as the client's own message must assume."""
    from hil.protocol import DutError, DutTimeout
    from hil.wire import READY_MARK

    try:
        yield
    except DutError as exc:
        if dut.garbage >= 2 and exc.code is not None:  # e.g. an upload lost to link noise every time it was tried
            raise HilError(f"{exc.args[0]}, after {dut.garbage} corrupted replies from {name}: the serial link is "
                           "corrupting bytes (check the cable, its length and grounding, and the baud rate)") from None
        if exc.code is not None or dut.garbage >= 2:  # the device's own error; a noisy link (the client says so)
            raise
        cause = str(exc.args[0]).split(";")[0]
        if any(READY_MARK in line for line in exc.lines[-1:]):
            raise HilError(f"{name} restarted again when the command was re-issued ({cause}): it keeps resetting; "
                           "check its supply for brown-outs and its serial log for a crash, then measure again"
                           ) from None
        if isinstance(exc, DutTimeout):
            raise HilError(f"{name} stopped answering during the measurement ({cause}): it hangs, lost power or "
                           "its replies are lost; power-cycle it, check its supply and USB cable, then measure "
                           "again") from None
        raise


def _opened(instrument):
    """An open instrument as a context manager that closes it; None (no such instrument) stays None."""
    return contextlib.nullcontext() if instrument is None else instrument


def _default_config() -> Path:
    from models.registry import DEFAULT_CONFIG

    return Path(DEFAULT_CONFIG)


def run(options: CampaignOptions, *, progress: Progress = print) -> tuple[Finish, dict[str, dict[str, Verdict]]]:
    """Measure every selected variant on the bench's first station, judge its budgets, record all, report.

    What `hil measure` does; `pytest -m hil` runs the same steps as tests.
    """
    campaign = Campaign(options, progress=progress)
    selected, _ = campaign.plan()
    campaign.bench  # noqa: B018  a bad bench file is refused before any model is built, not after
    options.check_outputs()
    verdicts: dict[str, dict[str, Verdict]] = {}
    status = "passed"
    try:
        for variant in selected:
            try:
                figures = campaign.measure(variant)
            except Skipped as exc:
                verdicts[variant] = {m: Verdict("skipped", str(exc)) for m in campaign.plan()[1].for_variant(variant)}
            except USER_ERRORS as exc:
                verdicts[variant] = {m: Verdict("failed", str(exc)) for m in campaign.plan()[1].for_variant(variant)}
            else:
                verdicts[variant] = campaign.verdicts(variant, figures)
            for metric, verdict in verdicts[variant].items():
                campaign.recorder.record_outcome(variant, metric, verdict, test="hil measure")
            if any(v.failed for v in verdicts[variant].values()):
                status = "failed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException:  # an unexpected error ends the campaign: what it measured is kept, the run is no pass
        status = "failed"
        raise
    finally:
        campaign.close()
        finish = campaign.finish(status)
    return finish, verdicts


def remeasurer(store, ref: int | str, *, progress: Progress = print) -> Callable[[list[str]], int]:
    """For `hil gate --remeasure`: variants -> the id of a new run that measures them again on the candidate
    run's bench, as the candidate was measured (settings, injections), recorded as its re-measurement.

    Each re-measurement is a new session with its own bench noise; when the candidate's noise seed was pinned
    (--noise-seed), theirs are derived from it, so a rehearsed gate replays bit for bit."""
    from hil.gate.window import remeasure_of

    cand = store.run(store.resolve(ref))
    if remeasure_of(cand) is not None:
        cand = store.run(remeasure_of(cand))
    f = cand.flags
    inject = [f"{i['variant']}:{i['kind']}={i['factor']}" for i in cand.meta.get("inject") or []]
    sessions = iter(range(1, 1 << 20))

    def measure(variants: list[str]) -> int:
        k = next(sessions)
        pinned = f.get("noise_seed")
        seed = None if pinned is None else (int(pinned) * 1_000_003 + k) % (1 << 32)
        options = CampaignOptions(
            bench=Path(cand.bench), budgets=Path(f.get("budgets", _DEFAULT.budgets)), variants=variants,
            models_config=Path(f["models_config"]) if f.get("models_config") else None,
            models_dir=Path(f.get("models_dir", _DEFAULT.models_dir)), data=f.get("data", _DEFAULT.data),
            inferences=f.get("inferences"), window=f.get("window_s", _DEFAULT.window),
            warmup=f.get("warmup", _DEFAULT.warmup), trials=f.get("trials", _DEFAULT.trials),
            accuracy_samples=f.get("accuracy_samples", _DEFAULT.accuracy_samples), results_db=store.path,
            report_dir=store.path.parent / "remeasure", remeasure_of=cand.id, inject=inject, noise_seed=seed)
        finish, _ = run(options, progress=progress)
        if finish.run_id is None:
            raise HilError(f"re-measuring {', '.join(variants)} recorded no run")
        return finish.run_id

    return measure
