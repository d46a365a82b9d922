# SPDX-License-Identifier: GPL-3.0-or-later
"""Warping RGBD views between cameras: grid meshes, the forward-backward training warp, and IVID's
aggregated conditioning from many previous views (spec §3 and §4.2).

Why meshes rather than point splats: a view's pixels unprojected with their depth and joined into a
triangle grid cover the target image without holes where the surface is continuous, and triangles
across depth jumps (where the surface is not) can be cut or kept with a tiny weight. Everything runs on
the z-buffer rasteriser at ``supersample``× and is box-filtered down, as IVID does at 3×.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from backend.views.mesh_render import render_mesh
from backend.views.rgbd import Camera, Condition, RGBDView

REGULAR, EDGE, PADDING, BACKGROUND = 0, 1, 2, 3
SAMPLE_EDGE_TOL = 0.03  # relative depth jump that cuts a triangle at sampling (IVID atol/rtol 0.03)
TRAIN_EDGE_TOL = 0.02  # ... in the back pass of the training warp (IVID 0.02)
ANGLE_SHARPNESS = 20.0  # w = exp(-20 θ): nearly winner-take-all between source views
MIN_WEIGHT = 1e-4
ERODED_FACTOR = 1e-8
FALLBACK_FACTOR = 1e-16  # edge and padding triangles count only where nothing else covers a pixel
COPY_FACTOR = 1e-3  # a pixel a generated view copied from earlier views, against the original's weight
# a pixel a generated view invented (neither observed nor copied): any observation of the surface, even at the
# angle weight's floor, outweighs it (measured: docs/views.md, *Observations beat inventions*)
INVENTED_FACTOR = 1e-5


@dataclass
class ViewMesh:
    """A view as a world-space triangle grid: per-vertex colour, normal and validity; per-face kind."""

    verts: np.ndarray  # [V, 3] world
    colours: np.ndarray  # [V, 3]
    normals: np.ndarray  # [V, 3] unit, facing the view's camera
    faces: np.ndarray  # [F, 3]
    kind: np.ndarray  # [F] REGULAR / EDGE / PADDING
    eroded: np.ndarray  # [V] bool: near a depth edge (colour not trusted)


def _pixel_dirs(camera: Camera, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Camera-space directions with z = 1 for normalised image coordinates (u, v) [H, W]."""
    k = camera.K
    y = (v - k[1, 2]) / k[1, 1]
    x = (u - k[0, 2] - k[0, 1] * y) / k[0, 0]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def depth_edges(z: np.ndarray, tol: float) -> np.ndarray:
    """Pixels with 3 or more depth-discontinuous 8-neighbour pairs (relative jump > ``tol``; IVID §3.3)."""
    zp = np.pad(np.asarray(z, dtype=np.float64), 1, mode="edge")
    h, w = z.shape
    count = np.zeros((h, w), dtype=np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            n = zp[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w]
            count += (np.abs(n - z) > tol * np.minimum(n, z)).astype(np.int32)
    return count >= 3


def view_mesh(view: RGBDView, cut_tol: float | None, skirt: bool, erode: int = 0) -> ViewMesh:
    """Unproject every pixel centre with its depth and join neighbours into triangles.

    ``cut_tol``: triangles whose depths differ by more than this fraction are marked EDGE (None: never).
    ``skirt``: add a ring of vertices one image width outside the frame (same depth and colour as the
    border), so a moved camera sees no out-of-frame gap; those triangles are PADDING.
    ``erode``: vertices within ``2·erode + 1`` px of an EDGE triangle are marked eroded.
    Triangles touching a background pixel (depth at the far plane) are BACKGROUND and never drawn: the
    synthetic data's (and the GAN's) backdrop is a screen-space gradient, not a surface, so warping it as
    a plane at any depth would invent huge disocclusions; it is generated afresh in each view instead.
    """
    cam = view.camera
    h, w = view.z.shape
    z = np.asarray(view.z, dtype=np.float64)
    rgb = np.asarray(view.rgb, dtype=np.float64)
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(h) + 0.5) / h
    if skirt:
        z = np.pad(z, 1, mode="edge")
        rgb = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge")
        u = np.concatenate([[u[0] - 1.0], u, [u[-1] + 1.0]])
        v = np.concatenate([[v[0] - 1.0], v, [v[-1] + 1.0]])
    hh, ww = z.shape
    uu, vv = np.meshgrid(u, v)
    pts_cam = _pixel_dirs(cam, uu, vv) * z[..., None]
    c2w = cam.cam2world
    pts = pts_cam @ c2w[:3, :3].T + c2w[:3, 3]
    # normals from central differences of the unprojected grid, turned towards the camera
    gx = np.gradient(pts, axis=1)
    gy = np.gradient(pts, axis=0)
    n = np.cross(gx, gy)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    to_cam = c2w[:3, 3] - pts
    n *= np.where((n * to_cam).sum(-1, keepdims=True) < 0, -1.0, 1.0)

    idx = np.arange(hh * ww).reshape(hh, ww)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    kind = np.full(len(faces), REGULAR, dtype=np.int8)
    zf = z.reshape(-1)[faces]
    far = cam.depth_range()[1]
    if cut_tol is not None:
        kind[zf.max(1) - zf.min(1) > cut_tol * zf.min(1)] = EDGE
    if skirt:
        border = np.ones((hh, ww), dtype=bool)
        border[1:-1, 1:-1] = False
        kind[border.reshape(-1)[faces].any(1)] = PADDING
    kind[(zf >= far * (1 - 1e-4)).any(1)] = BACKGROUND
    eroded = np.zeros(hh * ww, dtype=bool)
    if erode > 0 and (kind == EDGE).any():
        touched = np.zeros(hh * ww, dtype=bool)
        touched[faces[kind == EDGE].reshape(-1)] = True
        size = 2 * erode + 1
        eroded = ndimage.binary_dilation(touched.reshape(hh, ww), np.ones((size, size), bool)).reshape(-1)
    return ViewMesh(pts.reshape(-1, 3), rgb.reshape(-1, 3), n.reshape(-1, 3), faces, kind, eroded)


