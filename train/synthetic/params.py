# SPDX-License-Identifier: GPL-3.0-or-later
"""Sampling the parameters of a procedural head and of the picture taken of it.

Everything is drawn from a numpy ``Generator`` seeded by ``SeedSequence([seed, split, index])``, so a
head depends only on (seed, split, index): a data set of 100 images starts with the same 100 heads as one
of 30 000, a killed run can resume shard by shard, and the held-out test heads (split 1) never coincide
with training heads (split 0).

The attributes are human-meaningful (face width, hair colour, glasses, ...) because they are written to
the data set's ``params.json`` for evaluation and attribute-conditioned experiments; :mod:`.layout`
turns them into primitive geometry.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

TRAIN_SPLIT = 0
TEST_SPLIT = 1

HAIR_STYLES: tuple[str, ...] = ("bald", "buzz", "short", "bob", "long", "bun", "ponytail")
_HAIR_STYLE_P = (0.06, 0.08, 0.28, 0.16, 0.22, 0.10, 0.10)

# Hair colours (sRGB 0-1) with names, and their sampling weights (natural colours dominate).
HAIR_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.045, 0.04),
    "dark_brown": (0.17, 0.10, 0.06),
    "brown": (0.33, 0.20, 0.11),
    "auburn": (0.45, 0.17, 0.08),
    "ginger": (0.72, 0.36, 0.15),
    "blonde": (0.80, 0.66, 0.40),
    "platinum": (0.90, 0.86, 0.76),
    "grey": (0.55, 0.54, 0.52),
    "white": (0.88, 0.88, 0.86),
    "blue": (0.15, 0.30, 0.70),
    "pink": (0.85, 0.40, 0.60),
}
_HAIR_COLOUR_P = (0.25, 0.21, 0.16, 0.07, 0.05, 0.10, 0.04, 0.06, 0.03, 0.015, 0.015)

IRIS_COLOURS: dict[str, tuple[float, float, float]] = {
    "dark_brown": (0.20, 0.11, 0.05),
    "brown": (0.40, 0.24, 0.10),
    "hazel": (0.50, 0.42, 0.20),
    "green": (0.30, 0.50, 0.30),
    "blue": (0.30, 0.48, 0.72),
    "grey": (0.50, 0.55, 0.58),
}
_IRIS_P = (0.35, 0.20, 0.12, 0.10, 0.15, 0.08)

# Skin tones from light to dark (sRGB); a tone in [0, 1] interpolates along this ramp.
SKIN_RAMP: tuple[tuple[float, float, float], ...] = (
    (0.98, 0.84, 0.74),
    (0.92, 0.74, 0.62),
    (0.80, 0.58, 0.44),
    (0.62, 0.42, 0.29),
    (0.42, 0.27, 0.18),
    (0.26, 0.16, 0.11),
)

GLASSES_STYLES: tuple[str, ...] = ("none", "round", "square", "sunglasses")
HAT_STYLES: tuple[str, ...] = ("none", "beanie", "brimmed")
BEARD_STYLES: tuple[str, ...] = ("none", "stubble", "moustache", "goatee", "full")


def skin_colour(tone: float) -> tuple[float, float, float]:
    """sRGB colour of a skin tone in [0, 1] (0 = lightest) by linear interpolation along ``SKIN_RAMP``."""
    t = min(max(tone, 0.0), 1.0) * (len(SKIN_RAMP) - 1)
    i = min(int(t), len(SKIN_RAMP) - 2)
    f = t - i
    a, b = SKIN_RAMP[i], SKIN_RAMP[i + 1]
    return tuple(float(a[k] + (b[k] - a[k]) * f) for k in range(3))  # type: ignore[return-value]


@dataclass
class HeadParams:
    """One head: shape factors (1.0 = average), styles, colours (sRGB 0-1) and its pose on the shoulders.

    Shape factors scale the average head of :mod:`.layout`; lengths are in world units (the EG3D generator
    world: the face is about 0.29 units wide). ``hair_length`` is the vertical extension of the hanging
    hair (bob, long) or the ponytail: the lower edge of hanging hair is near y = -(0.1 + hair_length);
    0 for caps, buns and bald heads. ``hair_volume`` is the thickness of the hair cap.
    """

    head_scale: float = 1.0
    face_width: float = 1.0
    face_length: float = 1.0
    jaw_width: float = 1.0
    chin_size: float = 1.0
    cheek_fullness: float = 1.0
    brow_ridge: float = 1.0
    eye_size: float = 1.0
    eye_spacing: float = 1.0
    nose_length: float = 1.0
    nose_width: float = 1.0
    nose_projection: float = 1.0
    mouth_width: float = 1.0
    lip_thickness: float = 1.0
    smile: float = 0.0
    ear_size: float = 1.0
    ear_angle_deg: float = 15.0
    neck_width: float = 1.0
    shoulder_width: float = 1.0
    head_roll_deg: float = 0.0
    head_nod_deg: float = 0.0
    skin_tone: float = 0.3
    skin_rgb: tuple[float, float, float] = (0.85, 0.66, 0.54)
    lip_rgb: tuple[float, float, float] = (0.75, 0.40, 0.40)
    iris_colour: str = "brown"
    iris_rgb: tuple[float, float, float] = IRIS_COLOURS["brown"]
    brow_thickness: float = 1.0
    hair_style: str = "short"
    hair_length: float = 0.0
    hair_volume: float = 0.02
    fringe: float = 0.3
    hair_colour: str = "brown"
    hair_rgb: tuple[float, float, float] = HAIR_COLOURS["brown"]
    glasses: str = "none"
    glasses_rgb: tuple[float, float, float] = (0.05, 0.05, 0.05)
    hat: str = "none"
    hat_rgb: tuple[float, float, float] = (0.6, 0.1, 0.1)
    beard: str = "none"
    beard_length: float = 0.0
    clothes_rgb: tuple[float, float, float] = (0.2, 0.3, 0.5)
    neckline: float = 0.5

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists, floats rounded to 5 decimals to keep files small)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if isinstance(v, float):
                out[k] = round(v, 5)
            elif isinstance(v, tuple):
                out[k] = [round(float(x), 4) for x in v]
            else:
                out[k] = v
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HeadParams:
        """Inverse of :meth:`to_json`; unknown keys (e.g. camera fields stored alongside) are ignored."""
        names = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in names:
                kw[k] = tuple(float(x) for x in v) if isinstance(v, list) else v
        return cls(**kw)


@dataclass
class SceneParams:
    """The picture around a head: camera angles (degrees), key light, ambient and background (sRGB)."""

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    light_dir: tuple[float, float, float] = (0.3, 0.5, 0.8)
    light_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    key: float = 0.9
    ambient: float = 0.35
    bg_top: tuple[float, float, float] = (0.6, 0.6, 0.6)
    bg_bottom: tuple[float, float, float] = (0.6, 0.6, 0.6)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k == "extra":
                continue
            if isinstance(v, float):
                out[k] = round(v, 5)
            elif isinstance(v, tuple):
                out[k] = [round(float(x), 5) for x in v]
            else:
                out[k] = v
        return out


def rng_for(seed: int, index: int, split: int = TRAIN_SPLIT, stream: int = 0) -> np.random.Generator:
    """Independent generator for (seed, split, index, stream): stream 0 = head, 1 = scene."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), split, int(index), stream])))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _tn(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    """Normal clipped to [lo, hi] (clipping, not rejection, keeps the number of draws fixed)."""
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _choice(rng: np.random.Generator, items: tuple[str, ...] | list[str], p: tuple[float, ...]) -> str:
    w = np.asarray(p, dtype=np.float64)
    return str(items[int(rng.choice(len(items), p=w / w.sum()))])


def _jitter_rgb(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> tuple:
    j = rng.normal(0.0, amount, 3) + rng.normal(0.0, amount)  # shared + per-channel brightness jitter
    return tuple(float(np.clip(c * (1.0 + x), 0.0, 1.0)) for c, x in zip(rgb, j))


def sample_head(seed: int, index: int, split: int = TRAIN_SPLIT) -> HeadParams:
    """Draw head ``index`` of data set ``seed`` (split 0 = train, 1 = held-out test)."""
    rng = rng_for(seed, index, split, 0)
    h = HeadParams()
    masc = _u(rng, 0.0, 1.0)  # a latent "masculinity" correlating jaw, brows, beard and hair length
    h.head_scale = _tn(rng, 1.0, 0.03, 0.93, 1.07)
    h.face_width = _tn(rng, 1.0, 0.05, 0.88, 1.12)
    h.face_length = _tn(rng, 1.0, 0.04, 0.9, 1.1)
    h.jaw_width = float(np.clip(0.88 + 0.2 * masc + rng.normal(0, 0.05), 0.8, 1.15))
    h.chin_size = _tn(rng, 1.0, 0.12, 0.75, 1.25)
    h.cheek_fullness = _tn(rng, 1.0, 0.15, 0.7, 1.3)
    h.brow_ridge = float(np.clip(0.8 + 0.4 * masc + rng.normal(0, 0.1), 0.6, 1.4))
    h.eye_size = _tn(rng, 1.0, 0.07, 0.85, 1.15)
    h.eye_spacing = _tn(rng, 1.0, 0.04, 0.92, 1.08)
    h.nose_length = _tn(rng, 1.0, 0.1, 0.8, 1.2)
    h.nose_width = _tn(rng, 1.0, 0.12, 0.8, 1.3)
    h.nose_projection = _tn(rng, 1.0, 0.1, 0.8, 1.2)
    h.mouth_width = _tn(rng, 1.0, 0.08, 0.85, 1.2)
    h.lip_thickness = float(np.clip(1.15 - 0.3 * masc + rng.normal(0, 0.12), 0.7, 1.35))
    h.smile = _u(rng, -0.3, 1.0)
    h.ear_size = _tn(rng, 1.0, 0.08, 0.85, 1.2)
    h.ear_angle_deg = _u(rng, 5.0, 30.0)
    h.neck_width = float(np.clip(0.92 + 0.15 * masc + rng.normal(0, 0.05), 0.85, 1.15))
    h.shoulder_width = float(np.clip(0.9 + 0.15 * masc + rng.normal(0, 0.05), 0.85, 1.1))
    h.head_roll_deg = _tn(rng, 0.0, 4.0, -10.0, 10.0)
    h.head_nod_deg = _tn(rng, 0.0, 4.0, -10.0, 10.0)

    h.skin_tone = _u(rng, 0.0, 1.0)
    h.skin_rgb = _jitter_rgb(rng, skin_colour(h.skin_tone), 0.04)
    lip_dark = _u(rng, 0.6, 0.85)
    h.lip_rgb = tuple(float(c) for c in np.clip(np.array(h.skin_rgb) * np.array([1.0, 0.62, 0.62]) *
                                                 lip_dark + np.array([0.08, 0.0, 0.02]), 0, 1))
    h.iris_colour = _choice(rng, tuple(IRIS_COLOURS), _IRIS_P)
    h.iris_rgb = _jitter_rgb(rng, IRIS_COLOURS[h.iris_colour], 0.08)
    h.brow_thickness = _u(rng, 0.6, 1.4)

    p_style = np.array(_HAIR_STYLE_P) * np.array([1 + 2 * masc, 1 + masc, 1 + masc, 1.0, 1.5 - masc,
                                                  1.3 - masc, 1.3 - masc])
    h.hair_style = _choice(rng, HAIR_STYLES, tuple(p_style))
    h.hair_colour = _choice(rng, tuple(HAIR_COLOURS), _HAIR_COLOUR_P)
    h.hair_rgb = _jitter_rgb(rng, HAIR_COLOURS[h.hair_colour], 0.08)
    vol = _u(rng, 0.0, 1.0)
    length = _u(rng, 0.0, 1.0)
    h.fringe = _u(rng, 0.0, 1.0)
    style = h.hair_style
    h.hair_volume = {"bald": 0.0, "buzz": 0.004 + 0.004 * vol, "short": 0.012 + 0.028 * vol,
                     "bob": 0.018 + 0.025 * vol, "long": 0.012 + 0.025 * vol, "bun": 0.008 + 0.012 * vol,
                     "ponytail": 0.008 + 0.012 * vol}[style]
    h.hair_length = {"bob": 0.10 + 0.08 * length, "long": 0.22 + 0.25 * length,
                     "ponytail": 0.15 + 0.2 * length}.get(style, 0.0)

    r = _u(rng, 0.0, 1.0)
    h.glasses = "none" if r < 0.78 else ("round" if r < 0.86 else ("square" if r < 0.94 else "sunglasses"))
    h.glasses_rgb = _jitter_rgb(rng, ((0.05, 0.05, 0.05), (0.35, 0.2, 0.1), (0.7, 0.6, 0.3),
                                      (0.6, 0.1, 0.1))[int(rng.integers(4))], 0.1)
    r = _u(rng, 0.0, 1.0)
    h.hat = "none" if r < 0.88 else ("beanie" if r < 0.94 else "brimmed")
    h.hat_rgb = tuple(float(c) for c in rng.uniform(0.05, 0.85, 3))
    r = _u(rng, 0.0, 1.0)
    p_beard = 0.05 + 0.45 * masc**2
    if r < p_beard:
        h.beard = _choice(rng, BEARD_STYLES[1:], (0.3, 0.25, 0.15, 0.3))
    else:
        rng.random()  # keep the number of draws fixed
    h.beard_length = {"none": 0.0, "stubble": 0.003, "moustache": 0.006 + 0.006 * _u(rng, 0, 1),
                      "goatee": 0.008 + 0.015 * _u(rng, 0, 1), "full": 0.01 + 0.025 * _u(rng, 0, 1)
                      }.get(h.beard, 0.0)
    h.clothes_rgb = tuple(float(c) for c in rng.uniform(0.05, 0.9, 3))
    h.neckline = _u(rng, 0.0, 1.0)
    return h


def sample_yaw_pitch(rng: np.random.Generator) -> tuple[float, float]:
    """FFHQ-like pose: yaw mostly near frontal (N(0, 18°)) with a 15 % uniform tail to ±60°; pitch N(0, 8°)."""
    yaw = rng.normal(0.0, 18.0)
    if rng.random() < 0.15:
        yaw = rng.uniform(-60.0, 60.0)
    pitch = rng.normal(0.0, 8.0)
    return float(np.clip(yaw, -60.0, 60.0)), float(np.clip(pitch, -25.0, 25.0))


def sample_lighting(rng: np.random.Generator, scene: SceneParams) -> None:
    """Key light from a random direction in front of and above the head, ambient level and background."""
    az = math.radians(rng.uniform(-75.0, 75.0))
    el = math.radians(rng.uniform(-5.0, 60.0))
    scene.light_dir = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    tint = rng.uniform(-0.08, 0.08)
    scene.light_rgb = (1.0 + tint, 1.0, 1.0 - tint)
    scene.key = float(rng.uniform(0.65, 1.0))
    scene.ambient = float(rng.uniform(0.25, 0.5))
    top = rng.uniform(0.1, 0.95, 3) * rng.uniform(0.5, 1.0) + rng.uniform(0, 0.2)
    top = np.clip(top, 0, 1)
    if rng.random() < 0.5:
        bottom = top.copy()
    else:
        bottom = np.clip(top * rng.uniform(0.4, 1.3) + rng.normal(0, 0.1, 3), 0, 1)
    scene.bg_top = tuple(float(c) for c in top)
    scene.bg_bottom = tuple(float(c) for c in bottom)


def sample_scene(seed: int, index: int, split: int = TRAIN_SPLIT) -> SceneParams:
    """Camera, light and background of image ``index`` (training split: FFHQ-like random pose)."""
    rng = rng_for(seed, index, split, 1)
    s = SceneParams()
    s.yaw_deg, s.pitch_deg = sample_yaw_pitch(rng)
    sample_lighting(rng, s)
    return s


TEST_YAWS: tuple[float, ...] = (0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0)
TEST_PITCHES: tuple[float, ...] = (0.0, 10.0, -10.0)


def test_views() -> list[tuple[float, float]]:
    """The held-out views of every test head: yaw in {0, ±15, ±30, ±45, ±60} × pitch in {0, ±10} (27)."""
    return [(y, p) for y in TEST_YAWS for p in TEST_PITCHES]


def sample_test_scene(seed: int, head: int, yaw: float, pitch: float) -> SceneParams:
    """Scene of a test view: light and background fixed per head (only the camera moves between views)."""
    rng = rng_for(seed, head, TEST_SPLIT, 1)
    s = SceneParams(yaw_deg=float(yaw), pitch_deg=float(pitch))
    sample_yaw_pitch(rng)  # same draws as the training scenes, then discarded
    sample_lighting(rng, s)
    return s
