# SPDX-License-Identifier: GPL-3.0-or-later
"""Any camera frame for a square view generator: generate over a square, project through the real camera.

Why: the diffusion view model only makes square views at its own resolution, while scene cameras are
1920×1080, portrait, shifted. Stretching a 16:9 condition to a square (what happened before) breaks the
model's geometry and the view's aspect. Instead every non-square camera gets its *square cover*: the same
pose and the same pixel focal lengths and principal point, on a square image of side ``max(W, H)`` that
pads the camera's frame by ``(pad_x, pad_y)`` pixels (integers, so the crop is exact). The mesh is rendered
and the view generated over the square (the padding holds real mesh context, not blanks), and the view is
cropped back to the camera's own frame, so projection back onto the mesh uses the camera's real intrinsics
and the view image is exactly what the camera sees.

Pixel convention (``backend.cameras.project_points``): x right, y down, pixel (row i, column j) centred at
``(j + 0.5, i + 0.5)``; a point at pixel ``(x, y)`` of the camera is at ``(x + pad_x, y + pad_y)`` in the
square cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.views.rgbd import Camera, RGBDView

SQUARE_ATTR = "square_resolution"
"""A view generator that only makes square views says so with this attribute (its side in pixels)."""


@dataclass(frozen=True)
class SquareCover:
    """The square camera covering ``camera``'s frame, and where that frame sits in it (pixels)."""

    square: Camera
    pad_x: int
    pad_y: int
    camera: Camera


def square_resolution(generator: object) -> int | None:
    """The side of the square views ``generator`` makes, or None when it follows the camera's frame."""
    value = getattr(generator, SQUARE_ATTR, None)
    return int(value) if value else None


def square_cover(camera: Camera) -> SquareCover:
    """Same pose and pixel intrinsics on a ``max(W, H)`` square (module docstring)."""
    w, h = camera.width, camera.height
    side = max(w, h)
    pad_x, pad_y = (side - w) // 2, (side - h) // 2
    k = camera.K
    fx, skew, cx = k[0, 0] * w, k[0, 1] * w, k[0, 2] * w  # pixels
    fy, cy = k[1, 1] * h, k[1, 2] * h
    ks = np.array([[fx / side, skew / side, (cx + pad_x) / side],
                   [0.0, fy / side, (cy + pad_y) / side],
                   [0.0, 0.0, 1.0]])
    return SquareCover(Camera(camera.cam2world, ks, side, side, camera.pivot), pad_x, pad_y, camera)


def crop_view(view: RGBDView, cover: SquareCover) -> RGBDView:
    """The part of a square view (at any resolution) that the cover's camera sees, for that camera.

    A view at an integer multiple ``k`` of the square's side keeps its resolution (cropped at ``k×`` the
    offsets; its camera is the real one resized by ``k``); any other size is resampled to the square's side
    first (area for colour, nearest for depth: depth must not blend a face into the backdrop)."""
    side = cover.square.width
    rgb, z = np.asarray(view.rgb, np.float32), np.asarray(view.z, np.float32)
    res = z.shape[0]
    if z.shape != (res, res):
        raise ValueError(f"a square generator returned a {z.shape[1]}x{z.shape[0]} view")
    if res % side == 0:
        k = res // side
    else:
        import cv2

        interp = cv2.INTER_AREA if res > side else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (side, side), interpolation=interp)
        z = cv2.resize(z, (side, side), interpolation=cv2.INTER_NEAREST)
        k = 1
    cam = cover.camera
    y0, x0 = k * cover.pad_y, k * cover.pad_x
    window = (slice(y0, y0 + k * cam.height), slice(x0, x0 + k * cam.width))
    return RGBDView(np.ascontiguousarray(rgb[window]), np.ascontiguousarray(z[window]),
                    cam.resized(k * cam.width, k * cam.height))
