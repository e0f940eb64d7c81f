"""Speed of the device protocol on the virtual bench: round trip on loopback and on-device accuracy streaming.

    .venv/bin/python benchmarks/bench_protocol.py [--model artifacts/models/baseline-int8.tflite]

Without --model it builds an untrained CNN with the widths of models/variants.yaml (int8 in/out): the
timing is the same as a trained one's, the accuracy is then meaningless and is not printed.
Also prints what a real 921,600-baud UART allows for the same traffic (computed from the line formats).
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import numpy as np

from hil.protocol import CHUNK_MAX_BYTES, DutClient
from hil.sim.board import VirtualBoard
from hil.wire import sign_command

UART_BAUD = 921_600
UART_BYTES_PER_S = UART_BAUD / 10  # 8N1: 10 bits on the wire per byte
SVHN_TEST_IMAGES = 26_032


def untrained_int8_cnn() -> bytes:
    """The variants.yaml CNN, untrained, converted to int8 (needs TensorFlow)."""
    import yaml

    from models.cnn import build_cnn
    from models.convert import convert
    from models.datasets import load

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "models" / "variants.yaml").read_text())[
        "model"
    ]
    model = build_cnn(
        input_shape=spec["input_shape"], filters=spec["filters"], dense_units=spec["dense_units"]
    )
    return convert(model, "int8", load("digits").x_train[:50])


def round_trip(url: str, n: int) -> list[float]:
    with DutClient(url) as c:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            c.version()
            times.append(time.perf_counter() - t)
    return times


def host_to_device_bytes(input_bytes: int) -> int:
    """Bytes the host sends per image: `input LEN CRC`, the `data` chunks, `run`, each signed and with '\\n'."""
    lines = [f"input {input_bytes} 00000000", "run"]
    for off in range(0, input_bytes, CHUNK_MAX_BYTES):
        lines.append("data " + base64.b64encode(bytes(min(CHUNK_MAX_BYTES, input_bytes - off))).decode())
    return sum(len(sign_command(line)) + 1 for line in lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", type=Path, help="an int8 .tflite with a 32x32x1 input (default: untrained CNN)"
    )
    ap.add_argument("--speed", type=float, default=1.0, help="virtual board real-time factor (default 1.0)")
    ap.add_argument("--round-trips", type=int, default=300)
    args = ap.parse_args()

    from models.datasets import load
    from models.tflm import TflmModel, quantize_input

    model = args.model.read_bytes() if args.model else untrained_int8_cnn()
    ds = load("digits")
    with VirtualBoard(model, speed=args.speed).start() as board:
        print(f"virtual board: speed x{args.speed:g}, model {args.model or 'untrained CNN (int8)'}")
        for name, url in (("pty", board.pty_path), ("socket", board.url)):
            t = np.array(round_trip(url, args.round_trips)) * 1e3
            print(
                f"round trip `version` over {name:6s}: median {np.median(t):.3f} ms, p90 "
                f"{np.percentile(t, 90):.3f} ms (n={len(t)})"
            )
        ref = TflmModel(model)
        xq = quantize_input(ds.x_test, ref.input)
        with DutClient(board.pty_path) as c:
            info = c.require_model()
            latency_ms = c.infer(5, 1).mean_us / 1e3
            t0 = time.perf_counter()
            preds = [int(np.argmax(c.predict(x[None, ...]))) for x in xq]
            elapsed = time.perf_counter() - t0
        n = len(preds)
        print(
            f"streamed {n} digits test images ({info.input.bytes} B each, {info.input.dtype}) over the pty: "
            f"{elapsed:.2f} s, {n / elapsed:.1f} images/s; modelled inference {latency_ms:.2f} ms/image "
            f"({n * latency_ms / 1e3:.2f} s of the total)"
        )
        ref_preds = [int(np.argmax(ref.invoke(x[None, ...]))) for x in xq]
        print(f"device predictions equal TFLM predictions: {preds == ref_preds}")
        if args.model:
            print(f"on-device accuracy {np.mean(np.array(preds) == ds.y_test):.4f}")

    per_image = host_to_device_bytes(info.input.bytes)
    link_s = per_image / UART_BYTES_PER_S
    print(
        f"real UART at {UART_BAUD} baud 8N1 = {UART_BYTES_PER_S / 1e3:.1f} KB/s: {per_image} B host->device "
        f"per image -> {link_s * 1e3:.1f} ms/image on the wire, <= {1 / link_s:.0f} images/s before inference"
    )
    for name, ms in (("this model", latency_ms), ("reference int8 CNN", 62.8)):
        total = SVHN_TEST_IMAGES * (link_s + ms / 1e3)
        print(
            f"  SVHN test set ({SVHN_TEST_IMAGES} images), {name} ({ms:.1f} ms/inference): "
            f"{total / 60:.1f} min ({link_s * SVHN_TEST_IMAGES / 60:.1f} min of it on the wire)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
