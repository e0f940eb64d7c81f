"""The bench description (`bench.yaml`): boards, oscilloscope, shunt and wiring; one schema, virtual or real.

`port: virtual` / `resource: virtual` select the virtual ESP32 and the simulated scope; a real bench
names a serial port (or pyserial URL) and a VISA resource instead. `virtual.faults` injects faults into the
virtual bench to rehearse the harness's recovery (docs/faults.md); a real bench file may not have it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil.errors import HilError
from hil.lab.config import LabConfig
from hil.wire import COMMANDS
from models.config_file import read_yaml_mapping

VIRTUAL = "virtual"
QEMU = "qemu"  # `port: qemu`: the firmware's STM32F405 port emulated in qemu-system-arm (hil/qemu.py)
#: Highest CPU clock of each chip (datasheets); a board's default `cpu_mhz`.
CHIP_MAX_MHZ = {"esp32": 240, "esp32s2": 240, "esp32s3": 240, "esp32c3": 160, "esp32c6": 160, "stm32f405": 168}
#: On-chip SRAM of each chip (datasheets; STM32F405: 128 KB SRAM + 64 KB CCM): the firmware allocates the
#: tensor arena there (firmware/main/Kconfig.projbuild, HIL_ARENA_INTERNAL), so no arena can be larger.
CHIP_RAM_BYTES = {"esp32": 520 * 1024, "esp32s2": 320 * 1024, "esp32s3": 512 * 1024, "esp32c3": 400 * 1024,
                  "esp32c6": 512 * 1024, "stm32f405": 192 * 1024}
DEFAULT_BENCH_FILE = "bench.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShuntConfig(_Strict):
    """The current-sense shunt: resistance, how it is wired, and the amplifier gain if any."""

    ohms: float = Field(0.05, gt=0, le=100)
    wiring: Literal["low_side", "high_side", "amplifier"] = "low_side"
    gain: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _gain_needs_amplifier(self) -> ShuntConfig:
        if self.gain != 1.0 and self.wiring != "amplifier":
            raise ValueError(f"gain {self.gain} needs wiring 'amplifier' (a bare shunt has gain 1.0)")
        return self


class ScopeConfig(_Strict):
    """The oscilloscope: VISA resource (or `virtual`), driver, and which channel sees what."""

    resource: str = VIRTUAL
    driver: Literal["auto", "rigol", "rigol-mso5000", "keysight", "tektronix"] = "auto"
    sim_dialect: Literal["rigol", "keysight"] = "rigol"
    shunt_channel: int = Field(1, ge=1, le=4)
    marker_channel: int = Field(2, ge=1, le=4)
    timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _distinct_channels(self) -> ScopeConfig:
        if self.shunt_channel == self.marker_channel:
            raise ValueError(f"shunt_channel and marker_channel are both {self.shunt_channel}; use two channels")
        return self

    @property
    def is_virtual(self) -> bool:
        """True for the simulated scope."""
        return self.resource == VIRTUAL


class MeterConfig(_Strict):
    """A power meter sampling the board's supply current directly, beside or instead of the scope.

    `resource`: the PPK2's serial port, the Otii server's `host[:port]`, the Joulescope's path or serial
    (`""`: the first one found), or `virtual` for its simulator on the virtual bench. `settings` go to
    `instruments.meters.open_meter` (e.g. `mode`, `supply_mv`, `sample_rate`; docs/power-meters.md).
    """

    kind: Literal["ppk2", "otii", "joulescope"]
    resource: str = VIRTUAL
    marker_input: int | None = Field(None, ge=0, le=7)  # digital input of the marker GPIO (None: the meter's default)
    settings: dict[str, Any] = {}

    @property
    def is_virtual(self) -> bool:
        """True for the meter's simulator."""
        return self.resource == VIRTUAL


class TflmConfig(_Strict):
    """A TFLM library the user built for the emulated STM32F405 port (`port: qemu`): the tflite-micro tree and its
    `libtensorflow-microlite.a` for cortex-m4+fp. Absolute paths; `~` and `$VARS` are expanded."""

    dir: str
    lib: str
    compression: bool = False  # the library is built with USE_TFLM_COMPRESSION

    @model_validator(mode="after")
    def _absolute(self) -> TflmConfig:
        for key in ("dir", "lib"):
            value = os.path.expandvars(os.path.expanduser(getattr(self, key)))
            if not os.path.isabs(value):
                raise ValueError(f"tflm {key} {getattr(self, key)!r} must be an absolute path (~ and $VARS work)")
            setattr(self, key, value)
        return self


