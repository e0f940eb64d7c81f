"""`hil sim` as a user runs it: a subprocess prints the port and resource, serves them, stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from hil.protocol import DutClient
from instruments.scope import open_scope

ROOT = Path(__file__).parents[2]


def _start(*args: str) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "sim", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    fields: dict[str, str] = {}
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"(\w+):\s+(\S+)", line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
        if line.startswith("Ctrl-C"):
            return proc, fields
    proc.kill()
    raise AssertionError(f"hil sim did not start: {fields} {proc.stderr.read() if proc.stderr else ''}")


def test_hil_sim_serves_board_and_scope_until_ctrl_c() -> None:
    proc, fields = _start("--speed", "0.1")
    try:
        assert Path(fields["serial"]).exists() and fields["socket"].startswith("socket://127.0.0.1:")
        with DutClient(fields["serial"]) as c:
            assert c.hello_info is not None and c.hello_info.simulated and c.hello_info.model_ok
            assert c.infer(3).n == 3
        with DutClient(fields["socket"]) as c:
            assert c.version().board == "virtual-esp32"
        with open_scope(fields["scope"]) as scope:
            assert scope.identify()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "virtual bench stopped" in out
    assert "Traceback" not in err


def test_hil_sim_bad_bench_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bench.yaml"
    bad.write_text("shunt:\n  wiring: sideways\n")
    r = subprocess.run(
        [sys.executable, "-m", "hil.cli", "sim", "--bench", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert r.returncode == 2
    assert r.stderr.startswith(f"hil: error: {bad}: shunt.wiring: Input should be 'low_side'")
    assert len(r.stderr.strip().splitlines()) == 1
