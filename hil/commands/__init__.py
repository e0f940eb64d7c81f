"""CLI subcommands: each module has `register(subparsers)` and sets `func(args) -> int` on its parser."""
