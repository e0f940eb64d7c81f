"""A station: one board + scope pair of the bench behind one small interface, virtual or real.

The resource is data (`hil.bench.StationSpec`, resolved once from the bench file); a `Station` acts on it:
it puts a model on the board, opens the board's protocol client and the scope's driver. `open_station`
picks the implementation; nothing else in the harness knows whether the pair is simulated.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path

from hil.bench import BenchConfig, BoardConfig, ScopeConfig, StationSpec
from hil.errors import HilError
from hil.protocol import DutClient


class AppUnavailable(HilError):
    """The benchmark app cannot be built here (ESP-IDF missing); HIL tests that need it are skipped."""


class Station(ABC):
    """One board and the scope that measures it. Use as a context manager, or `start()` / `stop()`."""

    simulated: bool = False
    emulated: bool = False  # the firmware runs in an emulator: latency is instruction-count time
    measures_power: bool = True  # False: no current can be measured (power figures are skipped with a reason)
    no_power_reason: str = ""  # why, when measures_power is False

    def __init__(self, spec: StationSpec):
        self.spec = spec

    def model_figures_unavailable(self, hello) -> str | None:
        """Why the board's latency, arena and outputs are not the model's (None: they are)."""
        return None

    @property
    def board(self) -> BoardConfig:
        return self.spec.board

    @property
    def scope_config(self) -> ScopeConfig:
        return self.spec.scope

    @property
    @abstractmethod
    def port(self) -> str:
        """The board's serial port, pty path or pyserial URL."""

    @property
    @abstractmethod
    def scope_resource(self) -> str:
        """The scope's VISA resource string."""

    @abstractmethod
    def start(self) -> Station:
        """Make the pair reachable (start simulators, check the serial port)."""

    def stop(self) -> None:  # noqa: B027 - nothing to release by default
        """Release what `start` started."""

    def install_app(self) -> None:  # noqa: B027 - only real boards have an app to flash
        """Build and flash the benchmark app once per session (real boards only)."""

    @abstractmethod
    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        """Put a model on the board and check the board reports it."""

    def dut(self) -> DutClient:
        """An open protocol client to the board at the board's baud rate (handshake done)."""
        return DutClient(self.port, baudrate=self.spec.baud).open()

    def scope(self):
        """An open oscilloscope driver (instruments.scope.Oscilloscope) for this station's scope, or None
        when the bench has no scope (a meter measures instead)."""
        from instruments.scope import open_scope

        sc = self.spec.scope
        if sc is None:
            return None
        return open_scope(self.scope_resource, sc.driver, timeout_s=sc.timeout_s)

    def meter(self):
        """An open power meter (instruments.meters.CurrentMeter) for this station, or None without one."""
        from instruments.meters import open_meter

        m = self.spec.meter
        if m is None:
            return None
        resource, options = self.meter_resource()
        marker = {} if m.marker_input is None else {"marker_input": m.marker_input}
        return open_meter(m.kind, resource, **{**m.settings, **marker, **options})

    def meter_resource(self) -> tuple[str, dict]:
        """The meter's resource and any extra open_meter options (a simulator's, on the virtual bench)."""
        assert self.spec.meter is not None
        return self.spec.meter.resource, {}

    def __enter__(self) -> Station:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class VirtualStation(Station):
    """The virtual ESP32 and the simulated scope it drives (`hil.sim.bench.VirtualBench`)."""

    simulated = True

    def __init__(self, spec: StationSpec, config: BenchConfig):
        super().__init__(spec)
        for what, part in (("scope", spec.scope), ("meter", spec.meter)):
            if part is not None and not part.is_virtual:
                raise HilError(
                    f"board {spec.name!r} is virtual but its {what} is {part.resource}; a real {what} cannot "
                    f"measure a virtual board: set {what}.resource: virtual"
                )
        self._config = config
        self.virtual = None  # hil.sim.bench.VirtualBench while started

    def start(self) -> VirtualStation:
        from hil.sim.bench import VirtualBench

        if self.virtual is None:
            self.virtual = VirtualBench(self._config, None, board=self.spec.name, boot_s=0.05).start(tcp_port=None)
        return self

    def stop(self) -> None:
        if self.virtual is not None:
            self.virtual.stop()
            self.virtual = None

    def _running(self):
        if self.virtual is None:
            raise HilError(f"station {self.spec.name!r} is not started")
        return self.virtual

    @property
    def port(self) -> str:
        return str(self._running().port)

    @property
    def scope_resource(self) -> str:
        return str(self._running().resource)

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        self._running().board.flash(model, source=source)

    def meter_resource(self) -> tuple[str, dict]:
        return self._running().meter_resource()