class BoardConfig(_Strict):
    """One device under test: its serial port (or `virtual`) and what the firmware is configured with."""

    name: str = "esp32-0"
    chip: Literal["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6", "stm32f405"] = "esp32"
    # the kernel library the firmware's TFLM is built with: esp-nn (esp-tflite-micro's default) or TFLM's
    # reference kernels; the virtual board's cost model depends on it
    kernels: Literal["esp-nn", "reference"] = "esp-nn"
    port: str = VIRTUAL
    baud: int = Field(115200, ge=9600, le=5_000_000)
    cpu_mhz: int = Field(None, ge=1, le=400, validate_default=False)  # default: the chip's maximum clock
    marker_gpio: int = Field(4, ge=0, le=48)
    arena_bytes: int = Field(256 * 1024, ge=1024)
    scope: ScopeConfig | None = None  # this board's own scope (a board+scope pair); default: the bench's scope
    meter: MeterConfig | None = None  # this board's own power meter; default: the bench's meter
    shunt: ShuntConfig | None = None  # this board's own shunt; default: the bench's shunt
    supply_volts: float | None = Field(None, gt=0, le=60)  # this board's supply; default: the bench's
    tflm: TflmConfig | None = None  # port qemu: link this TFLM build instead of the fake model runner
    # the firmware's protocol: ours (docs/protocol.md) or MLPerf Tiny's EnergyRunner API (docs/mlperf-tiny.md)
    protocol: Literal["hil", "mlperf-tiny"] = "hil"

    @model_validator(mode="after")
    def _chip_clock(self) -> BoardConfig:
        if self.protocol == "mlperf-tiny" and self.port != VIRTUAL:
            raise ValueError("protocol mlperf-tiny runs on the virtual board for now (port: virtual): a real MLPerf "
                             "Tiny board has its model built into its firmware (docs/mlperf-tiny.md)")
        if self.tflm is not None and self.port != QEMU:
            raise ValueError("tflm: names the TFLM library of the emulated STM32F405 port (port: qemu); a real "
                             "board's firmware is built by ESP-IDF with esp-tflite-micro")
        if self.cpu_mhz is None:
            self.cpu_mhz = CHIP_MAX_MHZ[self.chip]
        elif self.cpu_mhz > CHIP_MAX_MHZ[self.chip]:
            raise ValueError(f"cpu_mhz {self.cpu_mhz} is above the {self.chip}'s {CHIP_MAX_MHZ[self.chip]} MHz")
        ram = CHIP_RAM_BYTES[self.chip]
        if "arena_bytes" not in self.model_fields_set:
            self.arena_bytes = min(self.arena_bytes, ram)  # the default arena, within a small chip's RAM
        elif self.arena_bytes > ram:
            raise ValueError(f"arena_bytes {self.arena_bytes} is larger than the {self.chip}'s {ram} bytes of "
                             "RAM; set it to the firmware's tensor arena (the factory's arena_bytes plus a margin)")
        return self

    @property
    def is_virtual(self) -> bool:
        """True for the virtual ESP32."""
        return self.port == VIRTUAL

    @property
    def is_emulated(self) -> bool:
        """True for the firmware emulated in QEMU (`port: qemu`, chip stm32f405)."""
        return self.port == QEMU


class Occurrences(_Strict):
    """Which occurrences a fault strikes: the `nth` one counted from the bench's start (1: the next), and the
    `count - 1` after it."""

    nth: int = Field(1, ge=1)
    count: int = Field(1, ge=1, le=1_000_000)

    @property
    def span(self) -> range:
        """The 1-based occurrence numbers struck."""
        return range(self.nth, self.nth + self.count)

    def described(self, noun: str) -> str:
        """'acquisition #2' or 'blocks #3-#4': which occurrences of `noun` are struck."""
        last = self.nth + self.count - 1
        return f"{noun} #{self.nth}" if self.count == 1 else f"{noun}s #{self.nth}-#{last}"


class _OnCommand(_Strict):
    command: Literal[COMMANDS]  # type: ignore[valid-type]


class CommandFault(Occurrences, _OnCommand):
    """A board fault on one protocol command, by the times the board has received that command."""

    def when(self) -> str:
        """'infer #4' or 'infers #4-#5': for `hil sim` and the run's metadata."""
        return self.described(self.command)


