# SPDX-License-Identifier: GPL-3.0-or-later
"""Cameras: the EG3D camera label, look-at/orbit poses, focal <-> FOV, and exact conversion to Blender.

Everything camera-related lives here so that the generator, the mesh exporter, inversion and the Blender
add-on agree on one set of conventions (written from the public facts in ``shared/spec/eg3d_compat.md``
§3.6-3.7; no EG3D code is used).

Conventions (verified by ``tests/test_cameras.py`` and, with real Blender, ``tests/test_cameras_blender.py``):

* **Generator world** (EG3D): right-handed, +y up, the face looks towards +z, the head sits near the
  origin inside the tri-plane box [-0.5, 0.5]^3 (FFHQ). Units are "generator units".
* **EG3D camera** = ``cam2world`` 4x4 in the **OpenCV** convention: camera +x right, +y down, +z forward
  (the viewing direction). Its columns are the camera axes in world coordinates; the last column is the
  camera centre.
* **Normalised intrinsics** ``K``: row 0 is in image widths, row 1 in image heights, so the same label
  works at every resolution. A pixel at column ``j`` / row ``i`` has its centre at
  ``u = (j + 0.5) / W``, ``v = (i + 0.5) / H``; ``[u, v, 1] ~ K @ X_cam``.
* **Blender world**: right-handed, +Z up, 1 unit = 1 m, the head faces -Y (Blender's Front view looks
  along +Y). Mapping: ``(X, Y, Z) = METRES_PER_UNIT * (x, -z, y)`` - a proper rotation (det +1) about the
  x axis by +90 degrees, times a uniform scale.
* **Blender camera**: looks down its local -Z, local +Y is up, +X right; lens/sensor in mm with
  ``sensor_fit='HORIZONTAL'`` so that ``focal (image widths) = lens_mm / sensor_width_mm``; the principal
  point is expressed with ``shift_x`` / ``shift_y`` (both in units of the image width).

Only numpy float64 is used for geometry; the generator label is float32 (that is what the networks see).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "FFHQ_FOCAL",
    "FFHQ_PIVOT",
    "FFHQ_RADIUS",
    "METRES_PER_UNIT",
    "OFFICIAL_FFHQ_FOV_DEG",
    "SHAPENET_FOCAL",
    "SHAPENET_RADIUS",
    "BlenderCamera",
    "blender_to_eg3d_camera",
    "blender_to_eg3d_normals",
    "blender_to_eg3d_points",
    "eg3d_to_blender_camera",
    "eg3d_to_blender_normals",
    "eg3d_to_blender_points",
    "focal_to_fov",
    "fov_to_focal",
    "intrinsics",
    "label_tensor",
    "look_at",
    "make_label",
    "official_fov_to_focal",
    "official_hv_from_yaw_pitch",
    "official_lookat_sampler",
    "official_yaw_pitch_from_hv",
    "orbit_camera",
    "pixel_rays",
    "project_points",
    "split_label",
]

ArrayLike = Any  # numpy-convertible (sequence, ndarray, mathutils.Matrix/Vector, ...)

# ----------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------

FFHQ_FOCAL: float = 4.2647
"""FFHQ/AFHQ focal length in image widths (fx = fy; exact full horizontal FOV = 2·atan(0.5/f) ≈ 13.37°)."""

FFHQ_RADIUS: float = 2.7
"""Distance of FFHQ cameras from the world origin (``avg_camera_radius``)."""

FFHQ_PIVOT: tuple[float, float, float] = (0.0, 0.0, 0.2)
"""Point FFHQ cameras look at (``avg_camera_pivot``); the cameras orbit the origin, not this point."""

SHAPENET_FOCAL: float = 1.7074
"""ShapeNet cars focal length in image widths (exact FOV ≈ 32.6°)."""

SHAPENET_RADIUS: float = 1.7
"""ShapeNet cars ``avg_camera_radius`` (pivot: the origin)."""

OFFICIAL_FFHQ_FOV_DEG: float = 18.837
"""The FOV the official scripts quote for FFHQ. It is *not* the real FOV: it only gives ≈4.2634 through the
√2-quirked :func:`official_fov_to_focal`. The real FOV of ``FFHQ_FOCAL`` is ``focal_to_fov(FFHQ_FOCAL)``."""

METRES_PER_UNIT: float = 0.5
"""Metres per generator unit: a documented approximation so that an imported head is human-sized.

