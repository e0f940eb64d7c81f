"""Rigol DS1000Z and MSO5000/DHO dialect: `:WAV:SOUR/MODE RAW/FORM/PRE?/STAR/STOP/DATA?`, `:SING`.

Vertical conversion (programming guide): V = (code - yorigin - yreference) * yincrement.
Rigol's offset has the opposite sign of ours (`:CHAN:OFFS` +x shows -x at the centre): it is negated.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from instruments.conversion import rigol_volts, sample_time
from instruments.oscilloscope import ChannelConfig, Oscilloscope, TimebaseConfig, TriggerConfig
from instruments.preamble import POINT_BYTES, check_format, decode_points, parse_preamble
from instruments.waveform import Waveform, clipped_codes

_FORMAT_CODES = {0: "BYTE", 1: "WORD", 2: "ASCII"}


def parse_rigol_preamble(text: str) -> dict[str, Any]:
    """Parse Rigol's 10 `:WAV:PRE?` fields (format 0 = BYTE, 1 = WORD, 2 = ASCII)."""
    return parse_preamble(text, "rigol", _FORMAT_CODES)


class RigolDS1000Z(Oscilloscope, driver="rigol"):
    """Rigol DS1000Z / MSO1000Z: 8-bit ADC, 12 horizontal divisions, 250,000-point BYTE reads."""

    vendor = "rigol"
    idn_patterns: ClassVar[tuple[str, ...]] = ("RIGOL",)
    horizontal_divisions = 12
    adc_span_div = 256 / 25  # 25 codes per division
    needs_wai: ClassVar[bool] = False
    poll_interval_s: ClassVar[float] = 0.01
    #: A STOP seen before any WAIT/RUN/TD counts as done once it has lasted this long (fast single shots).
    stale_stop_s: ClassVar[float] = 0.25
    _families: ClassVar[tuple[str, ...]] = ("MSO5", "DHO", "MSO7", "MSO8")

    @classmethod
    def matches(cls, idn: str) -> bool:
        up = idn.upper()
        return "RIGOL" in up and not any(f in Oscilloscope._model_from_idn(up) for f in cls._families)

    def _configure_channel(self, cfg: ChannelConfig) -> ChannelConfig:
        ch, w, q = f":CHAN{cfg.channel}", self.transport.write, self.transport.query
        w(f"{ch}:DISP {'ON' if cfg.enabled else 'OFF'}")
        w(f"{ch}:PROB {cfg.probe:g}")  # first: scale and offset are at the probe tip
        w(f"{ch}:COUP {cfg.coupling}")
        w(f"{ch}:BWL {'20M' if cfg.bandwidth_limit else 'OFF'}")
        w(f"{ch}:SCAL {cfg.volts_per_div:.6g}")
        w(f"{ch}:OFFS {-cfg.offset:.6g}")
        return ChannelConfig(cfg.channel, float(q(f"{ch}:SCAL?")), -float(q(f"{ch}:OFFS?")),
                             q(f"{ch}:COUP?").upper(), float(q(f"{ch}:PROB?")),
                             q(f"{ch}:BWL?").upper() != "OFF", q(f"{ch}:DISP?") in ("1", "ON"))

    def _configure_timebase(self, scale: float, points: int | None, position_s: float) -> TimebaseConfig:
        w, q = self.transport.write, self.transport.query
        w(f":TIM:MAIN:SCAL {scale:.6g}")
        w(f":TIM:MAIN:OFFS {position_s:.6g}")
        if points is not None:
            w(":RUN")  # the DS1000Z accepts a memory depth only while running
            w(f":ACQ:MDEP {int(points)}")
        return TimebaseConfig(float(q(":TIM:MAIN:SCAL?")), int(float(q(":ACQ:MDEP?"))),
                              float(q(":ACQ:SRAT?")), float(q(":TIM:MAIN:OFFS?")), self.horizontal_divisions)

    def _configure_trigger(self, cfg: TriggerConfig) -> None:
        w = self.transport.write
        w(":TRIG:MODE EDGE")
        w(f":TRIG:EDGE:SOUR CHAN{cfg.source}")
        w(f":TRIG:EDGE:SLOP {'POS' if cfg.slope == 'rising' else 'NEG'}")
        w(f":TRIG:EDGE:LEV {cfg.level:.6g}")

    def _arm(self) -> None:
        self.transport.write(":SING")

    def _wait(self, timeout_s: float) -> None:
        """Poll `:TRIG:STAT?`. TD is not sticky: STOP after WAIT/RUN/TD means the single shot completed."""
        start = time.monotonic()
        armed = False
        first_stop: float | None = None
        while True:
            state = self.transport.query(":TRIG:STAT?").upper()
            now = time.monotonic()
            if state in ("WAIT", "RUN", "TD", "AUTO"):
                armed = True
            elif state == "STOP":
                if armed:
                    return
                first_stop = now if first_stop is None else first_stop
                if now - first_stop >= self.stale_stop_s:
                    return
            if now - start > timeout_s:
                self.transport.write(":STOP")
                raise self._trigger_timeout(timeout_s)
            time.sleep(self.poll_interval_s)

    def _channel_config(self, channel: int) -> ChannelConfig:
        if channel not in self.channels:
            q, ch = self.transport.query, f":CHAN{channel}"
            self.channels[channel] = ChannelConfig(channel, float(q(f"{ch}:SCAL?")), -float(q(f"{ch}:OFFS?")),
                                                   probe=float(q(f"{ch}:PROB?")))
        return self.channels[channel]

    def _transfer_bits(self, fmt: str) -> int:
        return 8 if fmt == "BYTE" or self.adc_bits <= 8 else self.adc_bits

    def _fetch(self, channel: int, fmt: str) -> Waveform:
        t, cfg = self.transport, self._channel_config(channel)
        t.write(f":WAV:SOUR CHAN{channel}")
        t.write(":WAV:MODE RAW")
        t.write(f":WAV:FORM {'ASC' if fmt == 'ASCII' else fmt}")
        pre = parse_rigol_preamble(t.query(":WAV:PRE?"))
        check_format(pre, fmt, self.resource)
        n, chunk, width = pre["points"], self.max_chunk_points[fmt], POINT_BYTES[fmt]
        parts: list[np.ndarray] = []
        for first in range(1, n + 1, chunk):
            last = min(first + chunk - 1, n)
            t.write(f":WAV:STAR {first}")
            t.write(f":WAV:STOP {last}")
            if self.needs_wai:
                t.write("*WAI")
            with t.timeout(self.transfer_timeout_s((last - first + 1) * width)):
                block = t.query_block(":WAV:DATA?")
            parts.append(decode_points(block, fmt, last - first + 1, signed=False))
        data = np.concatenate(parts) if parts else np.zeros(0)
        bits = self._transfer_bits(fmt)
        if fmt == "ASCII":
            volts = data
            codes = np.rint(volts / pre["yincrement"] + pre["yorigin"] + pre["yreference"])
            raw = None
        else:
            volts = rigol_volts(data, pre["yincrement"], pre["yorigin"], pre["yreference"])
            codes = raw = data
        return Waveform(
            t0=float(sample_time(0, pre["xincrement"], pre["xorigin"], pre["xreference"])),
            dt=pre["xincrement"],
            volts=volts, channel=channel, volts_per_div=cfg.volts_per_div, offset=cfg.offset, probe=cfg.probe,
            adc_bits=self.adc_bits, clipped=clipped_codes(codes, 0, 2**bits - 1), raw_codes=raw,
            preamble=pre, idn=self.idn, settings=self.settings(channel), adc_step_v=pre["yincrement"],
        )


