"""The virtual bench: a virtual ESP32 and the simulated SCPI oscilloscope, wired as `bench.yaml` describes.

The board publishes its activity to a timeline that is the scope's signal source: channel `shunt_channel`
sees R x I(t) (times the amplifier gain), channel `marker_channel` the marker GPIO. Channels, dialect,
shunt and supply are the board's own where it has them (`BenchConfig.station`). Board and scope share the
timeline's simulation clock: the scope arms, triggers and completes its record in simulated time, so a
capture is a function of the model, the options and `virtual.seed` alone; `virtual.time_scale` paces the
replies to wall time and changes nothing else. The faults of `virtual.faults` are armed on the board and the
scope as they start (docs/faults.md). `virtual.noise` (bench noise, off by default) and `virtual.inject`
(regressions of one variant) go to the board; the noise seed is the session's, handed in by the campaign.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hil.bench import BenchConfig, BoardConfig, FaultsConfig, StationSpec
from hil.errors import HilError
from hil.sim.board import VirtualBoard
from hil.sim.costmodel import Calibration, load_calibration
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
        time_scale: float | None = None,
        speed: float | None = None,
        scope: bool = True,
        boot_s: float = 0.2,
        noise_seed: int | None = None,
    ):
        """`noise_seed`: the session's bench-noise seed (default: `virtual.noise.seed`, else `virtual.seed`: a
        bench started alone is as reproducible as its file); used only when `virtual.noise.enabled`."""
        self.config = config or BenchConfig()
        self.spec: StationSpec = self.config.station(board)
        self.board_config: BoardConfig = self.spec.board
        if not self.board_config.is_virtual:
            raise HilError(
                f"board {self.board_config.name!r} is on {self.board_config.port}, not virtual; "
                "use the real bench or set port: virtual"
            )
        cal = load_calibration()
        bc = self.board_config
        seed = self.config.virtual.seed
        if time_scale is None:
            time_scale = speed if speed is not None else self.config.virtual.time_scale  # speed: deprecated
        self.timeline = station_timeline(self.spec, self.config, time_scale, cal)
        vc = self.config.virtual
        self.noise = vc.noise.model()  # hil.sim.noise.NoiseModel, or None when off
        if noise_seed is None:
            noise_seed = vc.noise.seed if vc.noise.seed is not None else seed
        self.noise_seed: int | None = noise_seed if self.noise is not None else None
        self.board = VirtualBoard(
            model,
            board=f"virtual-{bc.chip}",
            chip=bc.chip,
            kernels=bc.kernels,
            cpu_mhz=bc.cpu_mhz,
            arena_bytes=bc.arena_bytes,
            marker_gpio=bc.marker_gpio,
            baud=bc.baud,  # the pty answers only a host that opened it at the board's baud, like a UART
            seed=seed,
            boot_s=boot_s,
            timeline=self.timeline,
            calibration=cal,
            noise=self.noise,
            noise_seed=noise_seed,
            inject=vc.injections(),
        )
        self.faults = self.config.virtual.faults  # the bench file's virtual.faults (none armed by default)
        _arm_board_faults(self.board, self.faults)
        sc = self.spec.scope  # None: a power meter measures instead of the scope
        self.want_scope = scope and sc is not None and sc.is_virtual
        self.scope_sim: Any = None
        self.meter_sim: Any = None

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
                self.scope_sim = scope_simulator(self.spec, self.config, self.timeline)
            except ImportError as exc:
                self.board.stop()
                raise HilError(
                    f"the simulated oscilloscope is not available ({exc}); install the instruments package"
                ) from None
            _arm_scope_faults(self.scope_sim, self.faults, self.spec.scope.shunt_channel)
            self.scope_sim.start()
        return self

    def meter_resource(self) -> tuple[str, dict[str, Any]]:
        """Start the bench's virtual power meter on the board's timeline (once); its resource and the extra
        `instruments.meters.open_meter` options it needs."""
        m = getattr(self.spec, "meter", None)
        if m is None or not m.is_virtual:
            raise HilError(f"board {self.board_config.name!r} has no virtual meter (meter.resource: virtual)")
        from instruments.sim.meters import JoulescopeSimulator, MeterProbe, OtiiSimulator, PPK2Simulator

        w = self.timeline.wiring
        probe = MeterProbe.for_shunt_source(w.shunt_ohms, w.gain, current_channel=w.shunt_channel,
                                            marker_channel=w.marker_channel)  # fmt: skip
        if self.meter_sim is None:
            cls = {"ppk2": PPK2Simulator, "otii": OtiiSimulator, "joulescope": JoulescopeSimulator}[m.kind]
            marker = {} if m.marker_input is None else {"marker_input": m.marker_input}
            self.meter_sim = cls(self.timeline, probe, seed=self.config.virtual.seed, **marker)
            if hasattr(self.meter_sim, "start"):
                self.meter_sim.start()
        sim = self.meter_sim
        if m.kind == "ppk2":
            return sim.port, {}
        if m.kind == "otii":
            return f"127.0.0.1:{sim.port}", {}
        return sim.path, {"driver_class": sim.driver_class}

    def stop(self) -> None:
        """Stop the meter and scope simulators and the board."""
        if self.meter_sim is not None:
            if hasattr(self.meter_sim, "stop"):
                self.meter_sim.stop()
            self.meter_sim = None
        if self.scope_sim is not None:
            self.scope_sim.stop()
            self.scope_sim = None
        self.board.stop()

    def __enter__(self) -> VirtualBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def station_timeline(spec: StationSpec, config: BenchConfig, time_scale: float,
                     cal: Calibration | None = None) -> ActivityTimeline:
    """The simulation clock and activity of one virtual station: its probes' wiring, its chip's idle current and
    supply ripple (the ripple's phase drawn from the bench's seed)."""
    bc, sc = spec.board, spec.scope  # sc None: a power meter measures instead of the scope
    profile = (cal or load_calibration()).profile(bc.chip, bc.kernels)
    wiring = ProbeWiring(  # a high-side shunt is seen through a differential probe: the same R x I
        shunt_channel=sc.shunt_channel if sc is not None else 1,
        marker_channel=sc.marker_channel if sc is not None else 2,
        shunt_ohms=spec.shunt.ohms,
        gain=spec.shunt.gain,
    )
    return ActivityTimeline(
        wiring,
        idle_current_a=profile.idle_current_a,
        time_scale=time_scale,
        ripple_rel=profile.ripple_rel,
        ripple_hz=profile.ripple_hz,
        ripple_phase=float(np.random.default_rng([config.virtual.seed, 3]).uniform(0, 2 * math.pi)),
    )


def scope_simulator(spec: StationSpec, config: BenchConfig, source: ActivityTimeline):
    """The simulated scope of a virtual station, sampling `source` (not started)."""
    from instruments.sim import ScopeSimulator

    return ScopeSimulator(dialect=spec.scope.sim_dialect, source=source, **_scope_options(ScopeSimulator, config))


def _scope_options(cls: Any, config: BenchConfig) -> dict[str, Any]:
    """Simulator settings from the bench file that this version of the simulator accepts."""
    import inspect

    params = inspect.signature(cls).parameters
    wanted = {"seed": config.virtual.seed, "noise_vrms": config.virtual.noise_vrms}
    return {k: v for k, v in wanted.items() if k in params}


def _arm_board_faults(board: VirtualBoard, faults: FaultsConfig) -> None:
    """Arm the bench file's `virtual.faults.board` on the virtual board (docs/faults.md)."""
    f = faults.board
    for kind, fault in (("reset", f.reset), ("drop", f.drop_reply), ("hang", f.hang)):
        if fault is not None:
            board.faults.schedule(kind, fault.command, fault.span)
    if f.hang is not None:
        board.faults.hang_s = f.hang.seconds
    board.faults.garble_rate = f.garble_rate


def _arm_scope_faults(scope: Any, faults: FaultsConfig, shunt_channel: int) -> None:
    """Arm the bench file's `virtual.faults.scope` on the scope simulator (instruments.sim.server.Faults)."""
    f, target = faults.scope, scope.faults
    if f.trigger_timeout is not None:
        target.no_trigger_on = f.trigger_timeout.span
    if f.truncated_block is not None:
        target.truncate_on = f.truncated_block.span
    if f.dropped_connection is not None:
        target.drop_on, target.drop_on_after_bytes = f.dropped_connection.span, f.dropped_connection.after_bytes
    if f.clipping is not None:
        target.clip_on, target.clip_channel, target.clip_factor = f.clipping.span, shunt_channel, f.clipping.factor
