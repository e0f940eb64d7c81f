"""`hil lab virtual`: starts the virtual lab, prints the coordinator and the places, and Ctrl-C leaves no process
and no listening port behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from hil.lab.virtual import free_port
from tests.lab.conftest import lab_or_skip, labgrid_client, who

# `hil lab` is registered by hil.cli's COMMAND_MODULES; the module is driven here through its own register()
RUN = ("import argparse, sys; from hil.commands import lab; p = argparse.ArgumentParser(prog='hil'); "
       "lab.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def test_hil_lab_virtual_serves_four_places_until_ctrl_c():
    lab_or_skip()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RUN, "lab", "virtual", "--port", str(port), "--time-scale", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not lines or lines[-1] != "Ctrl-C to stop.":
            line = proc.stdout.readline()
            assert line, f"hil lab virtual ended: {proc.stderr.read()}"
            lines.append(line.strip())
        text = "\n".join(lines)
        assert f"coordinator: 127.0.0.1:{port}" in text
        assert text.count("\nplace vlab-") == 4 and "tags board=esp32 board_id=240ac41a0000 chip=esp32" in text
        address = f"127.0.0.1:{port}"
        assert len(labgrid_client(address, "places").splitlines()) == 4
        assert who(address) == {}
        children = _descendants(proc.pid)
        assert len(children) >= 3  # the coordinator and two exporters
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "virtual lab stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
    alive = [p for p in children if os.path.exists(f"/proc/{p}")]
    assert alive == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the coordinator's port is closed
