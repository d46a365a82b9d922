"""Entry point of the ``aware3d`` command.

Each sub-command lives in its own module in this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code. Heavy
imports (torch) happen inside those callables so that ``aware3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from backend import __version__
from backend.errors import Aware3DError

# Modules (in backend.cli) that provide sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "sample_cmd",
    "models_cmd",
    "info_cmd",
    "convert_cmd",
    "mesh_cmd",
    "serve_cmd",
    "extension_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aware3d",
        description="Aware3D: 3D-aware generative avatars (EG3D / Mimic3D compatible).",
    )
    parser.add_argument("--version", action="version", version=f"aware3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"backend.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name == f"backend.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Aware3DError as exc:
        print(f"aware3d: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aware3d: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `aware3d info --keys | head`: the reader went away, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
