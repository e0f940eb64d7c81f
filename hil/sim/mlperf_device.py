"""The virtual board's MLPerf Tiny personality: the reference API (mlcommons/tiny `benchmark/api`) over the real
TFLM kernels, on the virtual ESP32's simulated clock.

It answers as `internally_implemented.cpp` and the reference submissions do, their quirks included (`infer`'s
default of 10 warm-ups, `db` hex parsing, the unprefixed oversize message, kws01's integer rendering of results,
vww01's trailing comma), so a host that works against it works against the reference. Inputs are taken in each
reference model's own format: kws01 int8 features, vww01 and ic01 uint8 RGB (the DUT subtracts 128), ad01
float32 little-endian (the DUT quantizes; its result is the mean squared error of the reconstruction).
"""

from __future__ import annotations

import numpy as np

from hil.dut import mlperf_wire as wire
from hil.sim.costmodel import load_calibration
from hil.sim.device import LoadedModel, load_model

# MAX_DB_INPUT_SIZE of each reference submission (its submitter_implemented.h), the generic template's otherwise
DB_SIZES = {"kws01": 49 * 10, "vww01": 96 * 96 * 3, "ic01": 32 * 32 * 3, "ad01": 5 * 128 * 4 * 2}
GENERIC_DB_SIZE = 96 * 96 * 3
TIMESTAMP_HOLD_S = 10e-6  # energy mode: how long the timestamp line stays low ("at least 1 us")
HELP = [
    wire.FIRMWARE, "",
    "help         : Print this information",
    "name         : Print the name of the device",
    "timestsamp   : Generate a timetsamp",
    "db SUBCMD    : Manipulate a generic byte buffer",
    "  load N     : Allocate N bytes and set load counter",
    "  db HH[HH]* : Load 8-bit hex byte(s) until N bytes",
    "  print [N=16] [offset=0]",
    "             : Print N bytes at offset as hex",
    "infer N [W=0]: Load input, execute N inferences after W warmup loops",
    "results      : Return the result fp32 vector",
]


def model_kind(shape: tuple[int, ...], dtype: str) -> str | None:
    """Which reference benchmark a model's input is (its TH_MODEL_VERSION), or None for another model."""
    dims = tuple(d for d in shape if d != 1)
    if dims == (49, 10) and dtype == "int8":
        return "kws01"
    if dims == (96, 96, 3):
        return "vww01"
    if dims == (32, 32, 3):
        return "ic01"
    if dims == (640,) and dtype == "int8":
        return "ad01"
    return None


def _atoi(text: str) -> int:
    """C's atoi: optional sign and leading digits, 0 when there are none."""
    text = text.lstrip()
    sign, i = 1, 0
    if text[:1] in "+-" and text[:1]:
        sign, i = (-1 if text[0] == "-" else 1), 1
    digits = ""
    while i < len(text) and text[i].isdigit():
        digits += text[i]
        i += 1
    return sign * int(digits) if digits else 0


