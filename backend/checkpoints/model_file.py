"""Aware3D's model files: .safetensors with the config and provenance as JSON in the header.

Tensors are stored under the official state-dict names, so a converted EG3D checkpoint and one trained by
Aware3D look the same. The header's ``aware3d`` entry holds ``{format_version, kind, config, provenance}``.
Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from backend.errors import Aware3DError
from backend.fileio import atomic_path

FORMAT_VERSION = 1
METADATA_KEY = "aware3d"
# safetensors sorts tensors by name; the state-dict order is kept here so listings read like state_dict().
ORDER_KEY = "aware3d.key_order"
KINDS = ("gan", "diffusion-uncond", "diffusion-cond", "depth", "avatar", "features", "encoder")


@dataclass
class ModelHeader:
    kind: str
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps({"format_version": self.format_version, "kind": self.kind, "config": self.config,
                           "provenance": self.provenance}, sort_keys=True)


def save_model(
    path: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    kind: str,
    config: dict[str, Any],
    provenance: dict[str, Any] | None = None,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors (in the given order) and the header atomically."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    header = ModelHeader(kind=kind, config=config, provenance=provenance or {})
    metadata = {METADATA_KEY: header.to_json(), ORDER_KEY: json.dumps(list(tensors)),
                **(extra_metadata or {})}
    # safetensors refuses shared or non-contiguous storage; copies keep the saved values exact.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def _open(path: Path):  # type: ignore[no-untyped-def]
    if not path.is_file():
        raise Aware3DError(f"model file not found: {path}", "check the path, or run 'aware3d models'")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise Aware3DError(f"{path.name} is not a readable .safetensors file ({exc})",
                           "official .pkl snapshots must be converted first: aware3d convert IN.pkl "
                           "OUT.safetensors") from None


def read_header(path: str | os.PathLike[str]) -> ModelHeader:
    """Read the header only (fast; no tensor data is loaded)."""
    p = Path(path)
    with _open(p) as f:
        meta = f.metadata() or {}
    if METADATA_KEY not in meta:
        raise Aware3DError(f"{p.name} has no Aware3D header",
                           "it was not written by Aware3D; convert official checkpoints with aware3d convert")
    try:
        data = json.loads(meta[METADATA_KEY])
        header = ModelHeader(kind=data["kind"], config=data["config"], provenance=data.get("provenance", {}),
                             format_version=int(data["format_version"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise Aware3DError(f"{p.name} has a damaged Aware3D header ({exc})", "re-export or re-convert it") \
            from None
    if header.format_version > FORMAT_VERSION:
        raise Aware3DError(f"{p.name} uses model format {header.format_version}, newer than this Aware3D "
                           f"({FORMAT_VERSION})", "update Aware3D")
    return header



def read_header_of_kind(path: str | os.PathLike[str], kind: str, what: str, hint: str) -> ModelHeader:
    """The header of a file that must be of ``kind`` (one clear error line otherwise: "X.safetensors is a gan
    model, not <what>", with ``hint`` saying how to get the right one)."""
    header = read_header(path)
    if header.kind != kind:
        raise Aware3DError(f"{Path(path).name} is a {header.kind} model, not {what}", hint)
    return header

def _ordered_keys(f) -> list[str]:  # type: ignore[no-untyped-def]
    keys = list(f.keys())
    try:
        order = json.loads((f.metadata() or {}).get(ORDER_KEY, "[]"))
    except ValueError:
        order = []
    if sorted(order) == sorted(keys):
        return order
    return keys


def load_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors, in the order they were saved (the state-dict order)."""
    p = Path(path)
    with _open(p) as f:
        return {k: f.get_tensor(k).to(device) for k in _ordered_keys(f)}


def tensor_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Key → shape without loading the data."""
    p = Path(path)
    with _open(p) as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in _ordered_keys(f)}


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
