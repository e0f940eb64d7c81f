"""`hil models inspect`: what a .tflite file holds and whether TFLM can run it (any model, not only ours)."""

from __future__ import annotations

from pathlib import Path

from models.tflite_file import read_model_file
from models.tflm import TflmError, min_arena_bytes, reported_arena_bytes, tflm_error


def inspect_model(path: str | Path) -> dict:
    """Size, operators, TFLM compatibility, minimum arena and per-tensor quantization of a .tflite file."""
    parsed = read_model_file(path)
    data = Path(path).read_bytes()
    reason = tflm_error(data)
    info = {
        "file": str(path),
        "size_bytes": parsed.size_bytes,
        "ops": parsed.ops,
        "tflm_ok": reason is None,
        "tflm_error": reason or "",
        "arena_bytes": None,
        "arena_reported_bytes": None,
        "arena_probe_crashes": [],
        "sparsity": parsed.sparsity(),
        "tensors": [
            {
                "index": t.index,
                "name": t.name,
                "shape": list(t.shape),
                "dtype": t.dtype,
                "scale": t.scale,
                "zero_point": t.zero_point,
                "channels": len(t.scales),
                "role": "input" if t in parsed.inputs else "output" if t in parsed.outputs else
                        "constant" if t.is_constant else "activation",
            }
            for t in parsed.tensors
        ],
    }  # fmt: skip
    if reason is None:
        try:
            info["arena_bytes"] = min_arena_bytes(data, crashes=info["arena_probe_crashes"])
            info["arena_reported_bytes"] = reported_arena_bytes(data)
        except TflmError as exc:
            info["tflm_ok"], info["tflm_error"] = False, str(exc)
    return info


def format_inspection(info: dict) -> str:
    """Human-readable report of `inspect_model`'s result."""
    lines = [
        f"file        {info['file']}",
        f"size        {info['size_bytes']:,} bytes ({info['size_bytes'] / 1024:.1f} KB)",
        f"sparsity    {info['sparsity']:.1%} of conv/dense weights are zero",
        f"operators   {len(info['ops'])}: {' '.join(info['ops'])}",
    ]
    if info["tflm_ok"]:
        lines.append(f"TFLM        runs; minimum arena {info['arena_bytes']:,} bytes "
                     f"(allocator report {info['arena_reported_bytes']:,} bytes)")  # fmt: skip
        for size, how in info["arena_probe_crashes"]:
            lines.append(f"            note: TFLM crashed ({how}) allocating it in {size:,} bytes; probed in a "
                         "child process and counted as too small")
    else:
        lines.append(f"TFLM        NOT deployable: {info['tflm_error']}")
    lines.append("tensors (index, role, dtype, shape, scale, zero point, name):")
    for t in info["tensors"]:
        q = f"{t['scale']:.6g}  zp {t['zero_point']}" if t["scale"] else "-"
        if t["channels"] > 1:
            q = f"per-channel ({t['channels']} scales, first {t['scale']:.6g})  zp {t['zero_point']}"
        lines.append(
            f"  {t['index']:>3} {t['role']:<10} {t['dtype']:<8} {str(t['shape']):<18} {q}  {t['name']}"
        )
    return "\n".join(lines)
