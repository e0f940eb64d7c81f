"""Fetching 1 million points from the simulator: binary vs ASCII vs a plain socket (figures printed).

Run: .venv/bin/python benchmarks/bench_scope_fetch.py [points]
"""

from __future__ import annotations

import socket
import statistics
import sys
import time

import numpy as np

from instruments.ieee488 import read_block
from instruments.scope import open_scope
from instruments.sim import FunctionSource, ScopeSimulator

COMMANDS = {  # what the plain-socket reader sends to get the same bytes the driver gets
    "keysight": [":WAVeform:SOURce CHANnel1", ":WAVeform:FORMat BYTE", ":WAVeform:UNSigned OFF"],
    "rigol": [":WAV:SOUR CHAN1", ":WAV:MODE RAW", ":WAV:FORM BYTE"],
}


def plain_socket_fetch(sim: ScopeSimulator, points: int) -> float:
    """Seconds to read the record with raw socket calls (same commands and chunks as the driver)."""
    with socket.create_connection(("127.0.0.1", sim.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb", buffering=1 << 20)
        t0 = time.perf_counter()
        s.sendall(("\n".join(COMMANDS[sim.dialect]) + "\n").encode())
        chunks = [(1, points)] if sim.dialect == "keysight" else [
            (a, min(a + 249_999, points)) for a in range(1, points + 1, 250_000)]
        total = 0
        for first, last in chunks:
            pre = "" if sim.dialect == "keysight" else f":WAV:STAR {first}\n:WAV:STOP {last}\n"
            query = ":WAVeform:DATA?" if sim.dialect == "keysight" else ":WAV:DATA?"
            s.sendall((pre + query + "\n").encode())
            total += len(read_block(f.read))
        assert total == points
        return time.perf_counter() - t0


def main() -> None:
    points = int(float(sys.argv[1])) if len(sys.argv) > 1 else 1_000_000
    src = FunctionSource({1: lambda t: 0.005 + 0.002 * np.sin(2 * np.pi * 1e3 * t), 2: lambda t: np.where(
        np.mod(t, 0.01) < 0.004, 3.3, 0.0)})
    for dialect in ("keysight", "rigol"):
        with ScopeSimulator(dialect, src, noise_vrms=1e-4, seed=0) as sim, open_scope(sim.resource) as scope:
            scope.configure_channel(1, 1e-3, 5e-3)
            scope.configure_channel(2, 1.0, 1.65)
            scope.configure_timebase(0.1 / scope.horizontal_divisions, record_points=points)
            scope.configure_trigger(2, 1.65)
            scope.capture(1, timeout_s=10)
            binary = []
            for _ in range(5):
                t0 = time.perf_counter()
                (wf,) = scope.fetch(1, fmt="BYTE")
                binary.append(time.perf_counter() - t0)
            assert len(wf) == points
            t0 = time.perf_counter()
            (asc,) = scope.fetch(1, fmt="ASCII")
            ascii_s = time.perf_counter() - t0
            np.testing.assert_allclose(asc.volts, wf.volts, atol=1e-9)
            plain = statistics.median(plain_socket_fetch(sim, points) for _ in range(5))
            b = statistics.median(binary)
            print(f"{dialect:8s} {points:,} points: binary BYTE {b * 1e3:.1f} ms (median of 5), "
                  f"ASCII {ascii_s * 1e3:.0f} ms (1 run), plain socket {plain * 1e3:.1f} ms (median of 5)")
            print(f"{dialect:8s} ASCII/binary = {ascii_s / b:.1f}x (target >= 10x); "
                  f"binary/plain socket = {b / plain:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
