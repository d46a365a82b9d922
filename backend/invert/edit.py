# SPDX-License-Identifier: GPL-3.0-or-later
"""Editing an avatar: move its latent along an attribute direction, or re-texture it from an edited photo.

Both are HFGI3D's editing modes (spec §2, paper): *latent* edits keep the tuned generator and move the pivot
in W (``ws + amount · step · direction``), which works because stage 2 starts from the original generator
and stays close to its prior; *texture* edits take an edited version of the framed input (``input.png``),
warp it through the stored stage-1 geometry into the same pseudo views (the visibility does not change, only
the colours) and re-run stage 2 alone from the original generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from backend.errors import Aware3DError
from backend.invert.avatar import AvatarData, apply_tuning, read_avatar, resolve_base
from backend.invert.directions import apply_direction, find_directions
from backend.invert.geometry import pose_from_label
from backend.invert.losses import LossWeights
from backend.invert.pipeline import Inversion, InvertSettings, retexture
from backend.invert.pose import PoseEstimate
from backend.invert.pseudo import PseudoSettings, PseudoView
from backend.invert.tuning import TuneSettings

Progress = Callable[[str, int, int, str], None]


@dataclass
class OpenAvatar:
    """An avatar ready to edit: its file, its base model, and an :class:`Inversion` view of it."""

    data: AvatarData
    base: Any  # registry.LoadedModel
    inv: Inversion


def settings_from(data: AvatarData) -> InvertSettings:
    """The pseudo-view and stage-2 settings the avatar was made with (defaults where not recorded)."""
    rec = data.header.provenance.get("settings", {}) or {}
    pseudo = PseudoSettings(**{k: v for k, v in (rec.get("pseudo") or {}).items()
                               if k in PseudoSettings.__dataclass_fields__})
    st = {k: v for k, v in (rec.get("stage2") or {}).items() if k in TuneSettings.__dataclass_fields__}
    if isinstance(st.get("loss"), dict):
        st["loss"] = LossWeights(**st["loss"])
    stage2 = TuneSettings(**st)
    return InvertSettings(pseudo=pseudo, stage2=stage2, seed=int(rec.get("seed", 0)))


def open_avatar(path: str, device: torch.device | str = "cpu", model: str | None = None) -> OpenAvatar:
    data = read_avatar(path)
    base = resolve_base(data, device, model)
    G = apply_tuning(base.generator, data)
    label = data.label.to(device)
    yaw, pitch, _ = pose_from_label(label[0])
    target = data.stage1.get("input.image")
    s = settings_from(data)
    inv = Inversion(G, data.ws.to(device), label, PoseEstimate(yaw, pitch, "avatar"),
                    target.to(device) if target is not None else torch.zeros(0), s)
    st = data.stage1
    if "stage1.input_depth" in st:
        inv.input_depth = st["stage1.input_depth"].to(device)
        poses = st["stage1.poses"]
        for k in range(poses.shape[0]):
            depth, fill = st["stage1.depths"][k : k + 1].to(device), st["stage1.fills"][k : k + 1].to(device)
            inv.pseudo.append(PseudoView(float(poses[k, 0]), float(poses[k, 1]), st["stage1.labels"][k : k + 1]
                                         .to(device), fill, torch.zeros_like(depth), fill, fill, depth))
    summary = data.header.provenance.get("summary", {})
    inv.metrics = dict(summary.get("input_view", {}))
    return OpenAvatar(data, base, inv)


def edit_latent(av: OpenAvatar, direction: str, amount: float, directions_file: str | None = None) -> dict:
    """Move the avatar's pivot along an attribute direction (in place); returns what was done."""
    ds = find_directions(directions_file, av.data.base)
    d = ds.get(direction)
    av.inv.ws = apply_direction(av.inv.ws, d, amount)
    return {"direction": direction, "amount": amount, "step": d.step, "layers": d.layers, "quality": d.quality}


def edit_texture(av: OpenAvatar, image: torch.Tensor, steps: int | None = None,
                 progress: Progress | None = None) -> dict:
    """Re-run stage 2 with an edited input image [1, 3, R, R] in [−1, 1] (in place)."""
    if not av.inv.pseudo or av.inv.input_depth is None:
        raise Aware3DError(f"{av.data.path.name} has no stage-1 geometry",
                           "texture edits need an avatar made in full mode without --no-geometry")
    if steps is not None:
        av.inv.settings = replace(av.inv.settings, stage2=replace(av.inv.settings.stage2, steps=steps))
    G2, views = retexture(av.base.generator, av.inv, image, progress)
    av.inv.G, av.inv.pseudo = G2, views
    av.inv.target = image.to(av.inv.label.device)
    return {"texture": "edited input image", "stage2_steps": av.inv.settings.stage2.steps}
