# SPDX-License-Identifier: GPL-3.0-or-later
"""Albedo of a procedural head at surface points, from the part distances :func:`.sdf.field` reports.

Kept apart from the geometry because it runs once per visible pixel (not per tracing step) and can
afford patterns (strands, knit, iris rings) the field cannot. Every pattern is even in x (uses |x| in
head coordinates), so a left-right symmetric head has exactly mirrored colours - the x-flip test relies
on it.
"""

from __future__ import annotations

import torch

from .sdf import GROUPS, Params, Tensor


def _rgb(P: Params, name: str, like: Tensor) -> Tensor:
    vals = [P[f"{name}_{c}"] for c in "rgb"]
    if not any(isinstance(v, Tensor) for v in vals):
        return torch.tensor(vals, dtype=like.dtype, device=like.device).expand(*like.shape, 3)
    # Per channel: a channel can be equal for every head of a batch (a constant, e.g. clipped at 1) while
    # the others vary.
    return torch.stack([v.expand_as(like) if isinstance(v, Tensor) else torch.full_like(like, float(v))
                        for v in vals], -1)


def _band(d: Tensor, width: float) -> Tensor:
    """1 inside/at the surface of a part, fading to 0 at ``width`` outside it."""
    return (1.0 - d / width).clamp(0.0, 1.0)


def albedo_from_parts(P: Params, parts: dict[str, Tensor], x: Tensor, y: Tensor, z: Tensor) -> tuple[
        Tensor, Tensor]:
    """Linear-RGB albedo [N, 3] and a per-point specular weight [N] at surface points.

    The material is the group with the smallest distance; skin gets lips, brows, stubble, scalp colour
    (buzz cuts) and clothes below the neckline from part distances and regions.
    """
    names = [g for g in GROUPS if g in parts]
    stack = torch.stack([parts[g] for g in names], -1)
    group = stack.argmin(-1)
    q = parts["q"]
    qx, qy, qz = q[..., 0], q[..., 1], q[..., 2]
    ax = qx.abs()

    skin = _rgb(P, "skin", x)
    # subtle warmth on cheeks and nose
    cheek = torch.exp(-(((ax - 0.08) / 0.03) ** 2 + ((qy + 0.02) / 0.03) ** 2)) * (qz > 0.15)
    skin = skin * (1.0 + 0.12 * cheek.unsqueeze(-1) * torch.tensor([0.3, -0.5, -0.4], device=x.device))
    lip_w = _band(parts["lips"], 0.004).unsqueeze(-1)
    skin = skin + lip_w * (_rgb(P, "lip", x) - skin)
    brow_w = (_band(parts["brow"], 0.0025) * 0.9).unsqueeze(-1)
    skin = skin + brow_w * (_rgb(P, "browc", x) - skin)
    # stubble: darken the beard region
    beard_region = (qy < -0.06 + 0.6 * ax) & (qz > 0.1) & (qy > -0.22) & (parts["lips"] > 0.003)
    stub = (P["stubble"] * beard_region.to(x.dtype) * 0.55).unsqueeze(-1) if isinstance(
        P["stubble"], Tensor) else (float(P["stubble"]) * beard_region.to(x.dtype) * 0.55).unsqueeze(-1)
    skin = skin + stub * (_rgb(P, "hair", x) * 0.6 - skin)
    # buzz cut / bald-ish scalp colour above the hairline
    scalp = (parts["hairline"] < 0.0).to(x.dtype) * P["buzz"] * 0.85
    scalp = scalp.unsqueeze(-1) if isinstance(scalp, Tensor) else scalp
    skin = skin + scalp * (_rgb(P, "hair", x) - skin)
    # clothes below the neckline (world coordinates; higher at the back)
    ncl = P["neckline_y"] + P["neckline_k"] * x * x - 0.4 * (0.05 - z).clamp_min(0.0)
    cloth_w = ((ncl - y) / 0.006 + 0.5).clamp(0.0, 1.0).unsqueeze(-1)
    skin = skin + cloth_w * (_rgb(P, "cloth", x) - skin)

    # eyes: sclera, iris, pupil by the angle from the eye's forward axis
    ex, ey, ez = ax - P["eye_cx"], qy - P["eye_cy"], qz - P["eye_cz"]
    cos = ez / (ex * ex + ey * ey + ez * ez).sqrt().clamp_min(1e-6)
    iris_w = ((cos - 0.80) / 0.02).clamp(0.0, 1.0).unsqueeze(-1)
    pupil_w = ((cos - 0.96) / 0.01).clamp(0.0, 1.0).unsqueeze(-1)
    ring = (0.75 + 0.25 * torch.sin(40.0 * torch.atan2(ey, ex))).unsqueeze(-1)
    eye = torch.full_like(skin, 0.45) * torch.tensor([1.0, 0.96, 0.93], device=x.device)
    eye = eye + iris_w * (_rgb(P, "iris", x) * ring - eye)
    eye = eye * (1.0 - 0.97 * pupil_w)

    # hair: fine strands running down from the crown, modulated by coarser locks
    th = torch.atan2(ax, qz - 0.06)  # |x|: every pattern is mirror-symmetric, as the x-flip test needs
    wave = 9.0 * torch.sin(25.0 * qy)
    strand = 0.8 + 0.12 * torch.sin(150.0 * th + wave) + 0.08 * torch.sin(37.0 * th + 0.5 * wave + 1.0)
    hair = _rgb(P, "hair", x) * strand.unsqueeze(-1)
    beard = _rgb(P, "hair", x) * (0.7 + 0.15 * torch.sin(300.0 * ax + 200.0 * qy)).unsqueeze(-1)
    glasses = _rgb(P, "glass", x)
    lens = torch.full_like(skin, 0.015)
    hat = _rgb(P, "hat", x) * (0.85 + 0.15 * torch.sin(400.0 * ax).abs()).unsqueeze(-1)

    table = {"skin": skin, "eye": eye, "hair": hair, "beard": beard, "glasses": glasses, "lens": lens,
             "hat": hat}
    spec_table = {"skin": 0.06, "eye": 0.8, "hair": 0.025, "beard": 0.02, "glasses": 0.5, "lens": 0.8,
                  "hat": 0.02}
    col = torch.zeros_like(skin)
    spec = torch.zeros_like(x)
    for i, g in enumerate(names):
        m = group == i
        col = torch.where(m.unsqueeze(-1), table[g], col)
        spec = torch.where(m, torch.full_like(spec, spec_table[g]), spec)
    spec = spec + 0.25 * lip_w.squeeze(-1) * (group == 0)
    return col.clamp(0.0, 1.0), spec
