# SPDX-License-Identifier: GPL-3.0-or-later
"""Sampling the parameters of a procedural head and of the picture taken of it.

Everything is drawn from a numpy ``Generator`` seeded by ``SeedSequence([seed, split, index])``, so a
head depends only on (seed, split, index): a data set of 100 images starts with the same 100 heads as one
of 30 000, a killed run can resume shard by shard, and the held-out test heads (split 1) never coincide
with training heads (split 0).

Every head and its lighting are a fixed function of a standard-normal latent (:mod:`.latent`), which is
what a distilled generator takes as its ``z``; only the camera angles are drawn separately.

The attributes are human-meaningful (face width, hair colour, glasses, ...) because they are written to
the data set's ``params.json`` for evaluation and attribute-conditioned experiments; :mod:`.layout`
turns them into primitive geometry.
"""

from __future__ import annotations

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
    # Sampling latents kept so that the parameters map back to their standard-normal latent exactly
    # (:func:`.latent.latent_from_params`): a "masculinity" correlating jaw, brows, beard and hair, the lip
    # darkening and the base colour of the glasses frame (index into ``latent.GLASSES_BASE``).
    masculinity: float = 0.5
    lip_dark: float = 0.7
    glasses_base: int = 0

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
    """Independent generator for (seed, split, index, stream): stream 0 = the latent (head and lighting),
    1 = the camera."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), split, int(index), stream])))


def sample_latent(seed: int, index: int, split: int = TRAIN_SPLIT) -> np.ndarray:
    """The standard-normal latent (float64 [LATENT_DIMS]) of head ``index`` of data set ``seed``.

    Head and lighting are functions of it (:mod:`.latent`), so the latent *is* the data head; it is written
    to the data set's ``params.json``.
    """
    from .latent import LATENT_DIMS

    return rng_for(seed, index, split, 0).standard_normal(LATENT_DIMS)


def sample_head(seed: int, index: int, split: int = TRAIN_SPLIT) -> HeadParams:
    """Draw head ``index`` of data set ``seed`` (split 0 = train, 1 = held-out test)."""
    from .latent import head_from_latent

    return head_from_latent(sample_latent(seed, index, split))


def sample_yaw_pitch(rng: np.random.Generator) -> tuple[float, float]:
    """FFHQ-like pose: yaw mostly near frontal (N(0, 18°)) with a 15 % uniform tail to ±60°; pitch N(0, 8°)."""
    yaw = rng.normal(0.0, 18.0)
    if rng.random() < 0.15:
        yaw = rng.uniform(-60.0, 60.0)
    pitch = rng.normal(0.0, 8.0)
    return float(np.clip(yaw, -60.0, 60.0)), float(np.clip(pitch, -25.0, 25.0))


def sample_scene(seed: int, index: int, split: int = TRAIN_SPLIT) -> SceneParams:
    """Camera, light and background of image ``index`` (training split: FFHQ-like random pose)."""
    from .latent import lighting_from_latent

    s = SceneParams()
    s.yaw_deg, s.pitch_deg = sample_yaw_pitch(rng_for(seed, index, split, 1))
    return lighting_from_latent(sample_latent(seed, index, split), s)


TEST_YAWS: tuple[float, ...] = (0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0)
TEST_PITCHES: tuple[float, ...] = (0.0, 10.0, -10.0)


def test_views() -> list[tuple[float, float]]:
    """The held-out views of every test head: yaw in {0, ±15, ±30, ±45, ±60} × pitch in {0, ±10} (27)."""
    return [(y, p) for y in TEST_YAWS for p in TEST_PITCHES]


def sample_test_scene(seed: int, head: int, yaw: float, pitch: float) -> SceneParams:
    """Scene of a test view: light and background fixed per head (only the camera moves between views)."""
    from .latent import lighting_from_latent

    s = SceneParams(yaw_deg=float(yaw), pitch_deg=float(pitch))
    return lighting_from_latent(sample_latent(seed, head, TEST_SPLIT), s)
