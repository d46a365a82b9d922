# SPDX-License-Identifier: GPL-3.0-or-later
"""Turning a :class:`HeadParams` into primitive geometry: a flat ``{name: float}`` table plus part flags.

Why a flat table: the sphere tracer renders many heads in one batch, each ray carrying its head's row of
this table (a ``[P, N]`` tensor), so the SDF code in :mod:`.sdf` reads every value as a per-ray tensor
without any Python per-head branching. Derived values the SDF needs often (reciprocal radii, capsule axis
vectors) are precomputed here once per head rather than once per ray step.

Canonical head (head_scale 1, world units, y up, face towards +z): eyes at y ≈ 0.03, chin at y ≈ -0.17,
skull top at y ≈ 0.235, face front at z ≈ 0.27-0.29, nose tip at z ≈ 0.33; the neck reaches the shoulders
at y ≈ -0.3, the shoulders leave the tri-plane box [-0.5, 0.5]^3 sideways and are cut by it. This puts
the face over roughly the middle half of a frontal FFHQ image (camera at distance 2.7, focal 4.2647).
"""

from __future__ import annotations

import math

import numpy as np

from .params import HeadParams

# Optional parts; a batch only evaluates the parts at least one of its heads has (see ``features``).
FEATURES: tuple[str, ...] = (
    "hair_cap", "hair_hang", "bun", "ponytail", "beard", "moustache", "glasses", "lens", "beanie",
    "brimmed",
)

PIVOT = (0.0, -0.12, 0.06)  # head rotation / scaling centre: the top of the neck
HEAD_SCALE = 1.08  # canonical head -> FFHQ framing (face ≈ half the width of a frontal image)
OFF = 10.0  # added to the distance of a part a head does not have


def features(h: HeadParams) -> frozenset[str]:
    """The optional parts this head has."""
    f: set[str] = set()
    if h.hair_style != "bald" and h.hair_volume > 0:
        f.add("hair_cap")
    if h.hair_style in ("bob", "long"):
        f.add("hair_hang")
    if h.hair_style == "bun":
        f.add("bun")
    if h.hair_style == "ponytail":
        f.add("ponytail")
    if h.beard in ("full", "goatee"):
        f.add("beard")
    if h.beard in ("full", "moustache"):
        f.add("moustache")
    if h.glasses != "none":
        f.add("glasses")
    if h.glasses == "sunglasses":
        f.add("lens")
    if h.hat == "beanie":
        f.add("beanie")
    if h.hat == "brimmed":
        f.add("brimmed")
    return frozenset(f)


class _Table(dict):
    """``{name: float}`` with helpers that add a primitive's derived values under a prefix."""

    def ellipsoid(self, name: str, c: tuple[float, float, float], r: tuple[float, float, float]) -> None:
        for k, v in zip("xyz", c):
            self[f"{name}_c{k}"] = v
        for k, v in zip("xyz", r):
            self[f"{name}_i{k}"] = 1.0 / v  # 1/r and 1/r² feed the ellipsoid bound k0·(k0-1)/k1
            self[f"{name}_j{k}"] = 1.0 / (v * v)

    def capsule(self, name: str, a: tuple[float, float, float], b: tuple[float, float, float],
                ra: float, rb: float) -> None:
        ba = np.subtract(b, a)
        for k, v in zip("xyz", a):
            self[f"{name}_a{k}"] = v
        for k, v in zip("xyz", ba):
            self[f"{name}_b{k}"] = float(v)
        self[f"{name}_ibb"] = 1.0 / float(ba @ ba)
        self[f"{name}_ra"] = ra
        self[f"{name}_dr"] = rb - ra

    def point(self, name: str, c: tuple[float, float, float]) -> None:
        for k, v in zip("xyz", c):
            self[f"{name}_c{k}"] = v