class HangFault(CommandFault):
    """The board stops executing anything: for `seconds` (then it drops what it received meanwhile), or until
    it is flashed or power-cycled (`seconds` omitted)."""

    seconds: float | None = Field(None, gt=0, le=3600)


class BoardFaults(_Strict):
    """Faults of the virtual board: by command name and occurrence, and a garbled-byte rate on its serial line."""

    reset: CommandFault | None = None  # restarts in the middle of the command (after one timed inference)
    drop_reply: CommandFault | None = None  # executes the command, its reply never reaches the host
    hang: HangFault | None = None
    garble_rate: float = Field(0.0, ge=0, le=0.1)  # fraction of the board's bytes with one bit flipped

    def armed(self) -> list[str]:
        """One phrase per armed fault."""
        out = []
        if self.reset is not None:
            out.append(f"board resets during {self.reset.when()}")
        if self.drop_reply is not None:
            out.append(f"board drops its reply to {self.drop_reply.when()}")
        if self.hang is not None:
            how = f"{self.hang.seconds:g} s" if self.hang.seconds is not None else "until flashed or power-cycled"
            out.append(f"board hangs at {self.hang.when()} ({how})")
        if self.garble_rate > 0:
            out.append(f"serial line garbles {self.garble_rate * 100:g} % of the board's bytes")
        return out


class DropConnectionFault(Occurrences):
    """The scope closes its VISA connection after sending `after_bytes` of a waveform block."""

    after_bytes: int = Field(1024, ge=0)


class ClippingFault(Occurrences):
    """The scope acquires the shunt channel at 1/`factor` of the vertical range the harness set (a scope that
    rounds volts/div down, a range turned by hand): the shunt signal runs off the ADC's range."""

    factor: float = Field(4.0, gt=1, le=1000)


class ScopeFaults(_Strict):
    """Faults of the simulated scope, by acquisition (`:SINGle`) or waveform block (`:WAV:DATA?`) count."""

    trigger_timeout: Occurrences | None = None  # these acquisitions never trigger
    truncated_block: Occurrences | None = None  # half of these blocks is sent, then nothing
    dropped_connection: DropConnectionFault | None = None  # the connection drops during these blocks
    clipping: ClippingFault | None = None  # these acquisitions clip the shunt channel

    def armed(self) -> list[str]:
        """One phrase per armed fault."""
        out = []
        if self.trigger_timeout is not None:
            out.append(f"scope never triggers on {self.trigger_timeout.described('acquisition')}")
        if self.truncated_block is not None:
            out.append(f"scope truncates waveform {self.truncated_block.described('block')}")
        if self.dropped_connection is not None:
            d = self.dropped_connection
            out.append(f"scope drops the connection after {d.after_bytes} bytes of waveform {d.described('block')}")
        if self.clipping is not None:
            c = self.clipping
            out.append(f"scope clips the shunt channel (range /{c.factor:g}) on {c.described('acquisition')}")
        return out


class FaultsConfig(_Strict):
    """Faults injected on the virtual bench (`virtual.faults`), to rehearse the harness's recovery
    (docs/faults.md). Nothing is armed by default."""

    board: BoardFaults = BoardFaults()
    scope: ScopeFaults = ScopeFaults()

    def armed(self) -> list[str]:
        """One phrase per armed fault, board first; [] when none is."""
        return self.board.armed() + self.scope.armed()


class NoiseConfig(_Strict):
    """Bench noise of the virtual bench's power and energy (`virtual.noise`, `hil.sim.noise.NoiseModel`): a gain
    per session, per (session, variant) and per trial on the supply current. Off unless `enabled`; the default
    CVs are assumptions about a real shunt + scope bench."""

    enabled: bool = False
    between_run_cv: float = Field(0.02, ge=0, le=0.5)  # CV between sessions
    shared_fraction: float = Field(0.75, ge=0, le=1)  # share of that variance common to a session's variants
    trial_cv: float = Field(0.003, ge=0, le=0.5)  # CV capture to capture within a session
    seed: int | None = Field(None, ge=0)  # None: a new seed per run, from its session id; an int replays a run

    def model(self):
        """The `hil.sim.noise.NoiseModel` of these settings, or None when the noise is off."""
        from hil.sim.noise import NoiseModel

        return NoiseModel(self.between_run_cv, self.shared_fraction, self.trial_cv) if self.enabled else None

    def describe(self, seed: int | None = None) -> str:
        """'2 % between sessions (75 % shared), 0.3 % per trial, seed 1234', or 'off'."""
        model = self.model()
        return "off" if model is None else model.describe(seed)


