"""Exact command bytes per dialect (PyMeasure `expected_protocol` style, over a real socket via pyvisa)."""

import numpy as np
import pytest

from instruments.errors import InstrumentError
from instruments.ieee488 import encode_block
from instruments.keysight import KeysightInfiniiVision
from instruments.rigol import RigolDS1000Z, RigolMSO5000
from instruments.scope import open_scope
from instruments.sim.scripted import ScriptedInstrument
from instruments.tektronix import TektronixMSO

CODES_U8 = np.array([0, 2, 127, 200, 255] * 200, dtype=np.uint8)


def _configure(scope):
    scope.configure_channel(1, 0.001, 0.005)
    scope.configure_timebase(1e-3, record_points=1000)
    scope.configure_trigger(2, 1.65, "rising")


def _run(script, capture):
    with ScriptedInstrument(script) as inst:
        with open_scope(inst.resource, timeout_s=1) as scope:
            result = capture(scope)
    assert inst.mismatch is None, inst.mismatch
    assert inst.remaining == []
    return scope, result


RIGOL_SETUP = [
    (":CHAN1:DISP ON", None), (":CHAN1:PROB 1", None), (":CHAN1:COUP DC", None), (":CHAN1:BWL OFF", None),
    (":CHAN1:SCAL 0.001", None), (":CHAN1:OFFS -0.005", None),
    (":CHAN1:SCAL?", "1.000000e-03"), (":CHAN1:OFFS?", "-5.000000e-03"), (":CHAN1:COUP?", "DC"),
    (":CHAN1:PROB?", "1"), (":CHAN1:BWL?", "OFF"), (":CHAN1:DISP?", "1"),
    (":TIM:MAIN:SCAL 0.001", None), (":TIM:MAIN:OFFS 0", None), (":RUN", None), (":ACQ:MDEP 1000", None),
    (":TIM:MAIN:SCAL?", "1.000000e-03"), (":ACQ:MDEP?", "1000"), (":ACQ:SRAT?", "8.333333e+04"),
    (":TIM:MAIN:OFFS?", "0.000000e+00"),
    (":TRIG:MODE EDGE", None), (":TRIG:EDGE:SOUR CHAN2", None), (":TRIG:EDGE:SLOP POS", None),
    (":TRIG:EDGE:LEV 1.65", None),
]
RIGOL_FETCH = [
    (":WAV:SOUR CHAN1", None), (":WAV:MODE RAW", None), (":WAV:FORM BYTE", None),
    (":WAV:PRE?", "0,2,1000,1,1.200000e-05,-6.000000e-03,0,4.000000e-05,-1.250000e+02,127"),
    (":WAV:STAR 1", None), (":WAV:STOP 1000", None),
]


@pytest.mark.parametrize("states", [["STOP", "WAIT", "TD", "STOP"], ["WAIT", "WAIT", "STOP"],
                                    ["RUN", "TD", "WAIT", "STOP"]])
def test_rigol_ds1000z_capture_bytes_and_non_sticky_td(states):
    """A stale STOP before arming is ignored; STOP after WAIT/RUN/TD completes, whether or not TD was seen."""
    script = [("*IDN?", "RIGOL TECHNOLOGIES,DS1104Z,DS1ZA1,00.04.05")] + RIGOL_SETUP + [(":SING", None)]
    script += [(":TRIG:STAT?", s) for s in states] + RIGOL_FETCH
    script += [(":WAV:DATA?", encode_block(CODES_U8.tobytes()))]
    scope, (wf,) = _run(script, lambda s: (_configure(s), s.capture(1, timeout_s=2))[1])
    assert type(scope) is RigolDS1000Z
    np.testing.assert_allclose(wf.volts[:5], (CODES_U8[:5] + 125.0 - 127) * 4e-5)
    assert wf.t0 == pytest.approx(-6e-3) and wf.dt == pytest.approx(1.2e-5)
    assert wf.clipped  # codes 0 and 255 are the rails


def test_rigol_mso5000_sends_wai_before_data():
    script = [("*IDN?", "RIGOL TECHNOLOGIES,MSO5074,MS5A1,00.01.03"), (":CHAN1:SCAL?", "1e-3"),
              (":CHAN1:OFFS?", "-5e-3"), (":CHAN1:PROB?", "1")] + RIGOL_FETCH
    script += [("*WAI", None), (":WAV:DATA?", encode_block(CODES_U8.tobytes()))]
    scope, (wf,) = _run(script, lambda s: s.fetch(1))
    assert type(scope) is RigolMSO5000 and len(wf) == 1000


