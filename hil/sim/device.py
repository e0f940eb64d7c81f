"""The virtual board's firmware: a device core that answers one command line with its output lines.

`DeviceCore.handle(line) -> lines` mirrors `firmware/main/core/device.cpp`: model boot, command dispatch,
the `input`/`data` upload state machine, `infer`/`run`/`profile` and the error codes. It has no pty,
socket or thread, so it runs in-process (tests run the protocol vectors on it directly); the line server
that puts it on a serial port is `hil.sim.board.VirtualBoard`.

The model runs in the TFLite Micro runtime (real kernels, real arena use); latency and supply current come
from the calibrated cost model of the board's chip and kernel library. Time is simulated: every command
advances the timeline's clock by its modelled duration (UART transfer at `baud`, each Invoke(), gaps) and
records the board's activity there, so every figure is a function of the model, the options and the seed.
Replies are paced to wall time by `time_scale` only (0: as fast as the host can). Bench noise (`noise`, a
`hil.sim.noise.NoiseModel` with its session seed) multiplies the supply current of each `infer` (one trial of
the flashed variant) from its start on; `inject` rehearses a regression of one variant (its Invoke() current
or its modelled durations times a factor).

Like the firmware, the core refuses a model that does not fit the model partition (`firmware/partitions.csv`)
or uses an operator outside `firmware/main/ops.txt`, with the firmware's messages (`firmware/main/core/
model_image.cpp`, `model_ops.cpp`), and a model TFLM cannot allocate in the configured arena.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil import wire
from hil.errors import HilError
from hil.sim.costmodel import Calibration, ChipProfile, CostModel, layers_from_model, load_calibration
from hil.sim.noise import NoiseModel
from hil.sim.timeline import ActivityTimeline

FIRMWARE_VERSION = "0.2.0-sim"
DEFAULT_ARENA_BYTES = 256 * 1024
BOOT_BANNER = (
    "ets Jun  8 2016 00:22:57",
    "rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    "I (29) boot: ESP-IDF virtual-esp32 2nd stage bootloader",
    "I (312) cpu_start: Pro cpu start user code",
)
MAX_LINE_CHARS = wire.MAX_LINE_BYTES + 1
INJECT_KINDS = ("energy", "power", "latency")  # energy, power: Invoke() current x factor; latency: durations x factor
INFER_USAGE = (f"usage: infer N [W [GAP_MS]] with 1 <= N <= {wire.INFER_MAX_N}, 0 <= W <= {wire.INFER_MAX_WARMUP}, "
               f"0 <= GAP_MS <= {wire.INFER_MAX_GAP_MS}")


class CommandError(Exception):
    """A command failed with a protocol error code; becomes the command's error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class LoadedModel:
    """The flashed model as the firmware sees it after boot; `error` says why it cannot run."""

    data: bytes | None
    error: str | None = None
    info: Any = None  # models.tflite_file.TfliteModel
    runtime: Any = None  # models.tflm.TflmModel
    arena_used: int | None = None
    cost: CostModel | None = None

    def tensor(self, which: str) -> wire.TensorSpec:
        """The model's single `input` or `output` tensor as `hello` reports it."""
        t = (self.info.inputs if which == "input" else self.info.outputs)[0]
        return wire.TensorSpec.of(t.shape, t.dtype, t.scale, t.zero_point, t.bytes)


def firmware_check(data: bytes, ops: list[str]) -> str | None:
    """The firmware's refusal of a flashed model, or None: model partition size, then operators.

    Messages are the firmware's (`parse_model_image` in model_image.cpp, `check_operators` in model_ops.cpp);
    the limits are read where `hil firmware pack-model` reads them (`hil.firmware`).
    """
    from hil.firmware import IMAGE_HEADER_SIZE, model_partition, supported_ops

    room = model_partition().size - IMAGE_HEADER_SIZE
    if len(data) > room:
        return f"model image length {len(data)} exceeds the partition ({room} bytes after the header)"
    known = supported_ops()
    for op in ops:
        if op not in known:
            return f"unsupported operator {op} (not in the firmware's ops.txt)"
    return None


