"""The code example of docs/measuring-power.md runs against the simulator and gives the right figures."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "measuring-power.md"


def test_measuring_power_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "the section must have exactly one code example"
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    report = namespace["report"]
    assert report.valid, report.reason
    truth_mj = 0.150 * (5 - 0.150 * 0.05) * 4e-3 * 1e3
    assert report.energy_per_inference_mj.mean == pytest.approx(truth_mj, rel=0.005)
    assert "mJ/inference" in capsys.readouterr().out
