"""Choosing the compute device."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from backend.errors import Aware3DError


def hardware_description(device: torch.device) -> str:
    """A one-line description of the compute device, for provenance and benchmark results."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise Aware3DError("CUDA was requested but no CUDA GPU is available to PyTorch",
                               "use --device cpu (or auto), or install a CUDA build of PyTorch")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise Aware3DError(f"unknown device {name!r}", "use auto, cpu or cuda")


def set_cpu_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for PyTorch in this process (None: leave PyTorch's choice, one per core).

    Sets the intra-op threads (what a CPU kernel splits across) and, when still possible, the inter-op pool
    too. ``torch.set_num_interop_threads`` may be called only once per process, and only before inter-op work
    has started; later calls (a second command run in the same process, a server that already worked) raise
    ``RuntimeError``, which is ignored here: the intra-op number is the one that costs cores. Threads started
    afterwards (the server's job worker) take the new number; call this before they start."""
    if threads is None:
        return
    if threads < 1:
        raise Aware3DError(f"CPU threads must be at least 1, got {threads}", "e.g. 2, or leave it out")
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or inter-op work has started
        torch.set_num_interop_threads(threads)