Reasoning (FFHQ framing): the camera sits 2.7 - 0.2 = 2.5 units from the pivot and the focal is 4.2647 image
widths, so the view at the pivot is 2.5 / 4.2647 ≈ 0.59 units wide. FFHQ crops show the face (about 0.15 m
from cheek to cheek) over about half the image width, ≈ 0.29 units, giving ≈ 0.5 m per unit. Consistently the
tri-plane box ([-0.5, 0.5]^3, 1 unit) becomes a 0.5 m cube, which holds a head with hair and a bit of neck.
The generator has no metric scale; pass another ``scale`` to the conversion functions to override.
"""

# EG3D world (x, y, z) -> Blender world (X, Y, Z) = (x, -z, y): rotation by +90° about x, det +1.
_EG3D_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# OpenCV camera axes (x right, y down, z forward) <-> Blender/OpenGL camera axes (x right, y up, -z forward).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])


# ----------------------------------------------------------------------------------------------------------
# Intrinsics and focal <-> FOV
# ----------------------------------------------------------------------------------------------------------


def intrinsics(focal: float, cx: float = 0.5, cy: float = 0.5, *, aspect: float = 1.0) -> np.ndarray:
    """Normalised 3x3 intrinsics ``[[f, 0, cx], [0, f·aspect, cy], [0, 0, 1]]``.

    ``focal`` is in image widths (as in the EG3D label), ``cx`` in image widths and ``cy`` in image heights
    from the top-left corner. ``aspect`` = width / height: row 1 is normalised by the image *height*, so
    square pixels on a non-square image need ``fy = focal·aspect``. The generator renders square images
    (aspect 1, fx = fy), which is what every EG3D label holds.
    """
    if not focal > 0:
        raise ValueError(f"focal must be positive, got {focal}")
    return np.array(
        [[float(focal), 0.0, float(cx)], [0.0, float(focal) * float(aspect), float(cy)], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def fov_to_focal(fov_deg: float) -> float:
    """Exact pinhole focal (image widths) for a full horizontal field of view: ``f = 1 / (2·tan(fov/2))``.

    Use this, not :func:`official_fov_to_focal`, whenever a FOV has a physical meaning (Blender, other
    renderers, Gaussian splatting ports): 4.2647 corresponds to ≈13.37°, not to the 18.837° the official
    scripts quote.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    return 1.0 / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def focal_to_fov(focal: float) -> float:
    """Full horizontal field of view in degrees for a focal in image widths: ``2·atan(1 / (2f))``."""
    if not focal > 0:
        raise ValueError(f"focal must be positive, got {focal}")
    return math.degrees(2.0 * math.atan(0.5 / focal))


