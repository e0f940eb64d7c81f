"""MLPerf Tiny's own models through the MLPerf Tiny path: latency, energy and results against the host TFLM runtime.

Each reference benchmark takes its input in its own wire format (kws01 int8 features, vww01 and ic01 uint8 RGB that
the DUT shifts by 128, ad01 float32 that the DUT quantizes) and prints its own result (class scores, or ad01's
reconstruction error). `wire_input` and `host_result` hold those formats once, for the tests and `hil mlperf`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil.bench import BenchConfig
from hil.errors import HilError
from hil.measure import Figure, Settings, measure_energy_windows, measure_latency, runner_figures

DEFAULT_INPUTS = 100  # seeded inputs per model for the results check
# the printed results' precision: 3 decimals (kws01 truncates, so one unit in the last place)
PRINT_TOLERANCE = {"kws01": 1e-3}
DEFAULT_TOLERANCE = 5e-4


def wire_input(kind: str | None, spec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random input in the benchmark's wire format, and the tensor the DUT makes of it (the host runs that)."""
    shape = tuple(spec.shape)
    if kind in ("vww01", "ic01"):  # uint8 RGB on the wire, the DUT subtracts 128
        wire_x = rng.integers(0, 256, size=shape, dtype=np.uint8)
        return wire_x, (wire_x.astype(np.int16) - 128).astype(np.int8)
    if kind == "ad01":  # float32 LE on the wire, the DUT quantizes with the input tensor's parameters
        wire_x = rng.normal(0, 10, size=int(np.prod(shape))).astype("<f4")
        q = np.clip(np.round(wire_x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
        return wire_x, q.reshape(shape)
    info = np.iinfo(np.dtype(spec.dtype))
    wire_x = rng.integers(info.min, info.max + 1, size=shape, dtype=np.dtype(spec.dtype))
    return wire_x, wire_x


def host_result(kind: str | None, ref, wire_x: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What the DUT should print for this input, from the host TFLM runtime `ref` (models.tflm.TflmModel)."""
    out = ref.invoke(x.reshape(ref.input.shape)).reshape(-1).astype(np.float64)
    if ref.output.scale:
        out = (out - ref.output.zero_point) * ref.output.scale
    if kind == "ad01":  # the reconstruction error against the float input, as th_results prints it
        return np.array([np.mean((out - wire_x.astype(np.float64)) ** 2)])
    return out


def results_agree(kind: str | None, got: np.ndarray, want: np.ndarray) -> bool:
    """The DUT's printed result is the host's: the same top-1 class within the print precision, or for ad01 the
    same reconstruction error within it."""
    if got.shape != want.shape:
        return False
    if kind == "ad01":
        return bool(np.allclose(got, want, atol=DEFAULT_TOLERANCE, rtol=1e-3))
    tol = PRINT_TOLERANCE.get(kind or "", DEFAULT_TOLERANCE)
    return int(np.argmax(got)) == int(np.argmax(want)) and bool(np.max(np.abs(got - want)) <= tol + 1e-12)


@dataclass
class ModelResult:
    """One model measured through the MLPerf Tiny path: its benchmark, figures and the results check."""

    path: Path
    kind: str | None
    figures: dict[str, Figure]
    inputs: int
    agreeing: int

    @property
    def agreement_pct(self) -> float:
        return 100.0 * self.agreeing / self.inputs if self.inputs else float("nan")


def measure_model(config: BenchConfig, path: Path, *, board: str | None = None, inputs: int = DEFAULT_INPUTS,
                  seed: int = 22, settings: Settings | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> ModelResult:
    """Flash `path` on the bench's virtual board as an MLPerf Tiny DUT, measure it (energy mode with the bench's
    scope, performance mode without), then run `inputs` seeded inputs and compare each result with the host's."""
    from hil.dut.mlperf_tiny import MlperfTinyClient
    from hil.station import VirtualMlperfStation
    from models.tflm import TflmModel

    spec = config.station(board)
    if not spec.board.is_virtual:
        raise HilError(f"board {spec.name!r} is not virtual: MLPerf Tiny models run on the virtual board here (a "
                       "real MLPerf Tiny board has its model built into its firmware; docs/mlperf-tiny.md)")
    if not path.is_file():
        raise HilError(f"{path}: no such model file; give the path of a .tflite (the MLPerf Tiny reference models "
                       "are in ../shared/data/)")
    settings = settings or Settings()
    blob = path.read_bytes()
    ref = TflmModel(blob)
    with VirtualMlperfStation(spec, config) as station:
        station.flash(blob, source=path.name)
        with station.dut() as dut:
            say = lambda s: progress(f"{path.stem}: {s}")  # noqa: E731
            if station.measures_power:
                with station.scope() as scope:
                    figures = measure_energy_windows(dut, scope, spec, settings, progress=say)
            else:
                figures = measure_latency(dut, settings, progress=say)
            figures.update(runner_figures(figures))
            rng = np.random.default_rng(seed)
            agreeing = 0
            client: MlperfTinyClient = dut.client
            for i in range(inputs):
                wire_x, x = wire_input(dut.kind, ref.input, rng)
                agreeing += results_agree(dut.kind, client.predict(wire_x), host_result(dut.kind, ref, wire_x, x))
                if (i + 1) % 25 == 0:
                    say(f"results: {i + 1}/{inputs} inputs, {agreeing} as the host's")
    return ModelResult(path, dut.kind, figures, inputs, agreeing)
