# SPDX-License-Identifier: GPL-3.0-or-later
"""The photo front end (backend.invert.face / align / face_pose / frontend) on real photographs shipped with
scikit-image and on renders of synthetic heads: detection, refusal, landmark-aligned crops, EG3D's FFHQ crop
against the recipe computed independently here, and the PnP pose prior.

The face extra comes with the dev extra; where it is missing these tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from backend.configs import get_config
from backend.errors import Aware3DError
from backend.invert.align import EG3D_TEMPLATE, eg3d_crop, heads_crop, project
from backend.invert.face import detect_faces, face_extra_missing, models_dir
from backend.invert.face_pose import solve_pose
from backend.invert.face_template import HEADS_TEMPLATE
from backend.invert.frontend import NoFaceError, crop_points, prepare_photo
from backend.invert.image import CropBox, load_photo

HEADS = get_config("aware3d-heads64")
FFHQ = get_config("eg3d-ffhq512-128")
EYES_LEVEL_DEG = 1.5  # the stated tolerance: eye line in the crop within 1.5° of horizontal


@pytest.fixture(autouse=True)
def _face_extra() -> None:
    missing = face_extra_missing()
    if missing:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"the face extra is part of the dev extra and must be installed in CI: {missing}")
        pytest.skip(missing)


def _astronaut(angle: float = 0.0) -> np.ndarray:
    img = skimage.data.astronaut()
    if angle:
        m = cv2.getRotationMatrix2D((256, 256), angle, 1.0)
        img = cv2.warpAffine(img, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    return img


def _eye_angle(points: dict[str, np.ndarray], box: CropBox) -> float:
    m = box.photo_to_crop(1.0)
    left, right = (m[:, :2] @ points[k] + m[:, 2] for k in ("eye_l", "eye_r"))
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def test_models_ship_with_the_packages() -> None:
    """All four model files are found through the package's resource folder (without importing it)."""
    d = models_dir()
    assert d is not None
    for name in ("mmod_human_face_detector.dat", "shape_predictor_5_face_landmarks.dat",
                 "shape_predictor_68_face_landmarks.dat"):
        assert (d / name).stat().st_size > 100_000, name


def test_astronaut_is_detected_aligned_and_frontal() -> None:
    """scikit-image's astronaut (NASA's public-domain portrait): one confident face on hers, a crop that
    levels the eyes, and a pose prior within 15° of frontal (a near-frontal portrait with a level camera)."""
    photo = load_photo(_astronaut(), "astronaut")
    fe = prepare_photo(photo, HEADS)
    face = fe.face
    assert face is not None and face.confidence > 0.5 and face.landmark_model == 5
    x0, y0, x1, y1 = face.box
    assert 150 < (x0 + x1) / 2 < 260 and 60 < (y0 + y1) / 2 < 190  # her face, not the suit or the flag
    assert fe.framed.method == "face" and fe.align == "heads"
    assert abs(_eye_angle(face.points(), fe.framed.box)) < EYES_LEVEL_DEG
    assert fe.prior is not None and abs(fe.prior.yaw) < 15 and abs(fe.prior.pitch) < 15
    # Even the plain PnP (no prior on the pose) is near frontal.
    plain = solve_pose(crop_points(face, fe.framed.box), HEADS_TEMPLATE, HEADS, prior_sigma=None)
    assert plain is not None and abs(plain.yaw) < 15 and abs(plain.pitch) < 15
    report = fe.to_dict()
    det = report["detection"]["faces"][0]
    assert det["confidence"] == round(face.confidence, 3) and len(det["landmarks"]) == 5 and len(det["box"]) == 4
    assert any("5-point" in m for m in report["detection"]["models"])  # the terms of what was used
    assert not any("300-W" in m for m in report["detection"]["models"])  # the default needs no 68-point model


