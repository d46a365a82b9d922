"""The command-line driver shared by ``aware3d`` and ``aware3d-train``.

Each program lists modules that provide sub-commands (``register(subparsers)`` adds a parser and sets
``func``); a module that is not there is skipped. Errors a user can cause print one line on stderr (what went
wrong, what to do) with exit code 2, never a traceback; so does an operating-system error (a full disk, a
folder that turned read-only) that strikes after the outputs were checked.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from backend import __version__
from backend.errors import Aware3DError

Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]


def build_parser(prog: str, description: str, modules: Sequence[str],
                 local: dict[str, Register] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        if local and name in local:
            local[name](sub)
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name and name.startswith(exc.name):
                continue
            raise
        module.register(sub)
    return parser


def run(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
        interrupted: str = "interrupted") -> int:
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Aware3DError as exc:
        print(f"{prog}: error: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `aware3d info --keys | head`: the reader went away, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if not exc.strerror:  # not the operating system's refusal: a bug, keep its traceback
            raise
        # Outputs are checked before any work (backend.validate), but a disk can fill up or a folder change
        # while a command runs: still one line.
        where = f" {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: cannot write or read{where}: {exc.strerror} (check the free disk space and the "
              "permissions of the output folder)", file=sys.stderr)
        return 2
