"""The virtual ESP32: the device core (`hil.sim.device`) served on a pty and a TCP socket, with faults.

`VirtualBoard` wires a `DeviceCore` (the firmware: answers command lines) to a `LineServer` (the serial
side: pty, TCP, garbled bytes) and applies the command faults of `board.faults` (set by a test, or by the
bench file's `virtual.faults.board`): a reset in the middle of a command, a dropped reply, a hang. Flashing,
resets and power cycles print the boot log to every connection, ending with `hil-ready`. Flashing refuses
what `hil firmware pack-model` refuses (an operator outside the firmware's ops.txt, an image larger than the
model partition), with the same error.

Time is the device core's simulated time (`hil.sim.timeline`); `time_scale` only paces the replies.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

from hil.errors import HilError
from hil.sim.costmodel import CostModel
from hil.sim.device import DeviceCore
from hil.sim.timeline import ActivityTimeline
from hil.sim.transport import Faults, LineServer, Session
from hil.wire import split_command

__all__ = ["Faults", "VirtualBoard", "check_flashable", "read_image"]


class _Reset(Exception):
    """An injected reset fired in the middle of a command (internal)."""


def _abort() -> None:
    raise _Reset()


def check_flashable(model: bytes, source: str = "model") -> None:
    """Raise the HilError `hil firmware pack-model` raises for this model, or return (the same functions)."""
    from hil.firmware import check_fits, model_partition, pack_image, pack_model
    from models.errors import ModelError

    try:
        image = pack_model(model, arena_bytes=0, source=source)
    except ModelError:  # not a flatbuffer pack-model can read: the firmware reports it at boot (`hello`)
        image = pack_image(model, 0)
    check_fits(image, model_partition())


def read_image(model: bytes | str | Path | None) -> bytes | None:
    """The model image to flash: bytes as given, or the contents of a .tflite file."""
    if model is None or isinstance(model, bytes | bytearray):
        return bytes(model) if model is not None else None
    p = Path(model)
    if not p.is_file():
        raise HilError(f"model file {p} not found; pass the path of a .tflite file")
    return p.read_bytes()


def _variant_name(model: bytes | str | Path | None) -> str:
    """The variant a model stands for when the flasher names none: the .tflite file's stem, else 'model'."""
    return Path(model).stem if isinstance(model, str | Path) else "model"


