# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo to 3D: single-image inversion of tri-plane generators (HFGI3D-style pseudo-multi-view tuning, PTI).

Public API (docs/invert.md):

* input: ``load_photo``, ``frame_photo``, ``crop_preview``, ``CropBox``, ``estimate_mask``;
* face front end (the ``face`` extra): ``prepare_photo`` (detect → landmark crop → pose prior, or
  ``NoFaceError``), ``detect_faces``, ``FaceSettings``;
* pipeline: ``InvertSettings``, ``preset``, ``invert`` → ``Inversion``; ``retexture`` (texture edits);
* encoder start: ``choose_encoder`` (``auto``/``none``/a file → ``EncoderChoice``), ``encoder_start`` (one
  forward pass → ``Start``: the first avatar's latent and camera, ``invert(..., start=)``), ``refine_budget``
  (the ``none``/``fast``/``full`` refinement levels);
* stages: ``estimate_pose``, ``project_latent``, ``tune_generator``, ``build_pseudo_views``;
* files: ``save_avatar``, ``read_avatar``, ``load_avatar`` (→ tuned G, ws, label), ``avatar_latent`` (→ tuned
  G, ``sampling.Latent``, label: an avatar in place of a seed), ``write_outputs``;
* editing: ``open_avatar``, ``edit_latent``, ``edit_texture``, ``load_directions``, ``find_directions``,
  ``apply_direction``.

Heavy modules are imported on first use so that ``import backend.invert`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_photo": "image", "frame_photo": "image", "crop_preview": "image", "CropBox": "image",
    "estimate_mask": "image", "Photo": "image", "Framed": "image",
    "prepare_photo": "frontend", "NoFaceError": "frontend", "detect_faces": "face", "FaceSettings": "face",
    "InvertSettings": "pipeline", "preset": "pipeline", "invert": "pipeline", "Inversion": "pipeline",
    "retexture": "pipeline", "refine_budget": "pipeline",
    "choose_encoder": "start", "encoder_start": "start", "Start": "start", "EncoderChoice": "start",
    "estimate_pose": "pose", "PoseSettings": "pose", "project_latent": "project", "ProjectSettings": "project",
    "tune_generator": "tuning", "TuneSettings": "tuning", "build_pseudo_views": "pseudo",
    "PseudoSettings": "pseudo",
    "save_avatar": "avatar", "read_avatar": "avatar", "load_avatar": "avatar", "avatar_latent": "avatar",
    "open_avatar": "edit", "edit_latent": "edit", "edit_texture": "edit",
    "write_outputs": "results", "OutputOptions": "results",
    "load_directions": "directions", "find_directions": "directions", "apply_direction": "directions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"backend.invert.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'backend.invert' has no attribute {name!r}")