def test_keysight_capture_bytes_digitize_opc_and_signed_lsb_first_words():
    codes = np.array([-32768, -256, 0, 256, 32512] * 200, dtype="<i2")
    script = [
        ("*IDN?", "KEYSIGHT TECHNOLOGIES,DSOX3024T,MY1,07.50"),
        (":CHANnel1:DISPlay ON", None), (":CHANnel1:PROBe 1", None), (":CHANnel1:COUPling DC", None),
        (":CHANnel1:BWLimit OFF", None), (":CHANnel1:SCALe 0.001", None), (":CHANnel1:OFFSet 0.005", None),
        (":CHANnel1:SCALe?", "+1.00000E-03"), (":CHANnel1:OFFSet?", "+5.00000E-03"),
        (":CHANnel1:COUPling?", "DC"), (":CHANnel1:PROBe?", "+1.0E+00"), (":CHANnel1:BWLimit?", "0"),
        (":CHANnel1:DISPlay?", "1"),
        (":TIMebase:REFerence CENTer", None), (":TIMebase:SCALe 0.001", None), (":TIMebase:POSition 0", None),
        (":ACQuire:TYPE NORMal", None), (":WAVeform:POINts:MODE RAW", None), (":WAVeform:POINts 1000", None),
        (":TIMebase:SCALe?", "+1.0E-03"), (":WAVeform:POINts?", "+1000"), (":ACQuire:SRATe?", "+1.0E+05"),
        (":TIMebase:POSition?", "+0.0E+00"),
        (":TRIGger:MODE EDGE", None), (":TRIGger:EDGE:SOURce CHANnel2", None),
        (":TRIGger:EDGE:SLOPe POSitive", None), (":TRIGger:EDGE:LEVel 1.65", None),
        (":TRIGger:SWEep NORMal", None),
        (":DIGitize CHANnel1", None), ("*OPC?", "1"),
        (":WAVeform:SOURce CHANnel1", None), (":WAVeform:FORMat WORD", None),
        (":WAVeform:UNSigned OFF", None),
        (":WAVeform:BYTeorder LSBFirst", None),
        (":WAVeform:PREamble?", "+1,+0,+1000,+1,+1.0E-05,-5.0E-03,+0,+1.5625E-07,+5.0E-03,+0"),
        (":WAVeform:DATA?", encode_block(codes.tobytes())),
    ]
    scope, (wf,) = _run(script, lambda s: (_configure(s), s.capture(1, timeout_s=2, fmt="WORD"))[1])
    assert type(scope) is KeysightInfiniiVision
    np.testing.assert_allclose(wf.volts[:5], codes[:5] * 1.5625e-7 + 5e-3)
    assert wf.clipped and wf.raw_codes.dtype == np.dtype("<i2")
    assert wf.step_v == pytest.approx(1.5625e-7 * 256)  # an 8-bit ADC left-justified in 16-bit words


def test_tektronix_capture_bytes():
    codes = np.array([-128, -25, 0, 25, 127] * 200, dtype=np.int8)
    script = [
        ("*IDN?", "TEKTRONIX,MSO24,C0001,CF:91.1CT FV:2.0"), ("HEADer OFF", None),
        ("SELect:CH1 ON", None), ("CH1:PRObe:GAIN 1", None), ("CH1:COUPling DC", None),
        ("CH1:BANdwidth FULl", None),
        ("CH1:SCAle 0.001", None), ("CH1:POSition 0", None), ("CH1:OFFSet 0.005", None),
        ("CH1:SCAle?", "1.0E-3"), ("CH1:OFFSet?", "5.0E-3"), ("CH1:PRObe:GAIN?", "1.0"),
        ("HORizontal:SCAle 0.001", None), ("HORizontal:RECOrdlength 1000", None),
        ("HORizontal:DELay:MODe ON", None), ("HORizontal:DELay:TIMe 0", None),
        ("HORizontal:SCAle?", "1.0E-3"), ("HORizontal:RECOrdlength?", "1000"),
        ("HORizontal:SAMPLERate?", "100.0E+3"), ("HORizontal:DELay:TIMe?", "0.0E+0"),
        ("TRIGger:A:TYPe EDGe", None), ("TRIGger:A:EDGE:SOUrce CH2", None),
        ("TRIGger:A:EDGE:SLOpe RISe", None),
        ("TRIGger:A:LEVel:CH2 1.65", None), ("TRIGger:A:MODe NORMal", None),
        ("ACQuire:STOPAfter SEQuence", None), ("ACQuire:STATE ON", None),
        ("ACQuire:STATE?", "1"), ("ACQuire:STATE?", "0"),
        ("HORizontal:RECOrdlength?", "1000"), ("DATa:SOUrce CH1", None), ("DATa:ENCdg SRIbinary", None),
        ("WFMOutpre:BYT_Nr 1", None), ("DATa:STARt 1", None), ("DATa:STOP 1000", None),
        ("WFMOutpre:YMUlt?", "40.0E-6"), ("WFMOutpre:YOFf?", "0.0E+0"), ("WFMOutpre:YZEro?", "5.0E-3"),
        ("WFMOutpre:XINcr?", "10.0E-6"), ("WFMOutpre:XZEro?", "-5.0E-3"), ("WFMOutpre:PT_Off?", "0"),
        ("CURVe?", encode_block(codes.tobytes())),
    ]
    scope, (wf,) = _run(script, lambda s: (_configure(s), s.capture(1, timeout_s=2))[1])
    assert type(scope) is TektronixMSO
    np.testing.assert_allclose(wf.volts[:5], codes[:5] * 40e-6 + 5e-3)
    assert wf.t0 == pytest.approx(-5e-3) and wf.clipped


