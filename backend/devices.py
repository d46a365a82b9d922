"""Choosing the compute device."""

from __future__ import annotations

import torch

from backend.errors import Aware3DError


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
