# SPDX-License-Identifier: GPL-3.0-or-later
"""The backdrop of a trajectory: a smooth screen-space colour field fitted to the first view.

Why: the backdrop is not a surface (rgbd's docstring): the synthetic data's background is a screen-space
gradient, the same in every view of a head, and the GAN learned the same. It cannot be warped, so a
conditional model that sees only the warped head guesses a new backdrop colour in every view. Fitting the
first view's backdrop pixels with a low-order polynomial of the screen position gives the colour at *every*
pixel, including those the head hid; the conditional model receives it as 3 extra channels
(``UNetConfig.backdrop``) and the trajectory keeps one backdrop.

The polynomial is quadratic in the normalised screen coordinates (u, v in [-1, 1]): the synthetic data's
vertical gradient is exactly linear in v, and a quadratic follows a GAN's soft vignette without chasing the
head's halo. Pixels next to the head (anti-aliased silhouette) are left out of the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from backend.views import rgbd
from backend.views.rgbd import RGBDView

BACKDROP_CODE = 0.98  # depth code above which a pixel is backdrop (the far plane is +1)
MIN_PIXELS = 24  # fewer backdrop pixels than this: no fit (a close-up with no visible backdrop)
RIDGE = 1e-3


def _basis(width: int, height: int) -> np.ndarray:
    """[H, W, 6]: 1, u, v, u², u·v, v² at pixel centres."""
    u = (np.arange(width) + 0.5) / width * 2.0 - 1.0
    v = (np.arange(height) + 0.5) / height * 2.0 - 1.0
    uu, vv = np.meshgrid(u, v)
    return np.stack([np.ones_like(uu), uu, vv, uu * uu, uu * vv, vv * vv], axis=-1)


@dataclass(frozen=True)
class Backdrop:
    """Colour as a quadratic function of the screen position; ``image(w, h)`` draws it at any size."""

    coefficients: np.ndarray  # [6, 3]

    def image(self, width: int, height: int) -> np.ndarray:
        """[H, W, 3] float32 in [0, 1]."""
        return np.clip(_basis(width, height) @ self.coefficients, 0.0, 1.0).astype(np.float32)


def backdrop_mask(view: RGBDView) -> np.ndarray:
    """Pixels of ``view`` that show the backdrop (depth at the far plane), away from the silhouette."""
    near, far = view.camera.depth_range()
    mask = rgbd.encode_depth(view.z, near, far) >= BACKDROP_CODE
    inner = ndimage.binary_erosion(mask, np.ones((3, 3), bool), border_value=1)
    return inner if inner.sum() >= MIN_PIXELS else mask


def fit_backdrop(view: RGBDView) -> Backdrop | None:
    """The backdrop of ``view`` (None when fewer than ``MIN_PIXELS`` of its pixels show it)."""
    mask = backdrop_mask(view)
    if mask.sum() < MIN_PIXELS:
        return None
    h, w = mask.shape
    a = _basis(w, h)[mask]
    b = np.asarray(view.rgb, dtype=np.float64)[mask]
    coef = np.linalg.solve(a.T @ a + RIDGE * len(a) * np.diag([0, 1, 1, 1, 1, 1]), a.T @ b)
    return Backdrop(coef)


def backdrop_image(view: RGBDView, width: int, height: int) -> np.ndarray | None:
    """``view``'s backdrop drawn at ``width`` × ``height`` (None without a fit)."""
    fit = fit_backdrop(view)
    return None if fit is None else fit.image(width, height)
