"""A station: one board + scope pair of the bench behind one small interface, virtual or real.

The resource is data (`hil.bench.StationSpec`, resolved once from the bench file); a `Station` acts on it:
it puts a model on the board, opens the board's protocol client and the scope's driver. `open_station`
picks the implementation; nothing else in the harness knows whether the pair is simulated.
"""

from __future__ import annotations

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

    def __init__(self, spec: StationSpec):
        self.spec = spec

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
        """An open oscilloscope driver (instruments.scope.Oscilloscope) for this station's scope."""
        from instruments.scope import open_scope

        sc = self.spec.scope
        return open_scope(self.scope_resource, sc.driver, timeout_s=sc.timeout_s)

    def __enter__(self) -> Station:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class VirtualStation(Station):
    """The virtual ESP32 and the simulated scope it drives (`hil.sim.bench.VirtualBench`)."""

    simulated = True

    def __init__(self, spec: StationSpec, config: BenchConfig):
        super().__init__(spec)
        if not spec.scope.is_virtual:
            raise HilError(
                f"board {spec.name!r} is virtual but its scope is {spec.scope.resource}; "
                "a real scope cannot measure a virtual board: set scope.resource: virtual"
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
        self._running().board.flash(model)


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
        if self.spec.scope.is_virtual:
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


def open_station(config: BenchConfig, board: str | None = None) -> Station:
    """The station of the named board (or the first): virtual or real, as the bench file says."""
    spec = config.station(board)
    return VirtualStation(spec, config) if spec.board.is_virtual else RealStation(spec)


def _build_dir(chip: str) -> Path | None:
    path = Path("build") / chip
    return path if (path / "partition_table" / "partition-table.bin").is_file() else None
