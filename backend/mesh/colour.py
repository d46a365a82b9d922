"""Vertex colours: from the generator's colour field, optionally refined by projecting a rendered image.

Why at the final vertices: colour queries after decimation cost 10-100x fewer network calls than at
marching-cubes resolution (spec mesh.md §4.4). Colours are read a little *inside* the surface along the
normal because the density ramps up over a few voxels and the colour field is most meaningful where the
density is already high. The generator's 3-channel colour features are known to look duller than its
super-resolved renders (PanoHead #27), so ``project_image`` can overwrite them with an actual image from a
known camera, wherever a z-buffer test says the vertex is seen and the surface faces the camera.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from backend.mesh.field import Field, bytes_per_point
from backend.mesh.grid import chunk_points, default_budget
from backend.mesh.raster import project, rasterize


def query_colours(field: Field, points: np.ndarray, budget_bytes: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Colour field at world points [M, 3] -> [M, 3] float32 in [0, 1], in memory-bounded chunks.

    ``on_progress(done, total)`` after every chunk: a job's cancel check (it may raise)."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    out = np.empty((len(pts), 3), dtype=np.float32)
    chunk = chunk_points(budget_bytes or default_budget(field.device), bytes_per_point(field))
    with torch.no_grad():
        for s in range(0, len(pts), chunk):
            xyz = torch.from_numpy(pts[s : s + chunk]).to(field.device)
            out[s : s + chunk] = field.colour(xyz).float().clamp(0.0, 1.0).cpu().numpy()
            if on_progress is not None:
                on_progress(min(s + chunk, len(pts)), len(pts))
    return out


def vertex_colours(
    field: Field, verts: np.ndarray, normals: np.ndarray, inset: float, budget_bytes: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Colours at ``verts - inset * normals`` (normals point outwards); ``on_progress`` per chunk."""
    pts = np.asarray(verts, dtype=np.float32) - float(inset) * np.asarray(normals, dtype=np.float32)
    return query_colours(field, pts, budget_bytes, on_progress)


def sample_image(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear sample of an H×W×3 image (uint8 or float in [0, 1]) at continuous pixel coordinates."""
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    h, w = img.shape[:2]
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy)[:, :3]


def project_image(
    verts: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    colours: np.ndarray,
    image: np.ndarray,
    cam2world: np.ndarray,
    intrinsics: np.ndarray,
    strength: float = 1.0,
    min_cos: float = 0.2,
    depth_tolerance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend an image seen from an EG3D camera into vertex colours: (new colours, blend weight per vertex).

    ``cam2world`` (4×4, OpenCV axes) and ``intrinsics`` (3×3, normalised by image size) are the generator's
    camera (``backend.cameras.split_label``). A vertex takes the image colour with weight
    ``strength · ramp(cos)`` where ``cos`` is the cosine between its normal and the direction to the camera
    (0 below ``min_cos``, so grazing views do not smear), and only when it passes the depth test: its
    camera depth is within ``depth_tolerance`` (default: two mean edge lengths) of the mesh's own z-buffer
    at its pixel.
    """
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    h, w = np.asarray(image).shape[:2]
    xy, z = project(v, cam2world, intrinsics, w, h)
    frags = rasterize(torch.from_numpy(xy), torch.from_numpy(z), torch.from_numpy(f), h, w)
    zbuf = frags.depth.numpy().astype(np.float64)
    if depth_tolerance is None:
        edge = np.linalg.norm(v[f[:, 1]] - v[f[:, 0]], axis=1)
        depth_tolerance = 2.0 * float(edge.mean()) if len(edge) else 1e-3
    px = np.floor(xy[:, 0]).astype(np.int64)
    py = np.floor(xy[:, 1]).astype(np.int64)
    in_image = (z > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    visible = np.zeros(len(v), dtype=bool)
    idx = np.flatnonzero(in_image)
    visible[idx] = z[idx] <= zbuf[py[idx], px[idx]] + depth_tolerance
    centre = np.asarray(cam2world, dtype=np.float64).reshape(4, 4)[:3, 3]
    to_cam = centre - v
    to_cam /= np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12)
    cos = (np.asarray(normals, dtype=np.float64) * to_cam).sum(axis=1)
    weight = strength * np.clip((cos - min_cos) / max(1e-6, 1.0 - min_cos), 0.0, 1.0) * visible
    out = np.asarray(colours, dtype=np.float32).copy()
    sel = weight > 0
    if sel.any():
        sampled = sample_image(image, xy[sel])
        wsel = weight[sel, None].astype(np.float32)
        out[sel] = (1 - wsel) * out[sel] + wsel * sampled
    return out, weight.astype(np.float32)
