"""`hil sim` as a user runs it: a subprocess prints the port and resource, serves them, stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hil.protocol import DutClient
from instruments.scope import open_scope
from tests.harness.helpers import start_hil_sim

ROOT = Path(__file__).parents[2]


def test_hil_sim_serves_board_and_scope_until_ctrl_c() -> None:
    proc, fields, _ = start_hil_sim("--speed", "0.1")
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
