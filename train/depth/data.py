# SPDX-License-Identifier: GPL-3.0-or-later
"""RGB + ground-truth disparity from our synthetic-head zips, for the depth network.

The zips store the distance along each pixel's unit ray (``inf`` = background); the network learns
disparity ``1/z`` of camera-space z, the convention of :mod:`backend.views.rgbd` (converted with its
``ray_depth_to_z`` and the image's own camera label). Background disparity is 0. X-flip augmentation is the
zip reader's: mirrored images with mirrored depth and cameras.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from backend import cameras
from backend.views.rgbd import Camera, ray_depth_to_z
from train.data.zip_dataset import ZipDataset, ZipDatasetError


class DepthData:
    """``data.batch(indices)`` -> (rgb [B, 3, H, W] in [0, 1], disparity [B, 1, H, W], head mask [B, 1, H, W])."""

    def __init__(self, path: str | os.PathLike[str], xflip: bool = False, max_size: int | None = None) -> None:
        self.path = str(path)
        self.zip = ZipDataset(path, xflip=xflip, extras=True, max_size=max_size)
        if not self.zip.has_depth:
            raise ZipDatasetError(f"{self.path} has no depth maps (<image>.depth.npy)")
        if self.zip.labels is None:
            raise ZipDatasetError(f"{self.path} has no camera labels (dataset.json)")
        self.resolution = self.zip.resolution

    def __len__(self) -> int:
        return len(self.zip)

    def camera(self, idx: int) -> Camera:
        """The camera of item ``idx`` (mirrored for flipped items), pivot at the FFHQ pivot."""
        c2w, K = cameras.split_label(self.zip.get_label(idx))
        return Camera(c2w, K, self.resolution, self.resolution)

    def item(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        it = self.zip[idx]
        rgb = it["image"][:3].float() / 255.0
        ray = it["depth"].numpy()
        finite = np.isfinite(ray)
        z = ray_depth_to_z(np.where(finite, ray, 1.0), self.camera(idx))
        disp = np.where(finite, 1.0 / np.maximum(z, 1e-6), 0.0).astype(np.float32)
        return rgb, torch.from_numpy(disp)[None], torch.from_numpy(finite)[None]

    def z(self, idx: int) -> np.ndarray:
        """Ground-truth camera-space z [H, W] of item ``idx`` (inf on the background)."""
        ray = self.zip[idx]["depth"].numpy()
        finite = np.isfinite(ray)
        return np.where(finite, ray_depth_to_z(np.where(finite, ray, 1.0), self.camera(idx)), np.inf)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.item(i) for i in indices]
        return tuple(torch.stack(parts) for parts in zip(*items))  # type: ignore[return-value]