def layout(h: HeadParams) -> dict[str, float]:
    """Primitive geometry of head ``h`` (canonical head coordinates, except neck/torso: world)."""
    t = _Table()
    fw, fl, jw = h.face_width, h.face_length, h.jaw_width
    feats = features(h)

    # Head transform: q = pivot + R^T (p - pivot) / s with R = Rz(roll) · Rx(-nod) (nod > 0: looks down).
    s = HEAD_SCALE * h.head_scale
    roll, nod = math.radians(h.head_roll_deg), math.radians(h.head_nod_deg)
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(nod), math.sin(nod)], [0, -math.sin(nod), math.cos(nod)]])
    m = (rz @ rx).T / s
    for i in range(3):
        for j in range(3):
            t[f"m{i}{j}"] = float(m[i, j])
    t["scale"] = s

    # Skull and face masses, blended with smooth minima.
    t.ellipsoid("skull", (0.0, 0.065, 0.085), (0.148 * fw, 0.168, 0.188))
    t.ellipsoid("forehead", (0.0, 0.075, 0.155), (0.122 * fw, 0.11, 0.13))
    t.ellipsoid("midface", (0.0, -0.015, 0.165), (0.125 * fw, 0.105 * fl, 0.12))
    t.ellipsoid("jaw", (0.0, -0.075 * fl, 0.145), (0.112 * jw * fw, 0.092 * fl, 0.125))
    cs = h.chin_size
    t.ellipsoid("chin", (0.0, -0.142 * fl, 0.222), (0.04 * cs, 0.03 * cs, 0.042))
    cf = h.cheek_fullness
    t.ellipsoid("cheek", (0.08 * fw, -0.025, 0.2), (0.05 * cf, 0.045 * cf, 0.06 * cf))
    br = h.brow_ridge
    t.ellipsoid("ridge", (0.047, 0.064, 0.252), (0.043, 0.016 * br, 0.026 * br))

    # Eyes: socket carved into the face, eyeball, lids (a shell cut open around the eye line).
    ex = 0.054 * h.eye_spacing * fw
    ey = 0.03
    er = 0.0235 * h.eye_size
    t.ellipsoid("socket", (ex, ey + 0.002, 0.272), (0.031 * h.eye_size, 0.018 * h.eye_size, 0.024))
    t.point("eye", (ex, ey, 0.246))
    t["eye_r"] = er
    t["lid_r"] = er + 0.0025
    t["lid_open"] = 0.42 * er
    t["lid_taper"] = 0.62 * 0.42 / er  # opening narrows towards the corners (almond-shaped eyes)
    t.ellipsoid("brow", (ex + 0.002, 0.068, 0.27), (0.034, 0.005 * h.brow_thickness, 0.014))

    # Nose: bridge (round cone) to the tip, alae beside the tip, nostrils carved below.
    nl, nw, npj = h.nose_length, h.nose_width, h.nose_projection
    tip = (0.0, 0.025 - 0.07 * nl, 0.27 + 0.048 * npj)
    t.capsule("bridge", (0.0, 0.035, 0.262), (0.0, tip[1] + 0.008, tip[2] - 0.006), 0.0095 * nw, 0.012 * nw)
    t.point("tip", tip)
    t["tip_r"] = 0.0155 * nw
    t.point("ala", (0.016 * nw, tip[1] - 0.008, tip[2] - 0.02))
    t["ala_r"] = 0.0115 * nw
    t.point("nostril", (0.008 * nw, tip[1] - 0.015, tip[2] - 0.014))

    # Mouth: two lips with a slit; ``smile`` bends them (y shifted by smile·k·x²).
    ym = -0.092 * fl
    lz = 0.259
    mw, lt = h.mouth_width, h.lip_thickness
    t["smile"] = 5.0 * h.smile
    t.ellipsoid("ulip", (0.0, ym + 0.0075, lz), (0.031 * mw, 0.0085 * lt, 0.016))
    t.ellipsoid("llip", (0.0, ym - 0.009, lz - 0.002), (0.028 * mw, 0.0105 * lt, 0.016))
    t.ellipsoid("slit", (0.0, ym, lz + 0.012), (0.03 * mw, 0.0022, 0.02))

    # Ears, turned outwards about the vertical axis by ear_angle.
    ez = h.ear_size
    a = math.radians(h.ear_angle_deg)
    t.point("ear", (0.137 * fw, 0.0, 0.065))
    t["ear_cos"], t["ear_sin"] = math.cos(a), math.sin(a)
    t.ellipsoid("earl", (0.0, 0.0, 0.0), (0.011, 0.037 * ez, 0.023 * ez))
    t.point("concha", (0.012, -0.004, 0.003))
    t["concha_r"] = 0.015 * ez

    # Neck and shoulders (world coordinates: the head turns on them).
    nk = h.neck_width
    t.capsule("neck", (0.0, -0.06, 0.05), (0.0, -0.33, 0.02), 0.06 * nk, 0.068 * nk)
    sw = h.shoulder_width
    t.ellipsoid("shoulder", (0.0, -0.40, -0.005), (0.40 * sw, 0.125, 0.15))
    t.ellipsoid("chest", (0.0, -0.52, 0.025), (0.30 * sw, 0.2, 0.16))
    t["neckline_y"] = -0.27 - 0.06 * h.neckline
    t["neckline_k"] = 1.5 + 3.0 * h.neckline

    # Hair: a cap (skull ellipsoid grown by the volume, cut at the hairline plane) ...
    hv = h.hair_volume if "hair_cap" in feats else 0.0
    if h.hat != "none":
        hv = min(hv, 0.012)
    t["hair_on"] = 0.0 if "hair_cap" in feats else OFF
    t["hair_bump"] = min(0.1 * hv, 0.003)
    t.ellipsoid("cap", (0.0, 0.068, 0.083), (0.148 * fw + hv, 0.168 + 1.3 * hv, 0.188 + hv))
    y_front = 0.145 - 0.06 * h.fringe
    y_nape = -0.075 if h.hair_style != "buzz" else -0.05
    slope = (y_front - y_nape) / 0.37
    norm = math.sqrt(1.0 + slope * slope)
    # hairline plane: hair where y > y0 + slope·(z - 0.27); stored as signed distance coefficients
    t["hl_y"] = -1.0 / norm
    t["hl_z"] = slope / norm
    t["hl_c"] = (y_front - slope * 0.27) / norm
    # ... plus hanging hair (the cap ellipsoid stretched downwards by the length, face channel carved out).
    hang = h.hair_length if "hair_hang" in feats else 0.0
    t["hang_on"] = 0.0 if "hair_hang" in feats else OFF
    t["hang_len"] = hang
    t.ellipsoid("hang", (0.0, 0.068, 0.075), (0.148 * fw + hv + 0.008, 0.168 + hv, 0.19 + hv))
    t["hang_front"] = 0.13 + 0.2 * hv
    t["chan_cz"] = 0.25
    t["chan_ix"] = 1.0 / (0.125 * fw)
    t["chan_iz"] = 1.0 / 0.28
    t["chan_s"] = 0.125 * fw  # the smaller semi-axis scales the ellipse bound to world units
    t["bun_on"] = 0.0 if "bun" in feats else OFF
    t.point("bun", (0.0, 0.205, -0.075))
    t["bun_r"] = 0.045 + 0.3 * hv
    t["pony_on"] = 0.0 if "ponytail" in feats else OFF
    pl = h.hair_length if "ponytail" in feats else 0.2
    t.capsule("pony", (0.0, 0.1, -0.125 - hv), (0.0, 0.1 - pl, -0.17 - hv), 0.032, 0.016)

    # Beard: the jaw grown by the beard length, kept below a line through the upper lip; moustache.
    bl = h.beard_length
    t["beard_on"] = 0.0 if "beard" in feats else OFF
    t.ellipsoid("bjaw", (0.0, -0.075 * fl, 0.145), (0.112 * jw * fw + bl, 0.092 * fl + bl, 0.125 + bl))
    t.ellipsoid("bchin", (0.0, -0.142 * fl - 0.3 * bl, 0.222), (0.04 * cs + bl, 0.03 * cs + 1.5 * bl,
                                                              0.042 + bl))
    goatee = h.beard == "goatee"
    t["beard_top"] = ym + (0.0 if goatee else 0.02)
    t["beard_slope"] = 0.0 if goatee else 0.9
    t["beard_halfw"] = 0.045 if goatee else 1.0
    t.ellipsoid("bmouth", (0.0, ym, lz + 0.01), (0.036 * mw, 0.017, 0.04))
    t["must_on"] = 0.0 if "moustache" in feats else OFF
    mr = max(bl, 0.006) * 0.8
    t.capsule("must", (0.0, ym + 0.02, lz + 0.012), (0.033 * mw, ym + 0.008, lz + 0.0), mr, 0.7 * mr)

    # Glasses: a ring (round or rounded-square) per eye, bridge, temples to the ears, optional lens.
    t["glasses_on"] = 0.0 if "glasses" in feats else OFF
    t["lens_on"] = 0.0 if "lens" in feats else OFF
    gz = 0.298
    rl = 0.03 * max(1.0, h.eye_spacing)
    t.point("ring", (ex + 0.004, ey, gz))
    t["ring_r"] = rl
    t["ring_sq"] = 1.0 if h.glasses == "square" else 0.0
    t["ring_bx"] = rl * 1.08
    t["ring_by"] = rl * 0.78
    t["frame_t"] = 0.0042
    t.capsule("gbridge", (0.0, ey + 0.011, gz + 0.002), (ex + 0.004 - 0.95 * rl, ey + 0.006, gz), 0.0035,
              0.0035)
    t.capsule("temple", (ex + 0.004 + rl, ey + 0.008, gz - 0.004), (0.146 * fw + 0.006, ey + 0.014, 0.05),
              0.0035, 0.0035)

    # Hats.
    t["beanie_on"] = 0.0 if "beanie" in feats else OFF
    t.ellipsoid("beanie", (0.0, 0.07, 0.083), (0.148 * fw + hv + 0.018, 0.168 + hv + 0.025, 0.188 + hv + 0.018))
    # beanie kept above a plane rising from y 0.02 at the nape to y 0.125 at the forehead
    bs = 0.105 / 0.37
    bn = math.sqrt(1.0 + bs * bs)
    t["bn_y"], t["bn_z"], t["bn_c"] = -1.0 / bn, bs / bn, (0.125 - bs * 0.27) / bn
    t["brim_on"] = 0.0 if "brimmed" in feats else OFF
    t.point("crown", (0.0, 0.2, 0.085))
    t["crown_r"] = 0.172 * fw + hv
    t["crown_h"] = 0.08
    t["brim_y"] = 0.128
    t["brim_r"] = 0.27

    # Bounding ellipsoids for the tracer's cheap first phase (head-local, contain every part they cover
    # for all sampled shape factors; checked in tests by sampling the field).
    t.ellipsoid("bskull", (0.0, 0.068, 0.083), (0.148 * fw + hv + 0.024, 0.168 + 1.3 * hv + 0.024,
                                                  0.188 + hv + 0.024))
    t.ellipsoid("bface", (0.0, -0.05, 0.18), (0.17, 0.165, 0.178))
    t.ellipsoid("bear", (0.137 * fw + 0.012, 0.0, 0.06), (0.04, 0.055, 0.045))
    t.ellipsoid("bglass", (0.0, 0.035, 0.2), (0.2, 0.07, 0.14))
    t.ellipsoid("bbeard", (0.0, -0.12, 0.16), (0.2, 0.16, 0.19))
    t.ellipsoid("bbrim", (0.0, 0.19, 0.085), (0.31, 0.15, 0.31))
    return dict(t)


def colours(h: HeadParams) -> dict[str, float]:
    """Per-part albedo (linear RGB, from the sRGB attributes) as flat ``name_r/g/b`` entries."""
    out: dict[str, float] = {}

    def put(name: str, rgb: tuple[float, float, float]) -> None:
        for k, v in zip("rgb", rgb):
            out[f"{name}_{k}"] = float(v) ** 2.2

    put("skin", h.skin_rgb)
    put("lip", h.lip_rgb)
    put("iris", h.iris_rgb)
    put("hair", h.hair_rgb)
    brow = tuple(0.6 * c + 0.02 for c in h.hair_rgb) if h.hair_style != "bald" else (0.12, 0.08, 0.05)
    put("browc", brow)  # type: ignore[arg-type]
    put("glass", h.glasses_rgb)
    put("hat", h.hat_rgb)
    put("cloth", h.clothes_rgb)
    out["stubble"] = 1.0 if h.beard == "stubble" else 0.0
    out["buzz"] = 1.0 if h.hair_style in ("buzz",) else 0.0
    return out
