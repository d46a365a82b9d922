"""StyleGAN2 synthesis blocks, the tri-plane backbone and Mimic3D's 3D-aware blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend.config import GeneratorConfig
from backend.nets import fast_conv, ops
from backend.nets.layers import MappingNetwork, SynthesisLayer, ToRGBLayer


@dataclass
class BlockRuntime:
    """Per-call settings shared by every block of one forward pass."""

    noise_mode: str = "const"
    fused: bool = True
    force_fp32: bool = False
    generator: torch.Generator | list[torch.Generator] | None = None
    # "reference": the official arithmetic, op for op (what the parity tests pin); "fast": the same function
    # through fused inference kernels (``backend.nets.fast_conv``), used only where no gradient is needed.
    kernels: str = "reference"


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' architecture: [const | conv0 (up)] → conv1 → torgb, image skip.

    ``up_image`` controls whether the incoming skip image is up-sampled: always in EG3D's blocks (they all
    double the resolution); Mimic3D's variant only up-samples when the block itself does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        up: int = 2,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
        roll_out: str | None = None,
        const_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.up = up
        self.use_fp16 = use_fp16
        if in_channels == 0:
            shape = const_shape or (out_channels, resolution, resolution)
            self.const = nn.Parameter(torch.randn(list(shape)))
        self.register_buffer("resample_filter", ops.setup_filter())
        self.num_conv = 0
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=up,
                                        conv_clamp=conv_clamp, roll_out=roll_out)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    conv_clamp=conv_clamp, roll_out=roll_out)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp, roll_out=roll_out)
        self.num_torgb = 1

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        rt: BlockRuntime,
        up_image: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        fp16 = self.use_fp16 and not rt.force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        if self.in_channels == 0:
            const = self.const.to(dtype)
            if const.ndim == 3:
                const = const.unsqueeze(0)
            x = const.repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, next(w_iter), rt.noise_mode, rt.fused, generator=rt.generator, kernels=rt.kernels)
        else:
            assert x is not None
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), rt.noise_mode, rt.fused, generator=rt.generator, kernels=rt.kernels)
            x = self.conv1(x, next(w_iter), rt.noise_mode, rt.fused, generator=rt.generator, kernels=rt.kernels)
        fast = fast_conv.applies(rt.kernels, rt.fused, x)
        if img is not None and up_image:
            img = (fast_conv.upsample2d if fast else ops.upsample2d)(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused=rt.fused, kernels=rt.kernels).to(torch.float32)
        if img is None:
            img = y
        elif fast and img.shape == y.shape:
            img = img.add_(y) if up_image else img + y  # an up-sampled skip image is a fresh tensor
        else:
            img = img + y
        return x, img


class Aware3DBlock(nn.Module):
    """Mimic3D's ``b3d{r}``: turns the 2D branch's 96-channel skip image into refined tri-plane features.

    Input: the 2D skip image at r viewed as three 32-channel planes, plus the previous 3D block's output (if
    any). ``block`` ('b' roll-out: per-plane styles and the 3D-aware exchange) up-samples to 2r, except at
    the tri-plane resolution. With the detail plane, ``block2`` (×2) and ``block3`` ('s' roll-out) continue to
    2r and return the 512² detail plane.
    """

    def __init__(self, plane_channels: int, w_dim: int, resolution: int, is_final: bool,
                 detail_plane: bool) -> None:
        super().__init__()
        up = 1 if is_final else 2
        c = plane_channels
        self.block = SynthesisBlock(c, c, w_dim, resolution * up, img_channels=c, is_last=True, up=up,
                                    roll_out="b")
        self.has_detail = detail_plane
        if detail_plane:
            self.block2 = SynthesisBlock(c, c, w_dim, resolution * 2, img_channels=c, is_last=True, up=2,
                                         roll_out="s")
            self.block3 = SynthesisBlock(c, c, w_dim, resolution * 2, img_channels=c, is_last=True, up=1,
                                         roll_out="s")

    def forward(self, prev: torch.Tensor | None, img2d: torch.Tensor, ws: torch.Tensor,
                rt: BlockRuntime) -> list[torch.Tensor]:
        planes = img2d.reshape(img2d.shape[0] * 3, -1, *img2d.shape[2:])
        if prev is not None:
            planes = planes + prev
        w = ws[:, -1:].repeat(1, 3, 1)
        _, out = self.block(planes, None, w, rt, up_image=False)
        if not self.has_detail:
            return [out]
        _, detail = self.block2(out, None, w, rt, up_image=False)
        _, detail = self.block3(detail, None, w, rt, up_image=False)
        return [out, detail]


class SynthesisNetwork(nn.Module):
    """The tri-plane backbone: ws → tri-plane feature maps.

    Returns a list of planes, each [B, 3, C, S, S]: one (EG3D, Mimic3D 2d stage) or two (Mimic3D 3d stage:
    coarse and detail plane).
    """

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.w_dim = cfg.w_dim
        res_log2 = len(cfg.block_resolutions) + 1
        fp16_resolution = max(2 ** (res_log2 + 1 - cfg.num_fp16_res), 8)
        mimic = cfg.family == "mimic3d"
        self.num_ws = 0
        for res in cfg.block_resolutions:
            in_ch = cfg.block_channels(res // 2) if res > 4 else 0
            out_ch = cfg.block_channels(res)
            is_last = res == cfg.triplane_resolution
            const_shape = (1, out_ch, res, res) if mimic and in_ch == 0 else None
            block = SynthesisBlock(in_ch, out_ch, cfg.w_dim, res, img_channels=cfg.triplane_channels,
                                   is_last=is_last, use_fp16=res >= fp16_resolution,
                                   conv_clamp=cfg.conv_clamp, const_shape=const_shape)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)
            if res in cfg.aware3d_res:
                final = res == cfg.aware3d_res[-1]
                if final and res != cfg.triplane_resolution:
                    raise ValueError("the last 3D-aware block must be at the tri-plane resolution")
                setattr(self, f"b3d{res}", Aware3DBlock(cfg.plane_channels, cfg.w_dim, res, final,
                                                        detail_plane=cfg.detail_plane and final))
        assert self.num_ws == cfg.num_ws

    def forward(self, ws: torch.Tensor, rt: BlockRuntime) -> list[torch.Tensor]:
        ws = ws.to(torch.float32)
        x = img = None
        img3d: list[torch.Tensor] | None = None
        w_idx = 0
        mimic = self.cfg.family == "mimic3d"
        for res in self.cfg.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, rt, up_image=not mimic or block.up > 1)
            block3d = getattr(self, f"b3d{res}", None)
            if block3d is not None:
                img3d = block3d(img3d[0] if img3d else None, img, block_ws, rt)
        assert img is not None
        if img3d is None:
            return [img.reshape(img.shape[0], 3, -1, *img.shape[2:])]
        return [p.reshape(-1, 3, *p.shape[1:]) for p in img3d]


class Backbone(nn.Module):
    """The StyleGAN2 generator used as the tri-plane backbone (``synthesis`` then ``mapping`` in the state
    dict, as in the official checkpoints)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, num_ws=self.num_ws,
                                      num_layers=cfg.mapping_layers,
                                      lr_multiplier=cfg.mapping_lr_multiplier, w_avg_beta=cfg.w_avg_beta,
                                      normalize_z=cfg.normalize_z, z_bins=cfg.z_bins)
