# SPDX-License-Identifier: GPL-3.0-or-later
"""RGBD training examples from an EG3D zip: targets for G_u, (condition, target) pairs for G_c.

Depth comes from the zip's ground-truth ``.depth.npy`` (our synthetic heads), or - for zips without depth
- from a monocular depth network (``backend.depth``), the way IVID uses MiDaS. Conditions are made by
IVID's forward-backward warp (spec §4.2) to a novel camera near the source one, then augmented (§4.3):
pre-warp noise, with p = 0.8 the colour replaced by the blurred original, and an extra erosion of the
colour mask. With ``true_pairs`` > 0, that share of G_c's examples are true multi-view pairs of new
rendered heads instead (``train.diffusion.pairs``); with ``backdrop`` the condition carries the source's
backdrop (``backend.views.backdrop``; dropped for 10 % of examples, so a missing backdrop is handled); with
``shape`` it carries the target view's true geometry (dropped for 15 %: IVID's setting, no geometry known).
Everything is a function of (seed, step, index), so a resumed run sees the same examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from backend import cameras
from backend.views import rgbd
from backend.views.backdrop import backdrop_image
from backend.views.holes import network_condition
from backend.views.rgbd import Camera, Condition, RGBDView
from backend.views.warp import forward_backward_warp
from train.data.zip_dataset import ZipDataset, ZipDatasetError
from train.diffusion.pairs import PairSettings, camera_from_label, true_pair, view_from_render

BACKDROP_DROP = 0.1  # share of examples whose backdrop channels are left empty
SHAPE_DROP = 0.15  # share of examples whose shape channels are left empty


@dataclass(frozen=True)
class WarpAugment:
    """The novel-camera distribution and augmentations of the training warp (IVID's values in the spec,
    yaw widened to 0.3 rad because our evaluation goes to ±60°; erosion sizes halved for 64 px)."""

    yaw_std: float = 0.3  # radians
    pitch_std: float = 0.15
    radius_std: float = 0.1  # relative
    lookat_std: float = 0.05  # world units per axis
    prewarp_noise: float = 0.005
    blur_p: float = 0.8
    erode_sizes: tuple[int, ...] = (1, 3, 5)
    supersample: int = 1  # the warp's mask only needs pixel accuracy, and supersampling multiplies its cost


def camera_angles(cam2world: np.ndarray, center: np.ndarray | None = None) -> tuple[float, float, float]:
    """(yaw°, pitch°, radius) of a camera position around ``center`` (inverse of ``orbit_camera``)."""
    c = np.zeros(3) if center is None else center
    p = np.asarray(cam2world, dtype=np.float64).reshape(4, 4)[:3, 3] - c
    r = float(np.linalg.norm(p))
    return math.degrees(math.atan2(p[0], p[2])), math.degrees(math.asin(np.clip(p[1] / r, -1, 1))), r


def view_from_item(item: dict[str, Any], depth_fn: Any = None) -> RGBDView:
    """An RGBD view from a ZipDataset item (extras on). Flipped items get the mirrored camera."""
    label = item["label"].numpy()
    rgb = item["image"].numpy().transpose(1, 2, 0).astype(np.float32) / 255.0
    if "depth" in item:
        return view_from_render(rgb, item["depth"].numpy(), label)
    if depth_fn is None:
        raise ZipDatasetError("the data set has no depth maps; pass a depth model (--depth-model)")
    cam = camera_from_label(label, rgb.shape[1], rgb.shape[0])
    return RGBDView(rgb, rgbd.backdrop(depth_fn(rgb, cam), cam), cam)


def novel_camera(source: Camera, rng: np.random.Generator, aug: WarpAugment) -> Camera:
    """A camera near ``source``: yaw/pitch around the world origin jittered, radius and look-at too."""
    yaw, pitch, r = camera_angles(source.cam2world)
    yaw += math.degrees(rng.normal(0, aug.yaw_std))
    pitch = float(np.clip(pitch + math.degrees(rng.normal(0, aug.pitch_std)), -80, 80))
    r *= 1.0 + float(np.clip(rng.normal(0, aug.radius_std), -0.3, 0.3))
    lookat = source.pivot + rng.normal(0, aug.lookat_std, 3)
    c2w = cameras.orbit_camera(yaw, pitch, radius=r, lookat=lookat)
    return Camera(c2w, source.K, source.width, source.height, source.pivot)


def _blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 1e-3:
        return rgb
    return ndimage.gaussian_filter(rgb, sigma=(sigma, sigma, 0), truncate=1.0 / max(sigma, 1e-3))  # 3×3 kernel


def make_condition(view: RGBDView, rng: np.random.Generator, aug: WarpAugment) -> Condition:
    """A training condition for ``view``: forward-backward warped through a random novel camera."""
    near, far = view.camera.depth_range()
    level = aug.prewarp_noise * rng.uniform()
    noisy_rgb = np.clip(view.rgb + rng.normal(0, level, view.rgb.shape), 0, 1).astype(np.float32)
    code = rgbd.encode_depth(view.z, near, far) + rng.normal(0, level, view.z.shape)
    noisy = RGBDView(noisy_rgb, rgbd.decode_depth(code, near, far), view.camera)
    rgb, z, mask = forward_backward_warp(noisy, novel_camera(view.camera, rng, aug), aug.supersample)
    if rng.uniform() < aug.blur_p:
        rgb = np.where(mask[..., None], _blur(view.rgb, rng.uniform(0, 1)), 0.0).astype(np.float32)
    k = int(rng.choice(aug.erode_sizes))
    rgb_mask = ndimage.binary_erosion(mask, np.ones((k, k), bool), border_value=1) if k > 1 else mask.copy()
    z = np.where(mask, z, far).astype(np.float32)
    return Condition(rgb, z, rgb_mask, mask, z, view.camera)


def condition_input(cond: Condition, rng: np.random.Generator | torch.Generator | None = None,
                    backdrop: bool = False, hole_fill: str = "noise", shape: bool = False) -> np.ndarray:
    """The network's condition channels, holes filled as ``hole_fill`` says (``backend.views.holes``)."""
    size = (4, *cond.rgb_mask.shape)
    if isinstance(rng, np.random.Generator):
        noise = rng.standard_normal(size).astype(np.float32)
    else:
        noise = torch.randn(size, generator=rng).numpy()
    return network_condition(cond, noise, backdrop, hole_fill, shape)


