# SPDX-License-Identifier: GPL-3.0-or-later
"""Signed distance field of a procedural head (and the cheap bound the tracer crosses empty space with).

A head is a smooth union (polynomial smooth minimum) of ellipsoids, round cones and spheres, with carved
details (eye sockets, mouth slit, nostrils, ear concha) made by smooth maxima, so that it reads as one
surface rather than a pile of spheres. Parts of different materials (eyes, hair, beard, glasses, hats)
are joined by a hard minimum so that :mod:`.albedo` can tell them apart at the surface.

The functions work on separate x, y, z tensors and a parameter table ``P`` whose values are either Python
floats (one head: :func:`.heads.head_sdf`) or per-point tensors (many heads in one batch: the tracer). Mirror-
symmetric parts are evaluated once on ``|x|``. The field is a distance *bound* (ellipsoids use the
``k0 (k0 - 1) / k1`` approximation, smooth minima shrink it) and is exact on the surface, which is what
sphere tracing and marching cubes need. Units: world units of the EG3D generator, negative inside.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Tensor = torch.Tensor
Value = float | Tensor
Params = Mapping[str, Value]

GROUPS: tuple[str, ...] = ("skin", "eye", "hair", "beard", "glasses", "lens", "hat")


# ----------------------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------------------


def smin(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Polynomial smooth minimum: blends two surfaces over a band of width ``k``."""
    h = (a - b).abs_().neg_().add_(k).clamp_min_(0.0)
    return torch.minimum(a, b).sub_(h.mul_(h).mul_(0.25 / k))


