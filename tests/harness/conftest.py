"""Harness test fixtures: the TFLM sine model shipped in the tflite-micro wheel and a virtual board."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.sim.board import VirtualBoard


@pytest.fixture(scope="session")
def sine_model() -> bytes:
    """A small float32 model (input [1,1]) that TFLM runs in ~2 KB of arena."""
    import tflite_micro

    path = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    return path.read_bytes()


@pytest.fixture
def board(sine_model: bytes) -> Iterator[VirtualBoard]:
    """A virtual board with the sine model, serving on a pty and a TCP port."""
    b = VirtualBoard(sine_model, boot_s=0.05).start()
    yield b
    b.stop()
