"""Rigol and Keysight command sets of the simulator, on top of the shared `Acquisition` state.

Transfer formats: Rigol BYTE/WORD are unsigned (WORD little-endian, 8-bit ADCs leave the high byte 0),
Keysight BYTE/WORD follow `:WAVeform:UNSigned` and `:WAVeform:BYTeorder` (WORD is left-justified).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from instruments.sim.acquisition import AdcModel, Record
from instruments.sim.scpi import CommandTable, parse_bool, parse_channel

if TYPE_CHECKING:
    from instruments.sim.server import ScopeSimulator

RIGOL_MAX_POINTS = {"BYTE": 250_000, "WORD": 125_000, "ASC": 15_625}


def _ok(_args: str, _nums: tuple[int, ...]) -> None:
    """A setting the simulator accepts and does not model."""
    return None


def _text(value: object) -> bytes:
    return f"{value}\n".encode("ascii")


def _num(value: float) -> bytes:
    return _text(f"{value:.6e}")


def _ascii_volts(volts: np.ndarray) -> bytes:
    """Comma-separated NR3 volts, the slow format binary transfers are compared against."""
    return ",".join(f"{v:.6e}" for v in volts.tolist()).encode("ascii")


def _slope(arg: str) -> str:
    return "rising" if arg.upper().startswith("POS") else "falling"


def _add_common(t: CommandTable, sim: ScopeSimulator) -> None:
    acq = sim.acq
    t.add("*IDN?", lambda a, n: _text(sim.faults.idn_override or sim.idn))
    t.add("*RST", lambda a, n: acq.reset())
    t.add("*CLS", lambda a, n: sim.errors.clear())
    t.add("*OPC", _ok)
    t.add("*ESR?", lambda a, n: _text(0))


def rigol_adc(bits: int) -> AdcModel:
    """Rigol: 25 codes per division at 8 bits (x16 at 12 bits), reference code 127 (2047)."""
    return AdcModel(bits, 25.0 * 2 ** (bits - 8), 2 ** (bits - 1) - 1)


def keysight_adc(bits: int) -> AdcModel:
    """Keysight: the ADC spans 10 divisions, centre at code 2**(bits-1) (signed 0)."""
    return AdcModel(bits, 2**bits / 10.0, 2 ** (bits - 1))


def build_rigol(sim: ScopeSimulator) -> CommandTable:
    """The Rigol DS1000Z / MSO5000 commands the drivers use (plus their queries)."""
    t, acq = CommandTable(), sim.acq
    wav = {"source": 1, "mode": "NORM", "format": "BYTE", "start": 1, "stop": 1200}
    _add_common(t, sim)
    t.add("*OPC?", lambda a, n: _text(1))
    t.add("*WAI", lambda a, n: sim.wait_until_complete() and None)
    t.add(":SYSTem:ERRor[:NEXT]?", lambda a, n: _text(sim.pop_error('0,"No error"')))

    def chan(attr, conv):
        def setter(a, n):
            setattr(acq.channels[n[0]], attr, conv(a))
        return setter

    coupling = lambda a: a.upper()[:3].replace("DC", "DC")  # noqa: E731
    t.add(":CHANnel<n>:SCALe", chan("scale", float))
    t.add(":CHANnel<n>:SCALe?", lambda a, n: _num(acq.channels[n[0]].scale))
    t.add(":CHANnel<n>:OFFSet", lambda a, n: setattr(acq.channels[n[0]], "offset", -float(a)))
    t.add(":CHANnel<n>:OFFSet?", lambda a, n: _num(-acq.channels[n[0]].offset + 0.0))
    t.add(":CHANnel<n>:COUPling", chan("coupling", coupling))
    t.add(":CHANnel<n>:COUPling?", lambda a, n: _text(acq.channels[n[0]].coupling))
    t.add(":CHANnel<n>:PROBe", chan("probe", float))
    t.add(":CHANnel<n>:PROBe?", lambda a, n: _num(acq.channels[n[0]].probe))
    t.add(":CHANnel<n>:BWLimit", chan("bwl", lambda a: a.upper() != "OFF"))
    t.add(":CHANnel<n>:BWLimit?", lambda a, n: _text("20M" if acq.channels[n[0]].bwl else "OFF"))
    t.add(":CHANnel<n>:DISPlay", chan("display", parse_bool))
    t.add(":CHANnel<n>:DISPlay?", lambda a, n: _text(int(acq.channels[n[0]].display)))
    t.add(":TIMebase[:MAIN]:SCALe", lambda a, n: setattr(acq, "scale", float(a)))
    t.add(":TIMebase[:MAIN]:SCALe?", lambda a, n: _num(acq.scale))
    t.add(":TIMebase[:MAIN]:OFFSet", lambda a, n: setattr(acq, "position", float(a)))
    t.add(":TIMebase[:MAIN]:OFFSet?", lambda a, n: _num(acq.position))
    t.add(":ACQuire:MDEPth", lambda a, n: acq.set_points(12_000 if a.upper() == "AUTO" else int(float(a))))
    t.add(":ACQuire:MDEPth?", lambda a, n: _text(acq.points))
    t.add(":ACQuire:SRATe?", lambda a, n: _num(acq.sample_rate))
    t.add(":TRIGger:MODE", _ok)
    t.add(":TRIGger:EDGe:SOURce", lambda a, n: setattr(acq, "trig_source", parse_channel(a)))
    t.add(":TRIGger:EDGe:SOURce?", lambda a, n: _text(f"CHAN{acq.trig_source}"))
    t.add(":TRIGger:EDGe:SLOPe", lambda a, n: setattr(acq, "trig_slope", _slope(a)))
    t.add(":TRIGger:EDGe:LEVel", lambda a, n: setattr(acq, "trig_level", float(a)))
    t.add(":TRIGger:EDGe:LEVel?", lambda a, n: _num(acq.trig_level))
    t.add(":TRIGger:SWEep", _ok)
    t.add(":TRIGger:STATus?", lambda a, n: _text(sim.poll_state()))
    t.add(":SINGle", lambda a, n: sim.arm())
    t.add(":RUN", lambda a, n: acq.run())
    t.add(":STOP", lambda a, n: acq.stop())
    t.add(":WAVeform:SOURce", lambda a, n: wav.__setitem__("source", parse_channel(a)))
    t.add(":WAVeform:MODE", lambda a, n: wav.__setitem__("mode", a.upper()[:4]))
    t.add(":WAVeform:FORMat", lambda a, n: wav.__setitem__("format", a.upper()[:4].replace("ASCI", "ASC")))
    t.add(":WAVeform:STARt", lambda a, n: wav.__setitem__("start", int(a)))
    t.add(":WAVeform:STOP", lambda a, n: wav.__setitem__("stop", int(a)))

    def transfer(rec: Record) -> tuple[int, float, float, float]:
        """(bits, yincrement, yorigin, yreference) of the current :WAV:FORM."""
        adc, ch = acq.adc, rec.channels[wav["source"]]
        bits = 8 if wav["format"] == "BYTE" else max(8, adc.bits) if wav["format"] == "WORD" else adc.bits
        scale = 2 ** (adc.bits - bits) if adc.bits > bits else 1
        yinc = adc.lsb(ch.scale) * scale
        yref = 2 ** (bits - 1) - 1 if adc.bits >= bits else adc.ref
        return bits, yinc, -ch.offset / yinc, yref

    def preamble(a, n):
        rec = acq.record
        if rec is None or wav["source"] not in rec.codes:
            return _text("0,2,0,1,1.000000e-06,0.000000e+00,0,1.000000e-03,0,127")
        fmt = {"BYTE": 0, "WORD": 1, "ASC": 2}[wav["format"]]
        _bits, yinc, yorigin, yref = transfer(rec)
        return _text(f"{fmt},2,{rec.points},1,{rec.dt:.9e},{rec.xorigin:.9e},0,"
                     f"{yinc:.9e},{yorigin:.9e},{yref}")

    def data(a, n):
        sim.poll_state()
        rec = acq.record
        if rec is None or wav["source"] not in rec.codes:
            return sim.block(b"")
        fmt = wav["format"]
        first = max(wav["start"], 1) - 1
        last = min(wav["stop"], rec.points, first + RIGOL_MAX_POINTS[fmt])
        codes = rec.codes[wav["source"]][first:last]
        bits, yinc, yorigin, yref = transfer(rec)
        if acq.adc.bits > bits:  # 12-bit ADC read as BYTE: round to the top 8 bits
            shift = 2 ** (acq.adc.bits - bits)
            codes = np.clip(np.rint((codes - acq.adc.ref) / shift) + yref, 0, 2**bits - 1)
        if fmt == "BYTE":
            return sim.block(codes.astype(np.uint8).tobytes())
        if fmt == "WORD":
            return sim.block(codes.astype("<u2").tobytes())
        return sim.block(_ascii_volts((codes - yorigin - yref) * yinc) + b",")

    t.add(":WAVeform:PREamble?", preamble)
    t.add(":WAVeform:DATA?", data)
    return t


def build_keysight(sim: ScopeSimulator) -> CommandTable:
    """The Keysight InfiniiVision commands the drivers use (plus their queries)."""
    t, acq = CommandTable(), sim.acq
    wav = {"source": 1, "format": "BYTE", "unsigned": True, "order": "MSBF", "mode": "NORM", "points": None}
    _add_common(t, sim)
    t.add("*OPC?", lambda a, n: _text(1) if sim.wait_until_complete() else None)
    t.add(":SYSTem:ERRor?", lambda a, n: _text(sim.pop_error('+0,"No error"')))

    def chan(attr, conv):
        def setter(a, n):
            setattr(acq.channels[n[0]], attr, conv(a))
        return setter

    t.add(":CHANnel<n>:SCALe", chan("scale", float))
    t.add(":CHANnel<n>:SCALe?", lambda a, n: _num(acq.channels[n[0]].scale))
    t.add(":CHANnel<n>:OFFSet", chan("offset", float))
    t.add(":CHANnel<n>:OFFSet?", lambda a, n: _num(acq.channels[n[0]].offset))
    t.add(":CHANnel<n>:COUPling", chan("coupling", lambda a: a.upper()))
    t.add(":CHANnel<n>:COUPling?", lambda a, n: _text(acq.channels[n[0]].coupling))
    t.add(":CHANnel<n>:PROBe", chan("probe", float))
    t.add(":CHANnel<n>:PROBe?", lambda a, n: _num(acq.channels[n[0]].probe))
    t.add(":CHANnel<n>:BWLimit", chan("bwl", parse_bool))
    t.add(":CHANnel<n>:BWLimit?", lambda a, n: _text(int(acq.channels[n[0]].bwl)))
    t.add(":CHANnel<n>:DISPlay", chan("display", parse_bool))
    t.add(":CHANnel<n>:DISPlay?", lambda a, n: _text(int(acq.channels[n[0]].display)))
    t.add(":TIMebase:REFerence", _ok)
    t.add(":TIMebase:SCALe", lambda a, n: setattr(acq, "scale", float(a)))
    t.add(":TIMebase:SCALe?", lambda a, n: _num(acq.scale))
    t.add(":TIMebase:POSition", lambda a, n: setattr(acq, "position", float(a)))
    t.add(":TIMebase:POSition?", lambda a, n: _num(acq.position))
    t.add(":ACQuire:TYPE", _ok)
    t.add(":ACQuire:SRATe?", lambda a, n: _num(acq.sample_rate))
    t.add(":ACQuire:POINts?", lambda a, n: _text(acq.points))
    t.add(":TRIGger:MODE", _ok)
    t.add(":TRIGger:SWEep", _ok)
    t.add(":TRIGger[:EDGE]:SOURce", lambda a, n: setattr(acq, "trig_source", parse_channel(a)))
    t.add(":TRIGger[:EDGE]:SLOPe", lambda a, n: setattr(acq, "trig_slope", _slope(a)))
    t.add(":TRIGger[:EDGE]:LEVel", lambda a, n: setattr(acq, "trig_level", float(a.split(",")[0])))
    t.add(":TRIGger[:EDGE]:LEVel?", lambda a, n: _num(acq.trig_level))

    def digitize(a, n):
        if a:
            chans = {parse_channel(x) for x in a.split(",")}
            for c, ch in acq.channels.items():
                ch.display = c in chans
        sim.arm()

    t.add(":DIGitize", digitize)
    t.add(":SINGle", lambda a, n: sim.arm())
    t.add(":RUN", lambda a, n: acq.run())
    t.add(":STOP", lambda a, n: acq.stop())
    t.add(":WAVeform:SOURce", lambda a, n: wav.__setitem__("source", parse_channel(a)))
    t.add(":WAVeform:FORMat", lambda a, n: wav.__setitem__("format", a.upper()[:4].replace("ASCI", "ASC")))
    t.add(":WAVeform:UNSigned", lambda a, n: wav.__setitem__("unsigned", parse_bool(a)))
    t.add(":WAVeform:BYTeorder", lambda a, n: wav.__setitem__("order", a.upper()[:4]))
    t.add(":WAVeform:POINts:MODE", lambda a, n: wav.__setitem__("mode", a.upper()[:3]))
    t.add(":WAVeform:POINts", lambda a, n: acq.set_points(int(float(a))))
    t.add(":WAVeform:POINts?", lambda a, n: _text(acq.points))

    def transfer(rec: Record) -> tuple[np.ndarray, float, float, float, int]:
        """(signed codes in transfer units, yinc, yorigin, yref, bytes per point) for the current format."""
        adc, ch = acq.adc, rec.channels[wav["source"]]
        signed = rec.codes[wav["source"]].astype(np.int64) - int(adc.ref)
        lsb = adc.lsb(ch.scale)
        if wav["format"] == "WORD":
            shift = 16 - adc.bits
            return signed << shift, lsb / 2**shift, ch.offset, 0.0, 2
        if wav["format"] == "BYTE" and adc.bits > 8:
            div = 2 ** (adc.bits - 8)
            return np.clip(np.rint(signed / div), -128, 127).astype(np.int64), lsb * div, ch.offset, 0.0, 1
        return signed, lsb, ch.offset, 0.0, 1

    def preamble(a, n):
        rec = acq.record
        if rec is None or wav["source"] not in rec.codes:
            return _text("+0,+0,+0,+1,+1.0E-06,+0.0E+00,+0,+1.0E-03,+0.0E+00,+0")
        _codes, yinc, yorigin, yref, width = transfer(rec)
        fmt = {"BYTE": 0, "WORD": 1, "ASC": 4}[wav["format"]]
        if wav["unsigned"] and fmt != 4:
            yref = 2 ** (8 * width - 1)
        return _text(f"+{fmt},+0,+{rec.points},+1,{rec.dt:+.9E},{rec.xorigin:+.9E},+0,"
                     f"{yinc:+.9E},{yorigin:+.9E},{int(yref):+d}")

    def data(a, n):
        rec = acq.record
        if rec is None or wav["source"] not in rec.codes:
            return sim.block(b"")
        codes, yinc, yorigin, yref, width = transfer(rec)
        if wav["format"] == "ASC":
            return sim.block(_ascii_volts((codes - yref) * yinc + yorigin))
        order = "<" if wav["order"] == "LSBF" else ">"
        if wav["unsigned"]:
            codes = codes + 2 ** (8 * width - 1)
            dtype = np.uint8 if width == 1 else order + "u2"
        else:
            dtype = np.int8 if width == 1 else order + "i2"
        return sim.block(codes.astype(dtype).tobytes())

    t.add(":WAVeform:PREamble?", preamble)
    t.add(":WAVeform:DATA?", data)
    return t
