"""Keysight (Agilent) InfiniiVision dialect: `:DIGitize` + `*OPC?`, `:WAVeform:PREamble?`, RAW points.

Transfers are signed (`:WAV:UNS OFF`) and WORD is LSB first (`:WAV:BYT LSBF`).

Vertical conversion (programmer's guide): V = (code - yreference) * yincrement + yorigin.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from instruments.conversion import keysight_volts, sample_time
from instruments.errors import InstrumentError
from instruments.ieee488 import BlockError
from instruments.scope import ChannelConfig, Oscilloscope, TimebaseConfig, TriggerConfig
from instruments.transport import TransportError
from instruments.waveform import Waveform, clipped_codes

_PREAMBLE_FIELDS = ("format", "type", "points", "count", "xincrement", "xorigin", "xreference",
                    "yincrement", "yorigin", "yreference")

#: ADC resolution per model prefix (the rest are 8-bit).
_ADC_BITS = {"HD3": 14}


def parse_keysight_preamble(text: str) -> dict[str, Any]:
    """Parse the 10 `:WAVeform:PREamble?` fields; reject zero or negative increments."""
    parts = text.strip().split(",")
    if len(parts) != len(_PREAMBLE_FIELDS):
        raise InstrumentError(f"Keysight preamble must have 10 fields, got {len(parts)}: {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InstrumentError(f"Keysight preamble has a non-numeric field: {text!r}") from None
    pre: dict[str, Any] = dict(zip(_PREAMBLE_FIELDS, values, strict=True))
    for key in ("format", "type", "points", "count"):
        pre[key] = int(pre[key])
    for key in ("xincrement", "yincrement"):
        if not pre[key] > 0:
            raise InstrumentError(f"Keysight preamble {key} must be positive, got {pre[key]!r} in {text!r}")
    pre["formula"] = "keysight"
    pre["text"] = text.strip()
    return pre


class KeysightInfiniiVision(Oscilloscope):
    """InfiniiVision 1000/2000/3000/4000 X (8-bit) and HD3 (14-bit): whole record in one block."""

    vendor = "keysight"
    idn_patterns: ClassVar[tuple[str, ...]] = ("KEYSIGHT", "AGILENT")
    horizontal_divisions = 10
    adc_span_div = 10.0
    #: One `:WAVeform:DATA?` returns the whole record; it is read in chunks of this many bytes.
    read_chunk_bytes: ClassVar[int] = 1 << 20
    max_chunk_points: ClassVar[dict[str, int]] = {"BYTE": 8_000_000, "WORD": 8_000_000, "ASCII": 8_000_000}

    def __init__(self, transport, idn: str | None = None) -> None:
        super().__init__(transport, idn)
        model = self.model.upper()
        self.adc_bits = next((b for prefix, b in _ADC_BITS.items() if model.startswith(prefix)), 8)

    def _configure_channel(self, cfg: ChannelConfig) -> ChannelConfig:
        ch, w, q = f":CHANnel{cfg.channel}", self.transport.write, self.transport.query
        w(f"{ch}:DISPlay {'ON' if cfg.enabled else 'OFF'}")
        w(f"{ch}:PROBe {cfg.probe:g}")
        w(f"{ch}:COUPling {cfg.coupling}")
        w(f"{ch}:BWLimit {'ON' if cfg.bandwidth_limit else 'OFF'}")
        w(f"{ch}:SCALe {cfg.volts_per_div:.6g}")
        w(f"{ch}:OFFSet {cfg.offset:.6g}")
        return ChannelConfig(cfg.channel, float(q(f"{ch}:SCALe?")), float(q(f"{ch}:OFFSet?")),
                             q(f"{ch}:COUPling?").upper(), float(q(f"{ch}:PROBe?")),
                             q(f"{ch}:BWLimit?") in ("1", "ON"), q(f"{ch}:DISPlay?") in ("1", "ON"))

    def _configure_timebase(self, scale: float, points: int | None, position_s: float) -> TimebaseConfig:
        w, q = self.transport.write, self.transport.query
        w(":TIMebase:REFerence CENTer")
        w(f":TIMebase:SCALe {scale:.6g}")
        w(f":TIMebase:POSition {position_s:.6g}")
        w(":ACQuire:TYPE NORMal")
        w(":WAVeform:POINts:MODE RAW")
        if points is not None:
            w(f":WAVeform:POINts {int(points)}")
        return TimebaseConfig(float(q(":TIMebase:SCALe?")), int(float(q(":WAVeform:POINts?"))),
                              float(q(":ACQuire:SRATe?")), float(q(":TIMebase:POSition?")),
                              self.horizontal_divisions)

    def _configure_trigger(self, cfg: TriggerConfig) -> None:
        w = self.transport.write
        w(":TRIGger:MODE EDGE")
        w(f":TRIGger:EDGE:SOURce CHANnel{cfg.source}")
        w(f":TRIGger:EDGE:SLOPe {'POSitive' if cfg.slope == 'rising' else 'NEGative'}")
        w(f":TRIGger:EDGE:LEVel {cfg.level:.6g}")
        w(":TRIGger:SWEep NORMal")

    def _arm(self) -> None:
        chans = [c for c, cfg in sorted(self.channels.items()) if cfg.enabled]
        self.transport.write(":DIGitize " + ",".join(f"CHANnel{c}" for c in chans) if chans else ":DIGitize")

    def _wait(self, timeout_s: float) -> None:
        """`:DIGitize` completes when `*OPC?` answers 1; no answer within the timeout means no trigger."""
        try:
            with self.transport.timeout(timeout_s):
                answer = self.transport.query("*OPC?")
        except TransportError:
            self.transport.reconnect()  # the pending *OPC? would desynchronise the session
            self.transport.write(":STOP")
            raise self._trigger_timeout(timeout_s) from None
        if answer != "1":
            raise InstrumentError(f"*OPC? after :DIGitize returned {answer!r}, expected 1, "
                                  f"from {self.resource}")

    def _channel_config(self, channel: int) -> ChannelConfig:
        if channel not in self.channels:
            q, ch = self.transport.query, f":CHANnel{channel}"
            self.channels[channel] = ChannelConfig(
                channel, float(q(f"{ch}:SCALe?")), float(q(f"{ch}:OFFSet?")), probe=float(q(f"{ch}:PROBe?")))
        return self.channels[channel]

    def _rails(self, fmt: str) -> tuple[int, int]:
        """Lowest and highest code of the ADC in this transfer format (signed, left-justified in WORD)."""
        if fmt == "BYTE" or (fmt == "ASCII" and self.adc_bits <= 8):
            return -128, 127
        shift = 16 - self.adc_bits
        return -(2 ** (self.adc_bits - 1)) << shift, (2 ** (self.adc_bits - 1) - 1) << shift

    def _fetch(self, channel: int, fmt: str) -> Waveform:
        t, cfg = self.transport, self._channel_config(channel)
        t.write(f":WAVeform:SOURce CHANnel{channel}")
        t.write(f":WAVeform:FORMat {'ASCii' if fmt == 'ASCII' else fmt}")
        if fmt != "ASCII":
            t.write(":WAVeform:UNSigned OFF")
        if fmt == "WORD":
            t.write(":WAVeform:BYTeorder LSBFirst")
        pre = parse_keysight_preamble(t.query(":WAVeform:PREamble?"))
        n = pre["points"]
        width = {"BYTE": 1, "WORD": 2, "ASCII": 16}[fmt]
        with t.timeout(self.transfer_timeout_s(n * width)):
            block = t.query_block(":WAVeform:DATA?", chunk_size=self.read_chunk_bytes)
        if fmt == "ASCII":
            text = block.decode("ascii").strip().strip(",")
            volts = np.array(text.split(","), dtype=np.float64) if text else np.zeros(0)
            raw = None
            codes = np.rint((volts - pre["yorigin"]) / pre["yincrement"] + pre["yreference"])
        else:
            if len(block) % width:
                raise BlockError(f"{fmt} block of {len(block)} bytes is not a whole number of samples")
            raw = codes = np.frombuffer(block, dtype=np.int8 if fmt == "BYTE" else "<i2")
            volts = keysight_volts(raw, pre["yincrement"], pre["yorigin"], pre["yreference"])
        if volts.size != n:
            raise BlockError(f"waveform block holds {volts.size} points, preamble says {n}")
        low, high = self._rails(fmt)
        return Waveform(
            t0=float(sample_time(0, pre["xincrement"], pre["xorigin"], pre["xreference"])),
            dt=pre["xincrement"],
            volts=volts, channel=channel, volts_per_div=cfg.volts_per_div, offset=cfg.offset, probe=cfg.probe,
            adc_bits=self.adc_bits, clipped=clipped_codes(codes, low, high), raw_codes=raw, preamble=pre,
            idn=self.idn, settings=self.settings(channel), adc_step_v=pre["yincrement"],
        )
