# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests for backend.cameras (no Blender needed; the bpy twin is tests/test_cameras_blender.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend import cameras as C

SPEC_FRONTAL = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], dtype=np.float64)


def random_camera(rng: np.random.Generator) -> tuple[np.ndarray, float, float, float]:
    """A non-frontal camera with a non-centred principal point: (cam2world, focal, cx, cy)."""
    yaw = rng.uniform(-70, 70)
    pitch = rng.uniform(-45, 45)
    if abs(yaw) < 5:
        yaw += 10.0
    lookat = np.array(C.FFHQ_PIVOT) + rng.uniform(-0.1, 0.1, 3)
    c2w = C.orbit_camera(yaw, pitch, rng.uniform(1.8, 3.5), lookat, center=rng.uniform(-0.2, 0.2, 3))
    return c2w, rng.uniform(1.5, 6.0), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)


def assert_rigid(m: np.ndarray) -> None:
    r = m[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])


# ---------------------------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------------------------


def test_frontal_pose_is_the_spec_matrix() -> None:
    np.testing.assert_array_equal(C.orbit_camera(0.0, 0.0), SPEC_FRONTAL)
    np.testing.assert_allclose(C.official_lookat_sampler(math.pi / 2, math.pi / 2), SPEC_FRONTAL, atol=1e-15)
    np.testing.assert_array_equal(C.look_at((0, 0, 2.7), C.FFHQ_PIVOT), SPEC_FRONTAL)


def test_look_at_is_rigid_and_points_at_target() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        origin, target = rng.normal(size=3) * 3, rng.normal(size=3)
        m = C.look_at(origin, target)
        assert_rigid(m)
        np.testing.assert_array_equal(m[:3, 3], origin)
        fwd = (target - origin) / np.linalg.norm(target - origin)
        np.testing.assert_allclose(m[:3, 2], fwd, atol=1e-12)
        assert m[:3, 0] @ np.array([0, 1, 0]) == pytest.approx(0.0, abs=1e-12)  # no roll: right is level
        assert m[1, 1] < 0  # camera +y (image down) points down in the world
        # the target projects onto the optical axis
        px, depth = C.project_points(target[None], m, C.intrinsics(4.0), 64, 64)
        np.testing.assert_allclose(px[0], [32, 32], atol=1e-9)
        assert depth[0] == pytest.approx(np.linalg.norm(target - origin))


def test_look_at_rejects_degenerate() -> None:
    with pytest.raises(ValueError):
        C.look_at((0, 2, 0), (0, 0, 0))
    with pytest.raises(ValueError):
        C.look_at((1, 2, 3), (1, 2, 3))


def test_orbit_sign_conventions() -> None:
    right = C.orbit_camera(30.0, 0.0)
    assert right[0, 3] > 0 and right[1, 3] == pytest.approx(0.0, abs=1e-12)
    assert right[0, 2] < 0  # looks back towards -x
    up = C.orbit_camera(0.0, 20.0)
    assert up[1, 3] > 0 and up[0, 3] == pytest.approx(0.0, abs=1e-12)
    assert up[1, 2] < 0  # looks down
    np.testing.assert_allclose(np.linalg.norm(C.orbit_camera(-50, 35)[:3, 3]), C.FFHQ_RADIUS)
    # yaw and pitch are true angles of the position seen from the centre
    c2w = C.orbit_camera(40.0, -25.0, radius=2.0, lookat=(0, 0, 0), center=(0.1, 0.2, 0.3))
    d = c2w[:3, 3] - np.array([0.1, 0.2, 0.3])
    assert math.degrees(math.atan2(d[0], d[2])) == pytest.approx(40.0)
    assert math.degrees(math.asin(d[1] / 2.0)) == pytest.approx(-25.0)
    assert_rigid(c2w)


@pytest.mark.parametrize("yaw", [-60.0, -12.5, 0.0, 33.0, 80.0])
@pytest.mark.parametrize("pitch", [-45.0, -5.0, 0.0, 17.0, 60.0])
def test_orbit_matches_official_sampler(yaw: float, pitch: float) -> None:
    h, v = C.official_hv_from_yaw_pitch(yaw, pitch)
    official = C.official_lookat_sampler(h, v, 2.7, C.FFHQ_PIVOT)
    np.testing.assert_allclose(C.orbit_camera(yaw, pitch), official, atol=1e-12)
    y2, p2 = C.official_yaw_pitch_from_hv(h, v)
    assert (y2, p2) == (pytest.approx(yaw), pytest.approx(pitch))


