# SPDX-License-Identifier: GPL-3.0-or-later
"""Crops from facial landmarks: the bundled model's framing, and EG3D's FFHQ recipe for official checkpoints.

Both return a :class:`backend.invert.image.CropBox` (a square, turned so that the eyes come out level).

* **heads** (the bundled model and any Aware3D-trained head model): the crop is the similarity (scale,
  rotation, translation) that best maps the photo's landmarks onto the 3D landmark template of the
  synthetic heads (:mod:`backend.invert.face_template`) as the model's own camera sees it at a given yaw
  and pitch. With the pose from :mod:`backend.invert.face_pose` this reproduces the training framing also
  for turned heads (a turned head's eyes are off-centre in the training images too).
* **ffhq** (official EG3D/Mimic3D FFHQ checkpoints; shared/spec/eg3d_crop.md): FFHQ's alignment first
  (an oriented square from the eye centres and mouth corners: its x axis is the mean of the eye-to-eye
  direction and the eye-to-mouth direction turned by 90°, its half-size max(2·|eye-to-eye|,
  1.8·|eye-to-mouth|), its centre the eye midpoint moved a tenth of the way to the mouth), which removes the
  head's roll; then, in that frame, EG3D's crop: fit a 2×4 affine camera to the five points (eye centres,
  nose tip, mouth corners) against the mean-face template by least squares ("POS"), s = the mean norm of
  its two rows, and take the square of side 700/(300/s) centred on its translation. The scripts' resampling
  steps (1500 → ×k → 1024 → 700 → output) are one warp here; their integer truncations and the H − 1 of
  their y flip move the crop by less than one pixel of the 1024-px image.
"""

from __future__ import annotations

import math

import numpy as np

from backend.cameras import orbit_camera
from backend.config import GeneratorConfig
from backend.invert.image import CropBox

