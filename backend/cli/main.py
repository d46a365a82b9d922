"""Entry point of the ``aware3d`` command.

Each sub-command lives in its own module in this package and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code. Heavy
imports (torch) happen inside those callables so that ``aware3d --help`` stays fast. The driver
(``backend.cli.driver``) is shared with ``aware3d-train``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from backend.cli import driver

# Modules (in backend.cli) that provide sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "sample_cmd",
    "models_cmd",
    "info_cmd",
    "convert_cmd",
    "mesh_cmd",
    "texture_cmd",
    "views_cmd",
    "invert_cmd",
    "serve_cmd",
    "extension_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    return driver.build_parser("aware3d", "Aware3D: 3D-aware generative avatars (EG3D / Mimic3D compatible).",
                               [f"backend.cli.{name}" for name in COMMAND_MODULES])


def main(argv: Sequence[str] | None = None) -> int:
    return driver.run("aware3d", build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