def _pool_mean(x: np.ndarray, s: int) -> np.ndarray:
    h, w = x.shape[0] // s, x.shape[1] // s
    return x.reshape(h, s, w, s, *x.shape[2:]).mean(axis=(1, 3))


def forward_backward_warp(view: RGBDView, novel: Camera, supersample: int = 3, cut_tol: float = TRAIN_EDGE_TOL,
                          min_coverage: float = 0.75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IVID's training warp (§4.2): source -> novel camera (skirted, uncut) -> back to the source (cut).

    Returns ``(rgb [H, W, 3], z [H, W], mask [H, W] bool)`` in the source camera: what survives a trip to
    ``novel`` and back, i.e. the source minus what the novel camera cannot see - the holes a real novel
    view has relative to its source, with the original view as the target.
    """
    novel = novel.resized(view.camera.width, view.camera.height)
    fwd = view_mesh(view, cut_tol=None, skirt=True)
    there = render_mesh(fwd.verts, fwd.faces[fwd.kind != BACKGROUND], fwd.colours, novel, supersample)
    far = novel.depth_range()[1]
    z_n = np.where(np.isfinite(there.z), there.z, far)
    back_view = RGBDView(there.attrs, z_n.astype(np.float32), novel)
    back = view_mesh(back_view, cut_tol=cut_tol, skirt=False)
    keep = back.faces[back.kind == REGULAR]
    home = render_mesh(back.verts, keep, back.colours, view.camera, supersample)
    mask = (home.coverage > min_coverage) & ~depth_edges(np.where(np.isfinite(home.z), home.z, far), cut_tol)
    z = np.where(mask, home.z, 0.0).astype(np.float32)
    rgb = np.where(mask[..., None], home.attrs, 0.0).astype(np.float32)
    return rgb, z, mask


def erosion_sizes(resolution: int) -> tuple[int, int]:
    """IVID's colour erosion (3 px around depth edges, then a 5×5 mask erosion, at 128 px) scaled to
    ``resolution``: (2, 3) at 64 px, (1, 1) at 32 px."""
    s = resolution / 128
    return max(1, round(3 * s)), max(1, 2 * round(2 * s) + 1)


def aggregate(views: list[RGBDView], target: Camera, supersample: int = 3, cut_tol: float = SAMPLE_EDGE_TOL,
              erode_rgb: int | None = None, mask_erode: int | None = None) -> Condition:
    """IVID's aggregated condition for ``target`` from all previous ``views`` (spec §3.2-3.3).

    Each view is meshed (skirted, edges marked), rendered into the target with its own z-buffer, and
    blended per sub-pixel with weight ``exp(−20·θ)`` (θ = how obliquely the *source* camera saw the
    surface), eroded vertices ×1e−8, edge and padding triangles ×1e−16. Depth averages the regular
    contributions. Pixels a generated view copied from earlier ones (``RGBDView.copied``) weigh ×1e−3: each
    surface point is taken from the view that first saw it unless that view saw it far more obliquely, so
    what the first view saw is not resampled once more with every step of a trajectory. Pixels a generated
    view invented weigh ×1e−5, below any observation (the angle weight's floor is 1e−4): a guess fills only
    what no real view saw, however obliquely.
    """
    auto_erode, auto_mask = erosion_sizes(min(target.width, target.height))
    erode_rgb = auto_erode if erode_rgb is None else erode_rgb
    mask_erode = auto_mask if mask_erode is None else mask_erode
    s = supersample
    h, w = target.height * s, target.width * s
    acc_rgb = np.zeros((h, w, 3))
    acc_w = np.zeros((h, w))
    acc_wz = np.zeros((h, w))
    acc_z = np.zeros((h, w))
    n_reg = np.zeros((h, w))
    trusted = np.zeros((h, w), dtype=bool)
    z_convex = np.full((h, w), np.inf)
    for view in views:
        m = view_mesh(view, cut_tol=cut_tol, skirt=True, erode=erode_rgb)
        to_cam = view.camera.position - m.verts
        to_cam /= np.maximum(np.linalg.norm(to_cam, axis=1, keepdims=True), 1e-12)
        theta = np.arccos(np.clip((m.normals * to_cam).sum(1), -1.0, 1.0))
        vw = np.maximum(np.exp(-ANGLE_SHARPNESS * theta), MIN_WEIGHT)
        vw = np.where(m.eroded, vw * ERODED_FACTOR, vw)
        if view.copied is not None:  # resampling a resampled copy blurs: the original view wins
            vw = np.where(np.pad(view.copied, 1, mode="edge").reshape(-1), vw * COPY_FACTOR, vw * INVENTED_FACTOR)
        attrs = np.concatenate([m.colours, np.log(vw)[:, None], m.eroded[:, None].astype(np.float64)], axis=1)
        drawn = m.kind != BACKGROUND
        if not drawn.any():  # a view of nothing but backdrop says nothing about the target
            continue
        r = render_mesh(m.verts, m.faces[drawn], attrs, target, s)
        covered = r.face >= 0
        kind = np.where(covered, m.kind[drawn][np.maximum(r.face, 0)], -1)
        wt = np.exp(r.sub_attrs[..., 3].astype(np.float64)) * covered
        wt = np.where((kind == EDGE) | (kind == PADDING), wt * FALLBACK_FACTOR, wt)
        acc_rgb += wt[..., None] * r.sub_attrs[..., :3]
        acc_w += wt
        acc_wz += np.where(covered, wt * np.where(covered, r.sub_z, 0.0), 0.0)
        regular = kind == REGULAR
        acc_z += np.where(regular, r.sub_z, 0.0)
        n_reg += regular
        trusted |= regular & (r.sub_attrs[..., 4] < 0.5)
        z_convex = np.minimum(z_convex, np.where(covered & (kind != PADDING), r.sub_z, np.inf))
    far = target.depth_range()[1]
    any_w = acc_w > 0
    rgb = np.where(any_w[..., None], acc_rgb / np.maximum(acc_w, 1e-300)[..., None], 0.0)
    z = np.where(n_reg > 0, acc_z / np.maximum(n_reg, 1), np.where(any_w, acc_wz / np.maximum(acc_w, 1e-300), far))
    z_convex = np.where(np.isfinite(z_convex), z_convex, far)
    rgb_p = _pool_mean(rgb, s)
    z_p = _pool_mean(np.minimum(z, far), s)
    zc_p = _pool_mean(np.minimum(z_convex, far), s)
    depth_mask = (_pool_mean((n_reg > 0).astype(np.float64), s) > 0.5) & ~depth_edges(z_p, cut_tol)
    rgb_mask = _pool_mean(trusted.astype(np.float64), s) > 0.5
    if mask_erode > 1:
        rgb_mask = ndimage.binary_erosion(rgb_mask, np.ones((mask_erode, mask_erode), bool), border_value=1)
    rgb_mask &= depth_mask
    return Condition(rgb_p.astype(np.float32), z_p.astype(np.float32), rgb_mask, depth_mask,
                     zc_p.astype(np.float32), target)
