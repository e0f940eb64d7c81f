"""Oscilloscope base class, the settings it records and the registry its drivers add themselves to.

A driver module declares `class MyScope(Oscilloscope, driver="name")`; importing the module registers it
in `DRIVERS`, so `instruments.scope.open_scope` knows it without this module naming any driver.
Conventions for every driver: `offset` is the voltage at the centre of the ADC range (drivers convert to
their vendor's sign), times are seconds with 0 at the trigger, channels are 1-based integers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from instruments.errors import InstrumentError
from instruments.ieee488 import BlockError
from instruments.transport import TransportError, VisaTransport
from instruments.waveform import Waveform

FORMATS = ("BYTE", "WORD", "ASCII")

#: Driver name (as accepted by `open_scope(driver=...)`) -> class; filled by `Oscilloscope.__init_subclass__`.
DRIVERS: dict[str, type[Oscilloscope]] = {}


class TriggerTimeout(InstrumentError):
    """The single acquisition did not trigger and stop within the timeout."""


@dataclass
class ChannelConfig:
    """Vertical settings of one channel as read back from the scope."""

    channel: int
    volts_per_div: float
    offset: float = 0.0
    coupling: str = "DC"
    probe: float = 1.0
    bandwidth_limit: bool = False
    enabled: bool = True


@dataclass
class TimebaseConfig:
    """Horizontal settings: scale, record length, sample rate and the trigger position (delay of centre)."""

    scale_s_per_div: float
    record_points: int
    sample_rate: float
    position_s: float = 0.0
    divisions: int = 10


@dataclass
class TriggerConfig:
    """Edge trigger settings."""

    source: int
    level: float
    slope: str = "rising"


def _check_slope(slope: str) -> str:
    slope = slope.lower()
    if slope not in ("rising", "falling"):
        raise InstrumentError(f"trigger slope must be 'rising' or 'falling', got {slope!r}")
    return slope


def _check_channel(channel: int, n: int = 4) -> int:
    if not isinstance(channel, int | np.integer) or not 1 <= int(channel) <= n:
        raise InstrumentError(f"channel must be an integer 1..{n}, got {channel!r}")
    return int(channel)


class Oscilloscope:
    """Base class: the harness API. Vendor modules implement the `_`-prefixed SCPI steps."""

    vendor: ClassVar[str] = ""
    #: Name under which the class is registered (`open_scope(driver=...)`); "" for unregistered classes.
    driver: ClassVar[str] = ""
    #: Substrings of `*IDN?` (upper case) that select this driver; checked by `matches`.
    idn_patterns: ClassVar[tuple[str, ...]] = ()
    #: Largest number of points per `:WAV:DATA?` read, per transfer format.
    max_chunk_points: ClassVar[dict[str, int]] = {"BYTE": 250_000, "WORD": 125_000, "ASCII": 15_625}
    horizontal_divisions: ClassVar[int] = 10
    #: Vertical span of the ADC in divisions (auto-ranging; clipping of transfers already in volts).
    adc_span_div: ClassVar[float] = 10.0
    adc_bits: int = 8
    n_channels: ClassVar[int] = 4
    #: Worst-case link throughput assumed when sizing VISA timeouts for transfers (bytes/s).
    min_throughput_bps: ClassVar[float] = 500_000.0

    def __init_subclass__(cls, driver: str | None = None, **kwargs: Any) -> None:
        """Register a subclass declared with `driver="name"`; intermediate or test classes omit it."""
        super().__init_subclass__(**kwargs)
        cls.driver = driver or ""
        if driver is None:
            return
        taken = DRIVERS.get(driver)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"oscilloscope driver name {driver!r} is already taken by "
                            f"{taken.__module__}.{taken.__qualname__}")
        DRIVERS[driver] = cls  # the same class again (a module reload) replaces itself

    def __init__(self, transport: VisaTransport, idn: str | None = None) -> None:
        self.transport = transport
        self.idn = idn if idn is not None else transport.query("*IDN?")
        self.model = self._model_from_idn(self.idn)
        self.channels: dict[int, ChannelConfig] = {}
        self.timebase: TimebaseConfig | None = None
        self.trigger: TriggerConfig | None = None
        self._arm_time: float | None = None
        self.recoveries: list[str] = []  # transfers that failed once and succeeded on a new connection

    # ---- identification -------------------------------------------------------------------------
    @classmethod
    def matches(cls, idn: str) -> bool:
        """True if this driver speaks the dialect of the instrument that answered `idn`."""
        up = idn.upper()
        return any(p in up for p in cls.idn_patterns)

    @staticmethod
    def _model_from_idn(idn: str) -> str:
        parts = [p.strip() for p in idn.split(",")]
        return parts[1] if len(parts) > 1 else idn.strip()

    def identify(self) -> str:
        """Ask `*IDN?` again and return it."""
        self.idn = self.transport.query("*IDN?")
        return self.idn

    @property
    def resource(self) -> str:
        return self.transport.resource

    def close(self) -> None:
        """Close the VISA session."""
        self.transport.close()

    def __enter__(self) -> Oscilloscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- configuration --------------------------------------------------------------------------
    def configure_channel(
        self, channel: int, volts_per_div: float, offset: float = 0.0, *, coupling: str = "DC",
        probe: float = 1.0, bandwidth_limit: bool = False, enabled: bool = True,
    ) -> ChannelConfig:
        """Set the vertical settings of `channel`; returns them as read back from the scope."""
        channel = _check_channel(channel, self.n_channels)
        if not (volts_per_div > 0 and math.isfinite(volts_per_div)):
            raise InstrumentError(f"volts_per_div for channel {channel} must be positive, "
                                  f"got {volts_per_div!r}")
        coupling = coupling.upper()
        if coupling not in ("DC", "AC", "GND"):
            raise InstrumentError(f"coupling must be DC, AC or GND, got {coupling!r}")
        cfg = ChannelConfig(channel, float(volts_per_div), float(offset), coupling, float(probe),
                            bool(bandwidth_limit), bool(enabled))
        self.channels[channel] = self._configure_channel(cfg)
        return self.channels[channel]

    def configure_timebase(
        self, scale_s_per_div: float, *, record_points: int | None = None, sample_rate: float | None = None,
        position_s: float = 0.0,
    ) -> TimebaseConfig:
        """Set the horizontal scale and the record length (or the sample rate); returns what the scope chose.

        The trigger sits at the centre of the record, moved by `position_s` (positive = later window).
        """
        if not (scale_s_per_div > 0 and math.isfinite(scale_s_per_div)):
            raise InstrumentError(f"timebase scale must be positive, got {scale_s_per_div!r}")
        window = scale_s_per_div * self.horizontal_divisions
        if record_points is None and sample_rate is not None:
            record_points = int(round(sample_rate * window))
        self.timebase = self._configure_timebase(float(scale_s_per_div), record_points, float(position_s))
        return self.timebase

    def configure_trigger(self, source: int, level: float, slope: str = "rising") -> TriggerConfig:
        """Set an edge trigger on channel `source` at `level` volts with `slope` rising|falling."""
        cfg = TriggerConfig(_check_channel(source, self.n_channels), float(level), _check_slope(slope))
        self._configure_trigger(cfg)
        self.trigger = cfg
        return cfg

    # ---- acquisition ----------------------------------------------------------------------------
    def arm(self) -> None:
        """Arm a single acquisition (returns at once)."""
        self._arm_time = time.monotonic()
        self._arm()

    def acquisition_time_s(self) -> float:
        """Length of the record window in seconds (0 if the timebase was never configured)."""
        tb = self.timebase
        return tb.record_points / tb.sample_rate if tb else 0.0

    def wait_for_trigger(self, timeout_s: float = 10.0) -> None:
        """Block until the armed acquisition has triggered and stopped; TriggerTimeout after `timeout_s`."""
        self._wait(float(timeout_s))

    def _trigger_timeout(self, timeout_s: float) -> TriggerTimeout:
        trig = self.trigger
        what = (f"no {trig.slope} edge through {trig.level:g} V on channel {trig.source}" if trig
                else "no trigger (trigger never configured)")
        return TriggerTimeout(
            f"trigger timeout after {timeout_s:g} s on {self.resource}: {what}; "
            "check the trigger level, slope and probe connection")

    def fetch(self, *channels: int, fmt: str = "BYTE") -> list[Waveform]:
        """Read the acquired record of each channel as a `Waveform` (BYTE or WORD; ASCII for checks)."""
        fmt = fmt.upper()
        if fmt not in FORMATS:
            raise InstrumentError(f"waveform format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if not channels:
            raise InstrumentError("fetch needs at least one channel number")
        return [self._with_retry(lambda c=c: self._fetch(_check_channel(c, self.n_channels), fmt),
                                 f"fetching channel {c}") for c in channels]

    def capture(self, *channels: int, timeout_s: float = 10.0, fmt: str = "BYTE") -> list[Waveform]:
        """Arm, wait for the trigger and fetch `channels`: one single-shot capture."""
        self.arm()
        self.wait_for_trigger(timeout_s)
        return self.fetch(*channels, fmt=fmt)

    def _with_retry(self, fn, what: str):
        """Run `fn`; on a dropped connection or broken block reconnect once and retry, then fail."""
        try:
            return fn()
        except (BlockError, TransportError) as first:
            try:
                self.transport.reconnect()
                result = fn()
            except (BlockError, TransportError) as second:
                raise InstrumentError(f"{what} from {self.resource} failed twice (reconnected once): "
                                      f"{second}; first failure: {first}; check the network or USB link to the "
                                      "scope and that no other program talks to it") from None
            self.recoveries.append(f"{what} failed ({first}); reconnected and fetched it again")
            return result

    def transfer_timeout_s(self, nbytes: int) -> float:
        """VISA timeout for a transfer of `nbytes`: the base timeout plus the bytes at the worst-case rate."""
        return self.transport.timeout_s + nbytes / self.min_throughput_bps

    # ---- provenance -----------------------------------------------------------------------------
    def settings(self, channel: int) -> dict[str, Any]:
        """The channel, timebase and trigger settings that go with a fetched waveform."""
        ch = self.channels.get(channel)
        return {
            "resource": self.resource, "driver": type(self).__name__,
            "channel": asdict(ch) if ch else None,
            "timebase": asdict(self.timebase) if self.timebase else None,
            "trigger": asdict(self.trigger) if self.trigger else None,
        }

    # ---- vendor hooks ---------------------------------------------------------------------------
    def _configure_channel(self, cfg: ChannelConfig) -> ChannelConfig:
        raise NotImplementedError

    def _configure_timebase(self, scale: float, points: int | None, position_s: float) -> TimebaseConfig:
        raise NotImplementedError

    def _configure_trigger(self, cfg: TriggerConfig) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        raise NotImplementedError

    def _wait(self, timeout_s: float) -> None:
        raise NotImplementedError

    def _fetch(self, channel: int, fmt: str) -> Waveform:
        raise NotImplementedError


def driver_for_idn(idn: str) -> type[Oscilloscope] | None:
    """The registered driver whose `matches` accepts `idn`; of several, the most derived class wins."""
    found = [cls for cls in DRIVERS.values() if cls.matches(idn)]
    return max(found, key=lambda cls: len(cls.__mro__), default=None)
