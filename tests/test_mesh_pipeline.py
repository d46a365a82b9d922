"""The stage pipeline: ground-truth surfaces, colours, textures, image projection, depth rasterisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import cameras
from backend.errors import Aware3DError
from backend.mesh.cleanup import vertex_normals
from backend.mesh.colour import project_image
from backend.mesh.field import (
    CountingField,
    SDFField,
    bumpy_ellipsoid_field,
    bumpy_ellipsoid_sdf,
    position_colour,
    sphere_field,
    two_blob_field,
)
from backend.mesh.grid import official_border_pad
from backend.mesh.metrics import point_mesh_distance, sample_surface, silhouette_iou, topology
from backend.mesh.pipeline import MeshSettings, extract_mesh
from backend.mesh.raster import render_depth


def test_sphere_mesh_is_the_sphere() -> None:
    m = extract_mesh(sphere_field(0.3), MeshSettings(resolution=128, target_faces=0, smooth_iterations=0))
    r = np.linalg.norm(m.vertices, axis=1)
    voxel = 1.0 / 127
    assert np.abs(r - 0.3).max() < 0.1 * voxel
    t = topology(m.vertices, m.faces)
    assert t["boundary_edges"] == 0 and t["euler"] == 2
    assert (np.sum(m.normals * m.vertices / r[:, None], axis=1) > 0.9).all()


def project_to_zero_set(sdf, points: np.ndarray, steps: int = 5, h: float = 1e-4) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Newton steps along the SDF gradient (central differences): lands on the nearby surface."""
    p = torch.from_numpy(np.asarray(points, dtype=np.float64))
    eye = torch.eye(3, dtype=torch.float64) * h
    with torch.no_grad():
        for _ in range(steps):
            d = sdf(p).to(torch.float64)
            g = torch.stack([(sdf(p + e).to(torch.float64) - sdf(p - e).to(torch.float64)) / (2 * h)
                             for e in eye], dim=1)
            p = p - (d / (g * g).sum(dim=1).clamp_min(1e-12))[:, None] * g
    return p.numpy()


def surface_chamfer(sdf, verts: np.ndarray, faces: np.ndarray, n: int = 10000,  # type: ignore[no-untyped-def]
                    keep=None) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(Chamfer, worst distance) between a mesh and an SDF's zero set, without sampling noise.

    mesh -> truth: how far Newton projection moves samples of the mesh; truth -> mesh: exact point-to-
    triangle distance of projected points (started from jittered mesh samples, so they cover the surface).
    """
    on_mesh = sample_surface(verts, faces, n)
    moved = np.linalg.norm(project_to_zero_set(sdf, on_mesh) - on_mesh, axis=1)
    jitter = np.random.default_rng(1).normal(scale=0.01, size=on_mesh.shape)
    truth = project_to_zero_set(sdf, sample_surface(verts, faces, n, seed=7) + jitter)
    if keep is not None:
        moved, truth = moved[keep(on_mesh)], truth[keep(truth)]
    back = point_mesh_distance(truth, verts, faces)
    return 0.5 * (moved.mean() + back.mean()), max(moved.max(), back.max())


def test_bumpy_ellipsoid_matches_ground_truth() -> None:
    """Defaults (Taubin + decimation to 20k faces): Chamfer to the exact surface a small part of a voxel."""
    m = extract_mesh(bumpy_ellipsoid_field(), MeshSettings(resolution=128, target_faces=20_000))
    assert abs(m.num_faces - 20_000) < 200
    voxel = 1.0 / 127
    cd, worst = surface_chamfer(bumpy_ellipsoid_sdf(), m.vertices, m.faces)
    assert cd < 0.03 * voxel
    assert worst < 0.2 * voxel


def _synthetic_head():  # type: ignore[no-untyped-def]
    from train.synthetic import head_albedo, head_sdf, sample_head

    return sample_head(0, 0), head_sdf, head_albedo


def test_synthetic_head_matches_its_sdf() -> None:
    """A procedural head's ground-truth SDF, meshed coarse-to-fine at 96³: Chamfer a tenth of a voxel."""
    params, head_sdf, head_albedo = _synthetic_head()

    def sdf(p: torch.Tensor) -> torch.Tensor:
        return head_sdf(params, p).to(p.dtype)

    field = CountingField(SDFField(sdf, colour_fn=lambda p: head_albedo(params, p)))
    res = 96
    m = extract_mesh(field, MeshSettings(resolution=res, coarse_to_fine=True, target_faces=10_000))
    pad = official_border_pad(res)
    assert field.density_points < 0.5 * (res - 2 * pad) ** 3  # the band, not the whole (trimmed) grid
    voxel = 1.0 / (res - 1)
    inner = 0.5 - pad * voxel - 2 * voxel  # the trim box caps the shoulders: leave that out

    def keep(p: np.ndarray) -> np.ndarray:
        return np.abs(p).max(axis=1) < inner

    cd, _ = surface_chamfer(sdf, m.vertices, m.faces, n=1500, keep=keep)
    assert cd < 0.1 * voxel
    assert m.colours is not None and m.colours.std() > 0.01  # albedo varies over the head