def load_model(data: bytes | None, arena_bytes: int, cal: Calibration | ChipProfile, cpu_mhz: int | None = None
               ) -> LoadedModel:  # fmt: skip
    """Parse, check and allocate the model as the firmware does at boot; failures become `error`, never raise."""
    from models.errors import ModelError
    from models.tflite_file import read_model
    from models.tflm import TflmError, TflmModel, min_arena_bytes, tflm_error

    profile = cal.profile() if isinstance(cal, Calibration) else cal
    m = LoadedModel(data)
    if not data:
        m.error = "no model image flashed; start the board with a .tflite model"
        return m
    try:
        m.info = read_model(data, source="model image")
    except ModelError as exc:
        m.error = firmware_check(data, []) or f"model image corrupt: {exc}"
        return m
    m.error = firmware_check(data, m.info.ops)
    if m.error is not None:
        return m
    if len(m.info.inputs) != 1 or len(m.info.outputs) != 1:
        m.error = (
            f"firmware supports one input and one output tensor, model has {len(m.info.inputs)} and "
            f"{len(m.info.outputs)}"
        )
        return m
    m.cost = CostModel.build(layers_from_model(m.info), profile, cpu_mhz)
    try:
        m.runtime = TflmModel(data, arena_bytes=arena_bytes)
        m.arena_used = m.runtime.arena_used_bytes
    except TflmError:
        reason = tflm_error(data)
        m.error = (
            reason
            if reason is not None
            else (f"arena too small: needs {min_arena_bytes(data)} bytes, has {arena_bytes}")
        )
    return m


def _nargs(args: list[str], lo: int, hi: int, usage: str) -> None:
    if not lo <= len(args) <= hi:
        raise CommandError(wire.E_ARGS, f"{usage} (got {len(args)} arguments)")


def _uint(arg: str, name: str, lo: int, hi: int) -> int:
    """A decimal integer argument in lo..hi (digits only, at most 10 of them, as the firmware parses it)."""
    if not (arg.isascii() and arg.isdigit()) or len(arg) > 10 or not lo <= int(arg) <= hi:
        raise CommandError(wire.E_ARGS, f"{name} must be a decimal integer in {lo}..{hi}, got {arg[:20]!r}")
    return int(arg)


