"""The virtual board enforces the firmware's limits: model partition, operators (ops.txt) and arena.

Flashing refuses what `hil firmware pack-model` refuses, with its error; a board that boots such an image
anyway reports the firmware's own E_MODEL message in `hello`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import main
from hil.errors import HilError
from hil.firmware import IMAGE_HEADER_SIZE, model_partition, supported_ops
from hil.sim.board import VirtualBoard
from hil.sim.device import DeviceCore
from hil.wire import parse_reply
from tests.harness.sim_models import with_ballast, with_exp


def _pack_model_error(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What `hil firmware pack-model PATH` prints when it refuses the model (and that it does refuse it)."""
    rc = main(["firmware", "pack-model", str(path), "-o", str(tmp_path / "out.hilm")])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "out.hilm").exists(), err
    return err.strip().removeprefix("hil: error: ")


def _hello(core: DeviceCore) -> dict:
    reply = parse_reply(core.handle("hello")[-1])
    assert reply is not None
    return reply


@pytest.fixture
def big_model(sine_model: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "big.tflite"
    path.write_bytes(with_ballast(sine_model, 2 * 1024 * 1024))
    return path


@pytest.fixture
def exp_model(sine_model: bytes, tmp_path: Path) -> Path:
    path = tmp_path / "exp.tflite"
    path.write_bytes(with_exp(sine_model))
    return path


def test_the_limits_are_the_firmwares() -> None:
    assert model_partition().size == 0x100000  # firmware/partitions.csv
    assert "EXP" not in supported_ops() and "FULLY_CONNECTED" in supported_ops()


@pytest.mark.parametrize("which", ["big", "exp"])
def test_flashing_refuses_what_pack_model_refuses_with_its_error(
    which: str, big_model: Path, exp_model: Path, sine_model: bytes, tmp_path: Path, capsys
) -> None:
    path = big_model if which == "big" else exp_model
    expected = _pack_model_error(path, tmp_path, capsys)
    assert ("partition holds 1048576 bytes" in expected) if which == "big" else ("operator EXP" in expected)
    board = VirtualBoard(sine_model, boot_s=0.0)
    with pytest.raises(HilError) as err:
        board.flash(path)
    assert str(err.value) == expected
    assert board.core.image == sine_model  # the board keeps the model it had
    with pytest.raises(HilError) as err:  # bytes, as the station flashes them: the same check, named "model"
        board.flash(path.read_bytes())
    assert str(err.value) == expected.replace(path.stem, "model", 1)


def test_an_oversized_image_in_flash_is_refused_at_boot_like_the_firmware(big_model: Path) -> None:
    data = big_model.read_bytes()
    r = _hello(DeviceCore(data))
    room = model_partition().size - IMAGE_HEADER_SIZE
    assert not r["ok"] and r["code"] == "E_MODEL"
    assert r["error"] == f"model image length {len(data)} exceeds the partition ({room} bytes after the header)"


def test_an_operator_outside_ops_txt_is_refused_at_boot_like_the_firmware(exp_model: Path) -> None:
    core = DeviceCore(exp_model.read_bytes())
    r = _hello(core)
    assert not r["ok"] and r["code"] == "E_MODEL"
    assert r["error"] == "unsupported operator EXP (not in the firmware's ops.txt)"  # model_ops.cpp
    infer = parse_reply(core.handle("infer 1")[-1])
    assert infer is not None and infer["code"] == "E_MODEL"


def test_the_arena_of_the_bench_file_is_enforced(sine_model: bytes) -> None:
    from models.tflm import min_arena_bytes

    need = min_arena_bytes(sine_model)
    assert _hello(DeviceCore(sine_model, arena_bytes=need + 64))["ok"]
    r = _hello(DeviceCore(sine_model, arena_bytes=need - 256))
    assert r["code"] == "E_MODEL" and r["error"].startswith("arena too small")

