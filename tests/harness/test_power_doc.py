"""The code example of the README's "Measuring power" section runs against the simulator and is right."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_measuring_power_example_runs(capsys):
    section = README.read_text().split("## Measuring power", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section must have exactly one code example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    report = namespace["report"]
    assert report.valid, report.reason
    truth_mj = 0.150 * (5 - 0.150 * 0.05) * 4e-3 * 1e3
    assert report.energy_per_inference_mj.mean == pytest.approx(truth_mj, rel=0.005)
    assert "mJ/inference" in capsys.readouterr().out
