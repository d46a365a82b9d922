# SPDX-License-Identifier: GPL-3.0-or-later
"""The photo front end: face detection → landmark-aligned crop → pose prior, or a refusal.

One function (:func:`prepare_photo`) for the CLI, the server and scripts, so that all of them frame, refuse
and report alike:

* **align** (``--align``): ``heads`` frames like the synthetic training heads (Aware3D's models),
  ``ffhq`` uses EG3D's FFHQ recipe (official FFHQ checkpoints), ``none`` keeps the landmark-free framing
  (skin colour or a mask; :func:`backend.invert.image.frame_photo`). ``auto`` picks by the model: FFHQ
  checkpoints → ``ffhq``; AFHQ cats and ShapeNet cars → ``none`` (no detector of their kind ships);
  everything else → ``heads``.
* **no face, no avatar**: with ``crop='auto'`` a photo in which the detector finds no face is refused with
  :class:`NoFaceError` (one line naming the override ``--crop X,Y,SIZE`` / ``--crop full``). A given crop
  is never refused; a face found in it still gives the pose prior.
* **without the face extra** everything works as before the front end existed, and ``notice`` says why in
  one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from backend.config import GeneratorConfig
from backend.errors import Aware3DError
from backend.invert.face import INSTALL_HINT, Face, FaceSearch, FaceSettings, detect_faces
from backend.invert.face_pose import PosePrior, solve_pose
from backend.invert.image import CropBox, Framed, Photo, frame_photo

ALIGNS = ("auto", "heads", "ffhq", "none")
OVERRIDE_HINT = "if it shows a face, give the crop by hand: --crop X,Y,SIZE in photo pixels, or --crop full if " \
                "the photo is already framed"
PRIOR_LIMITS = (75.0, 50.0)  # |yaw|, |pitch| beyond which a PnP answer is not trusted (the models: ±60°, ±25°)


class NoFaceError(Aware3DError):
    """The detector found no face where one is needed; ``search`` says what it looked at."""

    def __init__(self, message: str, hint: str, search: FaceSearch) -> None:
        super().__init__(message, hint)
        self.search = search


def model_kind(cfg: GeneratorConfig) -> str:
    """'ffhq', 'afhq', 'cars' (official checkpoints, by config name) or 'heads' (Aware3D's own models)."""
    name = cfg.name.lower()
    for key, kind in (("ffhq", "ffhq"), ("afhq", "afhq"), ("shapenet", "cars")):
        if key in name:
            return kind
    return "heads"


def resolve_align(align: str, cfg: GeneratorConfig) -> str:
    if align not in ALIGNS:
        raise Aware3DError(f"unknown alignment {align!r}", f"use one of {', '.join(ALIGNS)}")
    if align != "auto":
        return align
    return {"ffhq": "ffhq", "heads": "heads"}.get(model_kind(cfg), "none")


@dataclass
class FrontEnd:
    """The framed photo and everything the front end found on the way (for reports and the panel)."""

    framed: Framed
    search: FaceSearch | None  # None: detection not run (align 'none')
    align: str  # the resolved alignment
    prior: PosePrior | None = None
    notice: str = ""  # one line for the user, or ''

    @property
    def face(self) -> Face | None:
        return None if self.search is None else self.search.face

    @property
    def pose_prior(self) -> tuple[float, float] | None:
        return None if self.prior is None else (self.prior.yaw, self.prior.pitch)

    def to_dict(self) -> dict[str, Any]:
        """The detection (box, landmarks, confidence), the crop, the pose prior: report.json's ``face``."""
        return {"align": self.align, "notice": self.notice,
                "detection": None if self.search is None else self.search.to_dict(),
                "crop": self.framed.box.to_dict(), "crop_method": self.framed.method,
                "pose_prior": None if self.prior is None else self.prior.to_dict()}

    def summary(self) -> str:
        """One line for the CLI: the face's confidence, the crop and the prior."""
        parts = []
        f = self.face
        if f is not None:
            parts.append(f"face {f.confidence:.2f} ({self.search.detector if self.search else ''}, "
                         f"{f.landmark_model} landmarks{'' if f.stretch == 1 else f', stretch {f.stretch:g}'})")
        b = self.framed.box
        parts.append(f"crop {self.framed.method} {b.to_list()}" + (f" turned {b.angle:+.1f}°" if b.angle else ""))
        if self.prior is not None:
            parts.append(f"pose prior yaw {self.prior.yaw:+.1f}°, pitch {self.prior.pitch:+.1f}°")
        if self.framed.note:
            parts.append(self.framed.note)
        return "; ".join(parts)


def _template(align: str) -> tuple[dict[str, tuple[float, float, float]], str]:
    if align == "ffhq":
        from backend.invert.align import eg3d_world_template

        return eg3d_world_template(), "eg3d-5"
    from backend.invert.face_template import HEADS_TEMPLATE

    return HEADS_TEMPLATE, "aware3d-heads"


def crop_points(face: Face, box: CropBox) -> dict[str, np.ndarray]:
    """The face's named landmarks in normalised crop coordinates (0..1)."""
    m = box.photo_to_crop(1.0)
    return {k: m[:, :2] @ v + m[:, 2] for k, v in face.points().items()}


def _prior(face: Face, box: CropBox, align: str, cfg: GeneratorConfig) -> PosePrior | None:
    template, name = _template(align)
    prior = solve_pose(crop_points(face, box), template, cfg, name)
    if prior is None or abs(prior.yaw) > PRIOR_LIMITS[0] or abs(prior.pitch) > PRIOR_LIMITS[1]:
        return None
    return prior


def landmark_crop(face: Face, align: str, cfg: GeneratorConfig, rounds: int = 2) -> tuple[CropBox, PosePrior | None]:
    """The aligned crop of ``face`` and the pose prior solved in it.

    ``heads``: frame at the frontal pose, solve the pose, frame again at that pose (``rounds`` times; one
    round already moves the crop by under a pixel on the photos we tried). ``ffhq``: EG3D's recipe, which
    does not depend on the pose."""
    from backend.invert.align import eg3d_crop, heads_crop

    if align == "ffhq":
        box = eg3d_crop(face.points(), face.stretch)
        return box, _prior(face, box, align, cfg)
    template, _ = _template(align)
    box = heads_crop(face.points(), template, cfg, stretch=face.stretch)
    prior = _prior(face, box, align, cfg)
    for _ in range(rounds - 1):
        if prior is None:
            break
        box = heads_crop(face.points(), template, cfg, prior.yaw, prior.pitch, face.stretch)
        prior = _prior(face, box, align, cfg) or prior
    return box, prior


def no_face_error(photo: Photo, search: FaceSearch) -> NoFaceError:
    return NoFaceError(f"no face found in {photo.name} ({search.detector}: the whole photo scanned, "
                       f"{search.candidates} candidate(s) checked, none confident)", OVERRIDE_HINT, search)


def prepare_photo(photo: Photo, cfg: GeneratorConfig, crop: str | CropBox = "auto", align: str = "auto",
                  mask: np.ndarray | None = None, auto_mask: bool = False,
                  matte: tuple[float, float, float] | None = None, settings: FaceSettings | None = None,
                  search: FaceSearch | None = None, refuse: bool = True,
                  check: Callable[[], None] | None = None) -> FrontEnd:
    """Frame ``photo`` for a model of config ``cfg`` (module docstring).

    ``search``: a detection already made (e.g. before the model was loaded); ``refuse=False`` falls back to
    the landmark-free framing instead of raising :class:`NoFaceError` (the server's preview uses it to show
    what was found). Raises ``Aware3DError`` for ``align='ffhq'`` without the face extra (it cannot be
    honoured) and :class:`NoFaceError` as described. ``check()`` runs between the face search's sub-steps
    and before the framing (it may raise, e.g. a job's cancel)."""
    resolved = resolve_align(align, cfg)
    res = cfg.img_resolution
    if resolved == "none":
        return FrontEnd(frame_photo(photo, res, crop, mask, auto_mask, matte), None, resolved)
    s = settings or FaceSettings()
    if resolved == "ffhq" and s.landmarks != 68:
        s = replace(s, landmarks=68)  # FFHQ's recipe needs the mouth corners
    if search is None or (search.face is not None and search.face.landmark_model != s.landmarks):
        search = detect_faces(photo, s, check)
    if check is not None:
        check()
    if not search.available:
        if align == "ffhq":
            raise Aware3DError("--align ffhq needs the face extra (landmarks)", f"install it: {INSTALL_HINT}")
        return FrontEnd(frame_photo(photo, res, crop, mask, auto_mask, matte), search, resolved,
                        notice=f"{search.notice}; framing by the landmark-free rule")
    face = search.face
    if crop == "auto":
        if face is None:
            if refuse:
                raise no_face_error(photo, search)
            framed = frame_photo(photo, res, crop, mask, auto_mask, matte)
            return FrontEnd(framed, search, resolved, notice=no_face_error(photo, search).one_line())
        box, prior = landmark_crop(face, resolved, cfg)
        framed = frame_photo(photo, res, box, mask, auto_mask, matte, label="ffhq" if resolved == "ffhq" else "face")
        notice = "" if face.stretch == 1 else (f"the face was found only in a copy stretched {face.stretch:g}× "
                                               "horizontally: the crop undoes that stretch")
        return FrontEnd(framed, search, resolved, prior, notice)
    framed = frame_photo(photo, res, crop, mask, auto_mask, matte)
    prior = None if face is None else _prior(face, framed.box, resolved, cfg)
    return FrontEnd(framed, search, resolved, prior)
