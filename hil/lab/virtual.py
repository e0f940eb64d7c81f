"""The virtual lab: a real labgrid coordinator and real exporters on loopback, serving virtual ESP32s and
simulated scopes as places, for CI and for trying a shared lab without hardware.

Each place is one virtual station (`hil.sim.bench.VirtualBench`: the virtual ESP32 on a pty, the SCPI scope
simulator on its timeline). The exporter exports the pty as a `RawSerialPort` (served by ser2net, reaching
clients as a `NetworkSerialPort`) and the scope as a `PyVISADevice` (labgrid's VISA resource class; the
exporter passes it through unchanged, `hil.lab.places.visa_resource` turns it into `TCPIP0::127.0.0.1::PORT::
SOCKET`). Everything listens on 127.0.0.1 only: labgrid starts ser2net on every interface, so the exporters
find a `ser2net` first on their PATH that binds its accepter to 127.0.0.1 and runs the real one.

The boards and scopes run in this process (threads); the coordinator, the exporters and ser2net are
subprocesses in process groups of their own, so `kill_exporter` takes an exporter host away as a crash
would, and `stop` leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.bench import BenchConfig, BoardConfig
from hil.errors import HilError
from hil.lab.config import LabConfig
from hil.lab.flash import FlashServer
from hil.lab.places import FLASH_SERVICE_USER, Lab

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 20.0
#: ser2net as labgrid's exporter calls it, with its TCP accepter bound to loopback (labgrid binds every
#: interface: `accepter: telnet(rfc2217,mode=server),tcp,PORT`)
_SER2NET_WRAPPER = """#!{python}
import os, re, sys
args = [re.sub(r"(accepter: .*\\),tcp,)(\\d+)$", r"\\g<1>127.0.0.1,\\2", a) for a in sys.argv[1:]]
os.execv({real!r}, [{real!r}, *args])
"""


def missing_reason() -> str | None:
    """Why the virtual lab cannot start here (ser2net or labgrid missing), or None."""
    if _real_ser2net() is None:
        return ("ser2net is not installed (Debian: apt-get install ser2net); labgrid's exporter serves serial ports "
                "with it")
    for tool in ("labgrid-coordinator", "labgrid-exporter"):
        if _tool(tool) is None:
            return f"{tool} is not installed (pip install labgrid: the project's requirements)"
    return None


def _real_ser2net() -> str | None:
    found = shutil.which("ser2net")
    if found is None and os.path.isfile("/usr/sbin/ser2net"):
        found = "/usr/sbin/ser2net"
    return found


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name  # the venv's console script, whether or not PATH has the venv
    return str(local) if local.is_file() else shutil.which(name)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class VirtualPlace:
    """One place of the virtual lab: its name, exporter, resource group, board and scope."""

    name: str
    exporter: str
    group: str
    bench: Any  # hil.sim.bench.VirtualBench
    tags: dict[str, str]
    flash: Any = None  # hil.lab.flash.FlashServer: the board's model-flashing service

    @property
    def board_id(self) -> str:
        """The identity the virtual board reports in `hello` (distinct per place)."""
        return str(self.bench.board.core.board_id)


class VirtualLab:
    """Coordinator + `exporters` exporters with `places_per_exporter` virtual places each, on loopback.

    `time_scale` paces the virtual boards (1: the chip's real time, 0: as fast as the host can); `model` is
    flashed on every board at start (default: the TFLM sine demo model).
    """

    def __init__(self, *, exporters: int = 2, places_per_exporter: int = 2, port: int | None = None,
                 time_scale: float = 0.0, model: bytes | str | Path | None = None, chip: str = "esp32",
                 baud: int = 115200, prefix: str = "vlab"):
        if exporters < 1 or places_per_exporter < 1:
            raise HilError("a virtual lab needs at least one exporter with one place")
        self.n_exporters = exporters
        self.per_exporter = places_per_exporter
        self.port = port
        self.time_scale = time_scale
        self.model = model
        self.chip = chip
        self.baud = baud
        self.prefix = prefix
        self.places: list[VirtualPlace] = []
        self.exporters: dict[str, subprocess.Popen] = {}
        self.coordinator: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self._logs: list[Any] = []

    @property
    def address(self) -> str:
        """The coordinator's HOST:PORT (loopback)."""
        return f"{LOOPBACK}:{self.port}"

    def lab_config(self, **overrides: Any) -> LabConfig:
        """A `LabConfig` for this lab's places (tags board=esp32 chip=CHIP), with `overrides`."""
        values: dict[str, Any] = {"coordinator": self.address, "tags": {"board": "esp32", "chip": self.chip}}
        return LabConfig.model_validate(values | overrides)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> VirtualLab:
        """Start the boards and scopes, the coordinator and the exporters, and define the places."""
        reason = missing_reason()
        if reason is not None:
            raise HilError(f"the virtual lab cannot start: {reason}")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from hil.sim.bench import VirtualBench, default_model_path

        self.workdir = Path(tempfile.mkdtemp(prefix="hil-vlab-"))
        bindir = self.workdir / "bin"
        bindir.mkdir()
        wrapper = bindir / "ser2net"
        wrapper.write_text(_SER2NET_WRAPPER.format(python=sys.executable, real=_real_ser2net()))
        wrapper.chmod(0o755)
        if self.port is None:
            self.port = free_port()
        boards = [BoardConfig(name=f"{self.prefix}-{e}-{k}", chip=self.chip, baud=self.baud)
                  for e in range(self.n_exporters) for k in range(self.per_exporter)]
        config = BenchConfig(boards=boards)
        model = self.model if self.model is not None else default_model_path()
        for i, b in enumerate(boards):
            e, k = divmod(i, self.per_exporter)
            bench = VirtualBench(config, model, board=b.name, time_scale=self.time_scale, boot_s=0.05)
            bench.board.core.board_id = f"24:0a:c4:1a:{e:02x}:{k:02x}"  # each virtual ESP32 its own MAC
            bench.start(tcp_port=None)
            tags = {"board": "esp32", "chip": self.chip, "board_id": bench.board.core.board_id.replace(":", "")}
            flash = FlashServer(lambda model, arena, source, b=bench: b.board.flash(model, source=source)).start()
            self.places.append(VirtualPlace(b.name, f"{self.prefix}-exporter-{e}", f"{b.name}", bench, tags, flash))
        self.coordinator = self._spawn("coordinator", [_tool("labgrid-coordinator"), "-l", self.address])
        self._wait_port(self.port, "labgrid-coordinator")
        for e in range(self.n_exporters):
            name = f"{self.prefix}-exporter-{e}"
            cfg = self.workdir / f"{name}.yaml"
            cfg.write_text(self._exporter_yaml(name))
            env = {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
            self.exporters[name] = self._spawn(name, [_tool("labgrid-exporter"), "-c", self.address, "-n", name,
                                                      "--hostname", LOOPBACK, str(cfg)], env=env)
        with Lab(self.lab_config()) as admin:
            self._wait_exported(admin)
            for p in self.places:
                admin.define_place(p.name, [f"{p.exporter}/{p.group}/*"], p.tags,
                                   comment=f"virtual {self.chip} on {p.bench.port} (simulated)")

    def _exporter_yaml(self, exporter: str) -> str:
        import yaml

        doc = {}
        for p in self.places:
            if p.exporter != exporter:
                continue
            host, port = p.bench.resource.split("::")[1:3]
            doc[p.group] = {
                "location": f"virtual lab, {exporter}",
                "RawSerialPort": {"port": p.bench.port, "speed": self.baud},
                "PyVISADevice": {"type": "TCPIP0", "url": f"{host}::{port}::SOCKET"},
                "NetworkService": {"address": LOOPBACK, "port": p.flash.port, "username": FLASH_SERVICE_USER},
            }
        return yaml.safe_dump(doc, sort_keys=True)

    def _spawn(self, name: str, argv: list[Any], env: dict[str, str] | None = None) -> subprocess.Popen:
        assert self.workdir is not None
        log = open(self.workdir / f"{name}.log", "wb")  # closed in stop()
        self._logs.append(log)
        return subprocess.Popen([str(a) for a in argv], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=os.environ | (env or {}), start_new_session=True)

    def _wait_port(self, port: int, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.coordinator is not None and self.coordinator.poll() is not None:
                raise HilError(f"{what} exited at start ({self.log_tail('coordinator')})")
            try:
                socket.create_connection((LOOPBACK, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise HilError(f"{what} did not listen on {LOOPBACK}:{port} within {START_TIMEOUT_S:g} s")

    def _wait_exported(self, admin: Lab) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        want = {e: {f"{p.group}/RawSerialPort" for p in self.places if p.exporter == e} for e in self.exporters}
        while True:
            got = admin.exported()
            if all(w <= set(got.get(e, [])) for e, w in want.items()):
                return
            for e, proc in self.exporters.items():
                if proc.poll() is not None:
                    raise HilError(f"exporter {e} exited at start ({self.log_tail(e)})")
            if time.monotonic() > deadline:
                raise HilError(f"the exporters did not register within {START_TIMEOUT_S:g} s (seen: {got})")
            time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 5) -> str:
        """The last lines of a subprocess's log (coordinator or an exporter), for error messages."""
        if self.workdir is None or not (self.workdir / f"{name}.log").is_file():
            return "no log"
        text = (self.workdir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "empty log"

    def place(self, name: str) -> VirtualPlace:
        """The virtual place of that name."""
        for p in self.places:
            if p.name == name:
                return p
        raise HilError(f"no virtual place {name!r}; places: {', '.join(p.name for p in self.places)}")

    def kill_exporter(self, name: str) -> None:
        """Take an exporter host away as a crash would: SIGKILL to the exporter and its ser2net processes, and
        its boards and scopes stop answering."""
        proc = self.exporters[name]
        _killpg(proc, signal.SIGKILL)
        for p in self.places:
            if p.exporter == name:
                p.bench.stop()
                p.flash.stop()

    def kill_board(self, name: str) -> None:
        """One board (and its scope) stops answering: its pty, scope socket and flashing service close."""
        self.place(name).bench.stop()
        self.place(name).flash.stop()

    def stop(self) -> None:
        """Stop the exporters (and their ser2net), the coordinator, the boards and scopes; remove the workdir."""
        for proc in self.exporters.values():
            _killpg(proc, signal.SIGTERM)
        for proc in self.exporters.values():
            _reap(proc)
        if self.coordinator is not None:
            _killpg(self.coordinator, signal.SIGTERM)
            _reap(self.coordinator)
        for p in self.places:
            p.bench.stop()
            if p.flash is not None:
                p.flash.stop()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> VirtualLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    """Signal a subprocess's whole process group (it was started as a session leader)."""
    if proc.poll() is None or sig == signal.SIGKILL:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Wait for a subprocess, SIGKILL its group if it does not end, and make sure no child of it survives."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc, signal.SIGKILL)
        proc.wait(timeout)
    try:  # ser2net children of an exporter that exited first are still in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
