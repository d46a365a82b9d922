# SPDX-License-Identifier: GPL-3.0-or-later
"""Options of a distillation run (stored in its snapshots and its exported model's provenance)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class DistillOptions:
    config: str = "aware3d-heads64-distilled"
    batch: int = 8                     # global batch (split over data-parallel processes)
    kimg: float = 200.0
    seed: int = 0
    lr: float = 0.002                  # Adam, for everything but the mapping network
    # The mapping network's layers have an equalised-lr multiplier of 0.01 (EG3D): this factor on its Adam
    # step lets it learn the z -> head map at a useful speed (100 x 0.01: the synthesis network's relative rate).
    mapping_lr_mul: float = 100.0
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    # Losses (each a mean over its elements; images in [-1, 1], depth in world units).
    image_l1: float = 1.0              # final (super-resolved) image against the true image
    perceptual: float = 0.1            # feature network's LPIPS-style distance on the final image
    raw_l1: float = 1.0                # raw neural render against the area-downsampled true image
    depth_l1: float = 5.0              # expected depth against true depth where the whole pixel is head (mean
                                       # over all pixels; about a third are whole head pixels)
    alpha_l1: float = 1.0              # render opacity against the pixel's head coverage
    # The colour field at points of the true surface seen by the camera against the colour seen there, from
    # every camera (a quarter from behind the face): the back of the head gets its own colours instead of
    # the face's shining through.
    colour_l1: float = 1.0
    colour_points: int = 256
    density: float = 0.5               # density against the true inside/outside at 3D points
    density_points: int = 1024         # per head: half near the true surface, half anywhere in the box
    density_level: float = 10.0        # raw density of the surface (the mesh level)
    # Raw-density units per logit, and the width (world units) of the true occupancy's sigmoid. A sharp target
    # with a wide scale: inside and outside are pushed far from the level (100 units at 5 logits) with no
    # penalty for overshooting, so the density can jump at the surface and the render's depth lies on it. (A
    # soft target, 0.004 with 5 units per logit, asked for a ramp of ~1250 units per world unit, which put the
    # render's expected depth 0.027 behind the surface: measured at 13 kimg.)
    density_scale: float = 20.0
    density_softness: float = 0.001
    # Cameras: this share from anywhere around the head (yaw ±180°, pitch ±35°, so the back of the head is
    # trained); the rest from the data's FFHQ-like pose distribution.
    around: float = 0.25
    # Share of each discrete coordinate (hat, beard, glasses, hair style and colour, ...) redrawn in a bin chosen
    # uniformly, so rare choices are trained often enough (targets.balance_discrete). 0 (the default of runs
    # that predate it): z ~ N(0, I) only.
    balance: float = 0.0
    # > 0 (configs that render their image directly, no SR): render only these many random pixels of each image
    # and compare them with their true pixels (no perceptual term: it needs whole images). A 64² image has 4096
    # pixels; 1024 of them cost about a quarter of the render, so four times the heads per step for the same
    # time: neighbouring pixels of one head teach much the same thing, other heads teach what generalises.
    rays: int = 0
    # > 0: train on these many fixed heads only (new cameras every step) and log how well they are fitted
    # (fit/head_psnr at each snapshot): an over-fitting test of an architecture or recipe, not a model to ship.
    fixed_heads: int = 0
    truth_resolution: int | None = None  # None: the config's image size
    ema_kimg: float = 0.5
    ema_rampup: float | None = 0.05
    amp: bool = False
    snap_kimg: float = 1.0
    image_kimg: float = 2.0
    log_kimg: float = 0.1
    keep_snapshots: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillOptions:
        data = dict(data)
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


PRESETS: dict[str, DistillOptions] = {
    "tiny": DistillOptions(config="tiny-distilled", batch=2, kimg=0.008, density_points=64, colour_points=32,
                           snap_kimg=0.004,
                           image_kimg=0.004, log_kimg=0.002, ema_kimg=0.01),
    "heads64": DistillOptions(balance=0.3),
}
