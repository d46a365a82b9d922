# SPDX-License-Identifier: GPL-3.0-or-later
"""Attribute directions in W: the file format, finding the file for a model, and applying an edit.

A directions file (``MODEL.directions.safetensors`` beside the model, written by ``train/directions.py``)
holds one unit vector ``direction.<name>`` [w_dim] per attribute and, in the Aware3D header (kind
``directions``), for each attribute: ``step`` (how far in W one standard deviation of the attribute is, so
``amount`` counts standard deviations), the ws layers the edit applies to, how well a linear model in W
predicts the attribute on held-out samples, and what the attribute means. The header also records the
model's name and weights hash: directions belong to one model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend.checkpoints.model_file import FORMAT_VERSION, METADATA_KEY, ORDER_KEY, ModelHeader, read_header
from backend.errors import Aware3DError
from backend.fileio import atomic_path

SUFFIX = ".directions.safetensors"
KIND = "directions"


@dataclass
class Direction:
    name: str
    vector: torch.Tensor  # [w_dim], unit length
    step: float  # W distance of one standard deviation of the attribute
    layers: tuple[int, int] | None = None  # [start, end) ws layers; None: all
    quality: dict[str, float] = field(default_factory=dict)
    description: str = ""

    def meta(self) -> dict[str, Any]:
        return {"step": self.step, "layers": list(self.layers) if self.layers else None,
                "quality": self.quality, "description": self.description}


@dataclass
class DirectionSet:
    directions: dict[str, Direction]
    model: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted(self.directions)

    def get(self, name: str) -> Direction:
        if name not in self.directions:
            raise Aware3DError(f"no direction named {name!r}", f"available: {', '.join(self.names()) or 'none'}")
        return self.directions[name]


def save_directions(path: str | os.PathLike[str], ds: DirectionSet) -> Path:
    """Write a directions file atomically (safetensors + the Aware3D header, kind 'directions')."""
    from safetensors.torch import save_file

    tensors = {f"direction.{k}": d.vector.detach().float().cpu().contiguous() for k, d in ds.directions.items()}
    header = ModelHeader(kind=KIND, config={"attributes": {k: d.meta() for k, d in ds.directions.items()},
                                            "model": ds.model}, provenance=ds.provenance,
                         format_version=FORMAT_VERSION)
    out = Path(path)
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: header.to_json(), ORDER_KEY: json.dumps(list(tensors))})
    return out


def load_directions(path: str | os.PathLike[str]) -> DirectionSet:
    from backend.checkpoints.model_file import load_tensors

    p = Path(path)
    header = read_header(p)
    if header.kind != KIND:
        raise Aware3DError(f"{p.name} is a {header.kind} file, not attribute directions",
                           "learn directions with 'aware3d-train directions'")
    tensors = load_tensors(p)
    attrs = header.config.get("attributes", {})
    out = {}
    for key, meta in attrs.items():
        vec = tensors.get(f"direction.{key}")
        if vec is None:
            raise Aware3DError(f"{p.name} lists {key!r} but has no vector for it", "re-learn the directions")
        layers = meta.get("layers")
        out[key] = Direction(key, vec, float(meta["step"]), tuple(layers) if layers else None,  # type: ignore[arg-type]
                             dict(meta.get("quality", {})), str(meta.get("description", "")))
    return DirectionSet(out, dict(header.config.get("model", {})), header.provenance)


def directions_path_for(model_path: str | os.PathLike[str] | None) -> Path | None:
    """Where a model's directions live by default: ``NAME.directions.safetensors`` beside ``NAME.safetensors``."""
    if model_path is None:
        return None
    p = Path(model_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + SUFFIX)


def find_directions(explicit: str | os.PathLike[str] | None, base: dict[str, Any]) -> DirectionSet:
    """The directions for an avatar's base model: ``explicit``, else the file beside the base model."""
    cand = Path(explicit) if explicit else directions_path_for(base.get("path"))
    if cand is None or not cand.is_file():
        where = f" ({cand})" if cand is not None else ""
        raise Aware3DError(f"no attribute directions for model {base.get('name')!r}{where}",
                           "learn them with 'aware3d-train directions --model M --features F' or pass "
                           "--directions FILE")
    ds = load_directions(cand)
    want, have = ds.model.get("state_sha256"), base.get("state_sha256")
    if want and have and want != have:
        raise Aware3DError(f"{cand.name} was learned for other weights than this avatar's model",
                           "learn directions for this model, or pass the right --directions file")
    return ds


def apply_direction(ws: torch.Tensor, direction: Direction, amount: float) -> torch.Tensor:
    """ws + amount · step · vector on the direction's layers (amount in standard deviations)."""
    out = ws.clone()
    v = direction.vector.to(ws.device, ws.dtype) * (float(amount) * direction.step)
    sl = slice(*direction.layers) if direction.layers else slice(None)
    out[:, sl] = out[:, sl] + v
    return out
