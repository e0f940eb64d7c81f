"""Lab test fixtures: a real virtual lab (labgrid coordinator, two exporters with ser2net, four virtual ESP32s on
ptys with simulated scopes) on loopback, and a measurement that drives a place's board over rfc2217."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.lab.virtual import VirtualLab, missing_reason

BIN = Path(sys.executable).parent


def lab_or_skip() -> None:
    """Skip with the reason (naming the package to install) when the virtual lab cannot run here."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def vlab() -> Iterator[VirtualLab]:
    """A virtual lab shared by a module's tests that leave it as they found it (nothing held)."""
    lab_or_skip()
    with VirtualLab(time_scale=0.0) as lab:
        yield lab


@pytest.fixture
def fresh_lab() -> Iterator[VirtualLab]:
    """A virtual lab of a test's own, for tests that kill parts of it."""
    lab_or_skip()
    with VirtualLab(time_scale=0.0) as lab:
        yield lab


def labgrid_client(address: str, *args: str) -> str:
    """Run the real `labgrid-client` against the coordinator; its stdout."""
    exe = BIN / "labgrid-client"
    r = subprocess.run([str(exe if exe.is_file() else shutil.which("labgrid-client")), "-x", address, *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def who(address: str) -> dict[str, str]:
    """Place -> `user@host` holding it, from `labgrid-client who`."""
    out = {}
    for line in labgrid_client(address, "who").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            out[parts[2]] = f"{parts[0]}@{parts[1]}"
    return out


def wait_until(check, timeout: float = 10.0, what: str = "condition"):
    """Poll `check()` until it returns a truthy value; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout} s")
