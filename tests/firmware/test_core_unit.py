"""The C++ unit tests of the firmware's portable core, built with the system g++ and run here."""

import subprocess


def test_core_unit_tests_pass(host_core):
    proc = subprocess.run([str(host_core.tests)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.endswith("0 failed checks") and not summary.startswith("0 tests"), summary