def test_floater_removed_and_colours_follow_the_field() -> None:
    field = CountingField(two_blob_field())
    m = extract_mesh(field, MeshSettings(resolution=96, target_faces=5_000))
    assert m.stats["components_removed"] == 1
    assert topology(m.vertices, m.faces)["components"] == 1
    assert field.colour_points == m.num_vertices  # colours read once, at the final vertices
    inset = 1.0 / 95
    expect = position_colour(torch.from_numpy(m.vertices - inset * m.normals)).numpy()
    np.testing.assert_allclose(m.colours, expect, atol=1e-5)
    assert set(m.stats["seconds"]) == {"grid", "marching_cubes", "cleanup", "colours"}


def test_coarse_to_fine_in_the_pipeline() -> None:
    full = extract_mesh(bumpy_ellipsoid_field(), MeshSettings(resolution=128, target_faces=0, coarse_to_fine=False))
    c2f = extract_mesh(bumpy_ellipsoid_field(), MeshSettings(resolution=128, target_faces=0, coarse_to_fine=True))
    assert c2f.stats["queries"] * 3 < full.stats["queries"]
    np.testing.assert_array_equal(full.faces, c2f.faces)
    np.testing.assert_allclose(full.vertices, c2f.vertices, atol=1e-7)


def test_progress_reports_every_stage() -> None:
    seen: list[tuple[str, float]] = []
    extract_mesh(sphere_field(), MeshSettings(resolution=48, target_faces=500),
                 progress=lambda s, f: seen.append((s, f)))
    stages = list(dict.fromkeys(s for s, _ in seen))
    assert stages == ["grid", "marching_cubes", "cleanup", "colours"]
    assert all(0.0 <= f <= 1.0 for _, f in seen)
    assert ("colours", 1.0) in seen


def test_textured_mesh() -> None:
    field = sphere_field(0.3)
    m = extract_mesh(field, MeshSettings(resolution=48, target_faces=800, texture=True, texture_size=128))
    assert m.uvs is not None and m.texture is not None
    assert m.texture.shape == (128, 128, 3) and m.uvs.shape == (m.num_vertices, 2)
    assert m.uvs.min() >= 0 and m.uvs.max() <= 1
    # the texture at each vertex's uv holds the colour field there (one voxel inside)
    px = np.clip((m.uvs * 128).astype(int), 0, 127)
    tex = m.texture[px[:, 1], px[:, 0]].astype(np.float32) / 255
    expect = position_colour(torch.from_numpy(m.vertices - m.normals / 47)).numpy()
    assert np.median(np.abs(tex - expect).max(axis=1)) < 0.03
    assert "texture" in m.stats["seconds"]