class VirtualMlperfStation(Station):
    """The virtual ESP32's MLPerf Tiny personality (`protocol: mlperf-tiny`, hil.sim.mlperf_device): each flash
    boots a DUT with the variant as its benchmark model, reached through hil.dut.mlperf_tiny.MlperfDut.

    With the bench's (virtual) scope the DUT runs in energy mode on the scope's clock, as the EnergyRunner measures
    one: its timestamps pulse the marker line and energy is measured between them (hil.measure
    .measure_energy_windows). Without a scope it runs in performance mode and prints them (`m-lap-us`)."""

    simulated = True

    def __init__(self, spec: StationSpec, config: BenchConfig):
        super().__init__(spec)
        self._config = config
        self.measures_power = spec.scope is not None
        self.no_power_reason = ("" if self.measures_power else
                                f"{spec.name} has no scope: an MLPerf Tiny DUT's energy is measured on the scope, "
                                "between its timestamp edges")
        self._board = None  # hil.sim.mlperf_device.MlperfBoard of the flashed model
        self._model: bytes | None = None
        self._timeline = None
        self._scope_sim = None

    @property
    def energy_mode(self) -> bool:
        """True when the DUT signals its timestamps on the marker line (a scope measures it)."""
        return self.measures_power

    def start(self) -> VirtualMlperfStation:
        if self.energy_mode and self._scope_sim is None:
            from hil.sim.bench import scope_simulator, station_timeline

            self._timeline = station_timeline(self.spec, self._config, self._config.virtual.time_scale)
            self._scope_sim = scope_simulator(self.spec, self._config, self._timeline)
            self._scope_sim.start()
        return self

    def stop(self) -> None:
        self._stop_board()
        if self._scope_sim is not None:
            self._scope_sim.stop()
            self._scope_sim = None
            self._timeline = None

    def _stop_board(self) -> None:
        if self._board is not None:
            self._board.stop()
            self._board = None

    @property
    def port(self) -> str:
        if self._board is None:
            raise HilError(f"station {self.spec.name!r}: no model flashed on the MLPerf Tiny DUT yet")
        return str(self._board.url)

    @property
    def scope_resource(self) -> str:
        if self._scope_sim is None:
            raise HilError(f"station {self.spec.name!r}: {self.no_power_reason or 'not started'}")
        return str(self._scope_sim.resource)

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        from hil.sim.mlperf_device import MlperfBoard

        self._stop_board()
        board = MlperfBoard(model, chip=self.spec.board.chip, kernels=self.spec.board.kernels,
                            cpu_mhz=self.spec.board.cpu_mhz, energy_mode=self.energy_mode, timeline=self._timeline,
                            baud=self.spec.baud, seed=self._config.virtual.seed, **self._noise(), variant=source)
        if board.device.model.error is not None:
            raise HilError(f"the MLPerf Tiny DUT cannot run {source}: {board.device.model.error}")
        self._board, self._model = board.start(tcp_port=0), model

    def _noise(self) -> dict:
        """The bench noise and the session's seed, as hil.sim.bench.VirtualBench hands them to the virtual board."""
        vc = self._config.virtual
        noise = vc.noise.model()
        return {"noise": noise, "noise_seed": vc.noise.seed if vc.noise.seed is not None else vc.seed}

    def dut(self):
        from hil.dut.mlperf_tiny import MlperfDut, MlperfTinyClient

        client = MlperfTinyClient(self.port, baudrate=self.spec.baud, energy_mode=self.energy_mode).open()
        assert self._model is not None
        return MlperfDut(client, self._model, simulated=True)


