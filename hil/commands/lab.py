"""`hil lab virtual`: a virtual shared lab on loopback (labgrid coordinator, two exporters, four places of a
virtual ESP32 and a simulated scope each) until Ctrl-C. Every figure measured on it is simulated."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil lab` to the CLI."""
    p = subparsers.add_parser("lab", help="shared labs through labgrid (hil lab virtual: a virtual one)",
                              description="Shared labs of boards and scopes through labgrid.")
    sub = p.add_subparsers(dest="lab_command", required=True)
    v = sub.add_parser("virtual", help="run a virtual lab on loopback until Ctrl-C",
                       description="Start a labgrid coordinator and exporters on 127.0.0.1 serving virtual ESP32s "
                       "(behind ser2net) and simulated scopes as places; print the coordinator and the places.")
    v.add_argument("--port", type=int, default=20408, help="the coordinator's port on 127.0.0.1 (default 20408)")
    v.add_argument("--exporters", type=int, default=2, help="exporters (default 2)")
    v.add_argument("--places-per-exporter", type=int, default=2, help="places per exporter (default 2)")
    v.add_argument("--time-scale", type=float, default=1.0,
                   help="wall-time pacing of the virtual boards (1: the chip's real time, the default; 0: as fast as "
                   "the host can)")
    v.add_argument("--model", default=None, help="a .tflite model flashed on every board (default: TFLM's sine demo)")
    v.set_defaults(func=run_virtual)


def run_virtual(args: argparse.Namespace) -> int:
    """Start the virtual lab, print how to reach it, serve until interrupted."""
    from hil.lab.virtual import VirtualLab

    lab = VirtualLab(exporters=args.exporters, places_per_exporter=args.places_per_exporter, port=args.port,
                     time_scale=args.time_scale, model=Path(args.model) if args.model else None)
    try:
        lab.start()
        print(f"virtual lab -- all figures it produces are SIMULATED; everything on {lab.address.split(':')[0]}",
              flush=True)
        print(f"coordinator: {lab.address}   (export LG_COORDINATOR={lab.address})")
        for p in lab.places:
            tags = " ".join(f"{k}={v}" for k, v in sorted(p.tags.items()))
            print(f"place {p.name}: {p.exporter}, board {p.board_id} on {p.bench.port}, scope {p.bench.resource}, "
                  f"tags {tags}")
        print(f"time scale: {args.time_scale:g} (1 = the chip's real time)")
        print(f"try:        labgrid-client -x {lab.address} -v places")
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(0.5)
            for name, proc in lab.exporters.items():
                if proc.poll() is not None:
                    print(f"exporter {name} exited ({lab.log_tail(name)})", flush=True)
                    return 1
    except KeyboardInterrupt:
        print("virtual lab stopped", flush=True)
        return 0
    finally:
        lab.stop()
