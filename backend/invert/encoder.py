# SPDX-License-Identifier: GPL-3.0-or-later
"""A feed-forward photo encoder: one forward pass from a framed photo to a latent and a camera.

Why: optimisation-based inversion costs tens of seconds per photo on a CPU, and feed-forward encoders (LP3D,
GOAE, TriPlaneNet) reach a first avatar in milliseconds; the optimisation then only refines from a good
start. The encoder belongs to one generator (recorded by name and weight hash): for a distilled model it
predicts ``z`` (the head's latent, each coordinate standard normal), for a GAN it predicts ``w`` (standardised
by the mapping network's output statistics), and for both the camera's yaw and pitch in degrees.

Model files are ``.safetensors`` of kind ``encoder`` with the :class:`EncoderConfig` as their config.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from backend.checkpoints.model_file import load_tensors, read_header_of_kind, save_model
from backend.errors import Aware3DError

POSE_SCALE = (30.0, 15.0)  # degrees per output unit for yaw and pitch (their spread in FFHQ-like data)


@dataclass(frozen=True)
class EncoderConfig:
    target: Literal["z", "w"] = "z"          # what the latent output is: the model's z, or w
    latent_dim: int = 67
    resolution: int = 64                     # input size (the framed photo is resized to it)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    embedding: int = 512
    generator: dict[str, Any] = field(default_factory=dict)  # name and state_sha256 of the generator

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)


class PhotoEncoder(nn.Module):
    """Residual-free CNN (stride-2 stages, GroupNorm, SiLU) → embedding → latent and (yaw, pitch).

    ``latent_mean``/``latent_std`` (buffers) un-standardise the latent output: zeros and ones for z (already
    standard normal), the mapping network's w statistics for a GAN.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise((3, *cfg.channels)):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Linear(cfg.channels[-1] * 4, cfg.embedding)
        self.head = nn.Linear(cfg.embedding, cfg.latent_dim + 2)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] or float in [−1, 1] → float [−1, 1] at the encoder's resolution."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 127.5 - 1
        r = self.cfg.resolution
        if x.shape[-1] != r or x.shape[-2] != r:
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return x

    def raw(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised outputs [N, latent_dim + 2] (what training compares)."""
        h = F.adaptive_avg_pool2d(self.trunk(self.prepare(images)), 2).flatten(1)
        return self.head(F.silu(self.embed(h)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent [N, latent_dim], pose [N, 2] = yaw and pitch in degrees)."""
        out = self.raw(images)
        latent = out[:, :-2] * self.latent_std + self.latent_mean
        pose = out[:, -2:] * torch.tensor(POSE_SCALE, device=out.device)
        return latent, pose


def save_encoder(path: str | Path, enc: PhotoEncoder, provenance: dict[str, Any]) -> Path:
    save_model(path, enc.state_dict(), kind="encoder", config=enc.cfg.to_dict(), provenance=provenance)
    return Path(path)


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> PhotoEncoder:
    header = read_header_of_kind(path, "encoder", "a photo encoder", "train one with aware3d-train encoder")
    enc = PhotoEncoder(EncoderConfig.from_dict(header.config))
    enc.load_state_dict(load_tensors(path))
    return enc.to(device).eval().requires_grad_(False)


def check_belongs(enc: PhotoEncoder, generator: dict[str, Any]) -> None:
    """Refuse an encoder trained for another generator (its latents would mean nothing there)."""
    mine = enc.cfg.generator
    if mine.get("state_sha256") and generator.get("state_sha256") != mine.get("state_sha256"):
        raise Aware3DError(f"this encoder was trained for {mine.get('name', '?')}, not {generator.get('name', '?')}",
                           "train an encoder for this model with aware3d-train encoder")


@torch.no_grad()
def encode(enc: PhotoEncoder, G: Any, image: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """ws [1, num_ws, w_dim] of a framed photo ([1, 3, H, W] in [−1, 1]) and its (yaw, pitch) in degrees."""
    latent, pose = enc(image)
    if enc.cfg.target == "z":
        c = torch.zeros(1, G.cfg.c_dim, device=latent.device)
        ws = G.mapping(latent, c)
    else:
        ws = latent.unsqueeze(1).repeat(1, G.num_ws, 1)
    return ws, float(pose[0, 0]), float(pose[0, 1])
