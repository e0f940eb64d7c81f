"""Tektronix MSO/DPO/MDO/TBS dialect: `DATa:SOUrce/ENCdg/STARt/STOP`, `WFMOutpre:*?`, `CURVe?`, sequence mode.

Vertical conversion (programmer manual): V = (code - YOFf) * YMUlt + YZEro; t = XZEro + (i - PT_Off) * XINcr.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from instruments.conversion import sample_time, tektronix_volts
from instruments.errors import InstrumentError
from instruments.ieee488 import BlockError
from instruments.oscilloscope import ChannelConfig, Oscilloscope, TimebaseConfig, TriggerConfig
from instruments.waveform import Waveform, clipped_codes

_PREAMBLE_QUERIES = (("ymult", "YMUlt"), ("yoff", "YOFf"), ("yzero", "YZEro"), ("xincr", "XINcr"),
                     ("xzero", "XZEro"), ("pt_off", "PT_Off"))


class TektronixMSO(Oscilloscope, driver="tektronix"):
    """Tektronix MSO/DPO 2000-5000, MDO and TBS: 8-bit, 10 divisions, 25 levels per division."""

    vendor = "tektronix"
    idn_patterns: ClassVar[tuple[str, ...]] = ("TEKTRONIX",)
    horizontal_divisions = 10
    adc_span_div = 256 / 25
    max_chunk_points: ClassVar[dict[str, int]] = {"BYTE": 1_000_000, "WORD": 500_000, "ASCII": 100_000}
    poll_interval_s: ClassVar[float] = 0.01

    def __init__(self, transport, idn: str | None = None) -> None:
        super().__init__(transport, idn)
        transport.write("HEADer OFF")  # answers without command headers, so they parse as numbers

    def _configure_channel(self, cfg: ChannelConfig) -> ChannelConfig:
        ch, w, q = f"CH{cfg.channel}", self.transport.write, self.transport.query
        w(f"SELect:{ch} {'ON' if cfg.enabled else 'OFF'}")
        w(f"{ch}:PRObe:GAIN {1.0 / cfg.probe:g}")
        w(f"{ch}:COUPling {cfg.coupling}")
        w(f"{ch}:BANdwidth {'TWEnty' if cfg.bandwidth_limit else 'FULl'}")
        w(f"{ch}:SCAle {cfg.volts_per_div:.6g}")
        w(f"{ch}:POSition 0")
        w(f"{ch}:OFFSet {cfg.offset:.6g}")
        return ChannelConfig(cfg.channel, float(q(f"{ch}:SCAle?")), float(q(f"{ch}:OFFSet?")), cfg.coupling,
                             1.0 / float(q(f"{ch}:PRObe:GAIN?")), cfg.bandwidth_limit, cfg.enabled)

    def _configure_timebase(self, scale: float, points: int | None, position_s: float) -> TimebaseConfig:
        w, q = self.transport.write, self.transport.query
        w(f"HORizontal:SCAle {scale:.6g}")
        if points is not None:
            w(f"HORizontal:RECOrdlength {int(points)}")
        w("HORizontal:DELay:MODe ON")
        w(f"HORizontal:DELay:TIMe {position_s:.6g}")
        return TimebaseConfig(float(q("HORizontal:SCAle?")), int(float(q("HORizontal:RECOrdlength?"))),
                              float(q("HORizontal:SAMPLERate?")), float(q("HORizontal:DELay:TIMe?")),
                              self.horizontal_divisions)

    def _configure_trigger(self, cfg: TriggerConfig) -> None:
        w = self.transport.write
        w("TRIGger:A:TYPe EDGe")
        w(f"TRIGger:A:EDGE:SOUrce CH{cfg.source}")
        w(f"TRIGger:A:EDGE:SLOpe {'RISe' if cfg.slope == 'rising' else 'FALL'}")
        w(f"TRIGger:A:LEVel:CH{cfg.source} {cfg.level:.6g}")
        w("TRIGger:A:MODe NORMal")

    def _arm(self) -> None:
        self.transport.write("ACQuire:STOPAfter SEQuence")
        self.transport.write("ACQuire:STATE ON")

    def _wait(self, timeout_s: float) -> None:
        """Poll `ACQuire:STATE?` until the sequence has stopped (0)."""
        start = time.monotonic()
        while self.transport.query("ACQuire:STATE?") not in ("0", "OFF", "STOP"):
            if time.monotonic() - start > timeout_s:
                self.transport.write("ACQuire:STATE STOP")
                raise self._trigger_timeout(timeout_s)
            time.sleep(self.poll_interval_s)

    def _preamble(self) -> dict[str, Any]:
        pre: dict[str, Any] = {"formula": "tektronix"}
        for key, name in _PREAMBLE_QUERIES:
            text = self.transport.query(f"WFMOutpre:{name}?")
            try:
                pre[key] = float(text)
            except ValueError:
                raise InstrumentError(f"Tektronix WFMOutpre:{name}? returned {text!r}, "
                                      "not a number") from None
        for key in ("ymult", "xincr"):
            if not pre[key] > 0:
                raise InstrumentError(f"Tektronix preamble {key} must be positive, got {pre[key]!r}")
        return pre

    def _fetch(self, channel: int, fmt: str) -> Waveform:
        t = self.transport
        cfg = self.channels.get(channel) or ChannelConfig(channel, float(t.query(f"CH{channel}:SCAle?")),
                                                          float(t.query(f"CH{channel}:OFFSet?")))
        n = int(float(t.query("HORizontal:RECOrdlength?")))
        t.write(f"DATa:SOUrce CH{channel}")
        t.write("DATa:ENCdg " + ("ASCIi" if fmt == "ASCII" else "SRIbinary"))
        t.write(f"WFMOutpre:BYT_Nr {2 if fmt == 'WORD' else 1}")
        chunk, parts, pre = self.max_chunk_points[fmt], [], None
        for first in range(1, n + 1, chunk):
            last = min(first + chunk - 1, n)
            t.write(f"DATa:STARt {first}")
            t.write(f"DATa:STOP {last}")
            if pre is None:
                pre = self._preamble()
            if fmt == "ASCII":
                text = t.query("CURVe?")
                data = np.array(text.split(","), dtype=np.float64)
            else:
                with t.timeout(self.transfer_timeout_s((last - first + 1) * (2 if fmt == "WORD" else 1))):
                    block = t.query_block("CURVe?")
                if fmt == "WORD" and len(block) % 2:
                    raise BlockError(f"WORD block of {len(block)} bytes is not a whole number of samples")
                data = np.frombuffer(block, dtype=np.int8 if fmt == "BYTE" else "<i2")
            if data.size != last - first + 1:
                raise BlockError(f"CURVe? returned {data.size} points, expected {last - first + 1}")
            parts.append(data)
        if pre is None:
            raise InstrumentError(f"channel {channel} on {self.resource} has an empty record")
        codes = np.concatenate(parts)
        bits = 16 if fmt == "WORD" else 8
        return Waveform(
            t0=float(sample_time(0, pre["xincr"], pre["xzero"], pre["pt_off"])), dt=pre["xincr"],
            volts=tektronix_volts(codes, pre["ymult"], pre["yoff"], pre["yzero"]), channel=channel,
            volts_per_div=cfg.volts_per_div, offset=cfg.offset, probe=cfg.probe, adc_bits=self.adc_bits,
            clipped=clipped_codes(codes, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1),
            raw_codes=codes if fmt != "ASCII" else codes.astype(np.int16), preamble=pre, idn=self.idn,
            settings=self.settings(channel), adc_step_v=pre["ymult"],
        )
