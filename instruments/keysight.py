"""Keysight (Agilent) InfiniiVision dialect: `:DIGitize` + `*OPC?`, `:WAVeform:PREamble?`, RAW points.

Transfers are signed (`:WAV:UNS OFF`) and WORD is LSB first (`:WAV:BYT LSBF`).

Vertical conversion (programmer's guide): V = (code - yreference) * yincrement + yorigin.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from instruments.conversion import keysight_volts, sample_time
from instruments.errors import InstrumentError
from instruments.oscilloscope import ChannelConfig, Oscilloscope, TimebaseConfig, TriggerConfig
from instruments.preamble import POINT_BYTES, check_format, decode_points, parse_preamble
from instruments.transport import TransportError
from instruments.waveform import Waveform, clipped_codes

_FORMAT_CODES = {0: "BYTE", 1: "WORD", 4: "ASCII"}

#: ADC resolution per model prefix (the rest are 8-bit).
_ADC_BITS = {"HD3": 14}


def parse_keysight_preamble(text: str) -> dict[str, Any]:
    """Parse InfiniiVision's 10 `:WAVeform:PREamble?` fields (format 0 = BYTE, 1 = WORD, 4 = ASCII)."""
    return parse_preamble(text, "keysight", _FORMAT_CODES)


class KeysightInfiniiVision(Oscilloscope, driver="keysight"):
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

    def _code_rails(self, pre: dict[str, Any]) -> tuple[float, float]:
        """Lowest and highest ADC code of a BYTE or WORD transfer, around the preamble's y-reference.

        The y-reference is the code of the ADC's centre: 0 for signed data (`:WAV:UNS OFF`), 128 or 32768
        for unsigned. WORD holds the ADC left-justified, so a 14-bit ADC's top code is 32764, not 32767.
        """
        if pre["format_name"] == "BYTE":
            return pre["yreference"] - 128, pre["yreference"] + 127
        shift = 16 - self.adc_bits
        return pre["yreference"] - 32768, pre["yreference"] + ((2 ** (self.adc_bits - 1) - 1) << shift)

    def _clipped_volts(self, volts: np.ndarray, cfg: ChannelConfig, step: float) -> bool:
        """ASCII values are volts: clipped if a sample sits at an edge of the ADC range of the channel.

        The preamble cannot say where those edges are: its y-reference and y-increment describe the
        scope's internal WORD codes (a DSOX1102G sends y-reference 32768 with ASCII), so the range comes
        from the channel read back from the scope: `offset` +- `adc_span_div` / 2 divisions, in ADC `step`s.
        """
        codes = np.rint((volts - cfg.offset) / step)
        return clipped_codes(codes, -(2 ** (self.adc_bits - 1)), 2 ** (self.adc_bits - 1) - 1)

    def _fetch(self, channel: int, fmt: str) -> Waveform:
        t, cfg = self.transport, self._channel_config(channel)
        t.write(f":WAVeform:SOURce CHANnel{channel}")
        t.write(f":WAVeform:FORMat {'ASCii' if fmt == 'ASCII' else fmt}")
        if fmt != "ASCII":
            t.write(":WAVeform:UNSigned OFF")
        if fmt == "WORD":
            t.write(":WAVeform:BYTeorder LSBFirst")
        pre = parse_keysight_preamble(t.query(":WAVeform:PREamble?"))
        check_format(pre, fmt, self.resource)
        n = pre["points"]
        with t.timeout(self.transfer_timeout_s(n * POINT_BYTES[fmt])):
            block = t.query_block(":WAVeform:DATA?", chunk_size=self.read_chunk_bytes)
        data = decode_points(block, fmt, n, signed=True)
        if fmt == "ASCII":
            step = self.adc_span_div * cfg.volts_per_div / 2**self.adc_bits
            volts, raw, clipped = data, None, self._clipped_volts(data, cfg, step)
        else:  # one ADC step is 2**(16 - bits) WORD codes (left-justified)
            step = pre["yincrement"] * (2 ** (16 - self.adc_bits) if fmt == "WORD" else 1)
            volts, raw = keysight_volts(data, pre["yincrement"], pre["yorigin"], pre["yreference"]), data
            clipped = clipped_codes(data, *self._code_rails(pre))
        return Waveform(
            t0=float(sample_time(0, pre["xincrement"], pre["xorigin"], pre["xreference"])),
            dt=pre["xincrement"],
            volts=volts, channel=channel, volts_per_div=cfg.volts_per_div, offset=cfg.offset, probe=cfg.probe,
            adc_bits=self.adc_bits, clipped=clipped, raw_codes=raw, preamble=pre,
            idn=self.idn, settings=self.settings(channel), adc_step_v=step,
        )