class Injection(_Strict):
    """A regression injected into one variant on the virtual bench (`virtual.inject`, `--inject`): its Invoke()
    current (`energy`, `power`) or its modelled Invoke() durations (`latency`) times `factor`."""

    variant: str = Field(min_length=1)
    kind: Literal["energy", "power", "latency"]
    factor: float = Field(gt=0, le=1000)

    def __str__(self) -> str:
        return f"{self.variant}:{self.kind}={self.factor:g}"


class VirtualConfig(_Strict):
    """Settings of the virtual bench only: wall-time pacing, random seed, scope input noise, injected faults,
    bench noise and injected regressions.

    Time on the virtual bench is simulated; `time_scale` only paces the replies to wall time (1.0: as long
    as the chip takes, 0: as fast as the host can) and changes no figure. `speed` is its deprecated alias.
    """

    time_scale: float = Field(0.0, ge=0, le=1000)
    speed: float | None = Field(None, gt=0, le=1000)  # deprecated: the same as time_scale
    seed: int = 0
    noise_vrms: float = Field(0.0002, ge=0, le=1.0)
    faults: FaultsConfig = FaultsConfig()
    noise: NoiseConfig = NoiseConfig()  # bench noise of power and energy (off by default: bit-identical runs)
    inject: list[Injection] = []  # regressions to rehearse the merge gate with

    @model_validator(mode="after")
    def _one_injection_per_kind(self) -> VirtualConfig:
        seen = set()
        for i in self.inject:
            if (i.variant, i.kind) in seen:
                raise ValueError(f"inject: {i.variant} {i.kind} is injected twice; keep one factor")
            seen.add((i.variant, i.kind))
        return self

    def injections(self) -> dict[str, dict[str, float]]:
        """variant -> {kind: factor}, as the virtual board takes them."""
        out: dict[str, dict[str, float]] = {}
        for i in self.inject:
            out.setdefault(i.variant, {})[i.kind] = i.factor
        return out

    @model_validator(mode="after")
    def _speed_is_time_scale(self) -> VirtualConfig:
        if self.speed is not None:
            if "time_scale" in self.model_fields_set and self.time_scale != self.speed:
                raise ValueError(f"speed {self.speed} (deprecated) and time_scale {self.time_scale} disagree; "
                                 "keep time_scale only")
            self.time_scale = self.speed
        return self


