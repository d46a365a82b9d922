# SPDX-License-Identifier: GPL-3.0-or-later
"""RGBD views, cameras and the one depth convention of Aware3D's diffusion models.

Why one convention: IVID trains with near/far 0.5/100 and samples with 0.6/5 (spec §2.5), so its
generated parallax differs from its training warps. Aware3D uses the same mapping everywhere, defined per
camera from its distance ``r`` to the pivot it looks at: ``near = r - 0.7`` and ``far = r + 1.3`` world
units (1.8 and 3.8 for the frontal FFHQ camera, 2.5 from the pivot: they bracket a head of radius ≈ 0.6). The code
is IVID's z-buffer form, linear in inverse depth::

    code = 2 · (1/near - 1/z) / (1/near - 1/far) - 1      (−1 at the near plane, +1 at the far plane)

The background is a backdrop at the far plane (code +1): the synthetic data's background rays miss the
head (depth ``inf``) and a warped backdrop keeps the gradient behind the head consistent across views.
Depth is camera-space z (along the optical axis), not the distance along the ray.

Images are float32 [H, W, 3] in [0, 1]; cameras are EG3D's (OpenCV axes, normalised intrinsics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend import cameras

NEAR_OFFSET = 0.7
FAR_OFFSET = 1.3


@dataclass
class Camera:
    """A pinhole camera in generator world: cam2world 4×4 (OpenCV axes), normalised K, image size."""

    cam2world: np.ndarray
    K: np.ndarray
    width: int
    height: int
    pivot: np.ndarray = field(default_factory=lambda: np.asarray(cameras.FFHQ_PIVOT, dtype=np.float64))

    def __post_init__(self) -> None:
        self.cam2world = np.asarray(self.cam2world, dtype=np.float64).reshape(4, 4)
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.pivot = np.asarray(self.pivot, dtype=np.float64).reshape(3)

    @property
    def position(self) -> np.ndarray:
        return self.cam2world[:3, 3]

    @property
    def forward(self) -> np.ndarray:
        return self.cam2world[:3, 2]

    def depth_range(self) -> tuple[float, float]:
        """(near, far) of the depth code for this camera (module docstring)."""
        r = float(np.linalg.norm(self.position - self.pivot))
        return max(r - NEAR_OFFSET, 1e-3), r + FAR_OFFSET

    def resized(self, width: int, height: int) -> Camera:
        return Camera(self.cam2world, self.K, width, height, self.pivot)

    def to_dict(self) -> dict:
        return {"cam2world": self.cam2world.tolist(), "K": self.K.tolist(), "width": self.width,
                "height": self.height, "pivot": self.pivot.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(np.asarray(d["cam2world"]), np.asarray(d["K"]), int(d["width"]), int(d["height"]),
                   np.asarray(d.get("pivot", cameras.FFHQ_PIVOT)))


def orbit(yaw_deg: float, pitch_deg: float, size: int, radius: float = cameras.FFHQ_RADIUS,
          focal: float = cameras.FFHQ_FOCAL, lookat: tuple[float, float, float] = cameras.FFHQ_PIVOT) -> Camera:
    """The FFHQ orbit camera at (yaw, pitch) degrees: the cameras the synthetic data and the GAN use."""
    c2w = cameras.orbit_camera(yaw_deg, pitch_deg, radius=radius, lookat=lookat)
    return Camera(c2w, cameras.intrinsics(focal), size, size, np.asarray(lookat, dtype=np.float64))


@dataclass
class RGBDView:
    """One view: colour [H, W, 3] in [0, 1], camera-space depth z [H, W] (finite: backdrop at ``far``).

    ``copied`` [H, W] marks pixels whose colour came from earlier views (a generated view's condition):
    aggregation prefers the view that saw a surface first over a resampled copy of it (``warp.aggregate``).
    """

    rgb: np.ndarray
    z: np.ndarray
    camera: Camera
    copied: np.ndarray | None = None


def encode_depth(z: np.ndarray, near: float, far: float) -> np.ndarray:
    """Camera-space depth -> code in [−1, 1] (inf and anything beyond ``far`` -> +1)."""
    inv = np.where(np.isfinite(z), 1.0 / np.maximum(np.asarray(z, dtype=np.float64), 1e-6), 0.0)
    code = 2.0 * (1.0 / near - inv) / (1.0 / near - 1.0 / far) - 1.0
    return np.clip(code, -1.0, 1.0).astype(np.float32)


def decode_depth(code: np.ndarray, near: float, far: float) -> np.ndarray:
    """Code in [−1, 1] -> camera-space depth in [near, far] (codes are clipped first)."""
    c = np.clip(np.asarray(code, dtype=np.float64), -1.0, 1.0)
    inv = 1.0 / near - (c + 1.0) / 2.0 * (1.0 / near - 1.0 / far)
    return (1.0 / inv).astype(np.float32)


def ray_depth_to_z(t: np.ndarray, camera: Camera) -> np.ndarray:
    """Distance along each pixel's unit ray (the data set's and EG3D's ``image_depth``) -> camera-space z."""
    _, dirs = cameras.pixel_rays(camera.cam2world, camera.K, camera.width, camera.height)
    cos = (dirs @ camera.forward).reshape(camera.height, camera.width)
    return (np.asarray(t, dtype=np.float64) * cos).astype(np.float32)


def backdrop(z: np.ndarray, camera: Camera) -> np.ndarray:
    """Replace background (non-finite or beyond far) depth by the far plane."""
    _, far = camera.depth_range()
    z = np.asarray(z, dtype=np.float32)
    return np.where(np.isfinite(z) & (z < far), z, np.float32(far)).astype(np.float32)


def to_network(view: RGBDView) -> np.ndarray:
    """[4, H, W] float32 in [−1, 1]: RGB scaled, depth coded - what the diffusion models see."""
    near, far = view.camera.depth_range()
    rgb = np.asarray(view.rgb, dtype=np.float32).transpose(2, 0, 1) * 2.0 - 1.0
    return np.concatenate([rgb, encode_depth(view.z, near, far)[None]], axis=0)


def from_network(x: np.ndarray, camera: Camera) -> RGBDView:
    """Inverse of :func:`to_network` (values clipped to the valid range)."""
    near, far = camera.depth_range()
    x = np.asarray(x, dtype=np.float32)
    rgb = np.clip((x[:3].transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)
    return RGBDView(rgb.astype(np.float32), decode_depth(x[3], near, far), camera)


@dataclass
class Condition:
    """What the previous views (or a mesh) say about a target view, for the conditional model.

    ``rgb``/``z`` hold the aggregated colour and depth (0 / far where unknown); ``rgb_mask`` marks pixels
    whose colour is trusted, ``depth_mask`` those whose depth is (a superset: colours near depth edges are
    dropped, IVID §3.3); ``z_convex`` is a lower bound for new content's depth (stretched triangles
    included; ``far`` where nothing is known) so new content does not appear in front of known foreground.
    ``backdrop`` [H, W, 3] is the trajectory's backdrop colour at every pixel (``backend.views.backdrop``),
    None when unknown (a mesh's condition, or a first view without visible backdrop).
    ``shape_z`` [H, W] is the target view's own geometry when it is known before the view is generated
    (camera-space z, far on the backdrop): the mesh being textured, the GAN head being turned, a test head's
    truth. None when only the previous views are known (IVID's setting).
    """

    rgb: np.ndarray
    z: np.ndarray
    rgb_mask: np.ndarray
    depth_mask: np.ndarray
    z_convex: np.ndarray
    camera: Camera
    backdrop: np.ndarray | None = None
    shape_z: np.ndarray | None = None

    def to_network(self, backdrop: bool = False, shape: bool = False) -> np.ndarray:
        """[6, H, W] float32: rgb mask, masked rgb (3), masked depth code, depth mask (IVID's G_c order);
        with ``backdrop`` 3 more: the backdrop colour in [−1, 1] (0, mid grey, when unknown); with ``shape``
        3 more: 1 where the target's geometry is given, its surface mask, its depth code (all 0 when unknown)."""
        near, far = self.camera.depth_range()
        rm = self.rgb_mask.astype(np.float32)
        dm = self.depth_mask.astype(np.float32)
        rgb = (np.asarray(self.rgb, dtype=np.float32).transpose(2, 0, 1) * 2.0 - 1.0) * rm[None]
        d = encode_depth(self.z, near, far) * dm
        parts = [rm[None], rgb, d[None], dm[None]]
        if backdrop:
            if self.backdrop is None:
                parts.append(np.zeros((3, *rm.shape), np.float32))
            else:
                parts.append(np.asarray(self.backdrop, dtype=np.float32).transpose(2, 0, 1) * 2.0 - 1.0)
        if shape:
            if self.shape_z is None:
                parts.append(np.zeros((3, *rm.shape), np.float32))
            else:
                code = encode_depth(self.shape_z, near, far)
                parts += [np.ones((1, *rm.shape), np.float32), self.surface()[None].astype(np.float32), code[None]]
        return np.concatenate(parts, axis=0)

    def surface(self) -> np.ndarray:
        """[H, W] bool: where the given target geometry has a surface (all False without one)."""
        if self.shape_z is None:
            return np.zeros(self.rgb_mask.shape, bool)
        far = self.camera.depth_range()[1]
        z = np.asarray(self.shape_z, dtype=np.float64)
        return np.isfinite(z) & (z < far - 1e-3)