def test_a_turned_photo_gets_a_turned_crop_with_level_eyes() -> None:
    """The astronaut turned by 20°: the crop turns with her and her eyes come out level again."""
    photo = load_photo(_astronaut(20.0), "astronaut-turned")
    fe = prepare_photo(photo, HEADS)
    assert fe.face is not None
    assert abs(fe.framed.box.angle - (-20.0 + 2.7)) < 4  # her own roll is about 3° the other way
    assert abs(_eye_angle(fe.face.points(), fe.framed.box)) < EYES_LEVEL_DEG


@pytest.mark.parametrize("name", ["chelsea", "coffee", "noise"])
def test_no_face_no_avatar(name: str) -> None:
    """A cat, a coffee cup and noise: refused, naming the override; a given crop is never refused."""
    img = (np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8) if name == "noise"
           else getattr(skimage.data, name)())
    photo = load_photo(img, f"{name}.png")
    with pytest.raises(NoFaceError) as info:
        prepare_photo(photo, HEADS)
    err = info.value
    assert isinstance(err, Aware3DError) and "no face found in" in err.message
    assert "--crop X,Y,SIZE" in err.hint and "--crop full" in err.hint and "\n" not in err.one_line()
    assert err.search.faces == [] and err.search.available
    fe = prepare_photo(photo, HEADS, "full")
    assert fe.framed.method == "full" and fe.face is None and fe.prior is None
    shown = prepare_photo(photo, HEADS, refuse=False)  # the server's preview: shows, does not refuse
    assert "no face found" in shown.notice


@pytest.mark.parametrize("stretch", [2.0, 1.3, 0.6])
def test_stretched_astronaut_is_framed_on_her_face(stretch: float) -> None:
    """Non-uniformly stretched copies (the photo's width × ``stretch``): framed on her face, and the crop
    undoes the stretch, so the eyes are as far apart in the crop as in the unstretched photo's crop."""
    img = cv2.resize(_astronaut(), (round(512 * stretch), 512), interpolation=cv2.INTER_AREA)
    fe = prepare_photo(load_photo(img, "stretched"), HEADS)
    ref = prepare_photo(load_photo(_astronaut(), "astronaut"), HEADS)
    assert fe.face is not None
    cx, cy = fe.framed.box.centre
    x0, y0, x1, y1 = ref.face.box
    assert x0 * stretch < cx < x1 * stretch and y0 < cy < y1  # the crop's centre is on her face
    size = ref.framed.box.size
    assert abs(fe.framed.box.size / size - 1) < (0.15 if fe.face.stretch != 1 else 0.35)
    if stretch == 2.0:
        assert fe.face.stretch == 0.5 and "stretched" in fe.notice


def _ffhq_rule(points: dict[str, np.ndarray]) -> tuple[np.ndarray, float, float]:
    """EG3D's crop from shared/spec/eg3d_crop.md, step by step as written (realign to 1500 px, flip y,
    fit the 2×4 affine camera, rescale, 1024 window, centred 700): (centre, side, angle) in photo pixels."""
    el, er = points["eye_l_ring"], points["eye_r_ring"]
    ml, mr = points["mouth_l"], points["mouth_r"]
    # FFHQ's quad.
    eye_avg, e2e = (el + er) / 2, er - el
    e2m = (ml + mr) / 2 - eye_avg
    x = e2e - np.flipud(e2m) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*e2e) * 2.0, np.hypot(*e2m) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + e2m * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])  # the realigned image's corners TL, BL, BR, TR
    side = 1500.0
    ax, ay = (quad[3] - quad[0]) / side, (quad[1] - quad[0]) / side  # photo pixels per realigned pixel

    def to_real(p: np.ndarray) -> np.ndarray:
        return np.linalg.solve(np.stack([ax, ay], 1), p - quad[0])

    five = [points["eye_l"], points["eye_r"], points["nose_tip"], ml, mr]
    lm = np.array([to_real(p) for p in five])
    lm[:, 1] = side - lm[:, 1]  # y flipped (continuous coordinates)
    tmpl = np.array(list(EG3D_TEMPLATE.values()))
    rows = []
    for X in tmpl:
        rows += [[*X, 1, 0, 0, 0, 0], [0, 0, 0, 0, *X, 1]]
    sol = np.linalg.lstsq(np.array(rows), lm.reshape(-1), rcond=None)[0]
    s = (np.linalg.norm(sol[:3]) + np.linalg.norm(sol[4:7])) / 2
    tx, ty = sol[3], sol[7]
    k = 300 / s
    w = h = side * k
    left = w / 2 - 1024 / 2 + (tx - side / 2) * k
    top = h / 2 - 1024 / 2 + (side / 2 - ty) * k
    centre_scaled = np.array([left + 512, top + 512])  # the 700 window shares the 1024 window's centre
    centre = quad[0] + ax * centre_scaled[0] / k + ay * centre_scaled[1] / k
    size = 700 / k * np.hypot(*ax)
    return centre, size, math.degrees(math.atan2(ax[1], ax[0]))


