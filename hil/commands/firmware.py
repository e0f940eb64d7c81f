"""`hil firmware build|pack-model|flash-app|flash-model|size`: the benchmark firmware on a real bench.

A thin layer over `hil.firmware`; every step is also a Python function.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hil import firmware


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `hil firmware ...` to the CLI."""
    p = subparsers.add_parser(
        "firmware", help="build and flash the ESP32 benchmark firmware and model images"
    )
    sub = p.add_subparsers(dest="firmware_command", metavar="STEP", required=True)

    b = sub.add_parser("build", help="idf.py build, cached per source hash and target")
    b.add_argument("--target", default="esp32", choices=firmware.TARGETS)
    b.add_argument("--build-root", type=Path, default=Path("build"), help="builds go to BUILD_ROOT/TARGET")
    b.add_argument(
        "--embed", type=Path, default=None, help="a model image to embed in the app (no partition)"
    )
    b.add_argument("--baud", type=int, default=115200, help="console/protocol UART baud (921600: accuracy)")
    b.add_argument("--force", action="store_true", help="rebuild even when the source hash is unchanged")
    b.set_defaults(func=_build)

    m = sub.add_parser("pack-model", help="check a variant's operators and write its model image")
    m.add_argument("variant", help="a variant name of the factory's output or a .tflite path")
    m.add_argument(
        "--models-dir", type=Path, default=Path("artifacts/models"), help="factory output directory"
    )
    m.add_argument(
        "--arena-bytes", type=int, default=None, help="measured arena (default: the factory's, or TFLM's)"
    )
    m.add_argument("-o", "--output", type=Path, default=None, help="image file (default: VARIANT.hilm)")
    m.set_defaults(func=_pack)

    a = sub.add_parser("flash-app", help="flash bootloader, partition table and app of a build")
    a.add_argument("--port", required=True)
    a.add_argument("--target", default="esp32", choices=firmware.TARGETS)
    a.add_argument("--build-root", type=Path, default=Path("build"))
    a.add_argument("--baud", type=int, default=firmware.APP_FLASH_BAUD)
    a.set_defaults(func=_flash_app)

    f = sub.add_parser("flash-model", help="write a model image into the model partition and verify it")
    f.add_argument("image", type=Path, help="a model image from pack-model")
    f.add_argument("--port", required=True)
    f.add_argument("--target", default="esp32", choices=firmware.TARGETS)
    f.add_argument("--build-root", type=Path, default=Path("build"), help="partition table from this build")
    f.add_argument("--baud", type=int, default=firmware.MODEL_FLASH_BAUD, help="esptool's flashing baud")
    f.add_argument("--console-baud", type=int, default=115200,
                   help="the app's protocol UART baud, at which the flash is verified (default: %(default)s)")
    f.set_defaults(func=_flash_model)

    s = sub.add_parser("size", help="flash/DRAM/IRAM use of a build (or of an esp-idf-size json2 file)")
    s.add_argument("--target", default="esp32", choices=firmware.TARGETS)
    s.add_argument("--build-root", type=Path, default=Path("build"))
    s.add_argument("--json2", type=Path, default=None, help="parse this `esp-idf-size --format json2` output")
    s.set_defaults(func=_size)


def _build(args: argparse.Namespace) -> int:
    embed = args.embed.read_bytes() if args.embed else None
    res = firmware.build(
        args.target, build_root=args.build_root, embed_image=embed, console_baud=args.baud, force=args.force
    )
    print(f"{res.build_dir} ({'cached' if res.cached else 'built'}, sources {res.source_hash[:12]})")
    return 0


def _pack(args: argparse.Namespace) -> int:
    model, arena, name = firmware.resolve_variant(args.variant, args.models_dir)
    image = firmware.pack_model(model, arena_bytes=args.arena_bytes or arena, source=name)
    part = firmware.model_partition()
    firmware.check_fits(image, part)
    out = args.output or Path(f"{name}.hilm")
    out.write_bytes(image)
    head = firmware.parse_image(image)
    print(
        f"{out}: {len(image)} bytes, crc32 {head.crc32_hex}, arena {head.arena_hint} bytes, "
        f"fits the {part.size}-byte model partition"
    )
    return 0


def _flash_app(args: argparse.Namespace) -> int:
    written = firmware.flash_app(args.port, args.build_root / args.target, baud=args.baud)
    print(f"flashed {written} bytes to {args.port}")
    return 0


def _flash_model(args: argparse.Namespace) -> int:
    image = args.image.read_bytes()
    crc = firmware.flash_model(args.port, image, build_dir=args.build_root / args.target, baud=args.baud,
                               console_baud=args.console_baud)
    print(f"model partition on {args.port}: crc32 {crc} verified by hello")
    return 0


def _size(args: argparse.Namespace) -> int:
    if args.json2:
        rep = firmware.parse_size_json2(args.json2.read_text())
    else:
        rep = firmware.size_report(args.build_root / args.target)
    for name, used, free in (
        ("flash", rep.flash_used, rep.flash_free),
        ("dram", rep.dram_used, rep.dram_free),
        ("iram", rep.iram_used, rep.iram_free),
    ):
        print(f"{name:6s} used {used:>9d}  free {free if free is not None else '?':>9}")
    return 0