class RGBDExamples(torch.utils.data.Dataset):
    """``examples[i]`` -> dict(target [4, H, W], and for G_c cond [6, H, W]) for a given epoch seed."""

    def __init__(self, data: ZipDataset, kind: str, aug: WarpAugment | None = None, seed: int = 0,
                 depth_fn: Any = None, true_pairs: float = 0.0, backdrop: bool = False,
                 pairs: PairSettings | None = None, hole_fill: str = "noise", shape: bool = False) -> None:
        if kind not in ("uncond", "cond"):
            raise ValueError(f"kind must be 'uncond' or 'cond', got {kind!r}")
        if not data.has_depth and depth_fn is None:
            raise ZipDatasetError(f"{data.path} has no depth maps; pass a depth model (--depth-model)")
        if data.labels is None:
            raise ZipDatasetError(f"{data.path} has no camera labels (dataset.json); they are needed to warp")
        self.data = data
        self.kind = kind
        self.aug = aug or WarpAugment()
        self.seed = seed
        self.depth_fn = depth_fn
        self.true_pairs, self.backdrop, self.pairs = true_pairs, backdrop, pairs or PairSettings()
        self.hole_fill, self.shape = hole_fill, shape
        self.step = 0

    def __len__(self) -> int:
        return len(self.data)

    def example(self, idx: int, step: int) -> dict[str, torch.Tensor]:
        if self.kind == "cond" and self.true_pairs > 0:
            extra = np.random.default_rng([self.seed, step, idx, 1])  # its own stream: other examples unchanged
            if extra.random() < self.true_pairs:
                target, cond = true_pair(extra, self.data.resolution, self.pairs, _blur)
                return self._with_condition(target, cond, extra)
        view = view_from_item(self.data[idx], self.depth_fn)
        if self.kind != "cond":
            return {"target": torch.from_numpy(rgbd.to_network(view))}
        rng = np.random.default_rng([self.seed, step, idx])
        cond = make_condition(view, rng, self.aug)
        if self.backdrop:  # screen-space: the view's own backdrop is the warped one's
            cond.backdrop = backdrop_image(view, view.camera.width, view.camera.height)
        return self._with_condition(view, cond, rng)

    def _with_condition(self, target: RGBDView, cond: Condition, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if self.backdrop and rng.random() < BACKDROP_DROP:
            cond.backdrop = None
        if self.shape and rng.random() >= SHAPE_DROP:  # drawn only for shape models: older runs keep their streams
            cond.shape_z = target.z.copy()
        return {"target": torch.from_numpy(rgbd.to_network(target)),
                "cond": torch.from_numpy(condition_input(cond, rng, self.backdrop, self.hole_fill, self.shape))}

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        return self.example(idx, self.step)