class MlperfDevice:
    """One MLPerf Tiny DUT: `boot()` is its banner, `handle(command)` the lines it answers (without `\\r\\n`;
    every reply ends with `m-ready`). Time is simulated: each inference advances the clock by the virtual
    ESP32's cost-model latency, and `edges_us` lists the timestamp edges energy mode makes on its GPIO."""

    def __init__(self, model: bytes, *, energy_mode: bool = False, chip: str = "esp32", kernels: str = "esp-nn",
                 cpu_mhz: int | None = None, arena_bytes: int = 512 * 1024, start_us: int = 1_000_000,
                 timeline=None, baud: int = 115200, seed: int = 0, noise=None, noise_seed: int = 0,
                 variant: str = "model"):
        profile = load_calibration().profile(chip, kernels)
        # bench noise (hil.sim.noise.NoiseModel) on the timeline's current, as the virtual board draws it: the
        # session's and the variant's gain, then one per `infer` (a trial)
        self.noise = noise if noise is not None and noise.enabled and timeline is not None else None
        self.noise_seed, self.variant, self.trials = noise_seed, variant, 0
        if self.noise is not None:
            timeline.set_gain(self.noise.session_gain(noise_seed) * self.noise.variant_gain(noise_seed, variant))
        self._rng = np.random.default_rng([seed, 5])  # run-to-run latency jitter, as the virtual board's
        # on a bench (`timeline`, hil.sim.timeline.ActivityTimeline): the inferences draw current there and the
        # timestamps pulse the marker line low, so a simulated scope sees what a real DUT's would
        self.timeline = timeline
        self.baud = baud  # on a bench, the UART's bytes take their time (8N1: 10 bits a byte)
        if timeline is not None:
            timeline.marker_idle_high = True
        self.model: LoadedModel = load_model(model, arena_bytes, profile, cpu_mhz)
        self.energy_mode = energy_mode
        self.kind: str | None = None
        self.input_spec = self.output_spec = None
        if self.model.error is None:
            self.input_spec, self.output_spec = self.model.runtime.input, self.model.runtime.output
            self.kind = model_kind(tuple(self.input_spec.shape), self.input_spec.dtype.name)
        self.db_capacity = DB_SIZES.get(self.kind or "", GENERIC_DB_SIZE)
        self.buffer = bytearray(self.db_capacity)
        self.size = self.pos = 0
        self.clock_us = start_us
        self.edges_us: list[int] = []  # energy mode: the timestamp GPIO's falling edges
        self._last_output: np.ndarray | None = None
        self._last_input_float: np.ndarray | None = None

    # -- timing ----------------------------------------------------------------------------------------
    def _spend(self, seconds: float, *, active: bool) -> None:
        """Time passes on the DUT: `seconds` of inferences (drawing the active current) or of anything else."""
        if self.timeline is None:
            self.clock_us += round(seconds * 1e6)
            return
        start = self.timeline.now()
        if active and seconds > 0:
            self.timeline.active(start, start + seconds, self.model.cost.active_current_a, marker=False)
        self.timeline.advance(seconds)
        self.clock_us = round(self.timeline.now() * 1e6)

    @property
    def latency_us(self) -> float:
        """One inference on the virtual ESP32 (the cost model's latency)."""
        return self.model.cost.latency_s * 1e6 if self.model.cost is not None else 0.0

    def _inferences_s(self, n: int) -> float:
        """How long `n` back-to-back inferences take: the cost model's latency, each with the virtual board's
        run-to-run jitter (cost.jitter_rel_std, clipped to +-10 % as there)."""
        if n <= 0 or self.model.cost is None:
            return 0.0
        jitter = np.clip(1.0 + self._rng.normal(0.0, self.model.cost.jitter_rel_std, size=n), 0.9, 1.1)
        return float(np.sum(jitter)) * self.latency_us / 1e6

    def _timestamp(self) -> list[str]:
        if self.timeline is not None:
            self.clock_us = round(self.timeline.now() * 1e6)
        if self.energy_mode:
            self.edges_us.append(self.clock_us)
            if self.timeline is not None:  # the falling edge is the event; the CPU holds the line low a while
                self.timeline.pulse_low(self.timeline.now(), TIMESTAMP_HOLD_S)
                self._spend(TIMESTAMP_HOLD_S, active=True)
            return []
        return [f"m-lap-us-{self.clock_us % wire.LAP_WRAP}"]

    # -- the reference API ---------------------------------------------------------------------------
    def boot(self) -> list[str]:
        """ee_benchmark_initialize: the timestamp mode, one timestamp, m-init-done, m-ready."""
        mode = "energy" if self.energy_mode else "performance"
        return [f"m-timestamp-mode-{mode}", *self._timestamp(), "m-init-done", wire.READY]

    def handle(self, command: str) -> list[str]:
        """The reply to one command (its text before `%`), ending with `m-ready`. On a bench, the instruments
        sharing the clock (the scope) first handle what the host sent them, as on the virtual board."""
        if self.timeline is None:
            return self._handle(command)
        self.timeline.sync()
        with self.timeline.busy():
            self._spend((len(command) + 1) * 10 / self.baud, active=False)  # the command and its % come in
            lines = self._handle(command)
            self._spend(sum(len(line) + 2 for line in lines) * 10 / self.baud, active=False)  # the reply goes out
            self.timeline.pace()
        return lines

    def _handle(self, command: str) -> list[str]:
        tokens = [t for t in command[: wire.MAX_COMMAND].split(" ") if t]  # strtok: runs of spaces are one
        head = tokens[0] if tokens else ""
        if head == "name":
            out = ["m-name-dut-[unspecified]"]
        elif head == "timestamp":
            out = self._timestamp()
        elif head == "profile":
            out = [f"m-profile-[{wire.FIRMWARE}]", f"m-model-[{self.kind or 'custom'}]"]
        elif head == "help":
            out = list(HELP)
        elif head == "db":
            out = self._db(tokens[1:])
        elif head == "infer":
            out = self._infer(tokens[1:])
        elif head == "results":
            out = self._results()
        else:
            out = [f"e-[Unknown command: {head}]"]
        return [*out, wire.READY]

    def _db(self, args: list[str]) -> list[str]:
        if not args:
            return ["e-[Command 'db' requires a subcommand]"]
        if args[0] == "load":
            if len(args) < 2:
                return ["e-[Command 'db load' requires the # of bytes]"]
            n = _atoi(args[1])
            if n == 0:
                return ["e-[Command 'db load' must be >0 bytes]"]
            self.size, self.pos = n, 0
            if n > self.db_capacity or n < 0:
                return [f"Supplied buffer size {n} exceeds maximum of {self.db_capacity}"]
            return [f"m-[Expecting {n} bytes]"]
        if args[0] == "print":
            out, row = [], []
            for i in range(max(self.size, 0)):
                row.append(f"{self.buffer[i]:02x}" if i < len(self.buffer) else "00")
                if len(row) == 8 or i + 1 == self.size:
                    out.append("m-buffer-" + "-".join(row))
                    row = []
            if self.size % 8:
                out.append("")
            return out
        digits = args[0]
        if len(digits) % 2:
            return ["e-[Insufficent number of hex digits]"]  # sic, the reference's spelling
        for i in range(0, len(digits), 2):
            pair = digits[i:i + 2]
            try:
                value = int(pair, 16) if all(c in "0123456789abcdefABCDEF" for c in pair) else -1
            except ValueError:
                value = -1
            if value < 0:
                return [f"e-[Invalid hex digit '{pair}']"]
            if self.pos < len(self.buffer):
                self.buffer[self.pos] = value
            self.pos += 1
            if self.pos == self.size:
                return ["m-load-done"]  # the remainder of the digits is disregarded
        return []

    def _infer(self, args: list[str]) -> list[str]:
        n, warmup = 1, 10  # the reference's defaults (its help text says W=0)
        if args:
            n = _atoi(args[0])
            if n <= 0:
                return ["e-[Inference iterations must be >0]"]
        if len(args) > 1:
            warmup = _atoi(args[1])
            if warmup < 0:
                return ["e-[Inference warmup must be >=0]"]
        if self.model.error is not None:  # a reference DUT would not have booted; say why in its own style
            return [f"e-[model not loaded: {self.model.error}]"]
        out = self._load_tensor()
        if self.noise is not None:  # one trial of the variant: its bench-noise gain from now on
            self.timeline.set_gain(self.noise.gain(self.noise_seed, self.variant, self.trials))
        self.trials += 1
        out.append(f"m-warmup-start-{warmup}")
        self._spend(self._inferences_s(warmup), active=True)
        out += ["m-warmup-done", f"m-infer-start-{n}", *self._timestamp()]
        self._run()
        self._spend(self._inferences_s(n), active=True)
        out += [*self._timestamp(), "m-infer-done", *self._results()]
        return out

    def _load_tensor(self) -> list[str]:
        """th_load_tensor: the buffer into the input tensor in the reference model's format; a size mismatch is
        the reference's unprefixed message, and the input stays as it was."""
        spec = self.input_spec
        want = int(np.prod(spec.shape)) * (4 if self.kind == "ad01" else spec.dtype.itemsize)
        got = min(self.pos, len(self.buffer))
        if got != want:
            return [f"Input db has {got} elemented, expected {want}"]
        raw = bytes(self.buffer[:want])
        if self.kind == "ad01":
            x = np.frombuffer(raw, "<f4").astype(np.float32)
            self._last_input_float = x
            q = np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
            self._input = q.reshape(spec.shape)
        elif self.kind in ("vww01", "ic01"):
            self._input = (np.frombuffer(raw, np.uint8).astype(np.int16) - 128).astype(np.int8).reshape(spec.shape)
        else:
            self._input = np.frombuffer(raw, spec.dtype).reshape(spec.shape)
        return []

    def _run(self) -> None:
        x = getattr(self, "_input", None)
        if x is None:
            x = np.zeros(self.input_spec.shape, self.input_spec.dtype)
        self._last_output = np.asarray(self.model.runtime.invoke(x))

    def _results(self) -> list[str]:
        if self._last_output is None:
            self._run()
        spec = self.output_spec
        y = self._last_output.reshape(-1).astype(np.float64)
        if spec.dtype != np.float32:
            y = (y - spec.zero_point) * spec.scale
        if self.kind == "ad01":
            x = self._last_input_float if self._last_input_float is not None else np.zeros(y.size)
            return [wire.format_results([float(np.mean((y - x) ** 2))], "ad01")]
        return [wire.format_results([float(v) for v in y], self.kind or "custom")]


class MlperfBoard:
    """An MlperfDevice served like the virtual board: on a pty (`pty_path`) and TCP (`url`), commands ending in
    `%`, replies in `\\r\\n` lines, the boot banner sent when it starts."""

    def __init__(self, model: bytes, **device_options):
        from hil.sim.transport import Faults, LineServer

        self.device = MlperfDevice(model, **device_options)
        self._server = LineServer(self._on_line, Faults(), terminator=wire.TERMINATOR.encode())

    @property
    def pty_path(self) -> str | None:
        return self._server.pty_path

    @property
    def url(self) -> str | None:
        return self._server.url

    def start(self, *, tcp_port: int | None = 0) -> MlperfBoard:
        self._server.start(tcp_port=tcp_port)
        for line in self.device.boot():
            self._server.broadcast(line)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MlperfBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_line(self, session, line: str | None) -> None:
        for out in self.device.handle(line or ""):
            self._server.send(session, out)
