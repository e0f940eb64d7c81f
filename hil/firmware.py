"""Benchmark firmware: model images, ESP-IDF builds, flashing via esptool, size reports.

The firmware (`firmware/`) is built once per source change; each model variant is written as a model
image into the `model` data partition (~1 s instead of a full app flash). The image format here is the
one `firmware/main/core/model_image.hpp` validates on the device.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.errors import HilError
from hil.filelock import file_lock

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
OPS_FILE = FIRMWARE_DIR / "main" / "ops.txt"
PARTITIONS_CSV = FIRMWARE_DIR / "partitions.csv"
TARGETS = ("esp32", "esp32s3")
MODEL_PARTITION = "model"
APP_FLASH_BAUD = 460800
MODEL_FLASH_BAUD = 921600

# -- model image ---------------------------------------------------------------------------------------
IMAGE_MAGIC = b"HILM"
IMAGE_VERSION = 1
IMAGE_HEADER_SIZE = 32
_HEADER = struct.Struct(
    "<4sHHIIIII"
)  # magic, version, header size, length, crc32, arena hint, flags, reserved
_HEADER_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class ImageHeader:
    """The fields of a model image header (see firmware/main/core/model_image.hpp)."""

    version: int
    length: int
    crc32: int
    arena_hint: int
    flags: int = 0

    @property
    def crc32_hex(self) -> str:
        """The CRC32 as `hello` reports it: 8 lowercase hex digits."""
        return f"{self.crc32:08x}"


def arena_hint(arena_bytes: int) -> int:
    """The arena to configure on the device: the measured arena plus 20 % and 2 KiB, rounded up to 16.

    The margin covers the ESP-NN kernels' scratch buffers, which the host TFLM runtime does not allocate.
    """
    if arena_bytes <= 0:
        return 0
    raw = arena_bytes * 6 // 5 + 2048
    return (raw + 15) // 16 * 16


def pack_image(flatbuffer: bytes, arena_bytes: int = 0) -> bytes:
    """Model image = 32-byte header (magic, version, length, CRC32, arena hint, header CRC) + flatbuffer."""
    data = bytes(flatbuffer)
    if not data:
        raise HilError("model image: the flatbuffer is empty; pass the bytes of a .tflite model")
    if arena_bytes < 0 or arena_bytes > 0xFFFFFFFF:
        raise HilError(f"model image: arena size {arena_bytes} out of range; pass a byte count >= 0")
    head = _HEADER.pack(
        IMAGE_MAGIC, IMAGE_VERSION, IMAGE_HEADER_SIZE, len(data), zlib.crc32(data), arena_bytes, 0, 0
    )
    return head + _HEADER_CRC.pack(zlib.crc32(head)) + data


def parse_image(image: bytes) -> ImageHeader:
    """Validate a model image as the firmware does; raise HilError naming what is wrong."""
    if len(image) < IMAGE_HEADER_SIZE:
        raise HilError(f"model image: {len(image)} bytes is shorter than the {IMAGE_HEADER_SIZE}-byte header")
    magic, version, header_size, length, crc, arena, flags, _ = _HEADER.unpack_from(image)
    if magic != IMAGE_MAGIC:
        raise HilError(
            f"model image: bad magic {magic!r} (expected {IMAGE_MAGIC!r}); pack it with pack_image"
        )
    (header_crc,) = _HEADER_CRC.unpack_from(image, 28)
    if zlib.crc32(image[:28]) != header_crc:
        raise HilError("model image: header CRC mismatch (header corrupt); pack the model again")
    if version != IMAGE_VERSION or header_size != IMAGE_HEADER_SIZE:
        raise HilError(f"model image: format version {version} not supported (expected {IMAGE_VERSION})")
    body = image[IMAGE_HEADER_SIZE : IMAGE_HEADER_SIZE + length]
    if len(body) != length:
        raise HilError(f"model image: header says {length} bytes of flatbuffer, the image holds {len(body)}")
    actual = zlib.crc32(body)
    if actual != crc:
        raise HilError(f"model image CRC mismatch: header {crc:08x}, computed {actual:08x}")
    return ImageHeader(version=version, length=length, crc32=crc, arena_hint=arena, flags=flags)


# -- operators -------------------------------------------------------------------------------------------
def op_resolver_methods(path: Path = OPS_FILE) -> dict[str, str]:
    """Operator name -> MicroMutableOpResolver method, as the firmware registers them (main/ops.txt)."""
    ops: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
    except OSError as exc:
        raise HilError(f"{path}: cannot read the firmware's operator list ({exc.strerror})") from None
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2 or not parts[1].startswith("Add"):
            raise HilError(f"{path}:{number}: expected 'OP_NAME AddMethod', got {line.strip()!r}")
        ops[parts[0]] = parts[1]
    return ops


def supported_ops(path: Path = OPS_FILE) -> frozenset[str]:
    """The operators the benchmark firmware can run."""
    return frozenset(op_resolver_methods(path))


def check_ops(ops: Iterable[str], source: str = "model", path: Path = OPS_FILE) -> None:
    """Raise HilError naming the first operator the firmware's op resolver lacks (before any flashing)."""
    known = supported_ops(path)
    missing = [op for op in dict.fromkeys(ops) if op not in known]
    if missing:
        raise HilError(
            f"{source}: operator {missing[0]} is not in the firmware's op resolver"
            + (f" (also: {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f"; add it to {path.name} and rebuild, or drop the variant"
        )


def pack_model(
    model: bytes | str | Path, *, arena_bytes: int | None = None, source: str | None = None
) -> bytes:
    """Check a .tflite model's operators against the firmware and pack it into a model image.

    `arena_bytes`: the factory's measured arena (models.artifacts); None measures it with the TFLM runtime.
    """
    from models.tflite_file import read_model

    if isinstance(model, str | Path):
        path = Path(model)
        source = source or path.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise HilError(f"{path}: cannot read the model ({exc.strerror}); pass a .tflite file") from None
    else:
        data = bytes(model)
        source = source or "model"
    check_ops(read_model(data, source=source).ops, source)
    if arena_bytes is None:
        from models.tflm import min_arena_bytes

        arena_bytes = min_arena_bytes(data)
    return pack_image(data, arena_hint(arena_bytes))


def resolve_variant(variant: str, models_dir: Path) -> tuple[bytes, int | None, str]:
    """A variant of the factory folder (models.artifacts, sha256-checked) or a .tflite path -> (model, arena, name).

    The arena is the factory's measured one (None for a bare .tflite: pack_model then measures it).
    """
    from models.artifacts import is_artifact_folder, load_artifacts

    path = Path(variant)
    if path.suffix == ".tflite" and path.exists():
        try:
            return path.read_bytes(), None, path.stem
        except OSError as exc:
            raise HilError(f"{path}: cannot read the model ({exc.strerror})") from None
    if not is_artifact_folder(models_dir):
        raise HilError(f"variant {variant!r}: neither a .tflite file nor a variant of {models_dir} (no factory "
                       f"output there); run `hil models build --out {models_dir}` first or pass a .tflite path")
    art = load_artifacts(models_dir)[variant]
    if not art.tflm_ok:
        raise HilError(f"variant {variant!r} does not run on TFLM: {art.tflm_error}")
    return art.model_bytes(), art.arena_bytes, art.name


def embedded_model_source(image: bytes, out_dir: Path) -> Path:
    """Write the image as an `alignas(16)` C array (`hil_model_image.cc/.h`) for the embedded build mode."""
    from models.export import write_c_source

    parse_image(image)
    _, source = write_c_source(image, Path(out_dir), "hil_model_image")
    return source


# -- partition table -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Partition:
    """One partition table entry."""

    label: str
    type: str  # "app" | "data" | a number
    subtype: str
    offset: int
    size: int


_PART_ENTRY = struct.Struct("<2sBBII16sI")
_PART_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_TYPES = {"app": 0x00, "data": 0x01}


def _int(text: str, where: str) -> int:
    text = text.strip()
    try:
        if text[-1:].upper() in ("K", "M"):
            return int(text[:-1], 0) * (1024 if text[-1].upper() == "K" else 1024 * 1024)
        return int(text, 0)
    except (ValueError, IndexError):
        raise HilError(f"{where}: {text!r} is not a size or offset (use 0x10000, 64K or 1M)") from None


def read_partition_csv(path: Path = PARTITIONS_CSV) -> list[Partition]:
    """Parse an ESP-IDF partitions.csv (offsets may be left empty: filled in as gen_esp32part does)."""
    out: list[Partition] = []
    offset = 0x9000  # after the partition table at 0x8000
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        cols = [c.strip() for c in text.split(",")]
        if len(cols) < 5:
            raise HilError(f"{path}:{number}: expected 'name, type, subtype, offset, size', got {text!r}")
        name, ptype, subtype, off, size = cols[:5]
        align = 0x10000 if ptype == "app" else 0x1000
        start = _int(off, f"{path}:{number}") if off else (offset + align - 1) // align * align
        length = _int(size, f"{path}:{number}")
        out.append(Partition(name, ptype, subtype, start, length))
        offset = start + length
    return out


def read_partition_bin(data: bytes) -> list[Partition]:
    """Parse a binary partition table (`build/partition_table/partition-table.bin`)."""
    out: list[Partition] = []
    for pos in range(0, len(data) - _PART_ENTRY.size + 1, _PART_ENTRY.size):
        magic, ptype, subtype, offset, size, label, _flags = _PART_ENTRY.unpack_from(data, pos)
        if magic == _MD5_MAGIC or data[pos : pos + 32] == b"\xff" * 32:
            break
        if magic != _PART_MAGIC:
            raise HilError(
                f"partition table: bad entry magic {magic.hex()} at byte {pos}; is this a partition table?"
            )
        names = {v: k for k, v in _TYPES.items()}
        out.append(
            Partition(
                label.rstrip(b"\0").decode("ascii", "replace"),
                names.get(ptype, hex(ptype)),
                hex(subtype),
                offset,
                size,
            )
        )
    return out


def model_partition(build_dir: Path | None = None, csv: Path = PARTITIONS_CSV) -> Partition:
    """The `model` partition: from the build's partition-table.bin when there is one, else partitions.csv."""
    table = Path(build_dir) / "partition_table" / "partition-table.bin" if build_dir else None
    parts = read_partition_bin(table.read_bytes()) if table and table.exists() else read_partition_csv(csv)
    for p in parts:
        if p.label == MODEL_PARTITION:
            return p
    source = table if table and table.exists() else csv
    raise HilError(f"{source}: no '{MODEL_PARTITION}' partition; use firmware/partitions.csv")


def check_fits(image: bytes, partition: Partition, defined_in: str = "firmware/partitions.csv") -> None:
    """Refuse an image larger than the partition, naming both sizes and the file that sets the partition."""
    if len(image) > partition.size:
        raise HilError(
            f"model image is {len(image)} bytes, the '{partition.label}' partition holds "
            f"{partition.size} bytes; enlarge it in {defined_in} or pick a smaller variant"
        )


# -- serial ports ---------------------------------------------------------------------------------------
def serial_ports() -> list[str]:
    """The serial ports pyserial sees."""
    from serial.tools import list_ports

    return sorted(p.device for p in list_ports.comports())


def check_port(port: str) -> None:
    """Raise HilError listing the ports pyserial sees when `port` does not exist."""
    if "://" in port or Path(port).exists():
        return
    ports = serial_ports()
    seen = ", ".join(ports) if ports else "none"
    raise HilError(f"serial port {port} not found (ports seen: {seen}); plug the board in or pass --port")


# -- ESP-IDF build ----------------------------------------------------------------------------------------
IDF_INSTALL_HINT = (
    "install ESP-IDF >= 5.1 (https://docs.espressif.com/projects/esp-idf/en/stable/esp32/get-started/) "
    "and run '. $IDF_PATH/export.sh' in this shell"
)


def idf_missing_reason(env: dict[str, str] | None = None) -> str | None:
    """Why the ESP-IDF toolchain cannot be used here (None when idf.py and IDF_PATH are both present)."""
    env = dict(os.environ) if env is None else env
    if not env.get("IDF_PATH"):
        return f"ESP-IDF not found: IDF_PATH is not set; {IDF_INSTALL_HINT}"
    if not shutil.which("idf.py", path=env.get("PATH")):
        return f"ESP-IDF not found: idf.py is not on PATH; {IDF_INSTALL_HINT}"
    return None


def require_idf(env: dict[str, str] | None = None) -> None:
    """Raise HilError saying what to install when ESP-IDF is missing."""
    reason = idf_missing_reason(env)
    if reason:
        raise HilError(reason)


def _source_files(firmware_dir: Path) -> Iterator[Path]:
    skip = {"build", "managed_components", "host", "__pycache__"}
    for path in sorted(Path(firmware_dir).rglob("*")):
        rel = path.relative_to(firmware_dir).parts
        if (
            path.is_file()
            and not any(p in skip or p.startswith("build") for p in rel[:-1])
            and rel[0] != "README.md"
        ):
            if path.name in ("dependencies.lock", "sdkconfig", "sdkconfig.old") or path.name.startswith(
                "build"
            ):
                continue
            yield path


def source_hash(target: str, firmware_dir: Path = FIRMWARE_DIR, extra: bytes = b"") -> str:
    """Hash of everything a firmware build depends on here: sources, sdkconfig defaults, target, IDF path."""
    h = hashlib.sha256()
    h.update(f"target={target}\nidf={os.environ.get('IDF_PATH', '')}\n".encode())
    for path in _source_files(firmware_dir):
        h.update(str(path.relative_to(firmware_dir)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(extra)
    return h.hexdigest()


def build_command(
    target: str,
    build_dir: Path,
    *,
    firmware_dir: Path = FIRMWARE_DIR,
    ccache: bool | None = None,
    embedded_source: Path | None = None,
    extra_defaults: list[Path] | None = None,
) -> list[str]:
    """The `idf.py` command line of one build: own build dir and SDKCONFIG per target (parallel-safe)."""
    if target not in TARGETS:
        raise HilError(f"target {target!r} not supported; use one of: {', '.join(TARGETS)}")
    build_dir = Path(build_dir).resolve()
    firmware_dir = Path(firmware_dir).resolve()
    if ccache is None:
        ccache = shutil.which("ccache") is not None
    cmd = [
        "idf.py", "-C", str(firmware_dir), "-B", str(build_dir),
        "-D", f"IDF_TARGET={target}",
        "-D", f"SDKCONFIG={build_dir / 'sdkconfig'}",
        "-D", "SDKCONFIG_DEFAULTS=" + ";".join(
            str(p) for p in [firmware_dir / "sdkconfig.defaults", *(extra_defaults or [])]
        ),
    ]  # fmt: skip
    if embedded_source is not None:
        cmd += ["-D", f"HIL_EMBEDDED_MODEL={Path(embedded_source).resolve()}"]
    cmd.append("--ccache" if ccache else "--no-ccache")
    cmd.append("build")
    return cmd


@dataclass(frozen=True)
class BuildResult:
    """A finished (or cached) firmware build."""

    target: str
    build_dir: Path
    source_hash: str
    cached: bool
    command: list[str] = field(default_factory=list)


STAMP_NAME = "hil-build.json"


def build(
    target: str = "esp32",
    *,
    firmware_dir: Path = FIRMWARE_DIR,
    build_root: Path = Path("build"),
    embed_image: bytes | None = None,
    console_baud: int = 115200,
    force: bool = False,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> BuildResult:
    """Build the firmware for `target` once per source hash; later calls return the cached build.

    `embed_image`: build the embedded-model variant with this model image in the app. `console_baud`:
    the protocol UART's baud (921600 for accuracy runs). Each variant gets its own build dir.
    """
    require_idf()
    name = target + ("-embedded" if embed_image is not None else "")
    name += f"-{console_baud}" if console_baud != 115200 else ""
    build_dir = (Path(build_root) / name).resolve()
    extra = hashlib.sha256(embed_image).digest() if embed_image is not None else b""
    extra += f"baud={console_baud}".encode()
    digest = source_hash(target, firmware_dir, extra)
    stamp = build_dir / STAMP_NAME
    with file_lock(Path(build_root).resolve() / f".{name}.lock"):
        if not force and stamp.exists() and (build_dir / "flasher_args.json").exists():
            try:
                if json.loads(stamp.read_text()).get("source_hash") == digest:
                    return BuildResult(target, build_dir, digest, cached=True)
            except ValueError:
                pass
        embedded = None
        if embed_image is not None:
            embedded = embedded_model_source(embed_image, build_dir / "embedded")
        defaults = []
        if console_baud != 115200:
            defaults.append(build_dir / "sdkconfig.baud")
            build_dir.mkdir(parents=True, exist_ok=True)
            defaults[0].write_text(f"CONFIG_ESP_CONSOLE_UART_BAUDRATE={int(console_baud)}\n")
        cmd = build_command(
            target, build_dir, firmware_dir=firmware_dir, embedded_source=embedded, extra_defaults=defaults
        )
        proc = run(cmd, cwd=str(firmware_dir), capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise HilError(f"firmware build for {target} failed (exit {proc.returncode}): {tail}")
        stamp.write_text(json.dumps({"source_hash": digest, "target": target, "command": cmd}))
        return BuildResult(target, build_dir, digest, cached=False, command=cmd)


# -- flashing ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlashPlan:
    """What `idf.py flash` would write: (offset, file) pairs and flash settings from flasher_args.json."""

    chip: str
    files: list[tuple[int, Path]]
    flash_mode: str = "keep"
    flash_size: str = "keep"
    flash_freq: str = "keep"

    @property
    def total_bytes(self) -> int:
        """Bytes the app flash writes (before compression)."""
        return sum(p.stat().st_size for _, p in self.files)


def flash_plan(build_dir: Path) -> FlashPlan:
    """Read `flasher_args.json` of an ESP-IDF build (pytest-embedded-idf's `dut` flashes from it too)."""
    path = Path(build_dir) / "flasher_args.json"
    try:
        args = json.loads(path.read_text())
    except OSError:
        raise HilError(f"{path} not found; build the firmware first (hil firmware build)") from None
    except ValueError as exc:
        raise HilError(f"{path}: not valid JSON ({exc}); rebuild the firmware") from None
    files = sorted((int(off, 0), Path(build_dir) / name) for off, name in args.get("flash_files", {}).items())
    missing = [str(p) for _, p in files if not p.exists()]
    if not files or missing:
        raise HilError(
            f"{path}: flash files missing ({', '.join(missing) or 'none listed'}); rebuild the firmware"
        )
    settings = args.get("flash_settings", {})
    return FlashPlan(
        chip=args.get("extra_esptool_args", {}).get("chip", "auto"),
        files=files,
        flash_mode=settings.get("flash_mode", "keep"),
        flash_size=settings.get("flash_size", "keep"),
        flash_freq=settings.get("flash_freq", "keep"),
    )


Writer = Callable[[str, list[tuple[int, bytes]], int, dict[str, str]], None]


def esptool_write(port: str, regions: list[tuple[int, bytes]], baud: int, settings: dict[str, str]) -> None:
    """Write (offset, bytes) regions with esptool v5's Python API, then hard-reset the chip."""
    from esptool.cmds import attach_flash, detect_chip, reset_chip, run_stub, write_flash
    from esptool.util import FatalError

    try:
        with detect_chip(port) as esp:
            esp = run_stub(esp)
            if baud != esp.ESP_ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
            write_flash(esp, regions, **settings)
            reset_chip(esp, "hard-reset")
    except (FatalError, OSError) as exc:
        raise HilError(f"flashing via {port} failed: {exc}") from None


def flash_app(
    port: str, build_dir: Path, *, baud: int = APP_FLASH_BAUD, writer: Writer = esptool_write
) -> int:
    """Flash bootloader, partition table and app of a build; return the bytes written."""
    check_port(port)
    plan = flash_plan(build_dir)
    regions = [(off, p.read_bytes()) for off, p in plan.files]
    settings = {"flash_mode": plan.flash_mode, "flash_size": plan.flash_size, "flash_freq": plan.flash_freq}
    writer(port, regions, baud, settings)
    return sum(len(b) for _, b in regions)


def query_hello(port: str, baud: int = 115200, timeout_s: float = 5.0) -> dict[str, Any]:
    """The device's `hello` reply object (also when it reports E_MODEL), read at the console's `baud`.

    `baud` is the board's protocol UART (`hil firmware build --baud`), not the flashing baud. Goes through
    `hil.protocol.DutClient`: a boot log or a `hil-ready` after the flash's hard reset is resynchronised.
    """
    from hil.protocol import DutClient
    from hil.wire import DEVICE_DEADLINE_S

    client = DutClient(port, baudrate=baud, margin_s=max(timeout_s - DEVICE_DEADLINE_S, 0.0))
    with client:
        assert client.hello_reply is not None
        return client.hello_reply


def flash_model(
    port: str,
    image: bytes,
    *,
    partition: Partition | None = None,
    build_dir: Path | None = None,
    baud: int = MODEL_FLASH_BAUD,
    writer: Writer = esptool_write,
    hello: Callable[[], dict[str, Any]] | None = None,
    console_baud: int = 115200,
) -> str:
    """Write a model image into the model partition only, then check `hello`'s CRC; return the CRC.

    `baud` is esptool's flashing baud; `console_baud` the board's protocol UART, at which `hello` is
    asked. A CRC mismatch is retried once; a second mismatch raises HilError carrying both CRCs.
    """
    header = parse_image(image)
    partition = partition or model_partition(build_dir)
    check_fits(image, partition)
    check_port(port)
    ask = hello or (lambda: query_hello(port, baud=console_baud))
    seen = ""
    for _attempt in range(2):
        writer(port, [(partition.offset, image)], baud, {})
        reply = ask()
        seen = str((reply.get("model") or {}).get("crc32", "none"))
        if seen == header.crc32_hex:
            return seen
        detail = f" ({reply.get('error')})" if reply.get("error") else ""
        seen += detail
    raise HilError(
        f"model flash not verified: image CRC32 {header.crc32_hex}, device reports {seen} after a retry; "
        "check the partition table matches the build"
    )


def transfer_seconds(nbytes: int, baud: int, *, compress_ratio: float = 1.0) -> float:
    """Estimated serial transfer time: 10 bits per byte (8N1) of the compressed data; no sync or erase."""
    return nbytes * compress_ratio * 10 / baud


# -- size report ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SizeReport:
    """Flash, DRAM and IRAM use of an app from `esp-idf-size --format json2` (bytes; free None if unknown)."""

    flash_used: int
    flash_free: int | None
    dram_used: int
    dram_free: int | None
    iram_used: int
    iram_free: int | None
    regions: dict[str, dict[str, int]]


def parse_size_json2(report: str | dict[str, Any], *, app_partition_size: int | None = None) -> SizeReport:
    """Sum esp-idf-size json2 regions: "Flash*" -> flash, DRAM/DIRAM -> dram, IRAM -> iram.

    json2 leaves the flash total at 0 on some chips; `app_partition_size` then gives the free flash.
    """
    if isinstance(report, str):
        start = report.find("{")
        try:
            report = json.loads(report[start:]) if start >= 0 else None
        except ValueError:
            report = None
    layout = report.get("layout") if isinstance(report, dict) else None
    if not isinstance(layout, list):
        raise HilError(
            "size report: not esp-idf-size json2 output (no 'layout' list); run idf.py size --format json2"
        )
    regions: dict[str, dict[str, int]] = {}
    for entry in layout:
        try:
            used, total = int(entry["used"]), int(entry.get("total", 0))
        except (KeyError, TypeError, ValueError):
            raise HilError(f"size report: region {entry!r} lacks integer 'used'/'total'") from None
        regions[str(entry.get("name"))] = {"used": used, "total": total}

    def tally(match: Callable[[str], bool]) -> tuple[int, int | None]:
        hits = [r for n, r in regions.items() if match(n)]
        used = sum(r["used"] for r in hits)
        total = sum(r["total"] for r in hits)
        return used, (total - used if total > 0 else None)

    flash_used, flash_free = tally(lambda n: n.startswith("Flash"))
    if flash_free is None and app_partition_size:
        flash_free = app_partition_size - flash_used
    dram_used, dram_free = tally(lambda n: n in ("DRAM", "DIRAM"))
    iram_used, iram_free = tally(lambda n: n == "IRAM")
    return SizeReport(flash_used, flash_free, dram_used, dram_free, iram_used, iram_free, regions)


def size_report(build_dir: Path) -> SizeReport:
    """Run `idf.py size --format json2` on a build and parse it."""
    require_idf()
    build_dir = Path(build_dir).resolve()
    cmd = ["idf.py", "-C", str(FIRMWARE_DIR), "-B", str(build_dir), "size", "--format", "json2"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HilError(f"idf.py size failed (exit {proc.returncode}): {proc.stderr.strip()[-200:]}")
    app = next((p for p in read_partition_csv() if p.type == "app"), None)
    return parse_size_json2(proc.stdout, app_partition_size=app.size if app else None)
