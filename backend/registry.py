"""Where models live and how a model name becomes a ready generator.

Models are looked up by name in the user model folder (``AWARE3D_MODELS``, default under the user's data
directory) and in the bundled ``assets/models`` folder (``AWARE3D_ASSETS`` overrides it, e.g. inside the
Blender extension). A path to a file works anywhere a name does; ``random:CONFIG[:SEED]`` builds a named
config with random weights (for benchmarks and architecture checks).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backend.checkpoints.model_file import (
    ModelHeader,
    check_state_shapes,
    load_tensors,
    meta_state_shapes,
    read_header,
    tensor_shapes,
)
from backend.config import GeneratorConfig
from backend.configs import get_config
from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator

# The model the CLI and the Blender extension use when none is named.
DEFAULT_MODEL = "aware3d-heads"
MODEL_SUFFIXES = (".safetensors", ".pkl")


def bundled_models_dir() -> Path:
    env = os.environ.get("AWARE3D_ASSETS")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / "assets"
    return root / "models"


def user_models_dir() -> Path:
    env = os.environ.get("AWARE3D_MODELS")
    if env:
        return Path(env)
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "Aware3D"
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support" / "Aware3D"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", home / ".local" / "share")) / "aware3d"
    return base / "models"


@dataclass
class ModelEntry:
    name: str
    path: Path
    source: str  # 'user' | 'bundled'
    kind: str
    config_name: str
    resolution: int | None
    size_bytes: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "source": self.source, "kind": self.kind,
                "config": self.config_name, "resolution": self.resolution, "size_bytes": self.size_bytes,
                "note": self.note}


def _entry(path: Path, source: str) -> ModelEntry:
    size = path.stat().st_size
    name = path.name.removesuffix(path.suffix)
    if path.suffix == ".pkl":
        return ModelEntry(name, path, source, "official-pkl", "?", None, size,
                          "official snapshot: convert with 'aware3d convert'")
    try:
        header = read_header(path)
    except Aware3DError as exc:
        return ModelEntry(name, path, source, "unreadable", "?", None, size, exc.message)
    config_name, resolution = describe_config(header.kind, header.config)
    return ModelEntry(name, path, source, header.kind, config_name, resolution, size)


def _unet_preset(cfg: dict[str, Any], presets: dict[str, Any]) -> str:
    """The named UNet preset ``cfg`` was built from (presets are resized per data set), or its shape."""
    from backend.diffusion.config import UNetConfig

    try:
        unet = UNetConfig.from_dict(cfg)
    except (TypeError, ValueError):
        return "?"
    for name, preset in presets.items():
        if preset.replace(kind=unet.kind, resolution=unet.resolution, backdrop=unet.backdrop,
                          hole_fill=unet.hole_fill, shape=unet.shape) == unet:
            suffix = ("+backdrop" if unet.backdrop else "") + ("+nearest-fill" if unet.hole_fill == "nearest" else "") \
                + ("+shape" if unet.shape else "")
            return name + suffix
    return f"unet {unet.base_channels}x{'/'.join(map(str, unet.channel_mults))}"


def describe_config(kind: str, cfg: dict[str, Any]) -> tuple[str, int | None]:
    """What ``aware3d models`` lists as a model's CONFIG and RES, per kind of file: the generator config and its
    image size; the UNet preset and the image size of diffusion and depth networks; the embedding and input
    size of a feature network; the model that attribute directions or a photo encoder belong to."""
    if kind in ("diffusion-uncond", "diffusion-cond"):
        from backend.diffusion.config import PRESETS

        return _unet_preset(cfg, PRESETS), cfg.get("resolution")
    if kind == "depth":
        from backend.depth.estimate import PRESETS as DEPTH_PRESETS

        return _unet_preset(cfg, DEPTH_PRESETS), cfg.get("resolution")
    if kind == "features":
        return f"{cfg.get('embedding_dim', '?')}-d embedding", cfg.get("input_resolution")
    if kind == "directions":
        return f"directions of {cfg.get('model', {}).get('name', '?')}", None
    if kind == "encoder":
        return f"encoder for {cfg.get('generator', {}).get('name', '?')} ({cfg.get('target', '?')})", \
            cfg.get("resolution")
    return str(cfg.get("name", "?")), cfg.get("img_resolution")


def list_models() -> list[ModelEntry]:
    """Every model file in the user folder and the bundled folder (user models first)."""
    entries = []
    for source, folder in (("user", user_models_dir()), ("bundled", bundled_models_dir())):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix in MODEL_SUFFIXES and p.is_file() and not p.name.startswith("."):
                entries.append(_entry(p, source))
    return entries


def resolve_model(spec: str | os.PathLike[str] | None) -> Path:
    """A model name or path → an existing file. ``None`` means the default model."""
    spec = DEFAULT_MODEL if spec is None else spec
    p = Path(spec)
    if p.suffix in MODEL_SUFFIXES or os.sep in str(spec) or p.exists():
        if p.is_file():
            return p
        raise Aware3DError(f"model file not found: {p}", "check the path, or run 'aware3d models'")
    for folder in (user_models_dir(), bundled_models_dir()):
        for suffix in MODEL_SUFFIXES:
            cand = folder / f"{spec}{suffix}"
            if cand.is_file():
                return cand
    names = sorted({e.name for e in list_models()})
    raise Aware3DError(f"no model named {str(spec)!r}",
                       f"available: {', '.join(names) or 'none'}; or give a path, or random:CONFIG")


@dataclass
class LoadedModel:
    generator: TriPlaneGenerator
    name: str
    path: Path | None
    header: ModelHeader
    info: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=16)
def generator_state_shapes(cfg: GeneratorConfig) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of the generator ``cfg`` describes, built on the meta device (nothing is
    allocated; ~0.07 s for EG3D's size, cached because the server loads the same configs again)."""
    return meta_state_shapes(lambda: TriPlaneGenerator(cfg))


