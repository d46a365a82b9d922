# SPDX-License-Identifier: GPL-3.0-or-later
"""Save and load diffusion and depth networks as Aware3D model files (safetensors + JSON header)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from backend.checkpoints.model_file import check_tensor_layout, load_tensors, save_model
from backend.diffusion.config import UNetConfig
from backend.diffusion.unet import UNet
from backend.errors import Aware3DError

FILE_KIND = {"uncond": "diffusion-uncond", "cond": "diffusion-cond", "depth": "depth"}


@dataclass
class LoadedNet:
    net: UNet
    config: UNetConfig
    provenance: dict[str, Any]
    path: Path


def save_net(path: str | os.PathLike[str], net: UNet, provenance: dict[str, Any] | None = None) -> None:
    """Write ``net`` (its config decides the file kind) atomically."""
    save_model(path, dict(net.state_dict()), FILE_KIND[net.cfg.kind], net.cfg.to_dict(), provenance or {})


def load_net(path: str | os.PathLike[str], expect: str | None = None,
             device: str | torch.device = "cpu") -> LoadedNet:
    """Load a diffusion/depth model file; ``expect`` ('uncond' | 'cond' | 'depth') checks its kind."""
    p = Path(path)
    if not p.is_file():
        raise Aware3DError(f"model file not found: {p}")
    header = check_tensor_layout(p)  # config types and ranges, tensor names and shapes: one line each
    kinds = {v: k for k, v in FILE_KIND.items()}
    if header.kind not in kinds:
        raise Aware3DError(f"{p} is a {header.kind!r} model, not a diffusion or depth network")
    cfg = UNetConfig.from_dict(header.config)
    if expect is not None and cfg.kind != expect:
        raise Aware3DError(f"{p} holds a {cfg.kind!r} network; this needs a {expect!r} one "
                           f"(e.g. aware3d-views-{expect}.safetensors)")
    net = UNet(cfg)
    net.load_state_dict(load_tensors(p))
    return LoadedNet(net.to(device).eval(), cfg, header.provenance, p)