def smax(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Polynomial smooth maximum (smooth intersection; ``smax(a, -b)`` carves b out of a)."""
    h = (a - b).abs_().neg_().add_(k).clamp_min_(0.0)
    return torch.maximum(a, b).add_(h.mul_(h).mul_(0.25 / k))


def _sub(a: Tensor, c: Value) -> Tensor:
    """``a - c``, skipping the operation for a constant zero (mid-line parts, unit-centred frames)."""
    return a if isinstance(c, float) and c == 0.0 else a - c


def _norm3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """sqrt(a² + b² + c²) in four kernels (allocation-light: this is the innermost loop)."""
    return torch.addcmul(torch.addcmul(a * a, b, b), c, c).sqrt_()


def ellipsoid(P: Params, n: str, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    """Ellipsoid distance bound ``k0 (k0 - 1) / k1`` (exact on the surface, never much too large)."""
    dx, dy, dz = _sub(x, P[f"{n}_cx"]), _sub(y, P[f"{n}_cy"]), _sub(z, P[f"{n}_cz"])
    k0 = _norm3(dx * P[f"{n}_ix"], dy * P[f"{n}_iy"], dz * P[f"{n}_iz"])
    k1 = _norm3(dx * P[f"{n}_jx"], dy * P[f"{n}_jy"], dz * P[f"{n}_jz"]).clamp_min_(1e-6)
    return (k0 - 1.0).mul_(k0).div_(k1)


def sphere(P: Params, n: str, r: Value, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    d = _norm3(_sub(x, P[f"{n}_cx"]), _sub(y, P[f"{n}_cy"]), _sub(z, P[f"{n}_cz"]))
    return d if isinstance(r, float) and r == 0.0 else d.sub_(r)


def capsule(P: Params, n: str, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    """Round cone from a (radius ra) to b (radius ra + dr), linearly interpolated radius (a bound)."""
    px, py, pz = _sub(x, P[f"{n}_ax"]), _sub(y, P[f"{n}_ay"]), _sub(z, P[f"{n}_az"])
    bx, by, bz = P[f"{n}_bx"], P[f"{n}_by"], P[f"{n}_bz"]
    h = (px * bx).addcmul_(py, by) if isinstance(by, Tensor) else px * bx + py * by
    h = (h.addcmul_(pz, bz) if isinstance(bz, Tensor) else h.add_(pz * bz)).mul_(P[f"{n}_ibb"]).clamp_(0.0, 1.0)
    d = _norm3(px - bx * h, py - by * h, pz - bz * h)
    return d.sub_(P[f"{n}_dr"] * h).sub_(P[f"{n}_ra"])


def _clamp_lo(y: Tensor, lo: Value) -> Tensor:
    return torch.maximum(y, lo) if isinstance(lo, Tensor) else y.clamp_min(lo)


# ----------------------------------------------------------------------------------------------------------
# The head
# ----------------------------------------------------------------------------------------------------------


def to_head(P: Params, x: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """World point -> canonical head coordinates (undo the head's roll/nod and scale about the neck)."""
    from .layout import PIVOT

    dx, dy, dz = x - PIVOT[0], y - PIVOT[1], z - PIVOT[2]
    qx = PIVOT[0] + P["m00"] * dx + P["m01"] * dy + P["m02"] * dz
    qy = PIVOT[1] + P["m10"] * dx + P["m11"] * dy + P["m12"] * dz
    qz = PIVOT[2] + P["m20"] * dx + P["m21"] * dy + P["m22"] * dz
    return qx, qy, qz


def _skin(P: Params, qx: Tensor, ax: Tensor, qy: Tensor, qz: Tensor, out: dict | None, lod: int = 0) -> Tensor:
    """Skin of the head (canonical units): skull, face masses, eye sockets and lids, brows, nose, lips, ears."""
    d = ellipsoid(P, "skull", qx, qy, qz)
    d = smin(d, ellipsoid(P, "forehead", qx, qy, qz), 0.05)
    d = smin(d, ellipsoid(P, "midface", qx, qy, qz), 0.04)
    d = smin(d, ellipsoid(P, "jaw", qx, qy, qz), 0.05)
    d = smin(d, ellipsoid(P, "chin", qx, qy, qz), 0.03)
    d = smin(d, ellipsoid(P, "cheek", ax, qy, qz), 0.035)
    d = smin(d, ellipsoid(P, "ridge", ax, qy, qz), 0.02)
    if lod == 0:
        d = smax(d, -ellipsoid(P, "socket", ax, qy, qz), 0.012)
        ux = ax - P["eye_cx"]
        opening = P["lid_open"] - P["lid_taper"] * ux * ux - (qy - P["eye_cy"]).abs()
        lid = smax(sphere(P, "eye", P["lid_r"], ax, qy, qz), opening, 0.003)
        d = smin(d, lid, 0.004)
        brow = ellipsoid(P, "brow", ax, qy, qz)
        d = smin(d, brow, 0.004)

    nose = smin(capsule(P, "bridge", qx, qy, qz), sphere(P, "tip", P["tip_r"], qx, qy, qz), 0.012)
    nose = smin(nose, sphere(P, "ala", P["ala_r"], ax, qy, qz), 0.01)
    if lod == 0:
        nose = smax(nose, 0.0055 - sphere(P, "nostril", 0.0, ax, qy, qz), 0.003)
    d = smin(d, nose, 0.014)

    ys = qy - P["smile"] * qx * qx
    lips = torch.minimum(ellipsoid(P, "ulip", qx, ys, qz), ellipsoid(P, "llip", qx, ys, qz))
    if lod == 0:
        lips = smax(lips, -ellipsoid(P, "slit", qx, ys, qz), 0.002)
    d = smin(d, lips, 0.008)

    u, v, w = ax - P["ear_cx"], qy - P["ear_cy"], qz - P["ear_cz"]
    c, s = P["ear_cos"], P["ear_sin"]
    u, w = u * c + w * s, w * c - u * s
    ear = ellipsoid(P, "earl", u, v, w)
    if lod == 0:
        cu, cv, cw = u - P["concha_cx"], v - P["concha_cy"], w - P["concha_cz"]
        ear = smax(ear, P["concha_r"] - (cu * cu + cv * cv + cw * cw).sqrt(), 0.004)
    d = smin(d, ear, 0.008)
    if out is not None:
        out["lips"], out["brow"] = lips, brow
    return d


def _hair(P: Params, feats: frozenset[str], qx: Tensor, ax: Tensor, qy: Tensor, qz: Tensor,
          out: dict | None) -> Tensor | None:
    parts: list[Tensor] = []
    hairline = P["hl_y"] * qy + P["hl_z"] * qz + P["hl_c"]  # > 0 below the hairline
    if out is not None:
        out["hairline"] = hairline
    if "hair_cap" in feats:
        cap = smax(ellipsoid(P, "cap", qx, qy, qz), hairline, 0.01)
        # clumps: a small even-in-x bump pattern scaled by the hair volume (gradient stays below ~0.3)
        bumps = torch.cos(80.0 * qx) * torch.sin(70.0 * qy + 40.0 * qz)
        parts.append(cap - P["hair_bump"] * bumps + P["hair_on"])
    if "hair_hang" in feats:
        yc = P["hang_cy"]
        y1 = qy - yc
        y2 = y1 - _clamp_lo(y1, -P["hang_len"]).clamp_max(0.0)  # stretch the ellipsoid downwards
        hang = ellipsoid(P, "hang", qx, y2 + yc, qz)
        hang = smax(hang, qy - yc, 0.01)
        a, b = qx * P["chan_ix"], (qz - P["chan_cz"]) * P["chan_iz"]
        chan = ((a * a + b * b).sqrt() - 1.0) * P["chan_s"]
        hang = smax(hang, -chan, 0.012)
        hang = smax(hang, qz - P["hang_front"], 0.01) + P["hang_on"]  # falls behind the cheeks
        parts.append(hang)
    if "bun" in feats:
        parts.append(sphere(P, "bun", P["bun_r"], qx, qy, qz) + P["bun_on"])
    if "ponytail" in feats:
        parts.append(capsule(P, "pony", qx, qy, qz) + P["pony_on"])
    if not parts:
        return None
    d = parts[0]
    for p in parts[1:]:
        d = smin(d, p, 0.012)
    return d


def _beard(P: Params, feats: frozenset[str], qx: Tensor, ax: Tensor, qy: Tensor, qz: Tensor) -> Tensor | None:
    d: Tensor | None = None
    if "beard" in feats:
        b = smin(ellipsoid(P, "bjaw", qx, qy, qz), ellipsoid(P, "bchin", qx, qy, qz), 0.02)
        b = smax(b, qy - (P["beard_top"] + P["beard_slope"] * ax), 0.006)
        b = smax(b, ax - P["beard_halfw"], 0.006)
        b = smax(b, 0.07 - qz, 0.02)
        b = smax(b, -ellipsoid(P, "bmouth", qx, qy, qz), 0.004)
        d = b + P["beard_on"]
    if "moustache" in feats:
        m = capsule(P, "must", ax, qy, qz) + P["must_on"]
        d = m if d is None else smin(d, m, 0.006)
    return d


def _glasses(P: Params, feats: frozenset[str], ax: Tensor, qy: Tensor, qz: Tensor,
             out: dict) -> Tensor | None:
    if "glasses" not in feats:
        return None
    u, v, w = ax - P["ring_cx"], qy - P["ring_cy"], qz - P["ring_cz"]
    ring = (u * u + v * v).sqrt() - P["ring_r"]
    bx, by = u.abs() - P["ring_bx"] + 0.008, v.abs() - P["ring_by"] + 0.008
    square = (bx.clamp_min(0.0).square() + by.clamp_min(0.0).square()).sqrt() + \
        torch.maximum(bx, by).clamp_max(0.0) - 0.008
    q = ring + P["ring_sq"] * (square - ring)
    frame = (q * q + w * w).sqrt() - P["frame_t"]
    frame = torch.minimum(frame, capsule(P, "gbridge", ax, qy, qz))
    frame = torch.minimum(frame, capsule(P, "temple", ax, qy, qz))
    if "lens" in feats:
        out["lens"] = torch.maximum(q, w.abs() - 0.0015) + P["lens_on"]
    return frame + P["glasses_on"]


def _hat(P: Params, feats: frozenset[str], qx: Tensor, qy: Tensor, qz: Tensor) -> Tensor | None:
    d: Tensor | None = None
    if "beanie" in feats:
        cut = P["bn_y"] * qy + P["bn_z"] * qz + P["bn_c"]
        d = smax(ellipsoid(P, "beanie", qx, qy, qz), cut, 0.006) + P["beanie_on"]
    if "brimmed" in feats:
        dz = qz - P["crown_cz"]
        rr = (qx * qx + dz * dz).sqrt()
        crown = smax(rr - P["crown_r"], (qy - P["crown_cy"]).abs() - P["crown_h"], 0.03)
        brim = torch.maximum(rr - P["brim_r"], (qy - P["brim_y"]).abs() - 0.005)
        b = torch.minimum(crown, brim) + P["brim_on"]
        d = b if d is None else torch.minimum(d, b)
    return d


def _body(P: Params, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    torso = smin(ellipsoid(P, "shoulder", x, y, z), ellipsoid(P, "chest", x, y, z), 0.06)
    return smin(capsule(P, "neck", x, y, z), torso, 0.07)


def field(P: Params, feats: frozenset[str], x: Tensor, y: Tensor, z: Tensor,
          parts: dict[str, Tensor] | None = None, lod: int = 0) -> Tensor:
    """Signed distance of the head(s) at world points (x, y, z), clipped to the box [-0.5, 0.5]^3.

    ``feats``: optional parts to evaluate (heads of the batch that lack one add ``OFF`` to it).
    ``parts``: if a dict is given, it receives the distance of each material group (``GROUPS``) and a few
    helper fields, for :func:`albedo_from_parts`. ``lod`` 1 drops the carved details, eyes and glasses
    (a cheaper field for soft shadows).
    """
    qx, qy, qz = to_head(P, x, y, z)
    ax = qx.abs()
    s = P["scale"]
    skin = _skin(P, qx, ax, qy, qz, parts, lod)
    eye = sphere(P, "eye", P["eye_r"], ax, qy, qz) if lod == 0 else skin + 1.0
    extra: dict[str, Tensor] = {}
    local = {
        "eye": eye,
        "hair": _hair(P, feats, qx, ax, qy, qz, parts),
        "beard": _beard(P, feats, qx, ax, qy, qz),
        "glasses": _glasses(P, feats, ax, qy, qz, extra) if lod == 0 else None,
        "hat": _hat(P, feats, qx, qy, qz),
    }
    if "lens" in extra:
        local["lens"] = extra["lens"]
    body = _body(P, x, y, z)
    skin = smin(skin * s, body, 0.03)
    other = eye
    for k, v in local.items():
        if v is not None and k != "eye":
            other = torch.minimum(other, v)
    d = torch.minimum(skin, other * s)
    box = torch.maximum(torch.maximum(x.abs(), y.abs()), z.abs()) - 0.5
    d = torch.maximum(d, box)
    if parts is not None:
        parts["skin"] = skin
        parts["body"] = body
        for k, v in local.items():
            if v is not None:
                parts[k] = v * s
        parts.update(q=torch.stack([qx, qy, qz], -1))
    return d


BOUND_MARGIN = 0.01


def bound(P: Params, feats: frozenset[str], x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    """Cheap lower bound of :func:`field` (about a tenth of its cost) for marching through empty space.

    Bounding ellipsoids around the head, beard and brimmed hat, the hanging hair and ponytail themselves,
    and the body; ``BOUND_MARGIN`` covers the bulge of smooth unions and the ellipsoid approximation.
    """
    qx, qy, qz = to_head(P, x, y, z)
    ax = qx.abs()
    d = torch.minimum(ellipsoid(P, "bskull", qx, qy, qz), ellipsoid(P, "bface", qx, qy, qz))
    d = torch.minimum(d, ellipsoid(P, "bear", ax, qy, qz))
    if "glasses" in feats:
        d = torch.minimum(d, ellipsoid(P, "bglass", qx, qy, qz) + P["glasses_on"])
    if "bun" in feats:
        d = torch.minimum(d, sphere(P, "bun", P["bun_r"], qx, qy, qz) + P["bun_on"])
    if "beanie" in feats:
        d = torch.minimum(d, ellipsoid(P, "beanie", qx, qy, qz) + P["beanie_on"])
    if "beard" in feats:
        d = torch.minimum(d, ellipsoid(P, "bbeard", qx, qy, qz) + P["beard_on"])
    if "brimmed" in feats:
        d = torch.minimum(d, ellipsoid(P, "bbrim", qx, qy, qz) + P["brim_on"])
    if "hair_hang" in feats:
        yc = P["hang_cy"]
        y1 = qy - yc
        y2 = y1 - _clamp_lo(y1, -P["hang_len"]).clamp_max(0.0)
        d = torch.minimum(d, ellipsoid(P, "hang", qx, y2 + yc, qz) + P["hang_on"])
    if "ponytail" in feats:
        d = torch.minimum(d, capsule(P, "pony", qx, qy, qz) + P["pony_on"])
    d = torch.minimum(d * P["scale"], _body(P, x, y, z)) - BOUND_MARGIN
    box = torch.maximum(torch.maximum(x.abs(), y.abs()), z.abs()) - 0.5
    return torch.maximum(d, box)


__all__ = ["BOUND_MARGIN", "GROUPS", "bound", "capsule", "ellipsoid", "field", "smax", "smin", "sphere",
           "to_head"]