def test_official_v_is_not_pitch() -> None:
    # documented in official_hv_from_yaw_pitch: v = π/2 ± 0.25 is ≈ ∓9.2° of pitch
    _, pitch = C.official_yaw_pitch_from_hv(math.pi / 2, math.pi / 2 + 0.25)
    assert pitch == pytest.approx(-9.16, abs=0.01)
    with pytest.raises(ValueError):
        C.official_lookat_sampler(0.0, 4.0)


# ---------------------------------------------------------------------------------------------------------
# Focal / FOV
# ---------------------------------------------------------------------------------------------------------


def test_focal_fov_round_trip_and_numbers() -> None:
    for f in [0.5, 1.7074, 4.2647, 20.0]:
        assert C.fov_to_focal(C.focal_to_fov(f)) == pytest.approx(f, rel=1e-13)
    for fov in [1.0, 13.37, 45.0, 120.0]:
        assert C.focal_to_fov(C.fov_to_focal(fov)) == pytest.approx(fov, rel=1e-13)
    assert C.focal_to_fov(C.FFHQ_FOCAL) == pytest.approx(13.3738, abs=1e-4)
    assert C.fov_to_focal(90.0) == pytest.approx(0.5)
    # the official quirk: √2-ish factor and int-truncated 18°
    assert C.official_fov_to_focal(C.OFFICIAL_FFHQ_FOV_DEG) == pytest.approx(4.2634, abs=1e-4)
    assert C.official_fov_to_focal(18.0) == pytest.approx(4.4652, abs=1e-4)
    assert C.official_fov_to_focal(18.837) != pytest.approx(C.fov_to_focal(18.837), rel=0.1)
    with pytest.raises(ValueError):
        C.fov_to_focal(0.0)
    with pytest.raises(ValueError):
        C.focal_to_fov(-1.0)


def test_intrinsics() -> None:
    np.testing.assert_array_equal(C.intrinsics(4.2647), [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])
    k = C.intrinsics(2.0, 0.4, 0.6, aspect=16 / 9)
    assert k[1, 1] == pytest.approx(2.0 * 16 / 9) and (k[0, 2], k[1, 2]) == (0.4, 0.6)


# ---------------------------------------------------------------------------------------------------------
# Label
# ---------------------------------------------------------------------------------------------------------


def test_label_layout_and_round_trip() -> None:
    label = C.make_label(C.orbit_camera(0, 0))
    assert label.shape == (25,) and label.dtype == np.float32
    expected = [*SPEC_FRONTAL.reshape(-1), 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]
    np.testing.assert_array_equal(label, np.array(expected, dtype=np.float32))
    c2w = C.orbit_camera(23.0, -11.0)
    m, k = C.split_label(C.make_label(c2w, 1.7074, 0.45, 0.55))
    np.testing.assert_allclose(m, c2w, atol=1e-6)
    np.testing.assert_allclose(k, C.intrinsics(1.7074, 0.45, 0.55), atol=1e-6)
    with pytest.raises(ValueError):
        C.split_label(np.zeros(24))


def test_label_tensor_matches_numpy() -> None:
    poses = np.stack([C.orbit_camera(y, p) for y, p in [(0, 0), (20, 5), (-35, -10)]])
    t = C.label_tensor(poses, C.FFHQ_FOCAL, "cpu")
    assert t.shape == (3, 25) and t.dtype == torch.float32
    ref = np.stack([C.make_label(p) for p in poses])
    np.testing.assert_array_equal(t.numpy(), ref)
    np.testing.assert_array_equal(C.label_tensor(poses[1], device="cpu").numpy()[0], ref[1])
    per_cam = C.label_tensor(poses, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(per_cam[:, 16].numpy(), [1, 2, 3])
    np.testing.assert_array_equal(per_cam[:, 20].numpy(), [1, 2, 3])
    # torch input keeps the graph (pose optimisation)
    x = torch.tensor(poses, dtype=torch.float32, requires_grad=True)
    C.label_tensor(x).sum().backward()
    assert x.grad is not None and torch.all(x.grad == 1)


# ---------------------------------------------------------------------------------------------------------
# Projection and rays
# ---------------------------------------------------------------------------------------------------------


def test_pivot_projects_to_image_centre() -> None:
    px, depth = C.project_points(
        np.array([C.FFHQ_PIVOT]), C.orbit_camera(0, 0), C.intrinsics(C.FFHQ_FOCAL), 512, 512
    )
    np.testing.assert_allclose(px, [[256.0, 256.0]], atol=1e-12)
    assert depth[0] == pytest.approx(2.5)
    # world +x appears on the right, world +y (up) appears higher in the image (smaller row)
    px, _ = C.project_points(
        np.array([[0.1, 0, 0.2], [0, 0.1, 0.2]]), C.orbit_camera(0, 0), C.intrinsics(4), 100, 100
    )
    assert px[0, 0] > 50 and px[1, 1] < 50


@pytest.mark.parametrize("width,height,skew", [(16, 16, 0.0), (20, 12, 0.0), (9, 14, 0.3)])
def test_projection_matches_ray_sampler(width: int, height: int, skew: float) -> None:
    rng = np.random.default_rng(width * height)
    c2w, f, cx, cy = random_camera(rng)
    k = C.intrinsics(f, cx, cy, aspect=width / height)
    k[0, 1] = skew
    origins, dirs = C.pixel_rays(c2w, k, width, height)
    assert origins.shape == dirs.shape == (width * height, 3)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-12)
    t = rng.uniform(0.5, 5.0, size=(width * height, 1))
    px, depth = C.project_points(origins + t * dirs, c2w, k, width, height)
    i, j = np.divmod(np.arange(width * height), width)  # row-major: row i slow, column j fast
    np.testing.assert_allclose(px, np.stack([j + 0.5, i + 0.5], axis=1), atol=1e-9)
    assert np.all(depth > 0)


