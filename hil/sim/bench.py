"""The virtual bench: a virtual ESP32 and the simulated SCPI oscilloscope, wired as `bench.yaml` describes.

The board publishes its activity to a timeline that is the scope's signal source: channel `shunt_channel`
sees R x I(t) (times the amplifier gain), channel `marker_channel` the marker GPIO. Channels, dialect,
shunt and supply are the board's own where it has them (`BenchConfig.station`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.bench import BenchConfig, BoardConfig, StationSpec
from hil.errors import HilError
from hil.sim.board import VirtualBoard
from hil.sim.costmodel import load_calibration
from hil.sim.timeline import ActivityTimeline, ProbeWiring


def default_model_path() -> Path:
    """The sine model shipped in the tflite-micro wheel: what `hil sim` flashes when no model is given."""
    import tflite_micro

    return Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"


class VirtualBench:
    """Board + scope simulator for one virtual board of `config`; `start()` serves them, `stop()` ends them.

    `port` is the board's pty path (open it like a USB-UART), `url` its `socket://` URL, `resource` the
    scope's VISA resource string.
    """

    def __init__(
        self,
        config: BenchConfig | None = None,
        model: bytes | str | Path | None = None,
        *,
        board: str | None = None,
        speed: float | None = None,
        scope: bool = True,
        boot_s: float = 0.2,
    ):
        self.config = config or BenchConfig()
        self.spec: StationSpec = self.config.station(board)
        self.board_config: BoardConfig = self.spec.board
        if not self.board_config.is_virtual:
            raise HilError(
                f"board {self.board_config.name!r} is on {self.board_config.port}, not virtual; "
                "use the real bench or set port: virtual"
            )
        cal = load_calibration()
        wiring = ProbeWiring(  # a high-side shunt is seen through a differential probe: the same R x I
            shunt_channel=self.spec.scope.shunt_channel,
            marker_channel=self.spec.scope.marker_channel,
            shunt_ohms=self.spec.shunt.ohms,
            gain=self.spec.shunt.gain,
        )
        self.timeline = ActivityTimeline(wiring, idle_current_a=cal.idle_current_a)
        bc = self.board_config
        self.board = VirtualBoard(
            model,
            board=f"virtual-{bc.chip}",
            cpu_mhz=bc.cpu_mhz,
            arena_bytes=bc.arena_bytes,
            marker_gpio=bc.marker_gpio,
            baud=bc.baud,  # the pty answers only a host that opened it at the board's baud, like a UART
            speed=speed if speed is not None else self.config.virtual.speed,
            seed=self.config.virtual.seed,
            boot_s=boot_s,
            timeline=self.timeline,
            calibration=cal,
        )
        self.want_scope = scope and self.spec.scope.is_virtual
        self.scope_sim: Any = None

    @property
    def port(self) -> str | None:
        """The virtual board's serial port (a pty path)."""
        return self.board.pty_path

    @property
    def url(self) -> str | None:
        """The virtual board's `socket://127.0.0.1:PORT` URL."""
        return self.board.url

    @property
    def resource(self) -> str | None:
        """The simulated scope's VISA resource string."""
        return self.scope_sim.resource if self.scope_sim is not None else None

    def start(self, *, tcp_port: int | None = 0) -> VirtualBench:
        """Start the board (pty + TCP) and the scope simulator."""
        self.board.start(pty=True, tcp_port=tcp_port)
        if self.want_scope:
            try:
                from instruments.sim import ScopeSimulator
            except ImportError as exc:
                self.board.stop()
                raise HilError(
                    f"the simulated oscilloscope is not available ({exc}); install the instruments package"
                ) from None
            self.scope_sim = ScopeSimulator(
                dialect=self.spec.scope.sim_dialect,
                source=self.timeline,
                **_scope_options(ScopeSimulator, self.config),
            )
            self.scope_sim.start()
        return self

    def stop(self) -> None:
        """Stop the scope simulator and the board."""
        if self.scope_sim is not None:
            self.scope_sim.stop()
            self.scope_sim = None
        self.board.stop()

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _scope_options(cls: Any, config: BenchConfig) -> dict[str, Any]:
    """Simulator settings from the bench file that this version of the simulator accepts."""
    import inspect

    params = inspect.signature(cls).parameters
    wanted = {"seed": config.virtual.seed, "noise_vrms": config.virtual.noise_vrms}
    return {k: v for k, v in wanted.items() if k in params}
