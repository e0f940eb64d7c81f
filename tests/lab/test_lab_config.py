"""The bench file's `lab:` section: defaults, labgrid's tag rules, and one clear line per mistake."""

from __future__ import annotations

import pytest

from hil.errors import HilError
from hil.lab.config import LabConfig, parse_lab


def test_defaults_and_normalisation():
    cfg = parse_lab({"tags": {"board": "esp32", "chip": "esp32s3"}, "coordinator": "lab-host"})
    assert cfg.coordinator == "lab-host:20408"  # labgrid's default port when none is given
    assert cfg.places == 1 and cfg.priority == 0 and cfg.max_failures == 3
    assert cfg.needs.scope is True and cfg.needs.power is False
    assert cfg.filter_text == "board=esp32 chip=esp32s3"
    assert parse_lab({"tags": {"board": "esp32"}, "places": "all"}).places == "all"
    assert isinstance(parse_lab({"tags": {"board": "esp32"}}), LabConfig)


@pytest.mark.parametrize(("data", "expected"), [
    ({}, "bench.yaml: lab.tags: missing; e.g. tags: {board: esp32}"),
    ({"tags": {}}, "lab.tags"),
    ({"tags": {"Board": "esp32"}}, "tag key 'Board' is not a labgrid tag key"),
    ({"tags": {"board": "esp 32"}}, "no spaces or ="),
    ({"tags": {"board": "esp32"}, "places": 0}, "lab.places"),
    ({"tags": {"board": "esp32"}, "places": "some"}, "lab.places"),
    ({"tags": {"board": "esp32"}, "coordinator": "host:99999"}, "coordinator port must be 1-65535"),
    ({"tags": {"board": "esp32"}, "coordinator": "http://host"}, "coordinator must be HOST or HOST:PORT"),
    ({"tags": {"board": "esp32"}, "max_failures": 0}, "lab.max_failures"),
    ({"tags": {"board": "esp32"}, "wait_s": 0}, "lab.wait_s"),
    ({"tags": {"board": "esp32"}, "ports": 2}, "lab.ports: unknown key; allowed keys: coordinator, tags, places"),
    ({"tags": {"board": "esp32"}, "needs": {"meter": True}}, "lab.needs.meter: unknown key; allowed keys: serial"),
])
def test_mistakes_are_one_line(data, expected):
    with pytest.raises(HilError) as info:
        parse_lab(data)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and message.startswith("bench.yaml: lab")


def test_not_a_mapping():
    with pytest.raises(HilError, match="lab: must be a mapping"):
        parse_lab(["board=esp32"], "my-bench.yaml")
