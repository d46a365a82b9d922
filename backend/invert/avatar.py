# SPDX-License-Identifier: GPL-3.0-or-later
"""The avatar file: an inverted photo that every command accepts in place of a seed.

``NAME.avatar.safetensors`` (design.md "Files a user sees") holds

* ``avatar.ws`` [1, L, D] (the pivot) and ``avatar.label`` [1, 25] (the photo's camera);
* ``delta.<parameter>``: tuned minus base value of every parameter stage 2 changed (or ``param.<name>``,
  the tuned values, with ``store='full'``) — never the untouched ones, so the file is at most one model big;
* optionally the stage-1 geometry needed for texture edits (``stage1.*``: the input depth, the pseudo
  cameras, their depths and fill images; ``input.image``: the framed photo);
* the Aware3D header (kind ``avatar``) with the base model's config and, in the provenance, its name, the
  spec it was loaded from, its file's SHA-256 and a SHA-256 of its tensors (so a renamed or moved base is
  still recognised, and a different one is refused), plus pose, settings, timings and metrics.

``load_avatar(path, device)`` rebuilds the tuned generator: base model + deltas.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend.checkpoints.model_file import (
    ModelHeader,
    check_tensor_layout,
    file_sha256,
    load_tensors,
    read_header,
    save_model,
)
from backend.config import GeneratorConfig
from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator

AVATAR_FORMAT = 1
AVATAR_SUFFIX = ".avatar.safetensors"
STORES = ("delta", "full")


def state_sha256(G: TriPlaneGenerator) -> str:
    """SHA-256 over the state dict (names, shapes and float32 bytes, in order): identity of the weights."""
    h = hashlib.sha256()
    for k, v in G.state_dict().items():
        t = v.detach().to("cpu", torch.float32).contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def base_identity(model: Any) -> dict[str, Any]:
    """What identifies a loaded base model (a ``registry.LoadedModel``) in an avatar's provenance."""
    G = model.generator
    path = getattr(model, "path", None)
    return {"name": model.name, "spec": str(path) if path is not None else model.name,
            "path": None if path is None else str(Path(path).resolve()),
            "file_sha256": None if path is None else file_sha256(path),
            "state_sha256": state_sha256(G), "config": G.cfg.name}


@dataclass
class AvatarData:
    """A read avatar file (tensors on CPU until :func:`load_avatar` moves them)."""

    path: Path
    header: ModelHeader
    ws: torch.Tensor
    label: torch.Tensor
    deltas: dict[str, torch.Tensor]
    full: dict[str, torch.Tensor]
    stage1: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def base(self) -> dict[str, Any]:
        return dict(self.header.provenance.get("base_model", {}))

    @property
    def config(self) -> GeneratorConfig:
        return GeneratorConfig.from_dict(self.header.config)