def test_centre_ray_of_frontal_camera_points_along_minus_z() -> None:
    _, dirs = C.pixel_rays(C.orbit_camera(0, 0), C.intrinsics(C.FFHQ_FOCAL), 2, 2)
    np.testing.assert_allclose(dirs.mean(axis=0) / np.linalg.norm(dirs.mean(axis=0)), [0, 0, -1], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Blender conversion
# ---------------------------------------------------------------------------------------------------------


def test_blender_axes() -> None:
    s = C.METRES_PER_UNIT
    np.testing.assert_array_equal(C.eg3d_to_blender_points([0, 1, 0]), [0, 0, s])  # up stays up
    np.testing.assert_array_equal(C.eg3d_to_blender_normals([0, 0, 1]), [0, -1, 0])  # face looks to -Y
    np.testing.assert_array_equal(C.eg3d_to_blender_points([1, 0, 0], scale=1.0), [1, 0, 0])
    m = C.eg3d_to_blender_normals(np.eye(3)).T
    assert np.linalg.det(m) == pytest.approx(1.0)  # proper rotation: no mirroring of meshes


def test_blender_points_and_normals_round_trip() -> None:
    rng = np.random.default_rng(1)
    p = rng.normal(size=(100, 3))
    for scale in [C.METRES_PER_UNIT, 1.0, 0.37]:
        np.testing.assert_allclose(
            C.blender_to_eg3d_points(C.eg3d_to_blender_points(p, scale), scale), p, atol=1e-12
        )
        np.testing.assert_allclose(
            C.eg3d_to_blender_points(C.blender_to_eg3d_points(p, scale), scale), p, atol=1e-12
        )
    np.testing.assert_allclose(C.blender_to_eg3d_normals(C.eg3d_to_blender_normals(p)), p, atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.norm(C.eg3d_to_blender_normals(p), axis=1), np.linalg.norm(p, axis=1)
    )
    assert C.eg3d_to_blender_points(rng.normal(size=(4, 5, 3))).shape == (4, 5, 3)


def test_frontal_blender_camera() -> None:
    bc = C.eg3d_to_blender_camera(C.orbit_camera(0, 0), C.FFHQ_FOCAL)
    # Blender's standard front camera: rotation Euler (90°, 0, 0), on -Y, looking along +Y
    np.testing.assert_allclose(bc.matrix_world[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(bc.matrix_world[:3, 3], [0, -2.7 * C.METRES_PER_UNIT, 0], atol=1e-15)
    np.testing.assert_allclose(-bc.matrix_world[:3, 2], [0, 1, 0], atol=1e-15)
    assert bc.lens_mm == pytest.approx(C.FFHQ_FOCAL * 36.0)
    assert (bc.sensor_fit, bc.shift_x, bc.shift_y) == ("HORIZONTAL", 0.0, 0.0)


@pytest.mark.parametrize("aspect", [1.0, 16 / 9])
def test_blender_camera_round_trip(aspect: float) -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        c2w, f, cx, cy = random_camera(rng)
        scale = rng.uniform(0.1, 2.0)
        bc = C.eg3d_to_blender_camera(
            c2w, f, cx, cy, sensor_width_mm=rng.uniform(10, 50), scale=scale, aspect=aspect
        )
        assert_rigid(bc.matrix_world)
        out = C.blender_to_eg3d_camera(
            bc.matrix_world, bc.lens_mm, bc.sensor_width_mm, bc.shift_x, bc.shift_y, scale, aspect=aspect
        )
        np.testing.assert_allclose(out[0], c2w, atol=1e-9)
        np.testing.assert_allclose(out[1:], (f, cx, cy), atol=1e-9)
        # and the other way round, from a Blender camera
        back = C.eg3d_to_blender_camera(*out, sensor_width_mm=bc.sensor_width_mm, scale=scale, aspect=aspect)
        np.testing.assert_allclose(back.matrix_world, bc.matrix_world, atol=1e-9)
        assert (back.lens_mm, back.shift_x, back.shift_y) == (
            pytest.approx(bc.lens_mm, abs=1e-9),
            pytest.approx(bc.shift_x, abs=1e-9),
            pytest.approx(bc.shift_y, abs=1e-9),
        )


def test_blender_to_eg3d_ignores_object_scale_and_rejects_mirror() -> None:
    bc = C.eg3d_to_blender_camera(C.orbit_camera(25, 10), C.FFHQ_FOCAL)
    scaled = bc.matrix_world.copy()
    scaled[:3, :3] = scaled[:3, :3] @ np.diag([2.0, 3.0, 0.5])
    np.testing.assert_allclose(
        C.blender_to_eg3d_camera(scaled, 153.5, 36.0)[0], C.orbit_camera(25, 10), atol=1e-12
    )
    mirrored = bc.matrix_world.copy()
    mirrored[:3, 0] *= -1
    with pytest.raises(ValueError):
        C.blender_to_eg3d_camera(mirrored, 50.0, 36.0)


def blender_project(points_b: np.ndarray, bc: C.BlenderCamera, width: int, height: int) -> np.ndarray:
    """Blender's own projection maths, written independently of backend.cameras.

    It is what ``bpy_extras.object_utils.world_to_camera_view`` + ``Camera.view_frame`` compute for a
    perspective camera with ``sensor_fit='HORIZONTAL'``: the view plane at unit distance spans
    sensor/lens horizontally and ·height/width vertically, offset by shift·(sensor/lens) on both axes (Blender
    measures both shifts in units of the fitted dimension, the width). NDC (0, 0) is the bottom-left corner.
    """
    mw = bc.matrix_world
    local = (points_b - mw[:3, 3]) @ mw[:3, :3]  # inverse of an orthonormal object matrix
    z = -local[:, 2]  # Blender cameras look down local -Z
    w = bc.sensor_width_mm / bc.lens_mm
    x_min, x_max = (-0.5 + bc.shift_x) * w, (0.5 + bc.shift_x) * w
    y_min, y_max = (-0.5 * height / width + bc.shift_y) * w, (0.5 * height / width + bc.shift_y) * w
    ndc_x = (local[:, 0] / z - x_min) / (x_max - x_min)
    ndc_y = (local[:, 1] / z - y_min) / (y_max - y_min)
    return np.stack([ndc_x * width, (1.0 - ndc_y) * height], axis=1)  # pixels, y down from the top


@pytest.mark.parametrize("width,height", [(512, 512), (640, 360)])
def test_eg3d_and_blender_cameras_project_to_the_same_pixel(width: int, height: int) -> None:
    rng = np.random.default_rng(3)
    aspect = width / height
    for _ in range(20):
        c2w, f, cx, cy = random_camera(rng)
        points = np.array(C.FFHQ_PIVOT) + rng.uniform(-0.4, 0.4, size=(200, 3))
        px_eg3d, depth = C.project_points(points, c2w, C.intrinsics(f, cx, cy, aspect=aspect), width, height)
        assert np.all(depth > 0)
        bc = C.eg3d_to_blender_camera(c2w, f, cx, cy, sensor_width_mm=36.0, aspect=aspect)
        px_blender = blender_project(C.eg3d_to_blender_points(points), bc, width, height)
        np.testing.assert_allclose(px_blender, px_eg3d, atol=1e-9)


def test_shift_signs() -> None:
    # principal point right of centre <-> lens shifted left (shift_x < 0); below centre <-> shifted up (> 0)
    bc = C.eg3d_to_blender_camera(C.orbit_camera(0, 0), 4.0, cx=0.6, cy=0.7)
    assert bc.shift_x == pytest.approx(-0.1) and bc.shift_y == pytest.approx(0.2)
    px = blender_project(C.eg3d_to_blender_points(np.array([C.FFHQ_PIVOT])), bc, 100, 100)
    np.testing.assert_allclose(px, [[60.0, 70.0]], atol=1e-9)
