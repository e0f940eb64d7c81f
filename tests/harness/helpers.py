"""Shared by the harness tests that run the whole campaign or `hil sim` as a user would: a workspace on the
virtual bench (a copy of the built baseline variants, budgets and a one-board bench), the `hil measure`
arguments that measure in it, and a `hil sim` subprocess read up to its prompt."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = {
    "version": 1,
    "defaults": {"latency_ms": {"max": 100}, "energy_mj": {"max": 200}, "accuracy": {"min": 30},
                 "flash_kb": {"max": 100}, "arena_kb": {"max": 100}},
    "variants": {"baseline-no_opt": {"flash_kb": {"max": 1}}},  # the float model is larger: fails this one
}


def make_workspace(build: Path, folder: Path) -> Path:
    """Copy the built baseline variants, their cache and matrix into `folder` (a campaign rewrites the models
    folder), with BUDGETS and the repository's bench cut to its first board, its noise off."""
    shutil.copytree(build, folder, dirs_exist_ok=True)
    (folder / "budgets.yaml").write_text(yaml.safe_dump(BUDGETS))
    bench = quiet_bench()
    bench["boards"] = bench["boards"][:1]
    (folder / "bench.yaml").write_text(yaml.safe_dump(bench))
    return folder


def quiet_bench() -> dict:
    """The repository's bench file with its bench noise off: runs to be compared figure by figure must not drift."""
    bench = yaml.safe_load((ROOT / "bench.yaml").read_text())
    bench["virtual"]["noise"]["enabled"] = False
    return bench


def measure_args(ws: Path, *extra: str, bench: str = "bench.yaml") -> list[str]:
    """`hil measure` arguments for workspace `ws` (a short capture window, 2 trials, 40 test images); `extra`
    come last, so they override."""
    return ["measure", f"--bench={ws / bench}", f"--budgets={ws / 'budgets.yaml'}",
            f"--models-config={ws / 'variants.yaml'}", f"--models-dir={ws / 'models'}",
            f"--results-db={ws / 'results.sqlite'}", f"--report-dir={ws / 'report'}",
            "--trials=2", "--window=0.2", "--warmup=1", "--accuracy-samples=40", *extra]  # fmt: skip


def _ctrl_c_reaches_it() -> None:
    """In the child: Ctrl-C (SIGINT) at its default, as at a terminal, even when the test run itself was started in
    the background by a shell, which starts its jobs with SIGINT ignored (and Python then never raises
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_hil_sim(*args: str) -> tuple[subprocess.Popen, dict[str, str], list[str]]:
    """`hil sim ARGS` in a subprocess, read up to its `Ctrl-C` line: (process, first word -> value, lines)."""
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_reaches_it)
    fields: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        m = re.match(r"(\w+):\s+(\S+)", line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
        if line.startswith("Ctrl-C"):
            return proc, fields, lines
    proc.kill()
    raise AssertionError(f"hil sim did not start: {fields} {proc.stderr.read() if proc.stderr else ''}")
