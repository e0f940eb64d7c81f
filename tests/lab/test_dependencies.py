"""labgrid's pyserial fork and pyserial both ship the `serial` package: the install must leave the fork's files
(pyserial 3.5 plus RFC 2217 fixes the lab's serial path needs), and every user of `serial` must still work."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path


def test_the_serial_package_is_labgrids_fork_file_for_file():
    import serial

    assert serial.__version__ == md.version("pyserial-labgrid")
    dist = md.distribution("pyserial-labgrid")
    checked = 0
    for f in dist.files or []:
        if f.parts[0] != "serial" or f.suffix != ".py" or not f.hash:
            continue
        digest = base64.urlsafe_b64encode(hashlib.sha256(Path(dist.locate_file(f)).read_bytes()).digest())
        assert digest.rstrip(b"=").decode() == f.hash.value, f"{f} is not the fork's (pyserial overwrote it)"
        checked += 1
    assert checked > 10


def test_rfc2217_timeout_changes_do_not_reconfigure_the_port():
    # the fork's fix: plain pyserial 3.5 renegotiates the whole port on every timeout change (150 ms each through
    # ser2net, measured), and esptool changes timeouts all through a flash
    from serial.rfc2217 import Serial

    assert "timeout" in Serial.__dict__


def test_pip_check_and_the_serial_users_import():
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", "import serial, esptool, pytest_embedded, pytest_embedded_serial, "
                        "labgrid.remote.client; print('ok')"], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr
