# SPDX-License-Identifier: GPL-3.0-or-later
"""A first view rendered by a 3D-aware GAN (or an inverted avatar), as an RGBD view for G_c.

Why: the GAN already gives a consistent head with depth from one camera; the diffusion model then only
has to continue it from the artist's cameras (IVID's first view, without G_u).
"""

from __future__ import annotations

import numpy as np

from backend.sampling import Latent, camera_label, render_view
from backend.views import rgbd
from backend.views.rgbd import Camera, RGBDView

ALPHA_BACKGROUND = 0.5  # rays whose accumulated opacity stays below this see the backdrop


def _resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    iy = ((np.arange(size) + 0.5) * h / size).astype(int)
    ix = ((np.arange(size) + 0.5) * w / size).astype(int)
    return a[np.ix_(iy, ix)]


def gan_view(G, latent: Latent, yaw: float, pitch: float, size: int) -> RGBDView:  # type: ignore[no-untyped-def]
    """Render (yaw, pitch) of the GAN's orbit; colour resized to ``size`` (area), depth nearest."""
    from PIL import Image

    label = camera_label(G.cfg, yaw, pitch)
    v = render_view(G, latent, label)
    rgb = np.asarray(Image.fromarray(v.image).resize((size, size), Image.Resampling.BOX), np.float32) / 255.0
    r = G.cfg.rendering
    cam = Camera(label[:16].reshape(4, 4), label[16:25].reshape(3, 3), size, size, np.asarray(r.avg_camera_pivot))
    depth = np.where(v.alpha >= ALPHA_BACKGROUND, v.depth, np.inf)
    z = rgbd.ray_depth_to_z(_resize_nearest(depth, size), cam)
    return RGBDView(rgb, rgbd.backdrop(z, cam), cam)
