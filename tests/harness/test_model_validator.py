"""One model validator: `hil models inspect`, `hil firmware pack-model` and the virtual board refuse a .tflite whose
flatbuffer buffer length is corrupt, with the same reason (inspect refused it while pack-model packed it and the
board ran it)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hil.cli import main
from hil.protocol import DutClient, DutError
from hil.sim.bench import default_model_path
from hil.sim.board import VirtualBoard
from models.errors import ModelError
from models.inspection import inspect_model
from models.tflite_file import _schema

REASON = "corrupt TFLite model: tensor 4 'sequential/dense/MatMul' (float32, shape [16, 1]) needs 64 bytes of data, " \
         "its buffer holds 60"


def _corrupt_buffer_length(model: bytes, tensor: int, delta: int) -> bytes:
    """`model` with the length prefix of tensor `tensor`'s data vector changed by `delta` bytes."""
    root = _schema().Model.GetRootAs(model, 0)
    buffer = root.Buffers(root.Subgraphs(0).Tensors(tensor).Buffer())
    start = buffer._tab.Vector(buffer._tab.Offset(4))  # the first data byte; its uint32 length sits before it
    out = bytearray(model)
    (length,) = struct.unpack_from("<I", out, start - 4)
    struct.pack_into("<I", out, start - 4, length + delta)
    return bytes(out)


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    """The sine model with the first dense layer's weights (16 float32, 64 bytes) said to be 60 bytes long."""
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(_corrupt_buffer_length(default_model_path().read_bytes(), 4, -4))
    return path


def test_the_untouched_model_passes_all_three(tmp_path: Path) -> None:
    """The control: the same model with its length intact is inspected, packed and run."""
    from hil.firmware import pack_model

    model = default_model_path()
    assert _corrupt_buffer_length(model.read_bytes(), 4, 0) == model.read_bytes()
    assert inspect_model(model)["tflm_ok"]
    assert pack_model(model)
    with VirtualBoard(model, boot_s=0.0).start(tcp_port=None) as b, DutClient(b.pty_path) as c:
        assert c.require_model().model_ok and c.infer(1).problem is None


def test_inspect_and_pack_model_refuse_it_with_the_same_reason(corrupt: Path, tmp_path: Path, capsys) -> None:
    from hil.firmware import pack_model

    with pytest.raises(ModelError) as inspected:
        inspect_model(corrupt)
    with pytest.raises(ModelError) as packed:
        pack_model(corrupt)
    assert str(inspected.value).startswith(f"{corrupt}: {REASON}")
    assert str(packed.value).startswith(f"corrupt.tflite: {REASON}")
    out = tmp_path / "corrupt.hilm"
    assert main(["firmware", "pack-model", str(corrupt), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hil: error: corrupt: " + REASON) and err.count("\n") == 1  # names the variant
    assert not out.exists()  # nothing packed


def test_the_virtual_board_refuses_to_run_it_with_the_same_reason(corrupt: Path) -> None:
    with VirtualBoard(corrupt, boot_s=0.0).start(tcp_port=None) as b, DutClient(b.pty_path) as c:
        hello = c.hello_info
        assert hello is not None and not hello.model_ok
        assert hello.model_error_code == "E_MODEL" and REASON in hello.model_error
        with pytest.raises(DutError) as err:
            c.infer(1)  # no figure from it: the board will not run it
        assert err.value.code == "E_MODEL"


def test_a_station_refuses_it_before_any_figure(corrupt: Path) -> None:
    """Through the harness's own flash and hello, as the campaign uses them."""
    from hil.bench import parse_bench
    from hil.station import open_station
    from tests.harness.helpers import quiet_bench

    config = parse_bench(quiet_bench())
    with open_station(config, config.boards[0].name) as station:
        station.flash(corrupt.read_bytes(), source="corrupt")
        with station.dut() as dut:
            assert dut.hello_info is not None and REASON in (dut.hello_info.model_error or "")
