# SPDX-License-Identifier: GPL-3.0-or-later
"""Which surface points a camera sees, how well, and the condition a view generator gets from that.

Why one module: the same three facts decide both what a view generator is told is known (the
``Condition``'s masks) and how much a generated view may change a texel or vertex (its weight), so they
are computed once per camera (:class:`ViewGeometry`) and used for both. The weight is spec §11.2 step 4::

    w = visible · max(0, n·v)^p · feather(frame) · (1 − near_edge)      (0 beyond ``max_angle``)

* ``visible``: inside the frame and not behind the mesh's own z-buffer from that camera (rasterised at
  the render's supersampling; tolerance ``depth_eps`` × depth, 1 % by default); with a generated depth
  also ``|z − D(p)| ≤ depth_tolerance × z`` (texels the generated geometry disagrees with are rejected).
* ``n·v``: smooth normal against the unit vector to the camera centre; p = ``exponent`` (StableGen's
  default 3). Points seen more obliquely than ``max_angle`` (70°, Paint3D's 68°) get 0.
* ``feather``: smoothstep to 0 over the outer ``feather`` fraction of the frame on every side.
* ``near_edge``: silhouettes and depth discontinuities of the render, widened: 1 within ``edge_px``
  pixels, 0 beyond ``2·edge_px`` (smoothstep between) — colours there mix foreground and background.

The condition's ``rgb_mask`` ("seen well") is the geometric part of the same test at pixel level: fully
covered, facing within ``max_angle`` and more than ``edge_px`` from any edge (IVID's RGB erosion), so a
point that can receive weight from a view is one the view was told it knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from backend import cameras
from backend.texture.project import sample_bilinear, sample_nearest
from backend.views.mesh_render import MeshRender, camera_space, render_mesh
from backend.views.rgbd import Camera, Condition


@dataclass
class WeightOptions:
    """Knobs of the view weight (module docstring); defaults follow spec §11.2."""

    exponent: float = 3.0
    max_angle: float = 70.0
    edge_px: float = 2.0
    depth_edge: float = 0.03
    feather: float = 0.08
    depth_eps: float = 0.01
    depth_tolerance: float = 0.03

    @property
    def min_cos(self) -> float:
        return math.cos(math.radians(self.max_angle))


@dataclass
class ViewGeometry:
    """Everything about a camera that depends on the mesh's geometry only (computed once per camera).

    ``z``: rendered camera-space depth, ``far`` on the background; ``cos``: per-pixel cos(normal, to
    camera), 0 on the background; ``edge_factor``: 1 − near_edge per pixel; ``seen``: the well-seen mask.
    """

    camera: Camera
    render: MeshRender
    z: np.ndarray
    cos: np.ndarray
    edge_factor: np.ndarray
    seen: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return self.render.coverage >= 1.0 - 1e-6


@dataclass
class ViewWeights:
    """Per-point result of :func:`view_weights`: pixel position, camera depth, cosine, visibility, weight."""

    xy: np.ndarray
    z: np.ndarray
    cos: np.ndarray
    visible: np.ndarray
    weight: np.ndarray


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / max(e1 - e0, 1e-12), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _edge_pixels(coverage: np.ndarray, z: np.ndarray, depth_edge: float) -> np.ndarray:
    """Silhouette (partly covered, or covered next to background) and depth-discontinuity pixels."""
    covered = coverage > 0
    full = coverage >= 1.0 - 1e-6
    edges = covered & ~full
    pad_c = np.pad(covered, 1, constant_values=False)
    zz = np.pad(np.where(covered, z, np.inf), 1, constant_values=np.inf)
    h, w = coverage.shape
    for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        nc = pad_c[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        nz = zz[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        edges |= covered & ~nc
        with np.errstate(invalid="ignore"):
            edges |= covered & nc & (np.abs(nz - z) > depth_edge * np.minimum(z, nz))
    return edges


def view_geometry(verts: np.ndarray, faces: np.ndarray, normals: np.ndarray, camera: Camera,
                  options: WeightOptions, supersample: int = 3) -> ViewGeometry:
    """Render the mesh (normals as attributes) into ``camera`` and derive the per-pixel maps."""
    render = render_mesh(verts, faces, normals, camera, supersample)
    _, far = camera.depth_range()
    inside = render.coverage > 0
    z = np.where(inside, render.z, far).astype(np.float32)
    n = render.attrs.astype(np.float64)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)
    _, dirs = cameras.pixel_rays(camera.cam2world, camera.K, camera.width, camera.height)
    cos = np.where(inside, -(n * dirs.reshape(camera.height, camera.width, 3)).sum(axis=2), 0.0)
    edges = _edge_pixels(render.coverage, z, options.depth_edge)
    dist = ndimage.distance_transform_edt(~edges) if edges.any() else np.full(edges.shape, np.inf)
    edge_factor = smoothstep(options.edge_px, 2.0 * options.edge_px, dist).astype(np.float32)
    full = render.coverage >= 1.0 - 1e-6
    seen = full & (cos > options.min_cos) & (dist > options.edge_px)
    return ViewGeometry(camera, render, z, cos.astype(np.float32), edge_factor, seen)


def fragment_cos(geometry: ViewGeometry) -> np.ndarray:
    """cos(normal, to camera) per sub-pixel fragment [H·s, W·s] (0 on the background).

    A pixel's ``cos`` is the mean over its fragments, so a face that covers two of a pixel's nine fragments
    at 72° can sit in a pixel that passes the 70° test; per fragment it does not, as its texels do not."""
    r, cam = geometry.render, geometry.camera
    s = r.supersample
    n = r.sub_attrs.astype(np.float64)
    n /= np.maximum(np.linalg.norm(n, axis=2, keepdims=True), 1e-12)
    _, dirs = cameras.pixel_rays(cam.cam2world, cam.K, cam.width, cam.height)
    d = np.repeat(np.repeat(dirs.reshape(cam.height, cam.width, 3), s, axis=0), s, axis=1)
    return np.where(r.face >= 0, -(n * d).sum(axis=2), 0.0)


def frame_feather(xy: np.ndarray, camera: Camera, margin: float) -> np.ndarray:
    """Smoothstep from 0 at the frame border to 1 at ``margin`` × size inside it (product over x and y)."""
    if margin <= 0:
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= camera.width) & (xy[:, 1] >= 0) & (xy[:, 1] <= camera.height)
        return inside.astype(np.float64)
    fx = np.nan_to_num(xy[:, 0] / camera.width, nan=-1.0)
    fy = np.nan_to_num(xy[:, 1] / camera.height, nan=-1.0)
    return (smoothstep(0.0, margin, fx) * smoothstep(0.0, margin, 1.0 - fx)
            * smoothstep(0.0, margin, fy) * smoothstep(0.0, margin, 1.0 - fy))


def view_weights(points: np.ndarray, normals: np.ndarray, geometry: ViewGeometry, options: WeightOptions,
                 generated_depth: np.ndarray | None = None) -> ViewWeights:
    """Visibility and weight (module docstring) of world ``points`` with unit ``normals`` in one camera.

    ``visible`` is computed for points facing the camera within ``max_angle`` only (False elsewhere).
    ``generated_depth`` may have another resolution than the camera (same field of view)."""
    cam = geometry.camera
    r = geometry.render
    pts = np.asarray(points, dtype=np.float64)
    xy, z = camera_space(pts, cam)
    to_cam = cam.position[None, :] - pts
    to_cam /= np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("nd,nd->n", np.asarray(normals, dtype=np.float64), to_cam)
    with np.errstate(invalid="ignore"):
        in_frame = ((z > 1e-6) & (xy[:, 0] >= 0) & (xy[:, 0] <= cam.width)
                    & (xy[:, 1] >= 0) & (xy[:, 1] <= cam.height))
    # The depth tests only for points in the frame and facing the camera (usually under half of them).
    idx = np.nonzero(in_frame & (cos > options.min_cos))[0]
    pxy, pz = xy[idx], z[idx]
    zbuf = sample_nearest(r.sub_z, pxy * r.supersample).astype(np.float64)
    ok = pz <= zbuf + options.depth_eps * np.abs(pz)
    if generated_depth is not None:
        gd = np.asarray(generated_depth, dtype=np.float64)  # may be at the generator's own resolution
        d = sample_nearest(gd, pxy * [gd.shape[1] / cam.width, gd.shape[0] / cam.height])
        ok &= np.abs(pz - d) <= options.depth_tolerance * np.abs(pz)
    visible = np.zeros(len(z), dtype=bool)
    visible[idx] = ok
    w = np.zeros(len(z), dtype=np.float64)
    idx, pxy = idx[ok], pxy[ok]
    w[idx] = (cos[idx] ** options.exponent * frame_feather(pxy, cam, options.feather)
              * sample_bilinear(geometry.edge_factor, pxy))
    return ViewWeights(xy, z, cos, visible, w)


def make_condition(geometry: ViewGeometry, rgb: np.ndarray) -> Condition:
    """The generator's condition from a render of the mesh's current colours.

    Colour is known where the mesh is seen well (``seen``). Depth is known where the pixel is fully
    covered; the background is *not* known depth - G_c is trained with the backdrop generated afresh in
    every view (``backend.views.warp``) - and silhouette pixels mix both. ``z_convex`` is the rendered
    depth everywhere, far on the background, so the per-step depth bound keeps new content inside the
    mesh's silhouette (the mesh is exact geometry, not a convex hull of warped pixels). The same depth is
    the view's known geometry (``shape_z``) for a G_c trained with shape channels.
    """
    cov = geometry.render.coverage
    depth_mask = cov >= 1.0 - 1e-6
    rgb = np.where(geometry.seen[..., None], rgb, 0.0).astype(np.float32)
    z = geometry.z.astype(np.float32)
    return Condition(rgb=rgb, z=z.copy(), rgb_mask=geometry.seen.copy(), depth_mask=depth_mask,
                     z_convex=z.copy(), camera=geometry.camera, shape_z=z.copy())
