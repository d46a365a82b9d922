# SPDX-License-Identifier: GPL-3.0-or-later
"""Any camera frame for texturing (backend.texture.frame, cameras_io's Blender form), without Blender.

The reference is Blender's own view-plane rule (``BKE_camera_params_compute_viewplane``: sensor fit AUTO
resolves to the longer side, VERTICAL uses ``sensor_height``, lens shift is in units of the fitted side),
written out here independently of the code under test. A point projected by that Blender camera and by
the backend's intrinsics lands on the same pixel, for landscape, portrait and square frames, every sensor
fit and lens shift; the square cover used for generation sees it at that pixel plus the pad; a view
cropped from a square generator is the camera's; and texturing with a square-only generator works for
16:9 and portrait cameras (the failure of issue 16) with projection and generation agreeing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend import cameras as C
from backend.mesh.data import Mesh
from backend.texture import frame
from backend.texture.cameras_io import camera_from_blender_dict
from backend.texture.generators import projection_generator
from backend.texture.pipeline import texture_mesh
from backend.views.rgbd import Camera, Condition, RGBDView

FRAMES = [(1920, 1080), (1080, 1920), (800, 600), (512, 512), (600, 900)]
FITS = ["AUTO", "HORIZONTAL", "VERTICAL"]
SHIFTS = [(0.0, 0.0), (0.12, -0.07)]


def _look(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A Blender camera matrix_world at ``eye`` looking at ``target`` (−Z forward, +Y up, world Z up)."""
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -fwd, eye
    return m


def blender_pixels(points: np.ndarray, mw: np.ndarray, lens: float, sensor_w: float, sensor_h: float,
                   fit: str, shift: tuple[float, float], width: int, height: int) -> np.ndarray:
    """Pixels (x right, y down) of Blender-world points through a Blender camera (Blender's rule)."""
    resolved = fit if fit != "AUTO" else ("HORIZONTAL" if width >= height else "VERTICAL")
    sensor = sensor_h if fit == "VERTICAL" else sensor_w
    viewfac = width if resolved == "HORIZONTAL" else height
    pixsize = sensor / lens / viewfac  # plane units per pixel at distance 1
    cam = (points - mw[:3, 3]) @ mw[:3, :3]  # world -> camera (rigid)
    depth = -cam[:, 2]
    x = cam[:, 0] / depth / pixsize + 0.5 * width - shift[0] * viewfac
    y_up = cam[:, 1] / depth / pixsize + 0.5 * height - shift[1] * viewfac
    return np.stack([x, height - y_up], axis=1)


def _points(rng: np.random.Generator, n: int = 50) -> np.ndarray:
    return np.asarray([0.0, 0.0, 1.0]) + rng.uniform(-0.15, 0.15, (n, 3))


