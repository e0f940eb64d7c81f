"""`hil models build|inspect|list`: the model-variant factory from the command line."""

from __future__ import annotations

import argparse
import sys

DISPLAY = {  # metrics column -> (header with unit, formatter)
    "variant": ("variant", str),
    "size_bytes": ("size_KB", lambda v: f"{v / 1024:.1f}"),
    "gzip_bytes": ("gzip_KB", lambda v: f"{v / 1024:.1f}"),
    "compression_ratio": ("ratio_x", lambda v: f"{v:.2f}"),
    "sparsity": ("sparsity_%", lambda v: f"{100 * v:.1f}"),
    "accuracy": ("acc_%", lambda v: f"{100 * v:.2f}"),
    "accuracy_tflm": ("acc_tflm_%", lambda v: "-" if v != v else f"{100 * v:.2f}"),
    "auc_macro": ("auc", lambda v: f"{v:.4f}"),
    "agreement_vs_float": ("agree_%", lambda v: f"{100 * v:.1f}"),
    "cosine_vs_float": ("cosine", lambda v: f"{v:.4f}"),
    "arena_bytes": ("arena_KB", lambda v: "-" if v is None or v != v else f"{v / 1024:.1f}"),
    "host_latency_ms": ("host_ms", lambda v: f"{v:.2f}"),
    "tflm_ok": ("tflm", lambda v: "ok" if v else "NO"),
}


def format_table(table) -> str:
    """The metrics table as printed by `hil models build`, with units in the headers."""
    import pandas as pd

    shown = pd.DataFrame({DISPLAY[c][0]: table[c].map(DISPLAY[c][1]) for c in DISPLAY if c in table.columns})
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        return shown.to_string(index=False)


def _build(args: argparse.Namespace) -> int:
    from models.factory import build

    table = build(
        args.config,
        args.out,
        args.data,
        args.only,
        cache_dir=args.cache,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(format_table(table))
    not_deployable = table.loc[~table["tflm_ok"].astype(bool), ["variant", "tflm_error"]]
    for _, row in not_deployable.iterrows():
        print(f"not deployable on TFLM: {row['variant']}: {row['tflm_error']}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hil.profiling import estimate
    from hil.profiling.layers import HEADERS
    from hil.report.tables import Table, text_table
    from models.inspection import format_inspection, inspect_model

    print(format_inspection(inspect_model(args.file)))
    prof = estimate(Path(args.file).read_bytes(), chip=args.chip, kernels=args.kernels)
    print()
    print(text_table(Table(f"Per-layer estimate of the virtual board (simulated: {prof.source})", list(HEADERS),
                           prof.rows())))
    return 0


def _list(args: argparse.Namespace) -> int:
    from models.registry import load_registry

    registry = load_registry(args.config)
    for v in registry.variants():
        print(f"{v.name:<24} recipe {v.recipe:<12} ({registry.config.recipes[v.recipe].kind}), mode {v.mode}")
    for alias, target in registry.config.aliases.items():
        print(f"{alias:<32} -> {target}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `hil models ...` to the CLI."""
    from models.registry import DEFAULT_CONFIG

    models = sub.add_parser("models", help="build and inspect model variants")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    build = msub.add_parser("build", help="train, convert and measure every variant (cached)")
    build.add_argument("--config", default=str(DEFAULT_CONFIG), help="variant matrix (default: %(default)s)")
    build.add_argument("--out", default="artifacts/models", help="output folder (default: %(default)s)")
    build.add_argument("--data", default="digits", help="digits | svhn:PATH | mnist:PATH | fashion:PATH")
    build.add_argument("--only", nargs="+", metavar="NAME", help="variants, recipes or reference-study names")
    build.add_argument("--cache", default=None, help="cache folder (default: OUT/../cache)")
    build.set_defaults(func=_build)

    insp = msub.add_parser(
        "inspect", help="size, ops, TFLM compatibility, arena and quantization of a .tflite"
    )
    insp.add_argument("file")
    insp.add_argument("--chip", default="esp32", choices=("esp32", "esp32s3", "esp32c3"),
                      help="chip of the virtual board's per-layer estimate (default: esp32)")
    insp.add_argument("--kernels", default="esp-nn", choices=("esp-nn", "reference"),
                      help="kernel library of the estimate (default: esp-nn)")
    insp.set_defaults(func=_inspect)

    lst = msub.add_parser("list", help="list the variants and aliases of a config")
    lst.add_argument("--config", default=str(DEFAULT_CONFIG))
    lst.set_defaults(func=_list)
