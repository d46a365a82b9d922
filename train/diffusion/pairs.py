# SPDX-License-Identifier: GPL-3.0-or-later
"""True multi-view training pairs for G_c: views of one synthetic head, warped into another of its cameras.

Why: IVID trains G_c on forward-backward warps because a photo collection has one view per scene; the
warped-back condition then shows the *same* pixels as the target, only with holes. At sampling time G_c
gets something else: other views of the head warped into a new camera, whose visible pixels show the head
from elsewhere (other shading, other silhouette) and whose holes are the parts no view saw. Our data is
rendered, so we can train on exactly that: the head drawn from a first camera near frontal and up to
``max_sources - 1`` further cameras, aggregated into a target camera (the same ``aggregate`` as at sampling,
3× supersampled), and the target is the true view from that camera - the pair IVID had to fake.

The source cameras follow the trajectories of ``aware3d views``: a first view near frontal, further views
mostly between it and the target (generation goes outward from the first view), sometimes on the other side.
A share of the targets (``around``) lies anywhere around the head, so that G_c learns what the back of a head
looks like (texturing's ring cameras ask for it; a model trained only on frontal targets paints a face there).
Source colours are blurred with probability ``blur_p`` (generated views are softer than renders).
Every example is a function of its random generator, so a resumed run sees the same examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backend import cameras
from backend.views import rgbd
from backend.views.backdrop import backdrop_image
from backend.views.rgbd import Condition, RGBDView
from backend.views.warp import aggregate


@dataclass(frozen=True)
class PairSettings:
    """Cameras and augmentations of the true pairs (degrees; yaw and pitch of the FFHQ orbit)."""

    max_sources: int = 3
    target_yaw: float = 65.0  # target yaw uniform in ±target_yaw (the evaluation goes to ±60°)
    target_pitch_std: float = 8.0
    first_yaw_std: float = 10.0
    first_pitch_std: float = 5.0
    other_side_p: float = 0.3  # a further source on the other side of the first view
    around: float = 0.2  # share of targets from any yaw (the back of the head: texturing's ring cameras)
    blur_p: float = 0.5
    supersample: int = 3  # as ``aggregate`` at sampling time


def source_angles(rng: np.random.Generator, target: tuple[float, float],
                  s: PairSettings) -> list[tuple[float, float]]:
    """(yaw, pitch) of the source views: the first near frontal, the others towards (or away from) the target."""
    first = (float(rng.normal(0.0, s.first_yaw_std)), float(np.clip(rng.normal(0.0, s.first_pitch_std), -20, 20)))
    out = [first]
    for _ in range(int(rng.integers(0, s.max_sources))):
        if rng.random() < s.other_side_p:
            yaw = first[0] - rng.uniform(0.0, 1.0) * (target[0] - first[0])
        else:
            yaw = first[0] + rng.uniform(0.2, 0.9) * (target[0] - first[0])
        pitch = float(np.clip(first[1] + rng.uniform(0.0, 1.0) * (target[1] - first[1]), -25, 25))
        out.append((float(yaw), pitch))
    return out


def rendered_views(latent: np.ndarray, angles: list[tuple[float, float]], res: int) -> list[RGBDView]:
    """The head of ``latent`` rendered by the synthetic tracer from each (yaw, pitch)."""
    from train.distill.targets import render_targets
    from train.synthetic.latent import LATENT_DIMS

    lat = np.repeat(np.asarray(latent, dtype=np.float64)[None, :LATENT_DIMS], len(angles), axis=0)
    t = render_targets(lat, angles, res, LATENT_DIMS)
    views = []
    for i in range(len(angles)):
        rgb = ((t.image[i].permute(1, 2, 0).numpy() + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32)
        views.append(view_from_render(rgb, t.depth[i].numpy(), t.c[i].numpy()))
    return views


def camera_from_label(label: np.ndarray, width: int, height: int) -> rgbd.Camera:
    """The camera of an EG3D 25-number label (cam2world, normalised K) looking at the FFHQ pivot."""
    label = np.asarray(label, dtype=np.float64)
    return rgbd.Camera(label[:16].reshape(4, 4), label[16:25].reshape(3, 3), width, height,
                       np.asarray(cameras.FFHQ_PIVOT))


def view_from_render(rgb: np.ndarray, ray_depth: np.ndarray, label: np.ndarray) -> RGBDView:
    """An RGBD view from an image [H, W, 3] in [0, 1], its ray depth (inf = background) and 25-number label."""
    cam = camera_from_label(label, rgb.shape[1], rgb.shape[0])
    return RGBDView(rgb, rgbd.backdrop(rgbd.ray_depth_to_z(ray_depth, cam), cam), cam)


def true_pair(rng: np.random.Generator, res: int, settings: PairSettings | None = None,
              blur: Callable[[np.ndarray, float], np.ndarray] | None = None) -> tuple[RGBDView, Condition]:
    """(target view, condition) for a new random head: sources aggregated into the target's camera, the
    backdrop carried from the first source. ``blur(rgb, sigma)`` softens a source's colours."""
    from train.synthetic.latent import LATENT_DIMS

    s = settings or PairSettings()
    latent = rng.standard_normal(LATENT_DIMS)
    target_angles = (float(rng.uniform(-s.target_yaw, s.target_yaw)),
                     float(np.clip(rng.normal(0.0, s.target_pitch_std), -25, 25)))
    if rng.random() < s.around:
        target_angles = (float(rng.uniform(-180.0, 180.0)), target_angles[1])
    angles = source_angles(rng, target_angles, s)
    *sources, target = rendered_views(latent, [*angles, target_angles], res)
    if blur is not None:
        sources = [RGBDView(blur(v.rgb, rng.uniform(0, 1)), v.z, v.camera) if rng.random() < s.blur_p else v
                   for v in sources]
    cond = aggregate(sources, target.camera, s.supersample)
    cond.backdrop = backdrop_image(sources[0], res, res)
    return target, cond

