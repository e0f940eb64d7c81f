"""Each vendor's preamble formula against its programming manual's worked example."""

import numpy as np
import pytest

from instruments.conversion import (
    keysight_volts,
    rigol_volts,
    sample_time,
    tektronix_volts,
    volts_from_preamble,
)
from instruments.errors import InstrumentError
from instruments.keysight import parse_keysight_preamble
from instruments.rigol import parse_rigol_preamble


def test_rigol_ds1000z_manual_example():
    # DS1000Z programming guide, :WAVeform:PREamble? example: 0,2,600,2,0.000000,-0.000006,0,0.008000,50,127
    # (its xincrement is printed as 0.000000; a real one is needed to parse, so 1e-8 stands in)
    pre = parse_rigol_preamble("0,2,600,2,1e-8,-0.000006,0,0.008000,50,127")
    assert (pre["yincrement"], pre["yorigin"], pre["yreference"]) == (0.008, 50, 127)
    # V = (code - yorigin - yreference) * yincrement: code 177 is 0 V, code 127 is -0.4 V, code 202 is +0.2 V
    volts = rigol_volts(np.array([177, 127, 202]), 0.008, 50, 127)
    np.testing.assert_allclose(volts, [0.0, -0.4, 0.2], atol=1e-12)


def test_keysight_manual_time_example_and_voltage_formula():
    # InfiniiVision programmer's guide: XORigin 16 ns, XREFerence 0, XINCrement 2 ns -> point 3 at 22 ns
    assert sample_time(3, 2e-9, 16e-9, 0) == pytest.approx(22e-9)
    # voltage = (data - yreference) * yincrement + yorigin
    volts = keysight_volts(np.array([128, 0, 255]), 0.01, 0.5, 128)
    np.testing.assert_allclose(volts, [0.5, -0.78, 1.77])


def test_rigol_and_keysight_formulas_differ_in_the_role_of_yorigin():
    codes = np.array([100])
    assert rigol_volts(codes, 0.01, 10, 0)[0] == pytest.approx(0.9)
    assert keysight_volts(codes, 0.01, 10, 0)[0] == pytest.approx(11.0)


def test_tektronix_manual_example():
    # YMULT 40 mV per level = 1 V/div at 25 levels per division; value = (code - YOFf) * YMUlt + YZEro
    volts = tektronix_volts(np.array([25, -25, 0]), 40e-3, 0, 0.5)
    np.testing.assert_allclose(volts, [1.5, -0.5, 0.5])


@pytest.mark.parametrize("bad", ["0", "-1e-3"])
def test_zero_or_negative_increments_are_errors(bad):
    with pytest.raises(InstrumentError, match="yincrement"):
        parse_rigol_preamble(f"0,2,600,1,1e-6,-3e-4,0,{bad},0,127")
    with pytest.raises(InstrumentError, match="xincrement"):
        parse_keysight_preamble(f"+0,+0,+600,+1,{bad},-3e-4,+0,1e-3,0,+0")
    with pytest.raises(InstrumentError, match="YMUlt"):
        tektronix_volts(np.array([1]), float(bad), 0, 0)
    with pytest.raises(InstrumentError, match="yincrement"):
        volts_from_preamble(np.array([1]), {"formula": "rigol", "yincrement": float(bad), "yorigin": 0,
                                            "yreference": 127})


def test_malformed_preamble_is_an_error():
    with pytest.raises(InstrumentError, match="10 fields"):
        parse_rigol_preamble("0,2,600")
    with pytest.raises(InstrumentError, match="non-numeric"):
        parse_keysight_preamble("a,b,c,d,e,f,g,h,i,j")


def test_one_preamble_parser_with_each_vendors_format_codes():
    text = "{},0,62500,1,1.6E-08,-5.0E-04,0,7.851759E-04,0,32768"
    assert parse_keysight_preamble(text.format(4))["format_name"] == "ASCII"
    assert parse_rigol_preamble(text.format(2))["format_name"] == "ASCII"
    assert parse_keysight_preamble(text.format(2))["format_name"].startswith("unknown")
    pre = parse_keysight_preamble(text.format(1))
    assert (pre["format_name"], pre["points"], pre["yreference"], pre["formula"]) == ("WORD", 62500, 32768, "keysight")
    with pytest.raises(InstrumentError, match="Keysight preamble must have 10 fields"):
        parse_keysight_preamble("4,0,62500")