class RigolMSO5000(RigolDS1000Z, driver="rigol-mso5000"):
    """Rigol MSO5000 (and the 12-bit DHO800/900): 10 divisions; needs `*WAI` before `:WAV:DATA?`."""

    horizontal_divisions = 10
    needs_wai = True

    @classmethod
    def matches(cls, idn: str) -> bool:
        up = idn.upper()
        return "RIGOL" in up and any(f in Oscilloscope._model_from_idn(up) for f in cls._families)

    def __init__(self, transport, idn: str | None = None) -> None:
        super().__init__(transport, idn)
        if self.model.upper().startswith("DHO"):
            self.adc_bits = 12

    def _configure_timebase(self, scale: float, points: int | None, position_s: float) -> TimebaseConfig:
        w, q = self.transport.write, self.transport.query
        w(f":TIM:MAIN:SCAL {scale:.6g}")
        w(f":TIM:MAIN:OFFS {position_s:.6g}")
        if points is not None:
            w(f":ACQ:MDEP {int(points)}")
        return TimebaseConfig(float(q(":TIM:MAIN:SCAL?")), int(float(q(":ACQ:MDEP?"))),
                              float(q(":ACQ:SRAT?")), float(q(":TIM:MAIN:OFFS?")), self.horizontal_divisions)