def tuned_tensors(G_base: TriPlaneGenerator, G_tuned: TriPlaneGenerator, store: str = "delta",
                  ) -> dict[str, torch.Tensor]:
    """The parameters stage 2 changed, as differences (``delta.*``) or values (``param.*``)."""
    if store not in STORES:
        raise ValueError(f"store must be one of {STORES}")
    base = dict(G_base.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, p in G_tuned.named_parameters():
        b = base[name].detach().to(p.device)
        if torch.equal(p.detach(), b):
            continue
        out[f"{store if store == 'delta' else 'param'}.{name}"] = (p.detach() - b if store == "delta"
                                                                   else p.detach()).float().cpu()
    return out


def save_avatar(path: str | os.PathLike[str], G_base: TriPlaneGenerator, G_tuned: TriPlaneGenerator,
                ws: torch.Tensor, label: torch.Tensor, base: dict[str, Any], provenance: dict[str, Any],
                stage1: dict[str, torch.Tensor] | None = None, store: str = "delta") -> Path:
    """Write an avatar file atomically (see the module docstring); returns the path."""
    from backend import __version__

    tensors: dict[str, torch.Tensor] = {"avatar.ws": ws.detach().float().cpu(),
                                        "avatar.label": label.detach().float().cpu().reshape(1, 25)}
    tensors.update(tuned_tensors(G_base, G_tuned, store))
    for k, v in (stage1 or {}).items():
        tensors[k if "." in k else f"stage1.{k}"] = v.detach().float().cpu().contiguous()
    prov = {"format": AVATAR_FORMAT, "base_model": base, "store": store, "aware3d": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **provenance}
    out = Path(path)
    save_model(out, tensors, kind="avatar", config=G_base.cfg.to_dict(), provenance=prov)
    return out


def read_avatar(path: str | os.PathLike[str]) -> AvatarData:
    """Read an avatar file (no base model needed); raises a one-line error for anything else."""
    p = Path(path)
    if not p.is_file():
        raise Aware3DError(f"avatar not found: {p}", "make one with 'aware3d invert PHOTO --out DIR'")
    try:
        header = read_header(p)
    except Aware3DError as exc:
        raise Aware3DError(f"{p.name} is not an avatar file ({exc.message})",
                           "pass a .avatar.safetensors made by 'aware3d invert'") from None
    if header.kind != "avatar":
        raise Aware3DError(f"{p.name} is a {header.kind} file, not an avatar",
                           "pass a .avatar.safetensors made by 'aware3d invert'")
    fmt = int(header.provenance.get("format", AVATAR_FORMAT))
    if fmt > AVATAR_FORMAT:
        raise Aware3DError(f"{p.name} uses avatar format {fmt}, newer than this Aware3D ({AVATAR_FORMAT})",
                           "update Aware3D")
    check_tensor_layout(p)  # latent, camera and tuned parameters fit the base config (one line otherwise)
    t = load_tensors(p)
    if "avatar.ws" not in t or "avatar.label" not in t:
        raise Aware3DError(f"{p.name} has no latent or camera", "re-run 'aware3d invert'")
    return AvatarData(p, header, t["avatar.ws"], t["avatar.label"],
                      {k[6:]: v for k, v in t.items() if k.startswith("delta.")},
                      {k[6:]: v for k, v in t.items() if k.startswith("param.")},
                      {k: v for k, v in t.items() if k.startswith(("stage1.", "input."))})


def resolve_base(data: AvatarData, device: torch.device | str = "cpu", model: str | None = None,
                 check: bool = True) -> Any:
    """Load the avatar's base model: ``model`` if given, else its recorded path, else its name.

    The tensors' SHA-256 must match the one recorded (a different model would give another person);
    ``check=False`` skips that for deliberate experiments.
    """
    from backend.registry import load_generator

    info = data.base
    candidates: list[str] = []
    if model:
        candidates.append(model)
    else:
        spec = str(info.get("spec") or info.get("name") or "")
        if spec.startswith("random:"):
            candidates.append(spec)
        else:
            if info.get("path") and Path(info["path"]).is_file():
                candidates.append(info["path"])
            if info.get("name"):
                candidates.append(str(info["name"]))
    if not candidates:
        raise Aware3DError(f"{data.path.name} does not say which model it was made with",
                           "pass the base model with --model")
    last: Aware3DError | None = None
    for spec in candidates:
        try:
            loaded = load_generator(spec, device)
        except Aware3DError as exc:
            last = exc
            continue
        if loaded.generator.cfg.to_dict() != data.config.to_dict():
            last = Aware3DError(f"model {loaded.name} ({loaded.generator.cfg.name}) is not the architecture "
                                f"{data.path.name} was made with ({data.config.name})",
                                f"pass the base model {info.get('name')!r} with --model")
            continue
        want = info.get("state_sha256")
        if check and want and state_sha256(loaded.generator) != want:
            last = Aware3DError(f"model {loaded.name} has other weights than the one {data.path.name} was made "
                                f"with", f"pass the original {info.get('name')!r} (weights SHA-256 "
                                f"{str(want)[:12]}…) with --model")
            continue
        return loaded
    assert last is not None
    raise Aware3DError(last.message, last.hint)


def apply_tuning(G_base: TriPlaneGenerator, data: AvatarData) -> TriPlaneGenerator:
    """A new generator: the base with the avatar's tuned parameters applied (the base is left untouched)."""
    import copy

    G = copy.deepcopy(G_base)
    params = dict(G.named_parameters())
    unknown = [k for k in (*data.deltas, *data.full) if k not in params]
    if unknown:
        raise Aware3DError(f"{data.path.name} tunes parameters the base model does not have ({unknown[0]})",
                           "the avatar belongs to another architecture")
    with torch.no_grad():
        for k, d in data.deltas.items():
            params[k].add_(d.to(params[k].device, params[k].dtype))
        for k, v in data.full.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))
    return G.eval().requires_grad_(False)


def load_avatar(path: str | os.PathLike[str], device: torch.device | str = "cpu", model: str | None = None,
                ) -> tuple[TriPlaneGenerator, torch.Tensor, torch.Tensor]:
    """``(tuned generator, ws [1, L, D], label [1, 25])`` on ``device``: what a seed would give a command.

    The base model is found by its recorded path or name (``model`` overrides) and checked by SHA-256.
    """
    data = read_avatar(path)
    base = resolve_base(data, device, model)
    G = apply_tuning(base.generator, data)
    return G, data.ws.to(device), data.label.to(device)


def avatar_latent(path: str | os.PathLike[str], device: torch.device | str = "cpu", model: str | None = None,
                  ) -> tuple[TriPlaneGenerator, Any, torch.Tensor]:
    """``(tuned G, backend.sampling.Latent, label)``: an avatar where commands expect ``make_latent(G, seed)``.

    For ``aware3d sample|mesh --avatar A``: the Latent's tri-planes are computed once, as for a seed.
    """
    from backend.sampling import Latent

    G, ws, label = load_avatar(path, device, model)
    with torch.no_grad():
        planes = G.synthesize_planes(ws, noise_mode="const")
    return G, Latent(None, ws, planes), label
