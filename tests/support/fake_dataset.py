"""A small deterministic in-memory image data set with EG3D labels, for training tests."""

from __future__ import annotations

import numpy as np
import torch

from backend import cameras


class BlobDataset:
    """Coloured discs on a grey background with FFHQ-like camera labels."""

    def __init__(self, count: int = 32, resolution: int = 64, seed: int = 0) -> None:
        rng = np.random.RandomState(seed)
        self.resolution = resolution
        self._labels = np.stack([
            cameras.make_label(cameras.orbit_camera(rng.randn() * 20, rng.randn() * 5)) for _ in range(count)
        ]).astype(np.float32)
        yy, xx = np.mgrid[:resolution, :resolution]
        self.images = []
        for _ in range(count):
            cx, cy = resolution / 2 + rng.randn() * 3, resolution / 2 + rng.randn() * 3
            img = np.full((3, resolution, resolution), 40, np.uint8)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < (resolution * 0.3) ** 2
            img[:, mask] = (rng.rand(3, 1) * 200 + 50).astype(np.uint8)
            self.images.append(img)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, np.ndarray]:
        return torch.from_numpy(self.images[idx]), self._labels[idx]

    def get_label(self, idx: int) -> np.ndarray:
        return self._labels[idx]
