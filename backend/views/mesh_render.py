# SPDX-License-Identifier: GPL-3.0-or-later
"""Render a triangle mesh's per-vertex attributes and depth into a camera, supersampled.

Why: every step of the novel-view loop is "render this mesh from that camera" — a previous RGBD view
turned into a grid mesh (warping), or the textured head mesh (texturing). IVID rasterises at 3× and
keeps coverage; so do we, on top of the z-buffer rasteriser in ``backend.mesh.raster`` (CPU or GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from backend.mesh.raster import rasterize
from backend.views.rgbd import Camera


@dataclass
class MeshRender:
    """Output of :func:`render_mesh` at the camera's resolution.

    ``attrs`` [H, W, C] is the mean over covered sub-pixels (0 where none), ``z`` [H, W] the mean covered
    camera-space depth (inf where none), ``coverage`` [H, W] the covered fraction of sub-pixels, ``face``
    [H·s, W·s] the winning face per sub-pixel (−1 = empty) and ``sub_z`` its depth, for callers that need
    per-fragment information (face flags, visibility); ``sub_attrs`` [H·s, W·s, C] are the interpolated
    attributes per sub-pixel.
    """

    attrs: np.ndarray
    z: np.ndarray
    coverage: np.ndarray
    face: np.ndarray
    sub_z: np.ndarray
    sub_attrs: np.ndarray
    supersample: int


def camera_space(verts: np.ndarray, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World points [V, 3] -> (pixel coordinates [V, 2] at the camera's resolution, camera z [V])."""
    c2w = camera.cam2world
    cam = (np.asarray(verts, dtype=np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ camera.K.T)[:, :2] / z[:, None]
    return uv * np.array([camera.width, camera.height], dtype=np.float64), z


def render_mesh(verts: np.ndarray, faces: np.ndarray, attrs: np.ndarray | None, camera: Camera,
                supersample: int = 3) -> MeshRender:
    """Rasterise ``faces`` of ``verts`` (world) at ``supersample``× and box-filter down to the camera size."""
    s = int(supersample)
    h, w = camera.height * s, camera.width * s
    xy, z = camera_space(verts, camera)
    frags = rasterize(torch.from_numpy(xy * s), torch.from_numpy(z),
                      torch.from_numpy(np.asarray(faces, dtype=np.int64)), h, w)
    face = frags.face
    covered = (face >= 0).float()
    a = np.zeros((0,), np.float32) if attrs is None else np.asarray(attrs, dtype=np.float32)
    channels = 0 if attrs is None else a.shape[1]
    sub = torch.zeros((h, w, channels), dtype=torch.float32)
    if channels and bool(covered.any()):
        tri = torch.from_numpy(np.asarray(faces, dtype=np.int64))[face.clamp_min(0)]  # [h, w, 3]
        va = torch.from_numpy(a)[tri]  # [h, w, 3, C]
        sub = (frags.bary[..., None] * va).sum(dim=2) * covered[..., None]
    sub_z = torch.where(face >= 0, frags.depth, torch.zeros_like(frags.depth))

    def pool(t: torch.Tensor) -> torch.Tensor:  # [h, w, C] -> [H, W, C] sums
        return F.avg_pool2d(t.permute(2, 0, 1)[None], s, s)[0].permute(1, 2, 0) * (s * s)

    n = pool(covered[..., None])[..., 0]
    safe = n.clamp_min(1.0)
    out_attrs = pool(sub) / safe[..., None] if channels else torch.zeros((camera.height, camera.width, 0))
    out_z = torch.where(n > 0, pool(sub_z[..., None])[..., 0] / safe, torch.full_like(n, float("inf")))
    return MeshRender(out_attrs.numpy(), out_z.numpy(), (n / (s * s)).numpy(), face.numpy(),
                      frags.depth.numpy(), sub.numpy(), s)
