# SPDX-License-Identifier: GPL-3.0-or-later
"""Projection between a mesh and a camera image: projected UVs, image sampling, textured renders.

Why here: "where does this surface point land in that image" is needed three ways — the per-vertex
"projected UV" layer Blender users know from Dream Textures (§11.1), sampling a generated view at every
texel's projection (back-projection, §11.2 step 3), and the reverse, rendering the texture built so far
into a camera (what the next view is conditioned on, and the PSNR check).

Conventions. Pixel coordinates are ``backend.cameras``' (x right, y down, pixel (row i, column j) has
its centre at ``(j + 0.5, i + 0.5)``). **Projected UVs** follow Blender's image UVs: origin at the
image's *bottom-left* corner, ``u = x / W`` and ``v = 1 − y / H``, so pixel (i, j)'s centre is at
``((j + 0.5) / W, 1 − (i + 0.5) / H)`` and the image maps onto [0, 1]². **Texture UVs** are glTF's
(``backend.mesh.texture``: origin top-left, texel (row, column) centred at ``((c + 0.5)/T, (r + 0.5)/T)``).
"""

from __future__ import annotations

import numpy as np

from backend.views.mesh_render import MeshRender, camera_space
from backend.views.rgbd import Camera


def projected_uv(points: np.ndarray, camera: Camera) -> np.ndarray:
    """[N, 2] float32 Blender image UVs of world points in ``camera`` (module docstring; any value for
    points behind the camera, whose weight is 0)."""
    xy, _ = camera_space(points, camera)
    uv = np.stack([xy[:, 0] / camera.width, 1.0 - xy[:, 1] / camera.height], axis=1)
    return np.nan_to_num(uv, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _as_channels(image: np.ndarray) -> tuple[np.ndarray, bool]:
    a = np.asarray(image)
    return (a[..., None], True) if a.ndim == 2 else (a, False)


def sample_bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``image`` [H, W(, C)] at continuous pixel coordinates ``xy`` [N, 2], clamped
    to the border (float64 maths, exact; cv2.remap rounds the weights to 1/32)."""
    img, flat = _as_channels(image)
    h, w = img.shape[:2]
    x = np.clip(np.nan_to_num(xy[:, 0] - 0.5), 0.0, w - 1.0)
    y = np.clip(np.nan_to_num(xy[:, 1] - 0.5), 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(len(y), np.int64)
    fx = (x - x0)[:, None] if w > 1 else np.zeros((len(x), 1))
    fy = (y - y0)[:, None] if h > 1 else np.zeros((len(y), 1))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    f = img.astype(np.float64, copy=False)
    out = ((f[y0, x0] * (1 - fx) + f[y0, x1] * fx) * (1 - fy) + (f[y1, x0] * (1 - fx) + f[y1, x1] * fx) * fy)
    return out[:, 0] if flat else out


def sample_nearest(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """The pixel that contains each continuous position (clamped to the border)."""
    h, w = np.asarray(image).shape[:2]
    x = np.clip(np.floor(np.nan_to_num(xy[:, 0])), 0, w - 1).astype(np.int64)
    y = np.clip(np.floor(np.nan_to_num(xy[:, 1])), 0, h - 1).astype(np.int64)
    return np.asarray(image)[y, x]


def subpixel_barycentrics(render: MeshRender, verts: np.ndarray, faces: np.ndarray,
                          camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, face, perspective-correct barycentrics [K, 3]) of every covered sub-pixel.

    ``render_mesh`` keeps only the winning face per sub-pixel; the barycentrics are recomputed here so
    that a texture can be sampled per sub-pixel (averaging interpolated UVs over a pixel would mix charts
    across UV seams).
    """
    s = render.supersample
    rows, cols = np.nonzero(render.face >= 0)
    f = render.face[rows, cols].astype(np.int64)
    xy, z = camera_space(verts, camera)
    tri = np.asarray(faces, dtype=np.int64)[f]
    p = xy[tri] * s  # [K, 3, 2]
    px, py = cols + 0.5, rows + 0.5

    def edge(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (b[:, 0] - a[:, 0]) * (y - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x - a[:, 0])

    area = edge(p[:, 0], p[:, 1], p[:, 2, 0], p[:, 2, 1])
    b = np.stack([edge(p[:, 1], p[:, 2], px, py), edge(p[:, 2], p[:, 0], px, py),
                  edge(p[:, 0], p[:, 1], px, py)], axis=1)
    b = b / np.where(area == 0, 1.0, area)[:, None]
    b = np.clip(b, 0.0, None) / z[tri]
    b /= np.maximum(b.sum(axis=1, keepdims=True), 1e-30)
    return rows, cols, f, b


def render_texture(render: MeshRender, verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray,
                   texture: np.ndarray, camera: Camera) -> np.ndarray:
    """[H, W, 3] float32 colours of a UV-textured mesh (mean over covered sub-pixels, 0 where none).

    ``render`` must be ``render_mesh`` of the same ``verts``/``faces`` from ``camera``; ``texture`` is
    float [T, T, 3] with gutters filled (bilinear lookups at chart borders read gutter texels).
    """
    s = render.supersample
    h, w = render.face.shape
    rows, cols, f, b = subpixel_barycentrics(render, verts, faces, camera)
    tri = np.asarray(faces, dtype=np.int64)[f]
    uv = np.einsum("kc,kcd->kd", b, np.asarray(uvs, dtype=np.float64)[tri])
    size = np.array([texture.shape[1], texture.shape[0]], dtype=np.float64)
    sub = np.zeros((h, w, 3), dtype=np.float64)
    sub[rows, cols] = sample_bilinear(texture, uv * size)
    count = (render.face >= 0).reshape(h // s, s, w // s, s).sum(axis=(1, 3))
    total = sub.reshape(h // s, s, w // s, s, 3).sum(axis=(1, 3))
    return (total / np.maximum(count, 1)[..., None]).astype(np.float32)