def test_ffhq_crop_matches_the_recipe_on_known_landmarks() -> None:
    """Landmarks known exactly (a face layout turned by 25°, scaled and moved): the crop is the recipe's."""
    base = {"eye_l": (-30.0, 0.0), "eye_r": (32.0, 1.0), "nose_tip": (1.0, 34.0), "mouth_l": (-24.0, 66.0),
            "mouth_r": (25.0, 65.0)}
    base |= {"eye_l_ring": (-29.0, 0.5), "eye_r_ring": (31.0, 1.5)}
    a = math.radians(25)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = {k: 2.3 * rot @ np.array(v) + np.array([400.0, 300.0]) for k, v in base.items()}
    centre, size, angle = _ffhq_rule(pts)
    box = eg3d_crop(pts)
    assert np.allclose(box.centre, centre, atol=1e-6) and abs(box.size - size) < 1e-6 and abs(box.angle - angle) < 1e-9
    assert abs(box.angle - 25) < 3  # the roll is removed


def test_align_ffhq_on_a_rendered_head_with_known_landmarks() -> None:
    """``--align ffhq`` on a synthetic head rendered at a known pose and roll, whose landmarks are known from
    its geometry: the crop equals the recipe on the detected landmarks exactly, and the recipe on the known
    landmarks within the detector's landmark error."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        import face_template as tool
    finally:
        sys.path.pop(0)
    import dataclasses

    from train.synthetic import render, sample_head, sample_test_scene
    from train.synthetic.tracer import scene_label

    head = dataclasses.replace(tool.bare(sample_head(1, 0, 1)), head_roll_deg=12.0, head_nod_deg=0.0)
    scene = sample_test_scene(1, 0, 10.0, 0.0)
    res = 320
    img = render([head], [scene], res).images[0]
    fe = prepare_photo(load_photo(img, "head"), FFHQ, align="auto")
    assert fe.align == "ffhq" and fe.framed.method == "ffhq" and fe.face is not None and fe.face.landmark_model == 68
    centre, size, angle = _ffhq_rule(fe.face.points())
    assert np.allclose(fe.framed.box.centre, centre, atol=1e-4) and abs(fe.framed.box.size - size) < 1e-4
    assert abs(fe.framed.box.angle - angle) < 1e-6
    # Known landmarks: the head's 3D points projected by the render's camera.
    xy = tool.canonical_points(head)
    names = ["eye_l_outer", "eye_l_inner", "eye_r_inner", "eye_r_outer", "nose_tip", "mouth_l", "mouth_r"]
    world = dict(zip(names, tool.surface_points(head, np.array([xy[n] for n in names]))))
    label = scene_label(scene)
    c2w = label[:16].reshape(4, 4).astype(np.float64)
    f = float(label[16])
    cam = (np.array([world[n] for n in names]) - c2w[:3, 3]) @ c2w[:3, :3]
    uv = dict(zip(names, (f * cam[:, :2] / cam[:, 2:3] + 0.5) * res))
    known = {"eye_l": (uv["eye_l_outer"] + uv["eye_l_inner"]) / 2, "eye_r": (uv["eye_r_outer"] + uv["eye_r_inner"]) / 2,
             "nose_tip": uv["nose_tip"], "mouth_l": uv["mouth_l"], "mouth_r": uv["mouth_r"]}
    known["eye_l_ring"], known["eye_r_ring"] = known["eye_l"], known["eye_r"]
    k_centre, k_size, k_angle = _ffhq_rule(known)
    assert np.hypot(*(np.array(fe.framed.box.centre) - k_centre)) < 0.08 * k_size
    assert abs(fe.framed.box.size / k_size - 1) < 0.12 and abs(fe.framed.box.angle - k_angle) < 4
    assert abs(k_angle - (-12.0)) < 3  # the head's roll (positive roll turns it counter-clockwise on screen)


def test_pnp_recovers_a_known_pose_and_the_prior_shrinks_little() -> None:
    """Template landmarks projected by the model's camera at known poses come back as those poses."""
    names = list(HEADS_TEMPLATE)
    pts3 = np.array([HEADS_TEMPLATE[n] for n in names])
    for yaw, pitch in [(0, 0), (25, -8), (-40, 12)]:
        pts = dict(zip(names, project(pts3, HEADS, yaw, pitch)))
        plain = solve_pose(pts, HEADS_TEMPLATE, HEADS, prior_sigma=None)
        assert plain is not None and abs(plain.yaw - yaw) < 0.05 and abs(plain.pitch - pitch) < 0.05
        assert abs(plain.distance - 2.7) < 0.01 and plain.error < 1e-6
        map_ = solve_pose(pts, HEADS_TEMPLATE, HEADS)
        assert map_ is not None and abs(map_.yaw - yaw) < 1.0 and abs(map_.pitch - pitch) < 1.5


