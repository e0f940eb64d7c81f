"""How a shared lab scales: the measurement phase on 1, 4 and 16 places of the virtual lab (hil.lab.virtual).

A. The default variant matrix (models/variants.yaml, built by the factory: run `make hil` once first) through
   `hil measure`'s lab path (hil.lab.campaign.run_on_lab: labgrid reservations, the queue, one campaign per
   place), on 1 and on 4 places, with the boards paced to the chip's real time (time_scale 1, as a real lab's
   host mostly waits on its boards) and unpaced (time_scale 0, where this host's CPUs are the limit).
   Settings: --trials, --window and --accuracy-samples below (defaults shorter than a nightly run's).
B. A small model (the factory's distilled-int8: 40 ms an inference on the virtual ESP32, a few ms of host TFLM)
   on 1 and 16 places, paced: each item flashes the place's board and runs the power capture
   (hil.measure.measure_power) through the queue, so the boards' time, not this host's CPU, is what is waited on.
   Prints the host's CPU time and peak memory per place.

Prints, per case: wall time, speed-up over one place, each place's busy fraction while work was queued, the
dispatch overhead per item. Targets (issue 21): 4 places >= 3.2x one place, every place >= 85 % busy, dispatch
< 1 s per item; 16 places >= 12x one place. Figures are printed, not asserted; every figure is simulated time.

Run: .venv/bin/python benchmarks/bench_lab.py [--part A|B|all] [--trials 2] [--window 0.5] [--accuracy-samples 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bench_file(folder: Path, address: str, places: int) -> Path:
    bench = yaml.safe_load((ROOT / "bench.yaml").read_text())
    bench["boards"] = bench["boards"][:1]
    bench["virtual"]["noise"]["enabled"] = False
    bench["lab"] = {"coordinator": address, "tags": {"board": "esp32"}, "places": places}
    path = folder / f"bench-{places}.yaml"
    path.write_text(yaml.safe_dump(bench))
    return path


def _print_queue(label: str, report, one_wall: float | None) -> None:
    speed = f", {one_wall / report.wall_s:.2f}x one place" if one_wall else ""
    print(f"{label}: wall {report.wall_s:.1f} s{speed}; dispatch overhead {report.dispatch_overhead_s * 1e3:.2f} ms "
          f"per item; {len(report.outcomes)} items, {len(report.cut)} cut, lost {report.lost or 'none'}")
    for name, s in sorted(report.places.items()):
        print(f"    {name:10s} {s.items:3d} items  busy {s.busy_fraction:6.1%}  ({s.busy_s:.1f} of {s.active_s:.1f} s)")


def part_a(args: argparse.Namespace) -> None:
    from hil.campaign import CampaignOptions
    from hil.lab.campaign import run_on_lab
    from hil.lab.virtual import VirtualLab

    for scale in (1.0, 0.0):
        one = None
        for places in (1, 4):
            with tempfile.TemporaryDirectory() as tmp, VirtualLab(time_scale=scale) as lab:
                folder = Path(tmp)
                options = CampaignOptions(bench=_bench_file(folder, lab.address, places), results_db=folder / "r.db",
                                          report_dir=folder / "report", trials=args.trials, window=args.window,
                                          accuracy_samples=args.accuracy_samples)
                finish, verdicts, report = run_on_lab(options, progress=lambda _: None)
                failed = [v for v, by in verdicts.items() if any(x.failed for x in by.values())]
                _print_queue(f"A. default matrix, {places} place(s), time_scale {scale:g}", report, one)
                print(f"    run {finish.status}, {len(verdicts)} variants" + (f", failed: {failed}" if failed else ""))
                one = one or report.wall_s


def part_b(args: argparse.Namespace) -> None:
    from hil.bench import parse_bench
    from hil.lab.places import Lab
    from hil.lab.queue import Dispatcher, Work
    from hil.lab.station import LabStation, place_spec
    from hil.lab.virtual import VirtualLab
    from hil.measure import Settings, measure_power
    from hil.protocol import DutClient

    small = ROOT / "artifacts" / "models" / "distilled-int8.tflite"
    if not small.is_file():
        raise SystemExit(f"{small} is missing: build the default matrix first (make hil)")
    model = small.read_bytes()
    settings = Settings(trials=args.trials, window_s=args.window, warmup=1)
    items = args.items
    one = None
    for places, exporters in ((1, 1), (16, 4)):
        per = places // exporters
        with VirtualLab(exporters=exporters, places_per_exporter=per, time_scale=1.0) as vlab:
            bench = parse_bench({**yaml.safe_load((ROOT / "bench.yaml").read_text()), "boards": [{"name": "t"}],
                                 "lab": {"coordinator": vlab.address, "tags": {"board": "esp32"}, "places": places}})

            def measure(_payload, place, bench=bench):
                station = LabStation(place_spec(bench, place), place)
                station.flash(model, source="distilled-int8")
                with DutClient(place.serial_url) as dut, station.scope() as scope:
                    return measure_power(dut, scope, station.spec, settings).figures()["latency_ms"].value

            cpu0 = time.process_time()
            with Lab(bench.lab, progress=lambda _: None) as lab:
                got = lab.reserve()
                deadline = time.monotonic() + 30
                while len(got) < places and time.monotonic() < deadline:
                    got += lab.more()
                    time.sleep(0.2)
                report = Dispatcher(measure, more_places=lab.more).run(
                    [Work(f"distilled-int8#{i}", i) for i in range(items)], got)
            cpu = time.process_time() - cpu0
            _print_queue(f"B. distilled-int8, {items} items, {places} place(s), time_scale 1", report, one)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"    host: {cpu:.1f} s CPU in this process ({cpu / places:.2f} s per place, "
                  f"{cpu / report.wall_s / places * 100:.1f} % of a core per place); peak memory {peak_mb:.0f} MB")
            one = one or report.wall_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("A", "B", "all"), default="all")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--window", type=float, default=0.5)
    p.add_argument("--accuracy-samples", type=int, default=20)
    p.add_argument("--items", type=int, default=32, help="part B: items of the small model")
    args = p.parse_args()
    if args.part in ("A", "all"):
        part_a(args)
    if args.part in ("B", "all"):
        part_b(args)


if __name__ == "__main__":
    main()
