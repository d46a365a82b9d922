"""Arguments and helpers shared by the ``aware3d`` sub-commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_model_arg(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--model", required=required, default=None,
                   help="model name (see 'aware3d models'), a .safetensors or official .pkl path, or "
                        "random:CONFIG[:SEED] (default: the bundled default model)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


def progress(total: int, desc: str, unit: str = "it") -> Any:
    """A progress bar on stderr (quiet when stderr is not a terminal and AWARE3D_PROGRESS=0)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if sys.stderr.isatty() else False, mininterval=0.5)