def test_heads_framing_reproduces_the_training_framing() -> None:
    """A synthetic head rendered the way the training data was: the landmark crop is (nearly) the image."""
    from train.synthetic import render, sample_head, sample_test_scene

    res = 128
    for yaw in (0.0, 30.0):
        img = render([sample_head(1, 3, 1)], [sample_test_scene(1, 3, yaw, 0.0)], res).images[0]
        fe = prepare_photo(load_photo(img, "head"), HEADS)
        b = fe.framed.box
        assert abs(b.size / res - 1) < 0.15 and np.hypot(*(np.array(b.centre) - res / 2)) < 0.08 * res
        assert fe.prior is not None and abs(fe.prior.yaw - yaw) < 12 and abs(fe.prior.pitch) < 12


def test_heads_crop_at_a_pose_matches_the_projection() -> None:
    """heads_crop maps the template's own projection at (yaw, pitch) onto the full frame exactly."""
    names = list(HEADS_TEMPLATE)
    pts = dict(zip(names, project(np.array([HEADS_TEMPLATE[n] for n in names]), HEADS, 20, 5) * 300 + 40))
    box = heads_crop(pts, HEADS_TEMPLATE, HEADS, 20, 5)
    assert abs(box.x - 40) < 1e-6 and abs(box.y - 40) < 1e-6 and abs(box.size - 300) < 1e-6 and abs(box.angle) < 1e-6


def test_detection_reports_time_and_candidates() -> None:
    search = detect_faces(load_photo(_astronaut(), "astronaut"))
    assert search.available and len(search.faces) == 1 and search.candidates >= 1 and search.seconds > 0


def test_the_heads_template_is_current() -> None:
    """backend/invert/face_template.py is what tools/face_template.py derives from today's head geometry
    (rerun the script after changing train/synthetic's layout or SDF)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        import face_template as tool
    finally:
        sys.path.pop(0)
    assert tool.main(["--check"]) == 0