def official_fov_to_focal(fov_deg: float) -> float:
    """The official ``FOV_to_intrinsics`` relation, quirk included: ``f = 1 / (tan(fov·π/360) · 1.414)``.

    Provided only to reproduce the official scripts. The 1.414 (≈√2, questioned in eg3d issue #81) means
    the "fov" here is not the image's field of view: ``official_fov_to_focal(18.837) ≈ 4.2634`` (close to
    the trained 4.2647), whose true FOV is ≈13.37°. Second quirk: ``gen_samples.py`` declares ``--fov-deg``
    as an integer, so its default 18.837 is truncated to 18 and it actually uses ``official_fov_to_focal(18)
    ≈ 4.465`` (a ~5% zoom-in); ``gen_videos.py`` and Mimic3D hard-code 4.2647 instead.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    return 1.0 / (math.tan(fov_deg * math.pi / 360.0) * 1.414)


# ----------------------------------------------------------------------------------------------------------
# Poses
# ----------------------------------------------------------------------------------------------------------


def _vec3(v: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,):
        raise ValueError(f"{name} must have 3 values, got shape {np.shape(v)}")
    return a


def look_at(origin: ArrayLike, target: ArrayLike, up: ArrayLike = (0.0, 1.0, 0.0)) -> np.ndarray:
    """4x4 cam2world (OpenCV axes) for a camera at ``origin`` looking at ``target``.

    Same rule as EG3D's ``create_cam2world_matrix`` (spec §3.6) when ``up`` is +y: forward = normalised
    (target - origin); right = normalised(forward × up) (= -normalised(up × forward)); down = forward × right.
    Columns ``[right, down, forward, origin]``, so the camera's +y (image down) points opposite to ``up``.
    Raises ``ValueError`` when the camera looks along ``up`` (the roll is then undefined).
    """
    o = _vec3(origin, "origin")
    forward = _vec3(target, "target") - o
    n = np.linalg.norm(forward)
    if n < 1e-12:
        raise ValueError("look_at: origin and target coincide")
    forward = forward / n
    right = np.cross(forward, _vec3(up, "up"))
    n = np.linalg.norm(right)
    if n < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to 'up'; pick another up vector")
    right = right / n
    down = np.cross(forward, right)
    down = down / np.linalg.norm(down)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, forward, o
    return m


def orbit_camera(
    yaw_deg: float,
    pitch_deg: float,
    radius: float = FFHQ_RADIUS,
    lookat: ArrayLike = FFHQ_PIVOT,
    center: ArrayLike = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """4x4 cam2world for a camera on a sphere of ``radius`` around ``center``, looking at ``lookat``.

    Yaw and pitch are true angles in degrees of the camera position seen from ``center``:
    ``position = center + radius·(cos p·sin y, sin p, cos p·cos y)``. Yaw 0 / pitch 0 is frontal (camera on
    +z, facing the face, which looks towards +z); positive yaw moves the camera towards +x (it sees the
    face's left cheek); positive pitch moves it up (+y), looking down. EG3D orbits the world origin and
    looks at the pivot (0, 0, 0.2), so the defaults reproduce its FFHQ cameras; frontal gives exactly rows
    [1,0,0,0], [0,-1,0,0], [0,0,-1,2.7], [0,0,0,1]. Use :func:`official_lookat_sampler` to reproduce
    official (h, v) parameters, whose v is not an angle.
    """
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    direction = np.array([math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)])
    origin = _vec3(center, "center") + float(radius) * direction
    return look_at(origin, lookat)


def official_lookat_sampler(
    h: float, v: float, radius: float = FFHQ_RADIUS, lookat: ArrayLike = FFHQ_PIVOT
) -> np.ndarray:
    """The official ``LookAtPoseSampler.sample(h, v, lookat, radius)`` with zero noise (spec §3.6).

    ``θ = h``, ``φ = arccos(1 - 2v/π)``; origin ``(r·sinφ·cos(π-θ), r·cosφ, r·sinφ·sin(π-θ))`` on a sphere
    around the world origin; then :func:`look_at` the ``lookat`` point. ``h`` is a true azimuth (yaw + π/2)
    but ``v`` is *not* an angle: ``cos φ`` is linear in v, so equal steps in v are unequal steps in pitch
    (see :func:`official_hv_from_yaw_pitch`). Frontal: ``h = v = π/2``. Note the argument order follows
    :func:`orbit_camera` (radius before lookat), not the official one.
    """
    if not 0.0 <= v <= math.pi:
        raise ValueError(f"v must be in [0, π], got {v}")
    theta = float(h)
    phi = math.acos(1.0 - 2.0 * v / math.pi)
    r = float(radius)
    origin = np.array(
        [
            r * math.sin(phi) * math.cos(math.pi - theta),
            r * math.cos(phi),
            r * math.sin(phi) * math.sin(math.pi - theta),
        ]
    )
    return look_at(origin, lookat)


def official_hv_from_yaw_pitch(yaw_deg: float, pitch_deg: float) -> tuple[float, float]:
    """Official sampler parameters ``(h, v)`` (radians-like) for true yaw/pitch in degrees.

    ``h = π/2 + yaw``; ``v = (π/2)·(1 - sin(pitch))``. ``official_lookat_sampler(h, v, r, lookat)`` then
    equals ``orbit_camera(yaw, pitch, r, lookat)``. Useful to read official-style orbits: ``h = π/2 ± 0.35``
    is ±20° of yaw, but ``v = π/2 ± 0.25`` is ≈ ∓9.2° of pitch, not ∓14.3°.
    """
    return math.pi / 2.0 + math.radians(yaw_deg), (math.pi / 2.0) * (1.0 - math.sin(math.radians(pitch_deg)))


def official_yaw_pitch_from_hv(h: float, v: float) -> tuple[float, float]:
    """Inverse of :func:`official_hv_from_yaw_pitch`: true ``(yaw_deg, pitch_deg)`` of official ``(h, v)``."""
    if not 0.0 <= v <= math.pi:
        raise ValueError(f"v must be in [0, π], got {v}")
    return math.degrees(h - math.pi / 2.0), math.degrees(math.asin(1.0 - 2.0 * v / math.pi))


# ----------------------------------------------------------------------------------------------------------
# The 25-value label
# ----------------------------------------------------------------------------------------------------------


def _cam2world(m: ArrayLike) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"cam2world must be 4x4, got shape {a.shape}")
    return a


def make_label(
    cam2world: ArrayLike, focal: float = FFHQ_FOCAL, cx: float = 0.5, cy: float = 0.5
) -> np.ndarray:
    """The generator's camera label ``c``: cam2world row-major (16) + normalised intrinsics row-major (9).

    float32, shape [25], exactly the layout EG3D/Mimic3D checkpoints were trained with (spec §3.6).
    """
    return np.concatenate([_cam2world(cam2world).reshape(16), intrinsics(focal, cx, cy).reshape(9)]).astype(
        np.float32
    )


def split_label(label: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`make_label`: ``(cam2world 4x4, K 3x3)`` as float64."""
    a = np.asarray(label, dtype=np.float64).reshape(-1)
    if a.shape != (25,):
        raise ValueError(f"a camera label has 25 values, got {a.size}")
    return a[:16].reshape(4, 4).copy(), a[16:].reshape(3, 3).copy()


def label_tensor(
    cam2worlds: ArrayLike | torch.Tensor,
    focal: float | Sequence[float] | torch.Tensor = FFHQ_FOCAL,
    device: torch.device | str = "cpu",
    cx: float = 0.5,
    cy: float = 0.5,
) -> torch.Tensor:
    """Batched labels for the generator: float32 tensor [N, 25] on ``device``.

    ``cam2worlds`` is [4, 4] or [N, 4, 4] (numpy or torch; a torch input keeps its autograd graph, which
    pose optimisation needs); ``focal`` is a scalar or one value per camera. Same layout as
    :func:`make_label`.
    """
    c2w = torch.as_tensor(cam2worlds, device=device).to(dtype=torch.float32)
    if c2w.shape[-2:] != (4, 4):
        raise ValueError(f"cam2worlds must be [N, 4, 4] or [4, 4], got {tuple(c2w.shape)}")
    c2w = c2w.reshape(-1, 16)
    n = c2w.shape[0]
    f = torch.as_tensor(focal, dtype=torch.float32, device=device).reshape(-1).expand(n)
    zero, one = torch.zeros_like(f), torch.ones_like(f)
    k = torch.stack([f, zero, zero + cx, zero, f, zero + cy, zero, zero, one], dim=1)
    return torch.cat([c2w, k], dim=1)


# ----------------------------------------------------------------------------------------------------------
# Projection and rays (reference implementations, float64)
# ----------------------------------------------------------------------------------------------------------


def project_points(
    points_world: ArrayLike, cam2world: ArrayLike, K: ArrayLike, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points through an EG3D camera: ``(pixels [N, 2], depth [N])``.

    Pixels are continuous coordinates, x right and y down, with the centre of pixel (row i, column j) at
    ``(j + 0.5, i + 0.5)`` - the same pixel centres as EG3D's ray sampler, so a point on the ray through
    pixel (i, j) lands exactly there. ``depth`` is the camera-space z (distance along the optical axis), not
    the distance along the ray that EG3D's ``image_depth`` holds; points with depth <= 0 are behind the
    camera and their pixels are meaningless.
    """
    p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    c2w = _cam2world(cam2world)
    k = np.asarray(K, dtype=np.float64).reshape(3, 3)
    # world -> camera: R^T (p - t); c2w is rigid so no general inverse is needed.
    cam = (p - c2w[:3, 3]) @ c2w[:3, :3]
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ k.T)[:, :2] / depth[:, None]
    return uv * np.array([float(width), float(height)]), depth


def pixel_rays(cam2world: ArrayLike, K: ArrayLike, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference ray sampler (spec §3.7): ``(origins [H·W, 3], unit directions [H·W, 3])``, row-major.

    Pixel centres ``u = (j + 0.5)/W``, ``v = (i + 0.5)/H``; camera-space direction
    ``((u - cx + cy·s/fy - s·v/fy)/fx, (v - cy)/fy, 1)`` (s = skew), rotated to world and normalised.
    """
    c2w = _cam2world(cam2world)
    k = np.asarray(K, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy, s = k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1]
    v, u = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    x = (u - cx + cy * s / fy - s * v / fy) / fx
    y = (v - cy) / fy
    d = np.stack([x, y, np.ones_like(x)], axis=1) @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(c2w[:3, 3], d.shape).copy(), d


# ----------------------------------------------------------------------------------------------------------
# Blender conversion
# ----------------------------------------------------------------------------------------------------------


def eg3d_to_blender_points(p: ArrayLike, scale: float = METRES_PER_UNIT) -> np.ndarray:
    """Generator-world points [..., 3] -> Blender-world points: ``scale·(x, -z, y)`` (metres, Z up)."""
    a = np.asarray(p, dtype=np.float64)
    return float(scale) * (a @ _EG3D_TO_BLENDER.T)


def blender_to_eg3d_points(p: ArrayLike, scale: float = METRES_PER_UNIT) -> np.ndarray:
    """Blender-world points [..., 3] -> generator-world points (inverse of :func:`eg3d_to_blender_points`)."""
    a = np.asarray(p, dtype=np.float64)
    return (a @ _EG3D_TO_BLENDER) / float(scale)


def eg3d_to_blender_normals(n: ArrayLike) -> np.ndarray:
    """Generator-world normals/directions [..., 3] -> Blender world: rotation only (no scale, no flip)."""
    return np.asarray(n, dtype=np.float64) @ _EG3D_TO_BLENDER.T


def blender_to_eg3d_normals(n: ArrayLike) -> np.ndarray:
    """Blender-world normals/directions [..., 3] -> generator world (inverse of the above)."""
    return np.asarray(n, dtype=np.float64) @ _EG3D_TO_BLENDER


@dataclass(frozen=True)
class BlenderCamera:
    """A Blender camera equivalent to an EG3D camera (what to put on ``bpy.types.Object``/``Camera``).

    ``matrix_world``: 4x4 object matrix (rotation orthonormal, det +1, no scale; the camera looks down its
    local -Z with +Y up; translation in metres). ``lens_mm`` / ``sensor_width_mm`` with
    ``sensor_fit='HORIZONTAL'`` encode the focal (image widths = lens / sensor width) whatever the render
    aspect; ``shift_x`` / ``shift_y`` encode the principal point (both in image widths, Blender's unit with a
    horizontal sensor fit). Render resolution and pixel aspect (1:1) are scene settings and are not set here.
    """

    matrix_world: np.ndarray
    lens_mm: float
    sensor_width_mm: float
    sensor_fit: str = "HORIZONTAL"
    shift_x: float = 0.0
    shift_y: float = 0.0

    def apply_to(self, cam_obj: Any) -> None:
        """Write this camera onto a Blender camera object (``bpy.types.Object`` with camera data).

        Only usable inside Blender (imports ``mathutils`` lazily so this module stays importable anywhere).
        A ``mathutils.Matrix`` is required: a plain nested list assigned to ``matrix_world`` is read
        column-major by Blender and would silently transpose the pose. The render resolution is a scene
        setting and is left alone.
        """
        from mathutils import Matrix  # only present inside Blender / bpy

        cam_obj.matrix_world = Matrix([[float(v) for v in row] for row in self.matrix_world])
        data = cam_obj.data
        data.type = "PERSP"
        data.lens_unit = "MILLIMETERS"
        data.sensor_fit = self.sensor_fit
        data.sensor_width = float(self.sensor_width_mm)
        data.lens = float(self.lens_mm)
        data.shift_x = float(self.shift_x)
        data.shift_y = float(self.shift_y)


def eg3d_to_blender_camera(
    cam2world: ArrayLike,
    focal: float,
    cx: float = 0.5,
    cy: float = 0.5,
    sensor_width_mm: float = 36.0,
    scale: float = METRES_PER_UNIT,
    *,
    aspect: float = 1.0,
) -> BlenderCamera:
    """The Blender camera that shows the same picture as an EG3D camera (cam2world + normalised intrinsics).

    Pose: ``R_blender = M · R_cv · diag(1, -1, -1)`` and ``t_blender = scale · M · t`` with M the world
    mapping (x, y, z) -> (x, -z, y); the diag flips OpenCV's (down, forward) axes to Blender's (up, -forward).
    Lens: ``lens_mm = focal · sensor_width_mm`` (horizontal fit). Principal point: ``shift_x = 0.5 - cx`` and
    ``shift_y = (cy - 0.5) / aspect`` (a lens shift to the right moves the picture's optical centre to the
    left; shift up moves it down in the image). ``aspect`` = render width / height (1 for the generator);
    for non-square renders the vertical focal is implied by square pixels (fy = focal·aspect in heights).
    """
    c2w = _cam2world(cam2world)
    if not focal > 0:
        raise ValueError(f"focal must be positive, got {focal}")
    m = np.eye(4)
    m[:3, :3] = _EG3D_TO_BLENDER @ c2w[:3, :3] @ _CV_TO_GL
    m[:3, 3] = float(scale) * (_EG3D_TO_BLENDER @ c2w[:3, 3])
    return BlenderCamera(
        matrix_world=m,
        lens_mm=float(focal) * float(sensor_width_mm),
        sensor_width_mm=float(sensor_width_mm),
        sensor_fit="HORIZONTAL",
        shift_x=0.5 - float(cx),
        shift_y=(float(cy) - 0.5) / float(aspect),
    )


def _rotation_from_object_matrix(r: np.ndarray) -> np.ndarray:
    """Strip object scale (normalise columns, as Blender does for a camera view); snap to a rotation."""
    norms = np.linalg.norm(r, axis=0)
    if np.any(norms < 1e-12):
        raise ValueError("camera matrix_world has a zero scale axis")
    r = r / norms
    if np.abs(r.T @ r - np.eye(3)).max() > 1e-4:
        raise ValueError("camera matrix_world is sheared; it does not describe a pinhole camera pose")
    if np.linalg.det(r) < 0:
        raise ValueError("camera matrix_world is mirrored (negative scale); not supported")
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def blender_to_eg3d_camera(
    matrix_world: ArrayLike,
    lens_mm: float,
    sensor_width_mm: float,
    shift_x: float = 0.0,
    shift_y: float = 0.0,
    scale: float = METRES_PER_UNIT,
    *,
    aspect: float = 1.0,
) -> tuple[np.ndarray, float, float, float]:
    """Inverse of :func:`eg3d_to_blender_camera`: ``(cam2world, focal, cx, cy)`` for a Blender camera.

    Assumes ``sensor_fit='HORIZONTAL'`` (or AUTO with width >= height, which is the same), a perspective
    camera with lens in millimetres, and square pixels. ``matrix_world`` may be a ``mathutils.Matrix``;
    object scale is ignored (as Blender does for the view) and float32 rounding is snapped away, so a pose
    read back from Blender is an exact rotation. ``aspect`` = render width / height; ``cy`` is in image
    heights.
    """
    mw = np.asarray(matrix_world, dtype=np.float64)
    if mw.shape != (4, 4):
        raise ValueError(f"matrix_world must be 4x4, got shape {mw.shape}")
    if not (lens_mm > 0 and sensor_width_mm > 0):
        raise ValueError("lens_mm and sensor_width_mm must be positive")
    r = _rotation_from_object_matrix(mw[:3, :3])
    c2w = np.eye(4)
    c2w[:3, :3] = _EG3D_TO_BLENDER.T @ r @ _CV_TO_GL
    c2w[:3, 3] = (_EG3D_TO_BLENDER.T @ mw[:3, 3]) / float(scale)
    return (
        c2w,
        float(lens_mm) / float(sensor_width_mm),
        0.5 - float(shift_x),
        0.5 + float(shift_y) * float(aspect),
    )
