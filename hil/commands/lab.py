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
    v.add_argument("--bench", default="bench.yaml",
                   help="the bench file whose board, scope and shunt settings the lab's bench file copies "
                   "(default bench.yaml)")
    v.add_argument("--write-bench", default="reports/lab-bench.yaml",
                   help="where to write a bench file for this lab, for `hil measure --bench` and `pytest -m hil` "
                   "from another terminal (default reports/lab-bench.yaml)")
    v.add_argument("--measure", nargs=argparse.REMAINDER, default=None, metavar="MEASURE_OPTIONS",
                   help="measure the variant matrix on the lab's places (hil measure with the lab's bench file and "
                   "any options after --measure), then stop the lab")
    v.set_defaults(func=run_virtual)


def write_lab_bench(template: Path, out: Path, coordinator: str, places: int) -> Path:
    """A copy of the `template` bench file (its first board, scope and shunt) with a `lab:` section asking
    `coordinator` for `places` places tagged board=esp32."""
    import yaml

    from hil.bench import load_bench

    load_bench(template)  # a broken template is one clear error here, not a confusing one in the measure
    bench = yaml.safe_load(template.read_text())
    bench["boards"] = bench["boards"][:1]
    bench["lab"] = {"coordinator": coordinator, "tags": {"board": "esp32"}, "places": places}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# written by `hil lab virtual`: the virtual lab's places instead of the boards' ports\n"
                   + yaml.safe_dump(bench, sort_keys=False))
    return out


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
        bench = write_lab_bench(Path(args.bench), Path(args.write_bench), lab.address, len(lab.places))
        print(f"bench file: {bench}   (hil measure --bench {bench})")
        if args.measure is not None:
            from hil.cli import main

            return main(["measure", f"--bench={bench}", *args.measure])
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
