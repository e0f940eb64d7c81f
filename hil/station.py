"""A station: one board + scope pair of the bench, virtual or real, behind one small interface.

The harness flashes a model, opens the board's serial port and the scope's VISA resource through a
station; only here does the code know whether the pair is simulated.
"""

from __future__ import annotations

from pathlib import Path

from hil.bench import BenchConfig, BoardConfig, ScopeConfig
from hil.errors import HilError
from hil.protocol import DutClient


class AppUnavailable(HilError):
    """The benchmark app cannot be built here (ESP-IDF missing); HIL tests that need it are skipped."""


class Station:
    """One board and the scope that measures it, as described by the bench file."""

    def __init__(self, config: BenchConfig, board: str | None = None):
        self.config = config
        self.board: BoardConfig = config.board(board)
        self.scope_config: ScopeConfig = self.board.scope or config.scope
        self.virtual = None  # hil.sim.bench.VirtualBench on a virtual board
        self.build_dir: Path | None = _build_dir(self.board.chip)  # the firmware build the board runs

    @property
    def simulated(self) -> bool:
        """True when the board or the scope of this station is simulated."""
        return self.board.is_virtual or self.scope_config.is_virtual

    def start(self) -> Station:
        """Start the simulated parts; check a real board's serial port is there."""
        if self.board.is_virtual:
            from hil.sim.bench import VirtualBench

            self.virtual = VirtualBench(self.config, None, board=self.board.name, boot_s=0.05).start(tcp_port=None)
        else:
            from hil.firmware import check_port

            check_port(self.board.port)
        if not self.scope_config.is_virtual and self.board.is_virtual:
            raise HilError(
                f"board {self.board.name!r} is virtual but the scope is {self.scope_config.resource}; "
                "a real scope cannot measure a virtual board: set scope.resource: virtual"
            )
        return self

    def install_app(self) -> None:
        """Build the benchmark firmware for this board's chip (cached) and flash the app: once per session.

        Raises AppUnavailable with ESP-IDF's install hint when the toolchain is missing (tests then skip).
        """
        if self.virtual is not None:
            return
        from hil import firmware

        reason = firmware.idf_missing_reason()
        if reason is not None:
            raise AppUnavailable(reason)
        result = firmware.build(self.board.chip, console_baud=self.board.baud)
        firmware.flash_app(self.board.port, result.build_dir)
        self.build_dir = result.build_dir

    def stop(self) -> None:
        """Stop the simulated parts."""
        if self.virtual is not None:
            self.virtual.stop()
            self.virtual = None

    @property
    def port(self) -> str:
        """The board's serial port, pty path or pyserial URL."""
        if self.virtual is not None:
            return str(self.virtual.port)
        return self.board.port

    @property
    def scope_resource(self) -> str:
        """The scope's VISA resource string."""
        if self.virtual is not None and self.scope_config.is_virtual:
            return str(self.virtual.resource)
        return self.scope_config.resource

    def flash(self, model: bytes, *, arena_bytes: int | None = None, source: str = "model") -> None:
        """Put a model on the board: the virtual board loads it, a real one gets its model partition written."""
        if self.virtual is not None:
            self.virtual.board.flash(model)
            return
        from hil.firmware import flash_model, pack_model

        image = pack_model(model, arena_bytes=arena_bytes, source=source)
        flash_model(self.board.port, image, build_dir=self.build_dir)

    def dut(self) -> DutClient:
        """An open protocol client to the board (handshake done)."""
        return DutClient(self.port, baudrate=self.board.baud).open()

    def scope(self):
        """An open oscilloscope driver for this station's scope."""
        from instruments.scope import open_scope

        return open_scope(self.scope_resource, self.scope_config.driver, timeout_s=self.scope_config.timeout_s)

    def __enter__(self) -> Station:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _build_dir(chip: str) -> Path | None:
    path = Path("build") / chip
    return path if (path / "partition_table" / "partition-table.bin").is_file() else None
