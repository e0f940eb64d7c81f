"""`hil` command line: a thin layer over the public Python API of `hil` and `models`.

User errors print one line `hil: error: ...` on stderr and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hil.errors import USER_ERRORS

# Subcommand modules under hil/commands/; each one adds its parsers with register(subparsers).
COMMAND_MODULES = ("models", "sim", "firmware", "measure", "mlperf", "lab", "results", "report", "changes")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="hil", description="TinyML hardware-in-the-loop harness")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"hil.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"hil: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"hil: error: {exc.filename}: {exc.strerror or exc}; check the path and its permissions",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hil: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
