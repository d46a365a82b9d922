"""Perceptual distances for the 3D-to-2D imitation loss that need no downloaded weights.

Mimic3D uses LPIPS(VGG) between a rendered patch and the super-resolved image at the same place. VGG and
LPIPS weights cannot be downloaded here, so the default distance is built from what training already has:
the patch discriminator's own feature maps (a learned, task-specific metric that sharpens as the
discriminator improves) plus a pixel L1 term that anchors colours from the first step. Effect: early in the
stage the L1 term dominates (the render is pulled to the SR colours, slightly blurry); as D_patch learns, the
feature term adds edge and texture agreement. When a user supplies LPIPS(VGG) weights (a .safetensors with
VGG16 ``features.*`` and LPIPS ``lin{0..4}.weight`` tensors), true LPIPS is used instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from backend.errors import Aware3DError


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)


def feature_distance(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style: unit-normalise channels, squared difference, mean over space, sum over layers."""
    total = torch.zeros(feats_a[0].shape[0], device=feats_a[0].device)
    for a, b in zip(feats_a, feats_b):
        total = total + (_unit(a) - _unit(b)).square().sum(dim=1).mean(dim=[1, 2])
    return total


class DiscriminatorFeatureDistance:
    """distance(x, y) = Σ_l ‖unit(f_l(x)) − unit(f_l(y))‖² + l1_weight · |x − y| with f = D_patch features."""

    def __init__(self, discriminator: nn.Module, l1_weight: float = 1.0) -> None:
        self.discriminator = discriminator
        self.l1_weight = l1_weight

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _, fx = self.discriminator(x, None, return_features=True)
        with torch.no_grad():
            _, ft = self.discriminator(target, None, return_features=True)
        per_sample = feature_distance(fx, [f.detach() for f in ft])
        return per_sample.mean() + self.l1_weight * (x - target).abs().mean()


# VGG16 'features' layout (torchvision): conv layer indices and their output channels; LPIPS taps after the
# ReLUs of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = {3, 8, 15, 22, 29}
_LPIPS_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
_LPIPS_SCALE = torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)


class LPIPS(nn.Module):
    """LPIPS(VGG16) from a user-supplied weights file (never downloaded)."""

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(v)
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in (64, 128, 256, 512, 512))
        self._load(Path(weights))
        self.requires_grad_(False).eval()

    def _load(self, path: Path) -> None:
        from safetensors.torch import load_file

        if not path.is_file():
            raise Aware3DError(f"LPIPS weights not found: {path}", "pass a .safetensors file, or omit it")
        try:
            sd = load_file(str(path))
        except Exception as exc:  # safetensors raises several types
            raise Aware3DError(f"cannot read LPIPS weights {path.name} ({exc})",
                               "expected a .safetensors file with features.* and lin0..lin4 tensors") from None
        mapped = {k: v for k, v in sd.items() if k.startswith("features.")}
        for i in range(5):
            key = next((k for k in (f"lin{i}.weight", f"lin{i}.model.1.weight") if k in sd), None)
            if key is None:
                raise Aware3DError(f"{path.name} has no lin{i} weights", "use LPIPS(vgg) v0.1 weights")
            mapped[f"lins.{i}.weight"] = sd[key]
        missing = self.load_state_dict(mapped, strict=False).missing_keys
        if missing:
            raise Aware3DError(f"{path.name} lacks {len(missing)} VGG16 tensors (e.g. {missing[0]})",
                               "the file needs torchvision VGG16 features.* weights")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def taps(img: torch.Tensor) -> list[torch.Tensor]:
            h = (img - _LPIPS_SHIFT.to(img)) / _LPIPS_SCALE.to(img)
            out = []
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in _TAPS:
                    out.append(h)
            return out

        total = torch.zeros(x.shape[0], device=x.device)
        for lin, a, b in zip(self.lins, taps(x), taps(y)):
            total = total + lin((_unit(a) - _unit(b)).square()).mean(dim=[1, 2, 3])
        return total


class LPIPSDistance:
    def __init__(self, weights: str | Path, l1_weight: float = 0.0, device: torch.device | str = "cpu") -> None:
        self.net = LPIPS(weights).to(device)
        self.l1_weight = l1_weight

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = self.net(x, target.detach()).mean()
        return d + self.l1_weight * (x - target).abs().mean() if self.l1_weight else d


def downsample_for(img: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
