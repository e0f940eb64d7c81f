"""pytest-embedded's session manager process exits with pytest, even when pytest is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        out.update(int(c) for c in (task / "children").read_text().split())
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_sigkilled_pytest_leaves_no_manager_process_behind(tmp_path: Path) -> None:
    (tmp_path / "test_wait.py").write_text("import time\n\ndef test_wait():\n    time.sleep(60)\n")
    # outside the repository's pytest.ini: labgrid's own plugin (installed with labgrid) would skip the test
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:labgrid",
                             "test_wait.py"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        deadline = time.monotonic() + 60
        forked: set[int] = set()
        while time.monotonic() < deadline:  # the manager is forked: it shares pytest's command line
            forked = {c for c in _children(proc.pid)
                      if Path(f"/proc/{c}/cmdline").read_bytes() == Path(f"/proc/{proc.pid}/cmdline").read_bytes()}
            if forked:
                break
            time.sleep(0.1)
        assert forked, "pytest-embedded's manager process never started (is the plugin still loaded?)"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(c) for c in forked):
            time.sleep(0.1)
        left = [c for c in forked if _alive(c)]
        for c in left:
            os.kill(c, signal.SIGKILL)
        assert not left, f"processes {left} outlived the killed pytest"
    finally:
        proc.kill()