def generator_from_tensors(cfg: GeneratorConfig, tensors: dict[str, torch.Tensor],
                           source: str) -> TriPlaneGenerator:
    """A generator holding ``tensors``; their names, shapes and types are checked against ``cfg`` on the meta
    device first, so a config that asks for a huge network is refused before anything is allocated."""
    check_state_shapes(generator_state_shapes(cfg),
                       {k: tuple(v.shape) for k, v in tensors.items()}, source, f"config {cfg.name!r}",
                       {k: "F32" if v.is_floating_point() else str(v.dtype) for k, v in tensors.items()})
    G = TriPlaneGenerator(cfg)
    G.load_state_dict({k: tensors[k] for k in G.state_dict()}, strict=True)
    return G


def load_generator(spec: str | os.PathLike[str] | None, device: torch.device | str = "cpu",
                   allow_nonfinite: bool | None = None) -> LoadedModel:
    """Load a GAN generator by name, path (.safetensors or official .pkl) or ``random:CONFIG[:SEED]``.

    The file is validated on the way (header limits, config types and ranges, tensor names and shapes before
    any data is read, no NaN/inf unless ``allow_nonfinite`` or ``AWARE3D_ALLOW_NONFINITE=1``)."""
    if isinstance(spec, str) and spec.startswith("random:"):
        parts = spec.split(":")
        cfg = get_config(parts[1])
        seed = int(parts[2]) if len(parts) > 2 else 0
        G = TriPlaneGenerator(cfg, seed=seed).eval().requires_grad_(False).to(device)
        header = ModelHeader(kind="gan", config=cfg.to_dict(),
                             provenance={"source": f"random weights (seed {seed})"})
        return LoadedModel(G, spec, None, header)
    path = resolve_model(spec)
    if path.suffix == ".pkl":
        from backend.checkpoints.convert import convert_official_pickle

        cfg, tensors, provenance = convert_official_pickle(path, allow_nonfinite=allow_nonfinite)
        header = ModelHeader(kind="gan", config=cfg.to_dict(), provenance=provenance)
    else:
        header = read_header(path)  # checks the config's types and ranges
        if header.kind != "gan":
            raise Aware3DError(f"{path.name} is a {header.kind} model, not a GAN generator",
                               "pick a GAN model (see 'aware3d models')")
        cfg = GeneratorConfig.from_dict(header.config)
        # Names and shapes before the data is read: a file that does not fit is not loaded at all.
        check_state_shapes(generator_state_shapes(cfg), tensor_shapes(path), path.name, f"config {cfg.name!r}")
        tensors = load_tensors(path, allow_nonfinite=allow_nonfinite)
    G = generator_from_tensors(cfg, tensors, path.name)
    G = G.eval().requires_grad_(False).to(device)
    return LoadedModel(G, path.name.removesuffix(path.suffix), path, header)
