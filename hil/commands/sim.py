"""`hil sim`: run the virtual bench alone (virtual ESP32 + simulated scope) until Ctrl-C.

Prints the board's serial port and the scope's VISA resource so any tool can talk to them, and the faults,
bench noise and injected regressions armed. Each start is a session of its own: with `virtual.noise` enabled
and no `virtual.noise.seed`, it draws a new noise seed and prints it (set it in the bench file to replay).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from hil.bench import DEFAULT_BENCH_FILE, BenchConfig, load_bench


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil sim` to the CLI."""
    p = subparsers.add_parser(
        "sim",
        help="run the virtual bench (virtual ESP32 + simulated scope) until Ctrl-C",
        description="Start the virtual bench of the bench file and print the board's serial port and the "
        "scope's VISA resource. Every figure it produces is simulated.",
    )
    p.add_argument("--bench", default=None, help=f"bench file (default: {DEFAULT_BENCH_FILE} if present)")
    p.add_argument("--board", default=None, help="board name in the bench file (default: the first)")
    p.add_argument(
        "--model",
        default=None,
        help="a .tflite model to flash on the virtual board (default: the TFLM sine demo model)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="wall-time pacing of replies (virtual.time_scale; 1.0 = as long as the chip, 0 = as fast as the "
        "host can); figures are simulated time either way",
    )
    p.add_argument(
        "--tcp-port", type=int, default=0, help="TCP port for socket:// access (default: a free one)"
    )
    p.add_argument("--no-scope", action="store_true", help="start the board only")
    p.add_argument("--protocol", choices=("hil", "mlperf-tiny"), default="hil",
                   help="the board's protocol: ours (docs/protocol.md) or MLPerf Tiny's EnergyRunner API "
                   "(docs/mlperf-tiny.md; the board alone, performance mode)")
    p.set_defaults(func=run)


def _config(path: str | None) -> tuple[BenchConfig, str]:
    if path is not None:
        return load_bench(path), path
    if Path(DEFAULT_BENCH_FILE).is_file():
        return load_bench(DEFAULT_BENCH_FILE), DEFAULT_BENCH_FILE
    return BenchConfig(), "built-in defaults"


def run(args: argparse.Namespace) -> int:
    """Start the virtual bench, print how to reach it, serve until interrupted."""
    from hil.sim.bench import VirtualBench, default_model_path
    from hil.sim.noise import session_seed

    model = Path(args.model) if args.model else default_model_path()
    if args.protocol == "mlperf-tiny":
        return _run_mlperf(model, args.tcp_port)
    config, source = _config(args.bench)
    noise = config.virtual.noise
    noise_seed = noise.seed if noise.seed is not None else session_seed(uuid.uuid4().hex)  # a session of its own
    bench = VirtualBench(config, model, board=args.board, speed=args.speed, scope=not args.no_scope,
                         noise_seed=noise_seed)
    bench.start(tcp_port=args.tcp_port)
    try:
        b = bench.board
        print(f"virtual bench from {source} -- all figures it produces are SIMULATED", flush=True)
        print(f"board:    {bench.board_config.name} ({b.board}, {b.cpu_mhz} MHz, speed x{b.speed:g})")
        print(f"model:    {model} ({'ok' if b.model_error is None else 'E_MODEL: ' + b.model_error})")
        print(f"serial:   {bench.port}")
        print(f"socket:   {bench.url}")
        if bench.resource:
            sc, shunt = bench.spec.scope, bench.spec.shunt
            print(
                f"scope:    {bench.resource} ({sc.sim_dialect} dialect; "
                f"CH{sc.shunt_channel} shunt {shunt.ohms} ohm {shunt.wiring}, CH{sc.marker_channel} marker)"
            )
        armed = config.virtual.faults.armed()
        print(f"faults:   {'; '.join(armed) if armed else 'none armed'}  (virtual.faults, docs/faults.md)")
        print(f"noise:    {noise.describe(bench.noise_seed)}  (virtual.noise)")
        if config.virtual.inject:
            print(f"inject:   {', '.join(str(i) for i in config.virtual.inject)}  (virtual.inject)")
        baud = bench.board_config.baud
        print(f"try:      python -m serial.tools.miniterm {bench.port} {baud}  (type hello)")
        if bench.resource:
            print(f"          pyvisa-shell -b py   (open {bench.resource}, query *IDN?)")
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("virtual bench stopped", flush=True)
        return 0
    finally:
        bench.stop()


def _run_mlperf(model: Path, tcp_port: int) -> int:
    """The virtual ESP32's MLPerf Tiny personality alone, until Ctrl-C."""
    from hil.errors import HilError
    from hil.sim.mlperf_device import MlperfBoard

    try:
        blob = model.read_bytes()
    except OSError as exc:
        raise HilError(f"cannot read the model {model}: {exc.strerror}; pass --model PATH to a .tflite file") from None
    board = MlperfBoard(blob)
    if board.device.model.error is not None:
        raise HilError(f"the virtual MLPerf Tiny DUT cannot run {model}: {board.device.model.error}")
    board.start(tcp_port=tcp_port)
    try:
        device = board.device
        print("virtual MLPerf Tiny DUT -- all figures it produces are SIMULATED", flush=True)
        print(f"model:    {model} (m-model-[{device.kind or 'custom'}], input {list(device.input_spec.shape)} "
              f"{device.input_spec.dtype.name}, {device.latency_us / 1000:.3f} ms per inference)")
        print(f"serial:   {board.pty_path}")
        print(f"socket:   {board.url}")
        print(f"try:      python -m serial.tools.miniterm {board.pty_path} 115200  (type name% then profile%)")
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("virtual MLPerf Tiny DUT stopped", flush=True)
        return 0
    finally:
        board.stop()