class VirtualBoard:
    """A virtual ESP32 running the HIL firmware protocol over a pty and `socket://127.0.0.1:PORT`."""

    def __init__(self, model: bytes | str | Path | None, *, boot_s: float = 0.2, seed: int = 0,
                 baud: int | None = None, **device: Any):
        """Flash `model` (bytes or a .tflite path); a restart takes `boot_s` (wall and simulated). `seed`
        seeds the latency jitter, the power variation and the garbled bits; `baud` is the UART rate the pty
        insists on (None: any) and the rate whose transfer time each command costs in simulated time;
        `device` are the other `DeviceCore` options (board, board_id, chip, kernels, cpu_mhz, arena_bytes,
        marker_gpio, time_scale, speed, timeline, calibration, noise, noise_seed, inject; `variant` defaults to
        the model file's stem).
        """
        device.setdefault("variant", _variant_name(model))
        self.core = DeviceCore(read_image(model), seed=seed, baud=baud, **device)
        self.boot_s = boot_s
        self.faults = Faults()
        self.commands_served = 0
        self.executions: collections.Counter[str] = collections.Counter()  # command name -> times received
        self._server = LineServer(self._on_line, self.faults, seed=seed + 1, baud=baud)
        self._exec = threading.RLock()  # one command, flash or power cycle at a time
        self._unhang = threading.Event()

    # -- what the rest of the harness reads ---------------------------------------------------------------
    @property
    def board(self) -> str:
        """The board name `version` and `hello` report."""
        return self.core.board

    @property
    def cpu_mhz(self) -> int:
        """The CPU clock that converts modelled time to cycle counts."""
        return self.core.cpu_mhz

    @property
    def time_scale(self) -> float:
        """Wall-clock seconds per simulated second of the replies (0: as fast as the host can)."""
        return self.core.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        self.core.time_scale = value

    speed = time_scale  # deprecated alias

    @property
    def timeline(self) -> ActivityTimeline:
        """Where the board publishes its supply current and marker GPIO (the scope's signal source)."""
        return self.core.timeline

    @property
    def model_error(self) -> str | None:
        """Why the flashed model cannot run (as `hello` reports it), or None."""
        return self.core.model.error

    @property
    def cost(self) -> CostModel | None:
        """The cost model of the flashed model."""
        return self.core.model.cost

    @property
    def _flash(self) -> bytes | None:  # the flashed image; kept for tests that read it
        return self.core.image

    @property
    def pty_path(self) -> str | None:
        """The pseudo-terminal to open like a USB-UART, when serving one."""
        return self._server.pty_path

    @property
    def port(self) -> int | None:
        """The TCP port, when serving TCP."""
        return self._server.port

    @property
    def url(self) -> str | None:
        """`socket://127.0.0.1:PORT` when serving TCP."""
        return self._server.url

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self, *, pty: bool = True, tcp_port: int | None = 0) -> VirtualBoard:
        """Serve on a new pseudo-terminal (`pty_path`) and/or TCP 127.0.0.1 (`url`; port 0 = a free port)."""
        self._server.start(pty=pty, tcp_port=tcp_port)
        return self

    def stop(self) -> None:
        """Stop serving and close the pty and socket."""
        self._unhang.set()
        if self._server.running:
            self._server.stop()

    def __enter__(self) -> VirtualBoard:
        if not self._server.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def flash(self, model: bytes | str | Path | None, *, source: str | None = None) -> None:
        """Replace the model image and reboot, as flashing a model would.

        Refuses (HilError, the board untouched) what `hil firmware pack-model` refuses: an operator outside
        the firmware's ops.txt, an image larger than the model partition. `source` names the variant (default:
        the file's stem): its bench noise and injected regressions apply from now on.
        """
        image = read_image(model)
        variant = source or _variant_name(model)
        if image is not None:
            check_flashable(image, variant)
        self._unhang.set()  # flashing resets the chip (esptool pulls EN): it ends a hang
        with self._exec:
            self.core.select_variant(variant)
            self.core.image = image
            self._announce(self.core.boot())

    def power_cycle(self) -> None:
        """Cut and restore power: ends a hang, reboots (prints `hil-ready`)."""
        self._unhang.set()
        with self._exec:
            self.timeline.cut()
            self.timeline.advance(self.boot_s)
            self._announce(self.core.boot())

    # -- serving ------------------------------------------------------------------------------------------
    def _announce(self, lines: list[str]) -> None:
        for line in lines:
            self._server.broadcast(line)

    def _on_line(self, session: Session, line: str | None) -> None:
        """One command line from a host: apply its faults, let the core answer, send the answer."""
        tokens = split_command(line) if line is not None else ["?"]
        if not tokens:
            return  # a blank line is not a command
        cmd = tokens[0]
        with self._exec:
            self.commands_served += 1
            self.executions[cmd] += 1
            nth = self.executions[cmd]
            if self.faults.fires("hang", cmd, nth):
                self._hang()
                return
            reset_now = self.faults.fires("reset", cmd, nth)
            try:
                lines = self.core.handle(line, interrupt=_abort if reset_now else None)
            except _Reset:
                lines = []
            if reset_now:  # the board restarts before it answers
                self._reboot()
                return
            if not self.faults.fires("drop", cmd, nth):
                for text in lines:
                    self._server.send(session, text)
            if self.core.restart_pending:  # `reset`: restart after the reply
                self._reboot()

    def _hang(self) -> None:
        self._unhang.clear()
        self._unhang.wait(self.faults.hang_s)
        self._server.discard_input()  # input sent to a hung board is lost

    def _reboot(self) -> None:
        self.timeline.cut()
        self.timeline.advance(self.boot_s)
        time.sleep(self.boot_s)
        self._server.discard_input()  # bytes received while booting are lost
        self._announce(self.core.boot())