class BenchConfig(_Strict):
    """A whole bench: supply, shunt, scope and boards."""

    version: Literal[1] = 1
    supply_volts: float = Field(5.0, gt=0, le=60)
    shunt: ShuntConfig = ShuntConfig()
    scope: ScopeConfig | None = ScopeConfig()  # null: no scope (a meter measures instead)
    meter: MeterConfig | None = None  # a power meter beside (or, with scope: null, instead of) the scope
    boards: list[BoardConfig] = Field(default_factory=lambda: [BoardConfig()], min_length=1)
    virtual: VirtualConfig = VirtualConfig()
    # a shared lab (hil/lab, README "Share a lab"): places reserved through labgrid instead of the boards' ports;
    # the first board entry gives every place its board settings (chip, baud, marker GPIO), its port is unused
    lab: LabConfig | None = None

    @model_validator(mode="after")
    def _something_measures_current(self) -> BenchConfig:
        for b in self.boards:
            if (b.scope or self.scope) is None and (b.meter or self.meter) is None and b.port != QEMU:
                raise ValueError(f"board {b.name!r} has neither a scope nor a meter; add scope: or meter:")
        return self

    @model_validator(mode="after")
    def _qemu_is_the_stm32_port(self) -> BenchConfig:
        for b in self.boards:
            if (b.port == QEMU) != (b.chip == "stm32f405"):
                raise ValueError(f"board {b.name!r}: port qemu runs the STM32F405 port (chip: stm32f405), and "
                                 "chip stm32f405 is only emulated here (port: qemu)")
        return self

    @model_validator(mode="after")
    def _faults_only_on_the_virtual_bench(self) -> BenchConfig:
        if "faults" not in self.virtual.model_fields_set:
            return self
        for b in self.boards:
            if not b.is_virtual:
                raise ValueError(f"virtual.faults: faults are injected on the virtual bench only, and board "
                                 f"{b.name!r} is on {b.port}; remove virtual.faults (or set the board's port: virtual)")
        if self.virtual.faults.scope.armed():
            for s in self.stations():
                if s.scope is None:
                    raise ValueError(f"virtual.faults.scope: board {s.name!r} has no scope to inject them into; "
                                     "remove them or add scope: {resource: virtual}")
        return self

    @model_validator(mode="after")
    def _unique_boards(self) -> BenchConfig:
        names = [b.name for b in self.boards]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"board names must be unique, repeated: {', '.join(dup)}")
        return self

    @property
    def is_emulated(self) -> bool:
        """True when a board is emulated in QEMU (its latency is instruction-count time, not silicon time)."""
        return any(b.is_emulated for b in self.boards)

    @property
    def is_virtual(self) -> bool:
        """True when any part of the bench is simulated (its figures are then labelled simulated)."""
        return any(s.simulated for s in self.stations())

    def station(self, name: str | None = None) -> StationSpec:
        """The named board (or the first) with its effective scope, shunt and supply: resolved here only."""
        b = self.board(name)
        return StationSpec(
            board=b,
            scope=b.scope or self.scope,
            meter=b.meter or self.meter,
            shunt=b.shunt or self.shunt,
            supply_volts=b.supply_volts if b.supply_volts is not None else self.supply_volts,
            virtual=self.virtual,
        )

    def stations(self) -> list[StationSpec]:
        """Every board+scope pair of the bench, in file order (xdist worker k takes pair k)."""
        return [self.station(b.name) for b in self.boards]

    def board(self, name: str | None = None) -> BoardConfig:
        """The named board, or the first one."""
        if name is None:
            return self.boards[0]
        for b in self.boards:
            if b.name == name:
                return b
        raise HilError(f"no board named {name!r} in the bench; boards: {', '.join(b.name for b in self.boards)}")


@dataclass(frozen=True)
class StationSpec:
    """One board+scope pair as the harness measures it: every per-board setting resolved once.

    A board's own `scope:`, `shunt:` and `supply_volts:` override the bench's; everything that talks to the
    board or analyses its captures (virtual bench, measurement, flash check) reads them from here.
    """

    board: BoardConfig
    scope: ScopeConfig | None  # None: the meter alone measures
    meter: MeterConfig | None
    shunt: ShuntConfig
    supply_volts: float
    virtual: VirtualConfig

    @property
    def name(self) -> str:
        return self.board.name

    @property
    def baud(self) -> int:
        """The board's UART baud rate (console and protocol)."""
        return self.board.baud

    @property
    def simulated(self) -> bool:
        """True when the board, its scope or its meter is simulated (its figures are labelled simulated)."""
        return (self.board.is_virtual or (self.scope is not None and self.scope.is_virtual)
                or (self.meter is not None and self.meter.is_virtual))


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at the parent of `loc` (for an 'extra key' error)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        current = args[0] if args and isinstance(args[0], type) and issubclass(args[0], BaseModel) else ann
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _format(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc)  # empty for a check of the whole bench, whose message names its keys
    msg = err.get("msg", "invalid").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        allowed = _allowed(BenchConfig, loc)
        msg = f"unknown key; allowed keys: {', '.join(allowed)}"
    elif "input" in err and err.get("type") != "missing" and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {key + ': ' if key else ''}{msg}{more}"


def parse_bench(data: dict[str, Any] | None, source: str = DEFAULT_BENCH_FILE) -> BenchConfig:
    """Validate a bench mapping; errors are one HilError line naming the file, the key and allowed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HilError(f"{source}: the bench file must be a YAML mapping, got {type(data).__name__}")
    try:
        return BenchConfig.model_validate(data)
    except ValidationError as exc:
        raise HilError(_format(exc, source)) from None


def load_bench(path: str | Path = DEFAULT_BENCH_FILE) -> BenchConfig:
    """Read and validate a bench file."""
    data = read_yaml_mapping(
        path, what="bench file", hint="pass --bench PATH or create it (see bench.yaml)", error=HilError,
        allow_empty=False,  # an empty or truncated file must not pass as the default virtual bench
    )
    return parse_bench(data, str(path))