def test_a_dialect_mistake_shows_as_a_mismatch():
    script = [("*IDN?", "RIGOL TECHNOLOGIES,DS1104Z,X,1"), (":CHAN1:DISP ON", None)]
    with ScriptedInstrument(script) as inst, open_scope(inst.resource, timeout_s=0.3) as scope:
        with pytest.raises(Exception):  # noqa: B017 - the connection is cut at the wrong command
            scope.configure_channel(1, 0.001, coupling="AC", enabled=False)
    assert inst.mismatch == "step 1: expected ':CHAN1:DISP ON', got ':CHAN1:DISP OFF'"


#: A real DSOX1102G preamble for an ASCII transfer (format 4): its y-reference 32768 is a WORD code, not volts.
DSOX1102G_ASCII_PREAMBLE = "4,0,62500,1,1.6E-08,-5.0E-04,0,7.851759E-04,0,32768"


@pytest.mark.parametrize(("peak_v", "clipped"), [(3.3, False), (24.0, False), (25.0, True), (-25.0, True)])
def test_keysight_ascii_clipping_is_judged_in_volts_not_against_the_preamble_codes(peak_v, clipped):
    """At 5 V/div and 0 V offset the 8-bit ADC spans +-25 V (10 divisions): only samples at its edges clip."""
    t = np.arange(62_500) * 1.6e-8
    volts = np.round(abs(peak_v) * np.sin(2 * np.pi * 1e3 * t), 4)
    volts[1234] = peak_v
    payload = ",".join(f"{v:+.6E}" for v in volts).encode("ascii")
    script = [
        ("*IDN?", "KEYSIGHT TECHNOLOGIES,DSOX1102G,CN00000001,02.12.2019111333"),
        (":CHANnel1:SCALe?", "+5.00E+00"), (":CHANnel1:OFFSet?", "+0.0E+00"), (":CHANnel1:PROBe?", "+1.0E+00"),
        (":WAVeform:SOURce CHANnel1", None), (":WAVeform:FORMat ASCii", None),
        (":WAVeform:PREamble?", DSOX1102G_ASCII_PREAMBLE),
        (":WAVeform:DATA?", encode_block(payload)),
    ]
    scope, (wf,) = _run(script, lambda s: s.fetch(1, fmt="ASCII"))
    assert type(scope) is KeysightInfiniiVision
    np.testing.assert_allclose(wf.volts, volts)
    assert wf.t0 == pytest.approx(-5e-4) and wf.dt == pytest.approx(1.6e-8)
    assert wf.clipped is clipped
    assert wf.step_v == pytest.approx(10 * 5.0 / 256)  # one 8-bit ADC step, not the preamble's WORD step
    assert wf.preamble["format_name"] == "ASCII"


def test_a_preamble_for_another_format_is_an_error():
    script = [
        ("*IDN?", "KEYSIGHT TECHNOLOGIES,DSOX1102G,CN00000001,02.12.2019111333"),
        (":CHANnel1:SCALe?", "+5.00E+00"), (":CHANnel1:OFFSet?", "+0.0E+00"), (":CHANnel1:PROBe?", "+1.0E+00"),
        (":WAVeform:SOURce CHANnel1", None), (":WAVeform:FORMat BYTE", None), (":WAVeform:UNSigned OFF", None),
        (":WAVeform:PREamble?", DSOX1102G_ASCII_PREAMBLE),
    ]
    with ScriptedInstrument(script) as inst, open_scope(inst.resource, timeout_s=1) as scope:
        with pytest.raises(InstrumentError, match="preamble for format ASCII after :WAVeform:FORMat BYTE"):
            scope.fetch(1)
    assert inst.mismatch is None and inst.remaining == []
