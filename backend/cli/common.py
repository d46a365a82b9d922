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


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N``: every compute command has it (checked and applied by :func:`use_threads`)."""
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for PyTorch, e.g. one less than the cores to leave one for Blender "
                        "(default: PyTorch's choice, one per core)")


def check_threads(value: int | None, what: str = "--threads") -> int | None:
    """``--threads`` within ``BOUNDS["threads"]`` (None: PyTorch's choice); else one line, before any work."""
    from backend.validate import optional

    return optional("threads", value, what, f"at least 1, e.g. {what} 2, or leave it out for one per core")


def use_threads(args: argparse.Namespace) -> int | None:
    """Check ``args.threads`` and apply it to this process (intra-op and, when still possible, inter-op
    threads); returns it. Call it once the other arguments are checked, before any model is loaded."""
    threads = check_threads(getattr(args, "threads", None))
    if threads is not None:
        from backend.devices import set_cpu_threads

        set_cpu_threads(threads)
    return threads


def progress(total: int, desc: str, unit: str = "it") -> Any:
    """A progress bar on stderr (quiet when stderr is not a terminal and AWARE3D_PROGRESS=0)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if sys.stderr.isatty() else False, mininterval=0.5)