class RealStation(Station):
    """A board on a serial port (or pyserial URL) and a scope on a VISA resource."""

    def __init__(self, spec: StationSpec):
        super().__init__(spec)
        self.build_dir: Path | None = _build_dir(spec.board.chip)  # the firmware build the board runs
        self.simulated = spec.scope.is_virtual

    def start(self) -> RealStation:
        from hil.firmware import check_port

        check_port(self.spec.board.port)
        return self

    @property
    def port(self) -> str:
        return self.spec.board.port

    @property
    def scope_resource(self) -> str:
        if self.spec.scope is not None and self.spec.scope.is_virtual:
            raise HilError(
                f"board {self.spec.name!r} is real ({self.spec.board.port}) but its scope is virtual; "
                "the simulated scope only sees the virtual board: name the scope's VISA resource"
            )
        return self.spec.scope.resource

    def install_app(self) -> None:
        """Build the benchmark firmware for this board's chip and baud (cached) and flash the app.

        Raises AppUnavailable with ESP-IDF's install hint when the toolchain is missing (tests then skip).
        """
        from hil import firmware

        reason = firmware.idf_missing_reason()
        if reason is not None:
            raise AppUnavailable(reason)
        result = firmware.build(self.spec.board.chip, console_baud=self.spec.baud)
        firmware.flash_app(self.port, result.build_dir)
        self.build_dir = result.build_dir

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        from hil.firmware import flash_model, pack_model

        image = pack_model(model, arena_bytes=arena_bytes, source=source)
        flash_model(self.port, image, build_dir=self.build_dir, console_baud=self.spec.baud)


class QemuStation(Station):
    """The firmware's STM32F405 port in qemu-system-arm (`port: qemu`): the real protocol over a pty, latency
    in emulated instruction time, no power (there is no current to measure)."""

    emulated = True
    measures_power = False

    def __init__(self, spec: StationSpec):
        super().__init__(spec)
        self.no_power_reason = (f"{spec.name} is emulated in QEMU: no current to measure, and its latency is "
                                "emulated instruction time")
        self._board = None  # hil.qemu.QemuBoard

    def start(self) -> QemuStation:
        from hil.qemu import DEFAULT_BUILD_DIR, QemuBoard, build_firmware, qemu_missing_reason

        reason = qemu_missing_reason()
        if reason is not None:
            raise AppUnavailable(reason)
        if self._board is None:
            tflm = self.spec.board.tflm
            try:
                firmware = build_firmware() if tflm is None else build_firmware(
                    DEFAULT_BUILD_DIR.parent / "build-tflm", tflm_dir=Path(tflm.dir), tflm_lib=Path(tflm.lib),
                    tflm_compression=tflm.compression)
            except HilError as exc:
                if tflm is not None and shutil.which("arm-none-eabi-g++") is not None:
                    raise  # the user's TFLM build failed: an error to fix, not a bench to skip
                raise AppUnavailable(str(exc)) from None
            self._board = QemuBoard(firmware)
        return self

    def stop(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None

    @property
    def port(self) -> str:
        if self._board is None or self._board.port is None:
            raise HilError(f"station {self.spec.name!r}: the emulated board has no model flashed yet")
        return self._board.port

    @property
    def scope_resource(self) -> str:
        raise HilError(f"station {self.spec.name!r} is emulated in QEMU: there is no current to measure")

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        from hil.firmware import Partition, check_fits, pack_model
        from hil.qemu import MODEL_PARTITION_ADDR, MODEL_PARTITION_BYTES

        if self._board is None:
            raise HilError(f"station {self.spec.name!r} is not started")
        image = pack_model(model, arena_bytes=arena_bytes, source=source)
        check_fits(image, Partition("model", "data", "flash", MODEL_PARTITION_ADDR, MODEL_PARTITION_BYTES),
                   defined_in="firmware/stm32f405/stm32f405.ld (its MODEL region) and hil/qemu.py")
        self._board.flash(image)

    def model_figures_unavailable(self, hello) -> str | None:
        if hello.simulated:
            return ("the emulated firmware links the fake model runner (built without TFLM_DIR): its latency, "
                    "arena and outputs are not the model's; build the port with TFLM (firmware/README.md)")
        return None


def open_station(config: BenchConfig, board: str | None = None) -> Station:
    """The station of the named board (or the first): virtual, emulated or real, as the bench file says."""
    spec = config.station(board)
    if spec.board.protocol == "mlperf-tiny":
        return VirtualMlperfStation(spec, config)
    if spec.board.is_virtual:
        return VirtualStation(spec, config)
    return QemuStation(spec) if spec.board.is_emulated else RealStation(spec)


def _build_dir(chip: str) -> Path | None:
    path = Path("build") / chip
    return path if (path / "partition_table" / "partition-table.bin").is_file() else None