# EG3D's mean-face template (shared/spec/eg3d_crop.md; the face model's 3D landmarks reduced to five points):
# left eye, right eye, nose tip, mouth left, mouth right ("left" = image-left).
EG3D_TEMPLATE = {
    "eye_l": (-0.311487, 0.290361, 0.133780),
    "eye_r": (0.309799, 0.289720, 0.131795),
    "nose_tip": (0.003253, -0.046179, 0.552442),
    "mouth_l": (-0.252169, -0.381339, 0.224057),
    "mouth_r": (0.248466, -0.381282, 0.222358),
}
EG3D_RESCALE = 300.0  # rescale_factor: template units → pixels of the 1024-px image
EG3D_WINDOW = 1024.0
EG3D_CENTRE = 700.0
# The scripts' conversion of the face model's frame to the generator's world (spec §2.1 step 4: scale 0.27,
# offset (0, 0.006, 0.161)): the pose prior of FFHQ checkpoints solves against the template in world units.
EG3D_TO_WORLD_SCALE = 0.27
EG3D_TO_WORLD_OFFSET = (0.0, 0.006, 0.161)
FFHQ_EYE_SCALE, FFHQ_MOUTH_SCALE, FFHQ_CENTRE_SHIFT = 2.0, 1.8, 0.1


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 similarity (no reflection) mapping ``src`` [N, 2] onto ``dst`` [N, 2] in least squares."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n = len(src)
    a = np.zeros((2 * n, 4))
    a[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
    a[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
    (p, q, tx, ty), *_ = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)
    return np.array([[p, -q, tx], [q, p, ty]])


def box_from_similarity(m: np.ndarray, stretch: float = 1.0) -> CropBox:
    """The crop whose normalised coordinates (0..1) are ``m`` applied to the stretched photo's pixels."""
    k = math.hypot(m[0, 0], m[1, 0])
    size = 1.0 / k
    angle = -math.degrees(math.atan2(m[1, 0], m[0, 0]))
    centre = np.linalg.solve(m[:, :2], np.array([0.5, 0.5]) - m[:, 2])
    return CropBox(float(centre[0] - size / 2), float(centre[1] - size / 2), size, angle, stretch)


def project(points: np.ndarray, cfg: GeneratorConfig, yaw: float, pitch: float) -> np.ndarray:
    """World points [N, 3] → normalised image coordinates [N, 2] (0..1, y down) of the model's orbit camera."""
    r = cfg.rendering
    c2w = orbit_camera(yaw, pitch, r.avg_camera_radius, r.avg_camera_pivot)
    cam = (np.asarray(points, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]
    return r.focal * cam[:, :2] / cam[:, 2:3] + 0.5


def heads_crop(points: dict[str, np.ndarray], template: dict[str, tuple[float, float, float]],
               cfg: GeneratorConfig, yaw: float = 0.0, pitch: float = 0.0, stretch: float = 1.0) -> CropBox:
    """The crop that puts the photo's landmarks where the model's camera sees the template at (yaw, pitch).

    ``points``: named landmarks in photo pixels (:meth:`backend.invert.face.Face.points`); the names shared
    with ``template`` are used."""
    names = [n for n in template if n in points]
    if len(names) < 3:
        raise ValueError(f"need at least 3 landmarks shared with the template, got {names}")
    src = np.array([points[n] for n in names]) * np.array([stretch, 1.0])
    dst = project(np.array([template[n] for n in names]), cfg, yaw, pitch)
    return box_from_similarity(similarity(src, dst), stretch)


def ffhq_frame(eye_l: np.ndarray, eye_r: np.ndarray, mouth_l: np.ndarray, mouth_r: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FFHQ's oriented square: (centre, x half-axis, y half-axis) in photo pixels (module docstring)."""
    eye_avg = 0.5 * (eye_l + eye_r)
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = 0.5 * (mouth_l + mouth_r) - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.hypot(*x) * max(FFHQ_EYE_SCALE * np.hypot(*eye_to_eye), FFHQ_MOUTH_SCALE * np.hypot(*eye_to_mouth))
    y = np.array([-x[1], x[0]])
    return eye_avg + FFHQ_CENTRE_SHIFT * eye_to_mouth, x, y


def pos_fit(image_points: np.ndarray, template: np.ndarray) -> tuple[float, np.ndarray]:
    """EG3D's "POS": the least-squares 2×4 affine camera image = A·[X, 1]; returns (s, t)."""
    n = len(template)
    a = np.zeros((2 * n, 8))
    a[0::2, :3], a[0::2, 3] = template, 1.0
    a[1::2, 4:7], a[1::2, 7] = template, 1.0
    sol, *_ = np.linalg.lstsq(a, np.asarray(image_points, np.float64).reshape(-1), rcond=None)
    s = 0.5 * (np.linalg.norm(sol[:3]) + np.linalg.norm(sol[4:7]))
    return float(s), np.array([sol[3], sol[7]])


def eg3d_crop(points: dict[str, np.ndarray], stretch: float = 1.0) -> CropBox:
    """EG3D's FFHQ crop (module docstring) from 68-point landmarks in photo pixels.

    Needs ``eye_l_ring``/``eye_r_ring`` (FFHQ's eye centres), ``eye_l``/``eye_r`` (EG3D's: the corners'
    midpoints), ``nose_tip`` and the mouth corners."""
    sx = np.array([stretch, 1.0])
    p = {k: np.asarray(v, np.float64) * sx for k, v in points.items()}
    centre, x, y = ffhq_frame(p["eye_l_ring"], p["eye_r_ring"], p["mouth_l"], p["mouth_r"])
    ux, uy = x / np.hypot(*x), y / np.hypot(*y)
    rot = np.stack([ux, uy])  # photo → the aligned frame (rows: its axes)
    names = list(EG3D_TEMPLATE)
    img = np.array([rot @ (p[n] - centre) for n in names])
    # The scripts flip y (template y is up); in this frame that is a sign change, undone after the fit.
    s, t = pos_fit(img * np.array([1.0, -1.0]), np.array([EG3D_TEMPLATE[n] for n in names]))
    t = t * np.array([1.0, -1.0])
    size = EG3D_CENTRE * s / EG3D_RESCALE
    c = centre + rot.T @ t
    angle = math.degrees(math.atan2(ux[1], ux[0]))
    return CropBox(float(c[0] - size / 2), float(c[1] - size / 2), float(size), angle, stretch)


def eg3d_world_template() -> dict[str, tuple[float, float, float]]:
    """EG3D's five-point template in generator world units (for the pose prior of FFHQ checkpoints)."""
    off = np.asarray(EG3D_TO_WORLD_OFFSET)
    return {k: tuple(float(v) for v in EG3D_TO_WORLD_SCALE * np.asarray(p) + off) for k, p in EG3D_TEMPLATE.items()}