def test_no_surface_is_a_clear_error() -> None:
    with pytest.raises(Aware3DError, match="no surface"):
        extract_mesh(sphere_field(), MeshSettings(resolution=32, level=1e6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"resolution": 4}, "resolution"), ({"resolution": 2048}, "resolution"), ({"target_faces": -1}, "face"),
     ({"mc_method": "gpu"}, "marching-cubes"), ({"component_min_ratio": 2.0}, "component"),
     ({"border_pad": 40, "resolution": 64}, "trim"), ({"grid_dtype": "int8"}, "dtype")],
)
def test_settings_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(Aware3DError, match=match):
        MeshSettings(**kwargs).validate()


# ----------------------------------------------------------------------------------------------------------
# Depth rasterisation and image projection
# ----------------------------------------------------------------------------------------------------------


def frontal_camera(yaw: float = 0.0, pitch: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    c2w = cameras.orbit_camera(yaw, pitch, radius=2.7, lookat=(0.0, 0.0, 0.2))
    return c2w, cameras.intrinsics(cameras.FFHQ_FOCAL)


def ray_sphere(c2w: np.ndarray, k: np.ndarray, res: int, radius: float) -> np.ndarray:
    o, d = cameras.pixel_rays(c2w, k, res, res)
    b = (o * d).sum(axis=1)
    disc = b * b - ((o * o).sum(axis=1) - radius**2)
    return np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf).reshape(res, res)


@pytest.mark.parametrize(("yaw", "pitch"), [(0.0, 0.0), (35.0, -10.0)])
def test_mesh_depth_matches_the_analytic_depth(yaw: float, pitch: float) -> None:
    m = extract_mesh(sphere_field(0.3), MeshSettings(resolution=96, target_faces=8000, colours=False))
    c2w, k = frontal_camera(yaw, pitch)
    depth = render_depth(m.vertices, m.faces, c2w, k, 96, 96, kind="ray")
    truth = ray_sphere(c2w, k, 96, 0.3)
    a, b = np.isfinite(depth), np.isfinite(truth)
    assert silhouette_iou(a, b) > 0.97
    both = a & b
    assert np.median(np.abs(depth[both] - truth[both])) < 1e-3


def test_project_image_colours_only_visible_vertices() -> None:
    m = extract_mesh(sphere_field(0.3), MeshSettings(resolution=64, target_faces=4000))
    c2w, k = frontal_camera()
    image = np.zeros((64, 64, 3), np.uint8)
    image[..., 0] = 255  # a red picture taken from the front
    before = m.colours.copy()  # type: ignore[union-attr]
    colours, weight = project_image(m.vertices, m.faces, m.normals, before, image, c2w, k, min_cos=0.3)
    front = m.vertices[:, 2] > 0.25  # facing the camera (at +z)
    back = m.vertices[:, 2] < 0.0
    assert (weight[back] == 0).all()
    np.testing.assert_array_equal(colours[back], before[back])
    assert (weight[front] > 0.5).all()
    assert np.allclose(colours[front & (weight == 1.0)], [1.0, 0.0, 0.0], atol=1e-6)


def test_project_image_respects_occlusion() -> None:
    """Two spheres, one hiding the other from the camera: the hidden one keeps its colours."""
    near = SDFField(lambda p: (p - torch.tensor([0.0, 0.0, 0.25])).norm(dim=1) - 0.1)
    far_centre = np.array([0.0, 0.0, -0.2])
    m_near = extract_mesh(near, MeshSettings(resolution=64, target_faces=0, border_pad=0))
    v_far = m_near.vertices - np.array([0.0, 0.0, 0.25], np.float32) + far_centre.astype(np.float32)
    verts = np.vstack([m_near.vertices, v_far])
    faces = np.vstack([m_near.faces, m_near.faces + m_near.num_vertices])
    normals = vertex_normals(verts, faces)
    c2w, k = frontal_camera()
    _, weight = project_image(verts, faces, normals, np.zeros_like(verts), np.full((64, 64, 3), 255, np.uint8),
                              c2w, k, min_cos=0.5)
    hidden = np.arange(len(verts)) >= m_near.num_vertices
    facing = normals[:, 2] > 0.8
    assert weight[~hidden & facing].min() > 0
    assert weight[hidden & facing].max() == 0  # behind the near sphere in the z-buffer
