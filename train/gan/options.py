"""Training options for 3D-aware GAN training (EG3D's recipe plus Mimic3D's imitation stage)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImitationOptions:
    """Mimic3D's 3D-to-2D imitation stage.

    Starting at ``start_kimg``, every generator step also renders a patch of rays cut from the
    full-resolution ray grid and pulls it towards the (detached) super-resolved image at the same place, and a
    patch discriminator judges rendered patches against real crops.
    """

    start_kimg: float | None = None   # None: stage off
    patch_scale: float = 0.5          # patch side / full image side
    weight: float = 1.0               # perceptual imitation loss weight
    l1_weight: float = 1.0            # pixel L1 inside the perceptual distance
    patch_gan_weight: float = 0.1
    r1_gamma_patch: float = 1.0
    lpips_weights: str | None = None  # optional user-supplied LPIPS(vgg) weights file


@dataclass
class GanOptions:
    config: str = "tiny"
    batch: int = 8                    # global batch (split over data-parallel processes)
    kimg: float = 100.0
    seed: int = 0
    lr_g: float = 0.0025
    lr_d: float = 0.002
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float = 1.0
    d_reg_interval: int = 16
    g_reg_interval: int = 4
    density_reg: float = 0.25
    density_reg_p_dist: float = 0.004
    # Empty-space prior for models with a learned backdrop: weight of the mean raw-image opacity. Without it
    # a volume can stay filled with faint fog (alpha ~1 on every ray), which renders fine but leaves no surface
    # to mesh; the backdrop explains the background, so the volume is free to empty.
    opacity_reg: float = 0.0
    opacity_entropy: float = 0.0      # binary-entropy share of the prior (sharp surfaces; see opacity_prior)
    # Weight of the raw render's mean ray distortion (Mip-NeRF 360): one surface per ray instead of a
    # semi-transparent shell over a core, so the density-10 mesh lies where the render's depth does.
    distortion_reg: float = 0.0
    gpc_reg_prob: float = 0.5
    ema_kimg: float | None = None     # default: batch · 10 / 32
    ema_rampup: float | None = 0.05
    blur_init_sigma: float = 10.0
    blur_fade_kimg: float = 200.0
    nrr_initial: int | None = None    # neural rendering resolution schedule (None: the config's)
    nrr_final: int | None = None
    nrr_fade_kimg: float = 1000.0
    truncation_for_grids: float = 0.7
    d_channel_base: int = 32768
    d_channel_max: int = 512
    d_mapping_layers: int = 8
    mbstd_group_size: int = 4
    c_noise: float = 0.0
    amp: bool = False                 # bf16 autocast of the forward passes (train.amp): CUDA with bf16, or CPU
    snap_kimg: float = 4.0
    image_kimg: float = 4.0
    log_kimg: float = 0.25
    keep_snapshots: int = 2
    imitation: ImitationOptions = field(default_factory=ImitationOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GanOptions:
        data = dict(data)
        imitation = ImitationOptions(**data.pop("imitation", {}))
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(imitation=imitation, **data)


# Presets: ``tiny`` for tests; ``heads64`` is the recipe of the bundled default model.
PRESETS: dict[str, GanOptions] = {
    "tiny": GanOptions(config="tiny", batch=4, kimg=0.05, d_channel_base=512, d_channel_max=32,
                       d_mapping_layers=2, blur_fade_kimg=0.02, snap_kimg=0.02, image_kimg=0.02, log_kimg=0.004,
                       imitation=ImitationOptions(start_kimg=0.02, patch_scale=0.5)),
    "heads64": GanOptions(config="aware3d-heads64", batch=8, kimg=500, d_channel_base=2048, d_channel_max=64,
                          d_mapping_layers=2, r1_gamma=0.3, blur_fade_kimg=20, snap_kimg=1, image_kimg=2,
                          log_kimg=0.1, ema_kimg=1.0, mbstd_group_size=4, opacity_reg=1.0,
                          imitation=ImitationOptions(start_kimg=150, patch_scale=0.5)),
}
