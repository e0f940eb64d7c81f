"""Per-variant switch cost: model-partition write vs. a full app flash, at 921,600 baud (estimates).

Prints a table and writes firmware/docs/switch-cost.png. Transfer time only (10 bits per byte, 8N1,
no compression): esptool's deflate and the ~1-2 s connect/stub/erase overhead are left out of both columns.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil import firmware  # noqa: E402

BAUD = 921_600
# espressif/esp-tflite-micro issue #78 (ESP-IDF 5.2, esp32s3): "micro_speech.bin binary size 0x52b40 bytes",
# "Bootloader binary size 0x5800 bytes"; the partition table is one 0xC00-byte sector image.
APP_BIN, BOOTLOADER, PART_TABLE = 0x52B40, 0x5800, 0xC00
SINE = ROOT / ".venv/lib/python3.11/site-packages/tflite_micro/python/tflite_micro/sine_float.tflite"


def main() -> None:
    models = {"sine_float (tflite-micro wheel)": SINE.stat().st_size}
    factory = ROOT / "artifacts" / "models"  # the default variants, when `hil models build` has run
    for variant in ("distilled-int8", "baseline-int8", "baseline-no_opt"):
        if (factory / f"{variant}.tflite").is_file():
            models[f"factory {variant}"] = (factory / f"{variant}.tflite").stat().st_size
    models["reference int8 (~800 KB)"] = 800 * 1024
    models["reference float32 (3200 KB)"] = 3200 * 1024
    part = firmware.model_partition()
    rows = []
    print(f"{'model':34s} {'partition write':>16s} {'s':>6s}   {'full app flash':>15s} {'s':>6s}  fits 1 MB")
    for name, size in models.items():
        image = firmware.IMAGE_HEADER_SIZE + size
        full = BOOTLOADER + PART_TABLE + APP_BIN + size  # embedded-model app: the model is in the app
        t_img, t_full = firmware.transfer_seconds(image, BAUD), firmware.transfer_seconds(full, BAUD)
        rows.append((name, image, t_img, full, t_full))
        print(f"{name:34s} {image:>16,d} {t_img:6.2f}   {full:>15,d} {t_full:6.2f}  {image <= part.size}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.2))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r[4] for r in rows], height=0.4, label="full app flash (embedded model)")
    ax.barh([i - 0.2 for i in y], [r[2] for r in rows], height=0.4, label="model partition only")
    ax.set_yticks(list(y), [r[0] for r in rows])
    ax.set_xlabel(f"estimated transfer seconds at {BAUD:,} baud (8N1, uncompressed)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = ROOT / "firmware" / "docs" / "switch-cost.png"
    fig.savefig(out, dpi=110)
    print(f"figure: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
