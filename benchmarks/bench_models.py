"""Time the model factory on the default variant matrix: a cold build (empty cache) and a warm one.

Targets (issue: foundation and model factory): cold under 5 minutes, warm under 15 s on a 2-core machine.
Usage: .venv/bin/python benchmarks/bench_models.py [--config models/variants.yaml] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_build(config: str, out: Path, cache: Path) -> float:
    """Run `hil models build` in a fresh process (as a user would) and return its wall time in seconds."""
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hil.cli",
            "models",
            "build",
            "--config",
            config,
            "--out",
            str(out),
            "--cache",
            str(cache),
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "models" / "variants.yaml"))
    parser.add_argument("--warm-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "models", Path(tmp) / "cache"
        cold = timed_build(args.config, out, cache)
        warm = [timed_build(args.config, out, cache) for _ in range(args.warm_runs)]
        variants = len(list(out.glob("*.tflite")))
    print(f"variants built:          {variants}")
    print(f"cold build (empty cache): {cold:7.1f} s   target < 300 s  {'ok' if cold < 300 else 'MISSED'}")
    print(
        f"warm build (median of {len(warm)}): {statistics.median(warm):7.1f} s   target < 15 s   "
        f"{'ok' if statistics.median(warm) < 15 else 'MISSED'}   runs: {', '.join(f'{w:.1f}' for w in warm)}"
    )
    print(f"cold / warm ratio:        {cold / statistics.median(warm):7.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
