"""Texturing geometry: projected UVs, visibility weights, the blend, and projection round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.spheres import PIVOT, icosphere, pattern_colours, sphere_mesh

from backend.mesh.cleanup import vertex_normals
from backend.mesh.data import Mesh
from backend.mesh.texture import texel_geometry
from backend.texture import bake
from backend.texture.cameras_io import ring
from backend.texture.generators import projection_generator
from backend.texture.pipeline import texture_mesh
from backend.texture.project import projected_uv, render_texture
from backend.texture.visibility import WeightOptions, view_geometry, view_weights
from backend.views.mesh_render import render_mesh
from backend.views.rgbd import Condition, RGBDView, backdrop, orbit

torch.set_num_threads(1)


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((a[mask].astype(np.float64) - b[mask]) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


def test_projected_uv_is_where_render_mesh_draws_the_point() -> None:
    mesh = sphere_mesh(3)
    cam = orbit(25.0, -10.0, 48)
    r = render_mesh(mesh.vertices, mesh.faces, mesh.vertices, cam)  # attribute = world position
    full = r.coverage >= 1.0
    rows, cols = np.nonzero(full)
    assert len(rows) > 500
    uv = projected_uv(r.attrs[full], cam)
    expect = np.stack([(cols + 0.5) / cam.width, 1.0 - (rows + 0.5) / cam.height], axis=1)
    err_px = np.abs(uv - expect) * [cam.width, cam.height]
    assert err_px.max() < 0.05
    # Blender's image UVs: the origin is the bottom-left corner, v grows upwards.
    top = projected_uv(np.array([[0.0, 0.2, 0.2]]), orbit(0, 0, 64))  # +y (up) in the world
    assert top[0, 1] > 0.5 and abs(top[0, 0] - 0.5) < 1e-6


def test_back_faces_and_occluded_vertices_get_zero_weight() -> None:
    big_v, big_f = icosphere(3, 0.25)
    small_v, small_f = icosphere(2, 0.06, PIVOT + np.array([0.0, 0.0, 0.32]))  # in front of the big one
    verts = np.concatenate([big_v, small_v])
    faces = np.concatenate([big_f, small_f + len(big_v)])
    normals = vertex_normals(verts, faces).astype(np.float64)
    cam = orbit(0.0, 0.0, 64)
    opts = WeightOptions(edge_px=2.0)
    vg = view_geometry(verts, faces, normals, cam, opts)
    vw = view_weights(verts, normals, vg, opts)
    n_big = len(big_v)
    to_cam = cam.position - verts
    to_cam /= np.linalg.norm(to_cam, axis=1, keepdims=True)
    back = (normals * to_cam).sum(1) < 0
    assert back[:n_big].sum() > 100 and np.all(vw.weight[back] == 0) and not vw.visible[back].any()
    # Big-sphere vertices whose line of sight to the camera passes through the small sphere.
    front_centre = PIVOT + np.array([0.0, 0.0, 0.32])
    d = verts[:n_big] - cam.position
    t = np.clip(((front_centre - cam.position) @ d.T) / (d * d).sum(1), 0, 1)
    closest = cam.position + t[:, None] * d
    occluded = (np.linalg.norm(closest - front_centre, axis=1) < 0.05) & ~back[:n_big]
    assert occluded.sum() >= 5
    assert np.all(vw.weight[:n_big][occluded] == 0)
    assert not vw.visible[:n_big][occluded].any()
    # Frontal, unoccluded, away from silhouettes: visible with a weight close to cos^3.
    cos = (normals * to_cam).sum(1)
    clear = (cos > 0.8) & ~np.concatenate([occluded, np.zeros(len(small_v), bool)])
    clear[n_big:] = False
    front = clear & (np.linalg.norm(verts[:, :2], axis=1) > 0.1)  # off the small sphere's shadow
    assert front.sum() > 10 and vw.visible[front].all() and (vw.weight[front] > 0.3).all()
    # Beyond the discard angle nothing is kept, even when visible.
    assert np.all(vw.weight[cos < np.cos(np.radians(70.0))] == 0)


def _constant_generator(colour: tuple[float, float, float]):
    def generate(c: Condition) -> RGBDView:
        rgb = np.broadcast_to(np.asarray(colour, np.float32), (c.camera.height, c.camera.width, 3)).copy()
        return RGBDView(rgb, backdrop(c.z_convex, c.camera), c.camera)

    return generate


def test_texels_seen_by_no_camera_keep_the_mesh_colour() -> None:
    mesh = sphere_mesh(3)
    cam = orbit(0.0, 0.0, 48)
    res = texture_mesh(mesh, [cam], _constant_generator((1.0, 0.0, 0.0)), size=48, texture_size=256)
    out = res.mesh
    geom = texel_geometry(out.vertices, out.faces, out.normals, out.uvs, 256)
    tex = res.mesh.texture.astype(np.float64)[geom.covered] / 255.0
    own = bake.texel_colours_from_vertices(geom, out.faces, pattern_colours(out.vertices))
    rel = geom.position - PIVOT
    back = rel[:, 2] < -0.05  # the far hemisphere: no view of it
    assert back.sum() > 1000
    assert np.abs(tex[back] - own[back]).max() <= 1.0 / 255 + 1e-6
    front = (rel / 0.25)[:, 2] > 0.95
    assert np.abs(tex[front] - [1.0, 0.0, 0.0]).max() <= 1.0 / 255 + 1e-6
    assert res.report["texels_painted"] < geom.count


def test_projecting_an_image_and_rendering_it_back_reproduces_the_image() -> None:
    mesh = sphere_mesh(4)
    cam = orbit(15.0, 5.0, 64)
    h, w = cam.height, cam.width
    y, x = np.mgrid[0:h, 0:w] / 64.0
    # Periods of 20-34 px: detail a 64 px view carries (per-pixel white noise comes back at ~17 dB: the
    # texture is a bilinear resampling of the view, rendered with 3x3 supersampling).
    image = np.stack([0.5 + 0.4 * np.sin(20 * x), 0.5 + 0.4 * np.cos(17 * y), 0.5 + 0.3 * np.sin(12 * (x + y))],
                     axis=2).astype(np.float32)

    def generate(c: Condition) -> RGBDView:
        return RGBDView(image, backdrop(c.z_convex, c.camera), c.camera)

    res = texture_mesh(mesh, [cam], generate, size=64, texture_size=512)
    out = res.mesh
    vg = view_geometry(out.vertices, out.faces, out.normals, cam, WeightOptions(edge_px=2.0))
    rendered = render_texture(vg.render, out.vertices, out.faces, out.uvs, out.texture / 255.0, cam)
    psnr = _psnr(rendered, image, vg.seen)
    assert vg.seen.sum() > 1000
    assert psnr > 45.0, psnr  # measured 51.5 dB (texture 512, 64 px view, 5k faces)
    assert abs(res.report["cameras"][0]["psnr_seen"] - psnr) < 0.5


def test_ring_of_eight_cameras_leaves_no_seen_face_untextured() -> None:
    mesh = sphere_mesh(4)
    named = ring(8, 0.0, 48)
    res = texture_mesh(mesh, [c for _, c in named], projection_generator, size=48, texture_size=512,
                       names=[n for n, _ in named])
    rep = res.report
    assert rep["faces_seen"] > 0.8 * mesh.num_faces
    assert rep["faces_seen_untextured"] == 0
    assert rep["faces_without_texels"] == 0
    # The projection generator re-projects the mesh's own colours: every view is reproduced.
    assert min(c["psnr_seen"] for c in rep["cameras"]) > 45.0  # measured 50.7-58.8 dB
    assert [p.name for p in res.projections] == [n for n, _ in named]
    for p in res.projections:
        assert p.uv.shape == (mesh.num_vertices, 2) and p.weight.shape == (mesh.num_vertices,)
    covered = np.stack([p.weight for p in res.projections]).max(0) > 0
    poles = np.abs(mesh.vertices[:, 1]) > 0.25 * np.sin(np.radians(60))
    assert covered[~poles].all()  # every vertex off the poles is weighted by some camera


def test_sequential_blend_replaces_blends_and_ignores() -> None:
    base = np.zeros((4, 3))
    blend = bake.SequentialBlend(base, refine_gain=0.2)
    red, green = np.tile([1.0, 0, 0], (4, 1)), np.tile([0, 1.0, 0], (4, 1))
    blend.add(red, np.array([0.5, 0.5, 0.5, 0.0]), np.array([0.7, 0.7, 0.7, 0.0]))
    # texel 0: clearly better (replace); 1: comparable (mean); 2: clearly worse (ignored); 3: new.
    blend.add(green, np.array([1.0, 0.5, 0.1, 0.2]), np.array([1.0, 0.7, 0.35, 0.5]))
    c = blend.colours()
    assert np.allclose(c[0], [0, 1, 0]) and np.allclose(c[1], [0.5, 0.5, 0]) and np.allclose(c[2], [1, 0, 0])
    assert np.allclose(c[3], [0, 1, 0])
    # Huge exponents (winner-take-all) do not underflow: weights are max-normalised.
    w = np.array([1e-300, 1e-300, 1e-300, 1e-300])
    b2 = bake.SequentialBlend(base, refine_gain=0.0)
    b2.add(red, w, np.full(4, 0.5))
    b2.add(green, w, np.full(4, 0.5))
    assert np.allclose(b2.colours(), [0.5, 0.5, 0])


@pytest.mark.parametrize("own_uvs", [False, True])
def test_textured_input_is_kept_as_the_starting_texture(own_uvs: bool) -> None:
    first = texture_mesh(sphere_mesh(3), [orbit(0, 0, 32)], projection_generator, size=32, texture_size=128)
    again = texture_mesh(first.mesh, [orbit(0, 0, 32)], projection_generator, size=32, texture_size=128,
                         options=None if own_uvs else _no_uvs())
    assert again.report["uvs"] == ("mesh" if own_uvs else "xatlas")
    if own_uvs:
        assert np.array_equal(again.mesh.uvs, first.mesh.uvs)
        assert np.abs(again.mesh.texture.astype(int) - first.mesh.texture).mean() < 2.0


def _no_uvs():
    from backend.texture.pipeline import TextureOptions

    return TextureOptions(use_mesh_uvs=False)


def test_mesh_without_colours_starts_grey() -> None:
    v, f = icosphere(2)
    mesh = Mesh(v.astype(np.float32), f)
    res = texture_mesh(mesh, [orbit(180, 0, 32)], projection_generator, size=32, texture_size=64)
    assert np.abs(res.mesh.texture.astype(int) - 128).max() <= 1
