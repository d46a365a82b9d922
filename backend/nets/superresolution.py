"""EG3D's super-resolution modules: the low-resolution render (rgb + 32 features) → the final image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backend.config import GeneratorConfig
from backend.nets import ops
from backend.nets.synthesis import BlockRuntime, SynthesisBlock


class SuperResolution(nn.Module):
    """Two StyleGAN2 blocks driven by the last w.

    ``hybrid8xdc`` (512² outputs): 128 → 256 → 512. ``hybrid4x`` (256²): a 128² block without up-sampling,
    then → 256. ``hybrid2x`` (ShapeNet 128²): 64² without up-sampling, then → 128. The 4X/2X modules carry an
    unused ``resample_filter`` buffer of their own, kept for key compatibility.
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        kind = cfg.superresolution
        self.kind = kind
        assert cfg.sr_input_resolution is not None
        self.input_resolution = cfg.sr_input_resolution
        self.antialias = cfg.rendering.sr_antialias
        c0, c1 = cfg.sr_block_channels
        clamp = 256.0 if cfg.sr_fp16 else None
        feat = cfg.decoder_output_dim
        if kind != "hybrid8xdc":
            self.register_buffer("resample_filter", ops.setup_filter())
        res_in = self.input_resolution
        first_up = 2 if kind == "hybrid8xdc" else 1
        self.block0 = SynthesisBlock(feat, c0, cfg.w_dim, res_in * first_up, img_channels=3, is_last=False,
                                     up=first_up, use_fp16=cfg.sr_fp16, conv_clamp=clamp)
        self.block1 = SynthesisBlock(c0, c1, cfg.w_dim, res_in * first_up * 2, img_channels=3, is_last=True,
                                     up=2, use_fp16=cfg.sr_fp16, conv_clamp=clamp)

    def resizes(self, size: int) -> bool:
        """Whether a ``size``² render is resized to the module's input first (the official rules).

        The 4X module only enlarges smaller renders; the others resize anything not at their input size.
        """
        return size < self.input_resolution if self.kind == "hybrid4x" else size != self.input_resolution

    def adds_into_input(self, size: int) -> bool:
        """Whether the official module writes into the ``rgb`` tensor it is given, for a ``size``² render.

        The official SR adds its first ToRGB output to its ``rgb`` input in place. Only a resize or an
        up-sampling of the skip image makes a copy first, so when neither happens (2X at its 64² input, 4X at
        128²) the tensor the official ``synthesis()`` returns as ``image_raw`` ends up holding block0's skip
        image, not the volume render. Ours never writes in place; see :meth:`forward_with_skip`.
        """
        return not self.resizes(size) and self.block0.up == 1

    def forward_with_skip(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor,
                          rt: BlockRuntime) -> tuple[torch.Tensor, torch.Tensor]:
        """The final image and block0's skip image (its rgb input, resized as needed, plus its ToRGB).

        The skip image is what the official ``image_raw`` holds when :meth:`adds_into_input` is true.
        """
        ws = ws[:, -1:].repeat(1, 3, 1)
        if self.resizes(features.shape[-1]):
            target = (self.input_resolution, self.input_resolution)
            features = F.interpolate(features, size=target, mode="bilinear", align_corners=False,
                                     antialias=self.antialias)
            rgb = F.interpolate(rgb, size=target, mode="bilinear", align_corners=False,
                                antialias=self.antialias)
        x, skip = self.block0(features, rgb, ws, rt, up_image=self.block0.up > 1)
        _, img = self.block1(x, skip, ws, rt)
        return img, skip

    def forward(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor,
                rt: BlockRuntime) -> torch.Tensor:
        return self.forward_with_skip(rgb, features, ws, rt)[0]
