"""Small models for the encoder start of inversion: a distilled generator that draws a head, and tiny photo
encoders that belong to a given generator (made here, so the tests need no trained encoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DISTILLED_HEAD = "head-tiny-distilled"


def distilled_head_model(folder: Path) -> Path:
    """``folder/head-tiny-distilled.safetensors``: tests/test_server.py's fitted head in the ``tiny-distilled``
    architecture (a distilled model: z is a head latent). Every z maps to the same w, as in ``head-tiny``, so
    it draws that head whatever the encoder says, and meshes have a surface."""
    from backend.checkpoints.model_file import load_tensors, save_model
    from backend.configs import get_config
    from backend.generator import TriPlaneGenerator
    from tests.test_server import head_model

    dest = folder / f"{DISTILLED_HEAD}.safetensors"
    if dest.exists():
        return dest
    src = load_tensors(head_model(folder / "_gan"))
    cfg = get_config("tiny-distilled")
    G = TriPlaneGenerator(cfg, seed=0)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if name in src and tuple(src[name].shape) == tuple(t.shape):
                t.copy_(src[name])
        G.backbone.mapping.fc1.weight.zero_()  # z_dim differs from TINY's: this one layer is new
    folder.mkdir(parents=True, exist_ok=True)
    save_model(dest, G.state_dict(), kind="gan", config=cfg.to_dict(),
               provenance={"source": "tests: head-tiny's weights in the tiny-distilled architecture"})
    return dest


def identity(G: Any, name: str) -> dict[str, Any]:
    """What an encoder records of its generator (as ``aware3d-train encoder`` does)."""
    from backend.invert.avatar import state_sha256

    return {"name": name, "state_sha256": state_sha256(G), "config": G.cfg.name}


def tiny_encoder(path: Path, G: Any, name: str, latent: torch.Tensor | None = None,
                 pose: tuple[float, float] | None = None, seed: int = 0, trained_on: str = "") -> Path:
    """A small encoder file for generator ``G`` (recorded under ``name``), predicting z for a distilled model
    and w otherwise. With ``latent``/``pose`` its last layer answers exactly those for every photo (an
    "oracle" that knows the head), else its weights are random. ``trained_on="heads"`` makes it a z encoder
    of the synthetic heads' latent (fits every distilled model); '' binds it to ``G``'s weights."""
    from backend.invert.encoder import POSE_SCALE, EncoderConfig, PhotoEncoder, save_encoder

    distilled = "distilled" in G.cfg.name
    cfg = EncoderConfig(target="z" if distilled else "w", latent_dim=G.cfg.z_dim if distilled else G.cfg.w_dim,
                        resolution=32, channels=(8, 16), embedding=16, generator=identity(G, name),
                        trained_on=trained_on)
    torch.manual_seed(seed)
    enc = PhotoEncoder(cfg)
    if latent is not None or pose is not None:
        with torch.no_grad():
            enc.head.weight.zero_()
            bias = enc.head.bias
            bias.zero_()
            if latent is not None:
                bias[:-2] = (latent.reshape(-1) - enc.latent_mean) / enc.latent_std
            if pose is not None:
                bias[-2:] = torch.tensor([pose[0] / POSE_SCALE[0], pose[1] / POSE_SCALE[1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_encoder(path, enc, {"source": "tests: tiny encoder"})
