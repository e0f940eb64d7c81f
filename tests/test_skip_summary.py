"""Issue 20, item 12: `make test` ends with one line counting the tests skipped for a missing tool and naming the
Debian packages to install; the README lists the same packages as `.ci/run`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_TESTS = '''
import pytest

def test_runs():
    pass

def test_needs_qemu():
    pytest.skip("qemu-system-arm not installed (apt-get install qemu-system-arm)")

@pytest.mark.parametrize("target", ["arm", "xtensa"])
def test_cross(target):
    pytest.skip("g++ not installed (apt-get install gcc-arm-none-eabi gcc-xtensa-lx106)")

@pytest.mark.skipif(True, reason="/usr/bin/chromium is absent (apt-get install chromium)")
def test_render():
    pass

def test_other_skip():
    pytest.skip("needs a real board")
'''


def _pytest(folder: Path, body: str, *args: str) -> list[str]:
    shutil.copyfile(ROOT / "tests" / "conftest.py", folder / "conftest.py")  # the hook under test
    (folder / "test_tiny.py").write_text(body)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hil.plugin",
                        "-p", "no:labgrid", "-q", "-rs", *args, str(folder)],
                       capture_output=True, text=True, cwd=folder, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout.rstrip("\n").splitlines()


def test_the_last_line_counts_missing_tool_skips_and_names_the_packages(tmp_path: Path) -> None:
    lines = _pytest(tmp_path, TINY_TESTS)
    assert re.fullmatch(r"1 passed, 5 skipped(, \d+ warnings?)? in [\d.]+s", lines[-2]), lines[-3:]
    assert lines[-1] == ("4 tests skipped for a missing tool; to run them: sudo apt-get install qemu-system-arm "
                         'gcc-arm-none-eabi gcc-xtensa-lx106 chromium (README, "Two commands")')


def test_no_line_when_nothing_skipped_for_a_tool(tmp_path: Path) -> None:
    lines = _pytest(tmp_path, "import pytest\n\ndef test_a():\n    pytest.skip('needs a real board')\n")
    assert re.fullmatch(r"1 skipped(, \d+ warnings?)? in [\d.]+s", lines[-1]), lines[-3:]


def test_the_readme_lists_the_packages_ci_installs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    installed = re.search(r"apt-get install -y --no-install-recommends \\\n((?:.*\\\n)*.*)\n", ci)
    assert installed is not None
    ci_packages = installed.group(1).replace("\\", " ").split()
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"sudo apt-get install ((?:.*\\\n)*.*)\n", readme)
    assert line is not None
    assert line.group(1).replace("\\", " ").split() == ci_packages