@pytest.mark.parametrize("size", FRAMES)
@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_blender_camera_and_backend_intrinsics_agree(size: tuple[int, int], fit: str,
                                                     shift: tuple[float, float]) -> None:
    width, height = size
    rng = np.random.default_rng(width + 7 * height)
    mw = _look(np.array([0.3, -1.4, 1.2]), np.array([0.0, 0.0, 1.0]))
    d = {"matrix_world": mw.tolist(), "lens": 85.0, "sensor_width": 36.0, "sensor_height": 24.0,
         "sensor_fit": fit, "shift_x": shift[0], "shift_y": shift[1], "resolution_x": width,
         "resolution_y": height}
    cam = camera_from_blender_dict(d)
    pts = _points(rng)
    ref = blender_pixels(pts, mw, 85.0, 36.0, 24.0, fit, shift, width, height)
    got, depth = C.project_points(C.blender_to_eg3d_points(pts), cam.cam2world, cam.K, width, height)
    assert (depth > 0).all()
    assert np.abs(got - ref).max() < 1e-6 * max(width, height)

    # The square cover generation uses sees every point at the camera's pixel plus the pad.
    cover = frame.square_cover(cam)
    side = max(width, height)
    assert cover.square.width == cover.square.height == side
    assert (cover.pad_x, cover.pad_y) == ((side - width) // 2, (side - height) // 2)
    sq, _ = C.project_points(C.blender_to_eg3d_points(pts), cover.square.cam2world, cover.square.K, side, side)
    assert np.abs(sq - (ref + np.array([cover.pad_x, cover.pad_y]))).max() < 1e-6 * side
    assert np.allclose(cover.square.cam2world, cam.cam2world)


def test_square_cover_of_a_square_camera_is_itself() -> None:
    cam = Camera(np.eye(4), C.intrinsics(4.26, 0.5, 0.5), 64, 64)
    cover = frame.square_cover(cam)
    assert (cover.pad_x, cover.pad_y) == (0, 0) and np.allclose(cover.square.K, cam.K)


def _coordinate_view(res: int, cam: Camera) -> RGBDView:
    """A square view whose pixel (i, j) holds (j, i, 0) / res and depth i·res + j: where it came from."""
    i, j = np.mgrid[0:res, 0:res].astype(np.float32)
    return RGBDView(np.stack([j / res, i / res, np.zeros_like(i)], -1), i * res + j, cam)


@pytest.mark.parametrize("factor", [1, 2])
def test_crop_view_is_the_cameras_frame(factor: int) -> None:
    cam = Camera(np.eye(4), C.intrinsics(3.0, 0.5, 0.5, aspect=64 / 35), 64, 35)
    cover = frame.square_cover(cam)
    res = 64 * factor
    out = frame.crop_view(_coordinate_view(res, cover.square.resized(res, res)), cover)
    assert out.z.shape == (35 * factor, 64 * factor) and out.rgb.shape == (35 * factor, 64 * factor, 3)
    assert (out.camera.width, out.camera.height) == (64 * factor, 35 * factor)
    assert np.allclose(out.camera.K, cam.K)
    row0 = factor * cover.pad_y
    assert out.z[0, 0] == row0 * res and out.z[-1, -1] == (row0 + 35 * factor - 1) * res + res - 1


def test_crop_view_resamples_other_resolutions() -> None:
    cam = Camera(np.eye(4), C.intrinsics(3.0, 0.5, 0.5, aspect=36 / 48), 36, 48)
    cover = frame.square_cover(cam)
    out = frame.crop_view(_coordinate_view(64, cover.square.resized(64, 64)), cover)
    assert out.z.shape == (48, 36) and (out.camera.width, out.camera.height) == (36, 48)


def _sphere(n: int = 24, radius: float = 0.3) -> Mesh:
    """A UV sphere at the FFHQ pivot with a colour pattern (generator world)."""
    th, ph = np.meshgrid(np.linspace(0, math.pi, n), np.linspace(0, 2 * math.pi, 2 * n, endpoint=False),
                         indexing="ij")
    d = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    verts = (np.asarray(C.FFHQ_PIVOT) + radius * d).astype(np.float32)
    faces = []
    for i in range(n - 1):
        for j in range(2 * n):
            a, b = i * 2 * n + j, i * 2 * n + (j + 1) % (2 * n)
            faces += [[a, a + 2 * n, b], [b, a + 2 * n, b + 2 * n]]
    colours = (0.5 + 0.4 * np.sin(np.stack([5 * d[:, 0], 4 * d[:, 1] + 1, 3 * d[:, 2]], 1))).astype(np.float32)
    return Mesh(verts, np.asarray(faces, np.int64), d.astype(np.float32), colours)


class SquareProjection:
    """The projection baseline as a square-only generator (what the diffusion model is): it refuses any
    non-square condition, so texturing must generate over the square cover."""

    square_resolution = 48

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, cond: Condition) -> RGBDView:
        h, w = cond.rgb_mask.shape
        self.sizes.append((w, h))
        assert w == h, "a square generator got a non-square condition"
        return projection_generator(cond)


def _blender_camera(width: int, height: int, fit: str = "AUTO") -> Camera:
    mw = _look(np.array([0.0, -1.5, 0.05]), np.array([0.0, 0.0, 0.05]))
    return camera_from_blender_dict({"matrix_world": mw.tolist(), "lens": 70.0, "sensor_width": 36.0,
                                     "sensor_height": 24.0, "sensor_fit": fit, "resolution_x": width,
                                     "resolution_y": height, "pivot": list(C.FFHQ_PIVOT)})


def test_square_generator_textures_landscape_and_portrait_cameras() -> None:
    gen = SquareProjection()
    cams = [_blender_camera(1920, 1080), _blender_camera(1080, 1920), _blender_camera(1000, 800, "VERTICAL")]
    result = texture_mesh(_sphere(), cams, gen, size=48, texture_size=128, names=["wide", "tall", "vert"])
    assert gen.sizes == [(48, 48)] * 3
    info = {c["name"]: c for c in result.report["cameras"]}
    assert info["wide"]["view_size"] == [48, 27] and info["tall"]["view_size"] == [27, 48]
    assert info["vert"]["view_size"] == [48, 38] and all(c["square_cover"] for c in info.values())
    assert all(c["generated_size"] == [48, 48] for c in info.values())
    for c in info.values():  # the cropped views re-project onto the mesh where they came from
        assert c["psnr_seen"] is not None and c["psnr_seen"] > 30, c
        assert c["seen_pixels"] > 50
    # Projected UVs are the real camera's: the same numbers as a rectangular (non-square) run.
    plain = texture_mesh(_sphere(), cams, projection_generator, size=48, texture_size=128)
    for a, b in zip(result.projections, plain.projections, strict=True):
        assert (a.camera.width, a.camera.height) == (b.camera.width, b.camera.height)
        assert np.allclose(a.uv, b.uv) and np.allclose(a.weight, b.weight, atol=1e-4)