class DeviceCore:
    """The HIL firmware of a virtual ESP32, without a transport: `handle(line)` returns the lines it prints.

    After a `reset` reply `restart_pending` is set: the caller restarts the core with `boot()` (which
    returns the boot log, `hil-ready` last), as the chip would restart after writing the reply.
    """

    def __init__(
        self,
        image: bytes | None,
        *,
        board: str | None = None,
        board_id: str = "24:0a:c4:00:00:01",
        chip: str = "esp32",
        kernels: str = "esp-nn",
        cpu_mhz: int | None = None,
        arena_bytes: int = DEFAULT_ARENA_BYTES,
        marker_gpio: int = 4,
        time_scale: float | None = None,
        speed: float | None = None,
        baud: int | None = None,
        seed: int = 0,
        timeline: ActivityTimeline | None = None,
        calibration: Calibration | None = None,
        protocol: int = wire.PROTOCOL_VERSION,
        variant: str = "model",
        noise: NoiseModel | None = None,
        noise_seed: int = 0,
        inject: Mapping[str, Mapping[str, float]] | None = None,
    ):
        """`time_scale`: wall seconds per simulated second (0: as fast as the host can; `speed` is its
        deprecated alias); `baud`: the UART rate whose transfer time each command line and reply costs in
        simulated time (None: none); `seed`: latency jitter, per-inference power and ripple phase; `protocol`:
        the version spoken (1 emulates firmware from before version 2: no CRCs, no `sync`); `variant`: the name
        of the flashed model; `noise`, `noise_seed`: bench noise and the session's seed (None: none); `inject`:
        variant -> {kind: factor} regressions (kinds INJECT_KINDS)."""
        if protocol not in wire.SUPPORTED_PROTOCOLS:
            raise HilError(f"virtual board protocol must be one of {wire.SUPPORTED_PROTOCOLS}, got {protocol}")
        self.protocol = protocol
        scale = time_scale if time_scale is not None else speed
        if scale is not None and scale < 0:
            raise HilError(f"virtual board time_scale must be >= 0, got {scale}")
        self.calibration = calibration or load_calibration()
        self.profile = self.calibration.profile(chip, kernels)
        self.chip = chip
        self.kernels = kernels
        self.board = board or f"virtual-{chip}"
        self.board_id = board_id
        self.cpu_mhz = cpu_mhz or self.profile.cpu_mhz
        self.arena_bytes = arena_bytes
        self.marker_gpio = marker_gpio
        self.baud = baud
        if timeline is None:
            phase = float(np.random.default_rng([seed, 3]).uniform(0, 2 * math.pi))
            timeline = ActivityTimeline(idle_current_a=self.profile.idle_current_a, ripple_rel=self.profile.ripple_rel,
                                        ripple_hz=self.profile.ripple_hz, ripple_phase=phase)  # fmt: skip
        self.timeline = timeline
        if scale is not None:
            self.timeline.time_scale = scale
        self.restart_pending = False
        self.image = image
        self.model = load_model(image, arena_bytes, self.profile, self.cpu_mhz)
        self._rng = np.random.default_rng(seed)
        self._power_rng = np.random.default_rng([seed, 2])
        self.noise = noise if noise is not None and noise.enabled else None
        self.noise_seed = noise_seed
        self.inject = {v: dict(kinds) for v, kinds in (inject or {}).items()}
        for kinds in self.inject.values():
            for kind, factor in kinds.items():
                if kind not in INJECT_KINDS or not factor > 0:
                    raise HilError(f"inject: kind must be one of {', '.join(INJECT_KINDS)} with a factor > 0, "
                                   f"got {kind}={factor}")
        self.trials: Counter[str] = Counter()  # variant -> `infer` commands run (trials, for the noise)
        self.variant = ""
        self.select_variant(variant)
        self._boot_count = 0
        self._input: bytes | None = None  # the input of `run`: set by a complete upload
        self._upload: dict[str, Any] | None = None  # the pending upload: bytes, crc32, buf
        self.boot()

    @property
    def time_scale(self) -> float:
        """Wall seconds per simulated second of the replies (0: as fast as the host can)."""
        return self.timeline.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        if value < 0:
            raise HilError(f"virtual board time_scale must be >= 0, got {value}")
        self.timeline.time_scale = value

    speed = time_scale  # deprecated alias (`virtual.speed`)

    def select_variant(self, variant: str) -> None:
        """The flashed model is `variant`: its injections apply, and the bench noise gain becomes its session gain
        (until its next `infer`, a trial, draws the trial's)."""
        self.variant = variant
        if self.noise is not None:
            n, seed = self.noise, self.noise_seed
            self.timeline.set_gain(n.session_gain(seed) * n.variant_gain(seed, variant))

    def _factor(self, *kinds: str) -> float:
        """The injected factor of the flashed variant for `kinds` (1.0: none)."""
        mine = self.inject.get(self.variant)
        return math.prod(mine.get(k, 1.0) for k in kinds) if mine else 1.0

    # -- boot -------------------------------------------------------------------------------------------
    def boot(self) -> list[str]:
        """(Re)start: load the flashed image if it changed, forget inputs; return the boot log lines."""
        if self.image is not self.model.data:
            self.model = load_model(self.image, self.arena_bytes, self.profile, self.cpu_mhz)
        self._input = None
        self._upload = None
        self.restart_pending = False
        self._boot_count += 1
        return [*BOOT_BANNER, f"I ({330 + self._boot_count}) hil: {wire.ready_banner(self.protocol)}"]

    # -- commands ---------------------------------------------------------------------------------------
    def handle(self, line: str | None, interrupt: Callable[[], None] | None = None) -> list[str]:
        """The lines the device prints for one command line (log lines, then exactly one reply line).

        `line` is the command without its terminator; None stands for a line the transport discarded as
        too long. A blank line is no command: no output. `interrupt` is called after each timed inference
        of `infer`; it may raise to abort the command there (an injected reset).

        The command's simulated duration (UART in and out at `baud`, inferences, gaps) advances the clock;
        the reply is returned once wall time has caught up with `time_scale` x that duration.
        """
        self.timeline.sync()  # instruments sharing the clock (the scope) handle what the host sent them first
        with self.timeline.busy():
            self._uart(MAX_LINE_CHARS if line is None else len(line) + 1)  # the line and its '\n' come in
            lines = self._handle(line, interrupt)
            self._uart(sum(len(text) + 2 for text in lines))  # the output goes out, '\r\n' terminated
            self.timeline.pace()
        return lines

    def _uart(self, nbytes: int) -> None:
        """`nbytes` over the UART (8N1: 10 bits a byte) at `baud`, in simulated time."""
        if self.baud and nbytes:
            self.timeline.advance(nbytes * 10 / self.baud)

    def _handle(self, line: str | None, interrupt: Callable[[], None] | None) -> list[str]:
        if line is None or len(line.rstrip("\r")) > wire.MAX_LINE_BYTES:
            message = f"command line longer than {wire.MAX_LINE_BYTES} bytes discarded"
            return [self._reply(wire.error_reply("?", wire.E_LINE_TOO_LONG, message))]
        if self.protocol >= 2:
            checked = wire.strip_command_crc(line)
            if checked is None:
                message = "command line CRC missing its 8 hex digits or not matching the line; nothing executed"
                return [self._reply(wire.error_reply("?", wire.E_LINE_CRC, message))]
            line = checked
        tokens = wire.split_command(line)
        if not tokens:
            return []  # a blank line (signed or not) is no command: no output
        cmd, args = tokens[0], tokens[1:]
        log: list[str] = []
        try:
            reply = self._dispatch(cmd, args, log, interrupt)
        except CommandError as exc:
            reply = wire.error_reply(cmd, exc.code, str(exc))
        return [*log, self._reply(reply)]

    def _reply(self, obj: dict[str, Any]) -> str:
        return wire.format_reply(obj, self.protocol)

    def _dispatch(
        self, cmd: str, args: list[str], log: list[str], interrupt: Callable[[], None] | None
    ) -> dict[str, Any]:
        if cmd in ("version", "hello", "reset", "run", "profile"):
            _nargs(args, 0, 0, f"{cmd} takes no arguments")
        if cmd == "version":
            return self._ok(cmd, protocol=self.protocol, firmware=FIRMWARE_VERSION, board=self.board)
        if cmd == "sync" and self.protocol >= 2:
            _nargs(args, 1, 1, "usage: sync TOKEN (a decimal integer up to 4294967295)")
            return self._ok(cmd, token=_uint(args[0], "TOKEN", 0, 0xFFFFFFFF), protocol=self.protocol)
        if cmd == "hello":
            return self._hello()
        if cmd == "reset":
            self.restart_pending = True
            return self._ok(cmd)
        if cmd == "input":
            return self._cmd_input(args)
        if cmd == "data":
            return self._cmd_data(args)
        if cmd == "infer":
            reply = self._cmd_infer(args, interrupt)
            log.append(  # the firmware logs each benchmark, as ESP-IDF apps do
                f"I ({int(self.timeline.now() * 1000) % 10_000_000}) hil: infer n={reply['n']} "
                f"warmup={reply['warmup']} mean_us={reply['mean_us']}"
            )
            return reply
        if cmd == "run":
            return self._cmd_run()
        if cmd == "profile":
            return self._cmd_profile()
        shown = cmd if len(cmd) <= 40 else cmd[:40] + "..."
        known = wire.COMMANDS if self.protocol >= 2 else wire.COMMANDS_V1
        raise CommandError(wire.E_UNKNOWN_CMD, f"unknown command {shown!r} (commands: {' '.join(known)})")

    @staticmethod
    def _ok(cmd: str, **fields: Any) -> dict[str, Any]:
        return {"ok": True, "cmd": cmd, **fields}

    def _require_model(self) -> LoadedModel:
        if self.model.error is not None or self.model.runtime is None:
            raise CommandError(wire.E_MODEL, self.model.error or "no model")
        return self.model

    def _hello(self) -> dict[str, Any]:
        m = self.model
        reply: dict[str, Any] = {"ok": m.error is None, "cmd": "hello"}
        if m.error is not None:
            reply.update(code=wire.E_MODEL, error=m.error)
        reply.update(
            protocol=self.protocol,
            firmware=FIRMWARE_VERSION,
            board=self.board,
            board_id=self.board_id,
            simulated=True,
            cpu_mhz=self.cpu_mhz,
            marker_gpio=self.marker_gpio,
        )
        if m.data:
            model = wire.ModelId(wire.crc32_hex(m.data), hashlib.sha256(m.data).hexdigest(), len(m.data))
            reply["model"] = model.to_json()
        reply["arena"] = {"configured": self.arena_bytes, "used": m.arena_used}
        if m.info is not None and m.info.inputs and m.info.outputs:
            reply["input"] = m.tensor("input").to_json()
            reply["output"] = m.tensor("output").to_json()
            reply["ops"] = m.info.ops
        return reply

    def _cmd_input(self, args: list[str]) -> dict[str, Any]:
        usage = "usage: input LEN CRC32 (LEN decimal bytes, CRC32 8 hex digits)"
        _nargs(args, 2, 2, usage)
        length = _uint(args[0], "LEN", 0, 0xFFFFFFFF)
        crc = wire.normalize_crc32(args[1])
        if crc is None:
            raise CommandError(wire.E_ARGS, f"CRC32 must be 8 hex digits, got {args[1][:20]!r}")
        self._upload = None  # a new `input` discards any pending upload
        need = self._require_model().tensor("input").bytes
        if length != need:
            raise CommandError(wire.E_LENGTH, f"input tensor is {need} bytes, not {length}")
        self._upload = {"bytes": length, "crc32": crc, "buf": bytearray()}
        return self._ok("input", bytes=length, chunk_max=wire.CHUNK_MAX_BYTES)

    def _cmd_data(self, args: list[str]) -> dict[str, Any]:
        up = self._upload
        if up is None:
            raise CommandError(wire.E_STATE, "data without a pending input; send 'input LEN CRC32' first")
        _nargs(args, 1, 1, "usage: data B64 (one base64 chunk)")
        try:
            chunk = base64.b64decode(args[0].encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            self._upload = None
            raise CommandError(wire.E_BASE64, "data chunk is not valid base64; upload discarded") from None
        if len(chunk) > wire.CHUNK_MAX_BYTES or len(up["buf"]) + len(chunk) > up["bytes"]:
            self._upload = None
            raise CommandError(
                wire.E_LENGTH,
                f"chunks exceed the announced {up['bytes']} bytes (or {wire.CHUNK_MAX_BYTES} "
                "per chunk); upload discarded",
            )
        up["buf"].extend(chunk)
        reply = self._ok("data", received=len(up["buf"]), bytes=up["bytes"])
        if len(up["buf"]) == up["bytes"]:
            got = wire.crc32_hex(bytes(up["buf"]))
            self._upload = None
            if got != up["crc32"]:
                raise CommandError(wire.E_CRC, f"upload CRC32 is {got}, announced {up['crc32']}; upload discarded")
            self._input = bytes(up["buf"])
            reply.update(complete=True, crc32=got)
        return reply

    # -- inference --------------------------------------------------------------------------------------
    def _invoke(self, m: LoadedModel) -> np.ndarray:
        """The real TFLM kernels on the current input (zeros until an upload completed)."""
        from models.tflm import TflmError

        t = m.info.inputs[0]
        dtype = np.dtype(t.dtype)
        x = np.zeros(t.shape, dtype) if self._input is None else np.frombuffer(self._input, dtype).reshape(t.shape)
        try:
            return m.runtime.invoke(x)
        except TflmError as exc:
            raise CommandError(wire.E_INVOKE, str(exc)) from None

    def _durations(self, m: LoadedModel) -> np.ndarray:
        """Per-op modelled durations (s) of one inference, with jitter; index 0 is the invoke overhead."""
        assert m.cost is not None
        base = np.array((m.cost.invoke_overhead_s, *m.cost.op_seconds))
        jitter = 1.0 + self._rng.normal(0.0, m.cost.jitter_rel_std, size=base.size)
        durations = base * np.clip(jitter, 0.9, 1.1)
        factor = self._factor("latency")  # an injected latency regression
        return durations * factor if factor != 1.0 else durations

    def _cycles_us(self, seconds: float) -> int:
        """Microseconds as the cycle counter converts them (whole cycles, truncated)."""
        cycles = int(round(seconds * self.cpu_mhz * 1e6))
        return cycles // self.cpu_mhz

    def _one_inference(
        self, m: LoadedModel, *, marker: bool, work: Callable[[], Any] | None = None
    ) -> float:
        """Run one modelled Invoke() from the current simulation time; return its modelled seconds.

        Its activity (current drawn, marker) is recorded on the timeline and the clock advances by its
        duration. `work` (the real TFLM invoke) runs inside the modelled window.
        """
        assert m.cost is not None
        seconds = float(self._durations(m).sum())
        if seconds > wire.MAX_INFERENCE_S:
            raise CommandError(
                wire.E_INVOKE, f"inference took {seconds:.1f} s, over the {wire.MAX_INFERENCE_S:.0f} s limit"
            )
        start = self.timeline.now()
        if work is not None:
            work()  # a failing invoke raises before anything is recorded
        idle = m.cost.idle_current_a
        variation = 1.0 + float(self._power_rng.normal(0.0, self.profile.inference_power_rel_std))
        current = idle + (m.cost.active_current_a - idle) * max(variation, 0.5)
        current *= self._factor("energy", "power")  # an injected energy/power regression
        self.timeline.active(start, start + seconds, current, marker=marker)
        self.timeline.advance(seconds)
        self.timeline.pace()
        return seconds

    def _loop_s(self, m: LoadedModel) -> float:
        """Simulated seconds between two timed Invoke()s of `infer` (marker low, bookkeeping, input copy)."""
        cycles = float(self.calibration.latency.get("loop_overhead_cycles", 0)) + m.tensor("input").bytes
        return cycles / (self.cpu_mhz * 1e6)

    def _cmd_infer(self, args: list[str], interrupt: Callable[[], None] | None) -> dict[str, Any]:
        _nargs(args, 1, 3, INFER_USAGE)
        n = _uint(args[0], "N", 1, wire.INFER_MAX_N)
        w = _uint(args[1], "W", 0, wire.INFER_MAX_WARMUP) if len(args) > 1 else 0
        gap = _uint(args[2], "GAP_MS", 0, wire.INFER_MAX_GAP_MS) if len(args) > 2 else 0
        m = self._require_model()
        self._invoke(m)  # the real kernels once: an invalid model or input fails here
        if self.noise is not None:  # one trial (capture) of the variant: its bench-noise gain from now on
            trial = self.trials[self.variant]
            self.timeline.set_gain(self.noise.gain(self.noise_seed, self.variant, trial))
        self.trials[self.variant] += 1
        loop_s = self._loop_s(m)
        for _ in range(w):
            self._one_inference(m, marker=False)
            self.timeline.advance(loop_s)
        lat: list[int] = []
        for _ in range(n):
            seconds = self._one_inference(m, marker=True)
            self.timeline.advance(loop_s)  # marker low, latency stored, input copied: the next pulse is apart
            lat.append(self._cycles_us(seconds))
            if interrupt is not None:
                interrupt()
            if gap:
                self.timeline.advance(gap / 1000.0)
                self.timeline.pace()
        return self._ok(
            "infer", n=n, warmup=w, gap_ms=gap, latency_us=lat, **wire.latency_stats(lat), cpu_mhz=self.cpu_mhz
        )

    def _cmd_run(self) -> dict[str, Any]:
        m = self._require_model()
        if self._input is None:
            raise CommandError(wire.E_STATE, "run without a loaded input; upload one with 'input' and 'data'")
        result: list[np.ndarray] = []
        seconds = self._one_inference(m, marker=True, work=lambda: result.append(self._invoke(m)))
        raw = np.ascontiguousarray(result[0]).tobytes()
        return self._ok(
            "run",
            latency_us=self._cycles_us(seconds),
            output=base64.b64encode(raw).decode("ascii"),
            output_crc32=wire.crc32_hex(raw),
            dtype=m.tensor("output").dtype,
        )

    def _cmd_profile(self) -> dict[str, Any]:
        m = self._require_model()
        assert m.cost is not None
        self._invoke(m)
        durations = self._durations(m)
        start = self.timeline.now()
        current = m.cost.active_current_a * self._factor("energy", "power")
        self.timeline.active(start, start + float(durations.sum()), current, marker=True)
        self.timeline.advance(float(durations.sum()))
        self.timeline.pace()
        ops = [
            {"index": i, "op": layer.op, "us": self._cycles_us(float(d))}
            for i, (layer, d) in enumerate(zip(m.cost.layers, durations[1:], strict=True))
        ]
        return self._ok("profile", ops=ops, total_us=self._cycles_us(float(durations.sum())))
