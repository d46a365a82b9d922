# SPDX-License-Identifier: GPL-3.0-or-later
"""The EG3D camera and the equivalent real Blender camera show the same picture (bpy 5.0.1).

Blender stores matrices, points and camera settings in float32 and ``world_to_camera_view`` computes in
float32, which alone moves a pixel by up to ~2e-4 px at 512² with these focal lengths (focal·W ≈ 3000 px
per unit of x/z, float32 eps 6e-8). So the check is done in two tiers against our float64 projection of
the camera *as Blender holds it* (read back with ``blender_to_eg3d_camera``, itself checked against the
camera we set):

* Blender's camera model - its ``matrix_world`` and its ``Camera.view_frame`` (sensor fit, lens, shift,
  render aspect) - evaluated in float64 exactly as ``world_to_camera_view`` does: within 1e-4 px;
* ``bpy_extras.object_utils.world_to_camera_view`` itself, float32 inside: within 1e-3 px.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend import cameras as C

pytestmark = pytest.mark.blender


@pytest.fixture
def scene_and_camera():
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    data = bpy.data.cameras.new("aware3d_test_cam")
    obj = bpy.data.objects.new("aware3d_test_cam", data)
    scene.collection.objects.link(obj)
    scene.camera = obj
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    return scene, obj


def _random_camera(rng: np.random.Generator) -> tuple[np.ndarray, float, float, float]:
    yaw = rng.choice([-1, 1]) * rng.uniform(10, 70)
    pitch = rng.choice([-1, 1]) * rng.uniform(5, 40)
    lookat = np.array(C.FFHQ_PIVOT) + rng.uniform(-0.1, 0.1, 3)
    c2w = C.orbit_camera(yaw, pitch, rng.uniform(2.0, 3.2), lookat)
    return c2w, rng.uniform(2.0, 6.0), rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)


def _blender_pixels(scene, obj, points_b: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels (x right, y down) from Blender's own ``world_to_camera_view`` (float32 inside Blender)."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    out = []
    for p in points_b:
        ndc = world_to_camera_view(scene, obj, Vector(p.tolist()))
        out.append((ndc.x * width, (1.0 - ndc.y) * height))  # NDC (0, 0) is bottom-left; pixels y down
    return np.array(out)


def _blender_pixels_f64(scene, obj, points_b: np.ndarray, width: int, height: int) -> np.ndarray:
    """The maths of ``world_to_camera_view`` in float64, on the camera data Blender holds.

    The frame corners come from ``Camera.view_frame(scene)``, so Blender still decides how sensor fit,
    lens, shift and render aspect shape the view; only the arithmetic is done in double precision.
    """
    mw = np.array(obj.matrix_world, dtype=np.float64)
    mw[:3, :3] /= np.linalg.norm(mw[:3, :3], axis=0)  # Matrix.normalized()
    local = (np.c_[points_b, np.ones(len(points_b))] @ np.linalg.inv(mw).T)[:, :3]
    z = -local[:, 2]
    frame = np.array([tuple(v) for v in obj.data.view_frame(scene=scene)], dtype=np.float64)
    frame = frame[:3] / -frame[:3, 2:3]  # corners at unit distance: top-right, bottom-right, bottom-left
    x_min, x_max = frame[2, 0], frame[1, 0]
    y_min, y_max = frame[1, 1], frame[0, 1]
    ndc_x = (local[:, 0] / z - x_min) / (x_max - x_min)
    ndc_y = (local[:, 1] / z - y_min) / (y_max - y_min)
    return np.stack([ndc_x * width, (1.0 - ndc_y) * height], axis=1)


@pytest.mark.parametrize("width,height", [(512, 512), (640, 360)])
def test_world_points_project_to_the_same_pixel(scene_and_camera, width: int, height: int) -> None:
    import bpy

    scene, obj = scene_and_camera
    scene.render.resolution_x, scene.render.resolution_y = width, height
    aspect = width / height
    rng = np.random.default_rng(7)
    for _ in range(8):
        c2w, f, cx, cy = _random_camera(rng)
        bc = C.eg3d_to_blender_camera(c2w, f, cx, cy, sensor_width_mm=36.0, aspect=aspect)
        bc.apply_to(obj)
        bpy.context.view_layer.update()  # matrix_world is rebuilt from loc/rot/scale, as in a saved file

        # what Blender holds is our camera, to float32 precision
        held = C.blender_to_eg3d_camera(
            np.array(obj.matrix_world),
            obj.data.lens,
            obj.data.sensor_width,
            obj.data.shift_x,
            obj.data.shift_y,
            aspect=aspect,
        )
        np.testing.assert_allclose(held[0], c2w, atol=2e-6)
        np.testing.assert_allclose(held[1:], (f, cx, cy), atol=2e-6)
        assert obj.data.sensor_fit == "HORIZONTAL"

        # points as Blender stores them (float32), converted back exactly for the generator side
        points_b = C.eg3d_to_blender_points(np.array(C.FFHQ_PIVOT) + rng.uniform(-0.4, 0.4, size=(64, 3)))
        points_b = points_b.astype(np.float32).astype(np.float64)
        points = C.blender_to_eg3d_points(points_b)
        k = C.intrinsics(held[1], held[2], held[3], aspect=aspect)
        px_eg3d, depth = C.project_points(points, held[0], k, width, height)
        assert np.all(depth > 0)

        px_model = _blender_pixels_f64(scene, obj, points_b, width, height)
        np.testing.assert_allclose(px_model, px_eg3d, atol=1e-4)
        px_blender = _blender_pixels(scene, obj, points_b, width, height)
        np.testing.assert_allclose(px_blender, px_eg3d, atol=1e-3)
        # and against the float64 camera we asked for: only float32 rounding of the pose apart
        px_ideal, _ = C.project_points(points, c2w, C.intrinsics(f, cx, cy, aspect=aspect), width, height)
        np.testing.assert_allclose(px_model, px_ideal, atol=5e-3)


def test_frontal_camera_looks_at_the_pivot(scene_and_camera) -> None:
    from mathutils import Vector

    scene, obj = scene_and_camera
    scene.render.resolution_x = scene.render.resolution_y = 512
    C.eg3d_to_blender_camera(C.orbit_camera(0, 0), C.FFHQ_FOCAL).apply_to(obj)
    view = obj.matrix_world.to_quaternion() @ Vector((0.0, 0.0, -1.0))
    np.testing.assert_allclose(tuple(view), (0.0, 1.0, 0.0), atol=1e-6)  # Front view direction: +Y
    np.testing.assert_allclose(tuple(obj.rotation_euler), (np.pi / 2, 0.0, 0.0), atol=1e-6)
    px = _blender_pixels(scene, obj, C.eg3d_to_blender_points(np.array([C.FFHQ_PIVOT])), 512, 512)
    np.testing.assert_allclose(px, [[256.0, 256.0]], atol=1e-4)
    # generator +x (the face's left) appears on the right of Blender's front view too
    px = _blender_pixels(scene, obj, C.eg3d_to_blender_points(np.array([[0.1, 0.0, 0.2]])), 512, 512)
    assert px[0, 0] > 256
