# SPDX-License-Identifier: GPL-3.0-or-later
"""The fixed map between standard-normal coordinates and a synthetic head with its lighting.

Why: a generator trained by distillation takes ``z ~ N(0, I)`` like any GAN, and for our own data we want
``z`` to *be* the head. So every random choice of :func:`.params.sample_head` and of the lighting in
:func:`.params.sample_scene` is one coordinate of a standard-normal vector, turned into the parameter by the
inverse CDF of its sampling distribution:

* a uniform parameter on [lo, hi]: ``lo + (hi - lo)·Φ(z)``;
* a clipped normal ``clip(mean + sd·z, lo, hi)`` (correlated ones add their dependence on the latent
  "masculinity" to the mean);
* a colour jitter: three coordinates through the Cholesky factor of its covariance (one shared brightness
  term plus one per channel), so three numbers come from three coordinates;
* a discrete choice: Gaussian bins, i.e. choice ``k`` when ``Φ(z)`` falls in the k-th slice of the
  cumulative sampling probabilities (these may depend on earlier parameters, e.g. hair style on
  masculinity).

So ``z ~ N(0, I)`` is a head of the data's distribution (the data set is drawn through this very map),
``z = 0`` is the median head, truncation towards 0 pulls towards typical heads, and every data head has a
known ``z`` (written to the data set's ``params.json``). :func:`latent_from_params` inverts the map: exact
for continuous values inside their range, the middle of the bin for a discrete choice, and the boundary
value for a clipped one, so ``params_from_latent(latent_from_params(p)) == p`` up to rounding.

Coordinates ``LATENT_DIMS`` and above carry nothing; so do a few inside the range when their parameter is
absent (documented in ``UNUSED_WHEN``). The camera is not part of ``z``: it is the generator's ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# The predicate lives in the backend (which must not import train/); re-exported for the trainers.
from backend.config import takes_head_latents  # noqa: F401

from .params import (
    _HAIR_COLOUR_P,
    _HAIR_STYLE_P,
    _IRIS_P,
    BEARD_STYLES,
    GLASSES_STYLES,
    HAIR_COLOURS,
    HAIR_STYLES,
    HAT_STYLES,
    IRIS_COLOURS,
    HeadParams,
    SceneParams,
    skin_colour,
)

_SQRT2 = math.sqrt(2.0)
_EPS = 1e-7  # keeps Φ⁻¹ finite (|z| ≤ 5.2)

GLASSES_P = (0.78, 0.08, 0.08, 0.06)
GLASSES_BASE: tuple[tuple[float, float, float], ...] = (
    (0.05, 0.05, 0.05), (0.35, 0.2, 0.1), (0.7, 0.6, 0.3), (0.6, 0.1, 0.1))
HAT_P = (0.88, 0.06, 0.06)
BEARD_STYLE_P = (0.3, 0.25, 0.15, 0.3)  # of the styles other than "none", given a beard
BG_SAME_P = 0.5  # a plain background (bottom = top) half of the time

# The coordinates, in order. Each name is one dimension of z.
HEAD_NAMES: tuple[str, ...] = (
    "masculinity", "head_scale", "face_width", "face_length", "jaw_width", "chin_size", "cheek_fullness",
    "brow_ridge", "eye_size", "eye_spacing", "nose_length", "nose_width", "nose_projection", "mouth_width",
    "lip_thickness", "smile", "ear_size", "ear_angle_deg", "neck_width", "shoulder_width", "head_roll_deg",
    "head_nod_deg", "skin_tone", "skin_jitter_0", "skin_jitter_1", "skin_jitter_2", "lip_dark", "iris_colour",
    "iris_jitter_0", "iris_jitter_1", "iris_jitter_2", "brow_thickness", "hair_style", "hair_colour",
    "hair_jitter_0", "hair_jitter_1", "hair_jitter_2", "hair_volume", "hair_length", "fringe", "glasses",
    "glasses_base", "glasses_jitter_0", "glasses_jitter_1", "glasses_jitter_2", "hat", "hat_r", "hat_g",
    "hat_b", "beard", "beard_length", "clothes_r", "clothes_g", "clothes_b", "neckline",
)
SCENE_NAMES: tuple[str, ...] = (
    "light_azimuth", "light_elevation", "light_tint", "key", "ambient", "bg_top_0", "bg_top_1", "bg_top_2",
    "bg_same", "bg_bottom_0", "bg_bottom_1", "bg_bottom_2",
)
NAMES: tuple[str, ...] = HEAD_NAMES + SCENE_NAMES
LATENT_DIMS = len(NAMES)
INDEX: dict[str, int] = {n: i for i, n in enumerate(NAMES)}

# Coordinates that carry nothing for some heads (so a generator learns to ignore them there).
UNUSED_WHEN: dict[str, str] = {
    "hair_volume": "hair_style == 'bald'",
    "hair_length": "hair_style not in ('bob', 'long', 'ponytail')",
    "glasses_base": "glasses == 'none'", "glasses_jitter_0": "glasses == 'none'",
    "glasses_jitter_1": "glasses == 'none'", "glasses_jitter_2": "glasses == 'none'",
    "hat_r": "hat == 'none'", "hat_g": "hat == 'none'", "hat_b": "hat == 'none'",
    "beard_length": "beard in ('none', 'stubble')",
    "bg_bottom_0": "the background is plain", "bg_bottom_1": "the background is plain",
    "bg_bottom_2": "the background is plain",
}


# ----------------------------------------------------------------------------------------------------------
# One-dimensional maps and their inverses
# ----------------------------------------------------------------------------------------------------------


def phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / _SQRT2))


def phi_inv(p: float) -> float:
    """Inverse standard normal CDF (Acklam's rational start, two Newton steps: |error| < 1e-12)."""
    p = min(max(p, _EPS), 1.0 - _EPS)
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    elif p > 1 - 0.02425:
        q = math.sqrt(-2 * math.log(1 - p))
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    else:
        q = p - 0.5
        r = q * q
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    for _ in range(2):
        e = phi(x) - p
        x -= e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x


def uniform(z: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) * phi(z)


def uniform_inv(x: float, lo: float, hi: float) -> float:
    return phi_inv((x - lo) / (hi - lo))


def clipped(z: float, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(min(max(mean + sd * z, lo), hi))


def clipped_inv(x: float, mean: float, sd: float) -> float:
    return (x - mean) / sd


def _cumulative(p: Sequence[float]) -> np.ndarray:
    w = np.asarray(p, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(w / w.sum())])


def choice(z: float, p: Sequence[float]) -> int:
    """Index of the Gaussian bin of ``z`` for probabilities ``p``."""
    cum = _cumulative(p)
    return int(min(np.searchsorted(cum, phi(z), side="right") - 1, len(p) - 1))


def choice_inv(k: int, p: Sequence[float]) -> float:
    """The middle (in probability) of bin ``k``."""
    cum = _cumulative(p)
    return phi_inv(0.5 * (cum[k] + cum[k + 1]))


def _jitter_factor(amount: float) -> np.ndarray:
    """Cholesky factor of the jitter covariance amount²·(I + 11ᵀ) (one shared term plus one per channel)."""
    return np.linalg.cholesky(amount**2 * (np.eye(3) + np.ones((3, 3))))


def jitter_rgb(z3: np.ndarray, rgb: Sequence[float], amount: float) -> tuple[float, float, float]:
    j = _jitter_factor(amount) @ np.asarray(z3, dtype=np.float64)
    return tuple(float(np.clip(c * (1.0 + x), 0.0, 1.0)) for c, x in zip(rgb, j))  # type: ignore[return-value]


def jitter_rgb_inv(out: Sequence[float], rgb: Sequence[float], amount: float) -> np.ndarray:
    j = np.array([(o / c - 1.0) if c > 1e-6 else 0.0 for o, c in zip(out, rgb)])
    return np.linalg.solve(_jitter_factor(amount), j)


_BG_CORR = np.linalg.cholesky(np.full((3, 3), 0.5) + 0.5 * np.eye(3))  # channels correlate (brightness)


def _bg_top(z3: np.ndarray) -> tuple[float, float, float]:
    g = _BG_CORR @ np.asarray(z3, dtype=np.float64)
    return tuple(0.05 + 0.9 * phi(float(x)) for x in g)  # type: ignore[return-value]


def _bg_top_inv(top: Sequence[float]) -> np.ndarray:
    g = np.array([phi_inv((t - 0.05) / 0.9) for t in top])
    return np.linalg.solve(_BG_CORR, g)


def _bg_bottom(top: Sequence[float], z3: np.ndarray) -> tuple[float, float, float]:
    d = 0.2 * (_BG_CORR @ np.asarray(z3, dtype=np.float64))
    return tuple(float(np.clip(t + x, 0.0, 1.0)) for t, x in zip(top, d))  # type: ignore[return-value]


def _bg_bottom_inv(top: Sequence[float], bottom: Sequence[float]) -> np.ndarray:
    d = np.array([(b - t) / 0.2 for t, b in zip(top, bottom)])
    return np.linalg.solve(_BG_CORR, d)


# Masculinity values at which the bins of a choice that depends on it are taken (see :func:`latent_bins`).
_BIN_MASCULINITY = (0.1, 0.3, 0.5, 0.7, 0.9)


def choice_probabilities() -> dict[str, Callable[[float], tuple[float, ...]]]:
    """Every discrete coordinate's choice probabilities as a function of masculinity (most ignore it)."""
    def fixed(p: Sequence[float]) -> Callable[[float], tuple[float, ...]]:
        return lambda _masc: tuple(float(x) for x in p)

    return {"iris_colour": fixed(_IRIS_P), "hair_style": hair_style_p, "hair_colour": fixed(_HAIR_COLOUR_P),
            "glasses": fixed(GLASSES_P), "glasses_base": fixed((1, 1, 1, 1)), "hat": fixed(HAT_P),
            "beard": beard_p, "bg_same": fixed((BG_SAME_P, 1 - BG_SAME_P))}


# The discrete coordinates whose bins move with masculinity.
MASCULINITY_CHOICES = ("hair_style", "beard")


def latent_bins() -> tuple[tuple[int, tuple[float, ...]], ...]:
    """The Gaussian-bin edges (in z) of every discrete coordinate, for a generator's mapping network.

    Why: a discrete choice is a step function of its coordinate, which an MLP fed z alone learns slowly (at
    45 kimg the first distilled model still drew no hats, full beards or platinum hair). Fed also the one-hot
    of the bin each coordinate falls in (``GeneratorConfig.z_bins``), the choice is linear in the input. A
    choice whose probabilities depend on masculinity (hair style, beard) gets the union of its edges at a few
    masculinity values: finer bins, from which the network combines the right one with masculinity.
    """
    def edges(p: Sequence[float]) -> list[float]:
        return [phi_inv(float(c)) for c in _cumulative(p)[1:-1]]

    probs = choice_probabilities()
    out: list[tuple[int, tuple[float, ...]]] = []
    for name in NAMES:
        if name not in probs:
            continue
        masc = _BIN_MASCULINITY if name in MASCULINITY_CHOICES else (0.5,)
        e = [x for m in masc for x in edges(probs[name](m))]
        out.append((INDEX[name], tuple(sorted({round(x, 9) for x in e}))))
    return tuple(out)


def choice_of(z: np.ndarray | Sequence[float], name: str) -> int:
    """The choice (index into its options) that discrete coordinate ``name`` of latent ``z`` makes."""
    masc = phi(float(z[INDEX["masculinity"]]))
    return choice(float(z[INDEX[name]]), choice_probabilities()[name](masc))


def choice_middles(name: str, masculinity_z: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    """The latent of each choice of ``name`` (the middle of its bin) at each masculinity coordinate value:
    [len(masculinity_z)][choices], what an encoder that predicts the choice decodes it to."""
    p = choice_probabilities()[name]
    rows = []
    for zm in masculinity_z:
        probs = p(phi(float(zm)))
        rows.append(tuple(round(choice_inv(k, probs), 9) for k in range(len(probs))))
    return tuple(rows)


def hair_style_p(masc: float) -> tuple[float, ...]:
    """Hair-style probabilities given masculinity (short styles for high values, long ones for low)."""
    f = (1 + 2 * masc, 1 + masc, 1 + masc, 1.0, 1.5 - masc, 1.3 - masc, 1.3 - masc)
    return tuple(p * w for p, w in zip(_HAIR_STYLE_P, f))


def beard_p(masc: float) -> tuple[float, ...]:
    """Probabilities of ("none", *BEARD_STYLES[1:]) given masculinity."""
    pb = 0.05 + 0.45 * masc**2
    return (1 - pb, *(pb * q for q in BEARD_STYLE_P))


_HAIR_VOLUME = {"bald": (0.0, 0.0), "buzz": (0.004, 0.004), "short": (0.012, 0.028), "bob": (0.018, 0.025),
                "long": (0.012, 0.025), "bun": (0.008, 0.012), "ponytail": (0.008, 0.012)}
_HAIR_LENGTH = {"bob": (0.10, 0.08), "long": (0.22, 0.25), "ponytail": (0.15, 0.2)}
_BEARD_LENGTH = {"moustache": (0.006, 0.006), "goatee": (0.008, 0.015), "full": (0.01, 0.025)}


# ----------------------------------------------------------------------------------------------------------
# z → parameters
# ----------------------------------------------------------------------------------------------------------


def _as_latent(z: np.ndarray | Sequence[float]) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if z.shape[0] < LATENT_DIMS:
        raise ValueError(f"a head latent needs at least {LATENT_DIMS} coordinates, got {z.shape[0]}")
    return z


def head_from_latent(z: np.ndarray | Sequence[float]) -> HeadParams:
    """The head of latent ``z`` (coordinates beyond ``LATENT_DIMS`` are ignored)."""
    z = _as_latent(z)

    def v(name: str) -> float:
        return float(z[INDEX[name]])

    def v3(prefix: str) -> np.ndarray:
        return np.array([v(f"{prefix}_{k}") for k in range(3)])

    h = HeadParams()
    masc = phi(v("masculinity"))
    h.masculinity = masc
    h.head_scale = clipped(v("head_scale"), 1.0, 0.03, 0.93, 1.07)
    h.face_width = clipped(v("face_width"), 1.0, 0.05, 0.88, 1.12)
    h.face_length = clipped(v("face_length"), 1.0, 0.04, 0.9, 1.1)
    h.jaw_width = clipped(v("jaw_width"), 0.88 + 0.2 * masc, 0.05, 0.8, 1.15)
    h.chin_size = clipped(v("chin_size"), 1.0, 0.12, 0.75, 1.25)
    h.cheek_fullness = clipped(v("cheek_fullness"), 1.0, 0.15, 0.7, 1.3)
    h.brow_ridge = clipped(v("brow_ridge"), 0.8 + 0.4 * masc, 0.1, 0.6, 1.4)
    h.eye_size = clipped(v("eye_size"), 1.0, 0.07, 0.85, 1.15)
    h.eye_spacing = clipped(v("eye_spacing"), 1.0, 0.04, 0.92, 1.08)
    h.nose_length = clipped(v("nose_length"), 1.0, 0.1, 0.8, 1.2)
    h.nose_width = clipped(v("nose_width"), 1.0, 0.12, 0.8, 1.3)
    h.nose_projection = clipped(v("nose_projection"), 1.0, 0.1, 0.8, 1.2)
    h.mouth_width = clipped(v("mouth_width"), 1.0, 0.08, 0.85, 1.2)
    h.lip_thickness = clipped(v("lip_thickness"), 1.15 - 0.3 * masc, 0.12, 0.7, 1.35)
    h.smile = uniform(v("smile"), -0.3, 1.0)
    h.ear_size = clipped(v("ear_size"), 1.0, 0.08, 0.85, 1.2)
    h.ear_angle_deg = uniform(v("ear_angle_deg"), 5.0, 30.0)
    h.neck_width = clipped(v("neck_width"), 0.92 + 0.15 * masc, 0.05, 0.85, 1.15)
    h.shoulder_width = clipped(v("shoulder_width"), 0.9 + 0.15 * masc, 0.05, 0.85, 1.1)
    h.head_roll_deg = clipped(v("head_roll_deg"), 0.0, 4.0, -10.0, 10.0)
    h.head_nod_deg = clipped(v("head_nod_deg"), 0.0, 4.0, -10.0, 10.0)

    h.skin_tone = uniform(v("skin_tone"), 0.0, 1.0)
    h.skin_rgb = jitter_rgb(v3("skin_jitter"), skin_colour(h.skin_tone), 0.04)
    h.lip_dark = uniform(v("lip_dark"), 0.6, 0.85)
    h.lip_rgb = lip_colour(h.skin_rgb, h.lip_dark)
    h.iris_colour = tuple(IRIS_COLOURS)[choice(v("iris_colour"), _IRIS_P)]
    h.iris_rgb = jitter_rgb(v3("iris_jitter"), IRIS_COLOURS[h.iris_colour], 0.08)
    h.brow_thickness = uniform(v("brow_thickness"), 0.6, 1.4)

    h.hair_style = HAIR_STYLES[choice(v("hair_style"), hair_style_p(masc))]
    h.hair_colour = tuple(HAIR_COLOURS)[choice(v("hair_colour"), _HAIR_COLOUR_P)]
    h.hair_rgb = jitter_rgb(v3("hair_jitter"), HAIR_COLOURS[h.hair_colour], 0.08)
    base, span = _HAIR_VOLUME[h.hair_style]
    h.hair_volume = base + span * phi(v("hair_volume")) if h.hair_style != "bald" else 0.0
    base, span = _HAIR_LENGTH.get(h.hair_style, (0.0, 0.0))
    h.hair_length = base + span * phi(v("hair_length")) if h.hair_style in _HAIR_LENGTH else 0.0
    h.fringe = uniform(v("fringe"), 0.0, 1.0)

    h.glasses = GLASSES_STYLES[choice(v("glasses"), GLASSES_P)]
    h.glasses_base = choice(v("glasses_base"), (1, 1, 1, 1))
    h.glasses_rgb = jitter_rgb(v3("glasses_jitter"), GLASSES_BASE[h.glasses_base], 0.1)
    h.hat = HAT_STYLES[choice(v("hat"), HAT_P)]
    h.hat_rgb = (uniform(v("hat_r"), 0.05, 0.85), uniform(v("hat_g"), 0.05, 0.85), uniform(v("hat_b"), 0.05, 0.85))
    h.beard = BEARD_STYLES[choice(v("beard"), beard_p(masc))]
    base, span = _BEARD_LENGTH.get(h.beard, (0.003 if h.beard == "stubble" else 0.0, 0.0))
    h.beard_length = base + span * phi(v("beard_length")) if h.beard in _BEARD_LENGTH else base
    h.clothes_rgb = (uniform(v("clothes_r"), 0.05, 0.9), uniform(v("clothes_g"), 0.05, 0.9),
                     uniform(v("clothes_b"), 0.05, 0.9))
    h.neckline = uniform(v("neckline"), 0.0, 1.0)
    return h


def lip_colour(skin_rgb: Sequence[float], lip_dark: float) -> tuple[float, float, float]:
    lip = np.clip(np.array(skin_rgb) * np.array([1.0, 0.62, 0.62]) * lip_dark + np.array([0.08, 0.0, 0.02]), 0, 1)
    return tuple(float(c) for c in lip)  # type: ignore[return-value]


def lighting_from_latent(z: np.ndarray | Sequence[float], scene: SceneParams | None = None) -> SceneParams:
    """Light and background of latent ``z`` (the camera angles of ``scene`` are kept)."""
    z = _as_latent(z)

    def v(name: str) -> float:
        return float(z[INDEX[name]])

    s = SceneParams() if scene is None else scene
    az = math.radians(uniform(v("light_azimuth"), -75.0, 75.0))
    el = math.radians(uniform(v("light_elevation"), -5.0, 60.0))
    s.light_dir = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    tint = uniform(v("light_tint"), -0.08, 0.08)
    s.light_rgb = (1.0 + tint, 1.0, 1.0 - tint)
    s.key = uniform(v("key"), 0.65, 1.0)
    s.ambient = uniform(v("ambient"), 0.25, 0.5)
    s.bg_top = _bg_top(np.array([v(f"bg_top_{k}") for k in range(3)]))
    plain = choice(v("bg_same"), (BG_SAME_P, 1 - BG_SAME_P)) == 0
    s.bg_bottom = s.bg_top if plain else _bg_bottom(s.bg_top, np.array([v(f"bg_bottom_{k}") for k in range(3)]))
    return s


# ----------------------------------------------------------------------------------------------------------
# parameters → z
# ----------------------------------------------------------------------------------------------------------


def latent_from_params(h: HeadParams, scene: SceneParams, dims: int = LATENT_DIMS) -> np.ndarray:
    """A latent of head ``h`` lit as ``scene`` (float64 [dims]; coordinates that carry nothing are 0)."""
    if dims < LATENT_DIMS:
        raise ValueError(f"dims must be at least {LATENT_DIMS}")
    z = np.zeros(dims, dtype=np.float64)

    def put(name: str, value: float) -> None:
        z[INDEX[name]] = value

    def put3(prefix: str, values: np.ndarray) -> None:
        for k in range(3):
            put(f"{prefix}_{k}", float(values[k]))

    masc = min(max(h.masculinity, _EPS), 1 - _EPS)
    put("masculinity", phi_inv(masc))
    for name, mean, sd in (("head_scale", 1.0, 0.03), ("face_width", 1.0, 0.05), ("face_length", 1.0, 0.04),
                           ("jaw_width", 0.88 + 0.2 * masc, 0.05), ("chin_size", 1.0, 0.12),
                           ("cheek_fullness", 1.0, 0.15), ("brow_ridge", 0.8 + 0.4 * masc, 0.1),
                           ("eye_size", 1.0, 0.07), ("eye_spacing", 1.0, 0.04), ("nose_length", 1.0, 0.1),
                           ("nose_width", 1.0, 0.12), ("nose_projection", 1.0, 0.1), ("mouth_width", 1.0, 0.08),
                           ("lip_thickness", 1.15 - 0.3 * masc, 0.12), ("ear_size", 1.0, 0.08),
                           ("neck_width", 0.92 + 0.15 * masc, 0.05), ("shoulder_width", 0.9 + 0.15 * masc, 0.05),
                           ("head_roll_deg", 0.0, 4.0), ("head_nod_deg", 0.0, 4.0)):
        put(name, clipped_inv(getattr(h, name), mean, sd))
    put("smile", uniform_inv(h.smile, -0.3, 1.0))
    put("ear_angle_deg", uniform_inv(h.ear_angle_deg, 5.0, 30.0))
    put("skin_tone", uniform_inv(h.skin_tone, 0.0, 1.0))
    put3("skin_jitter", jitter_rgb_inv(h.skin_rgb, skin_colour(h.skin_tone), 0.04))
    put("lip_dark", uniform_inv(h.lip_dark, 0.6, 0.85))
    put("iris_colour", choice_inv(tuple(IRIS_COLOURS).index(h.iris_colour), _IRIS_P))
    put3("iris_jitter", jitter_rgb_inv(h.iris_rgb, IRIS_COLOURS[h.iris_colour], 0.08))
    put("brow_thickness", uniform_inv(h.brow_thickness, 0.6, 1.4))
    put("hair_style", choice_inv(HAIR_STYLES.index(h.hair_style), hair_style_p(masc)))
    put("hair_colour", choice_inv(tuple(HAIR_COLOURS).index(h.hair_colour), _HAIR_COLOUR_P))
    put3("hair_jitter", jitter_rgb_inv(h.hair_rgb, HAIR_COLOURS[h.hair_colour], 0.08))
    base, span = _HAIR_VOLUME[h.hair_style]
    if span > 0:
        put("hair_volume", phi_inv((h.hair_volume - base) / span))
    if h.hair_style in _HAIR_LENGTH:
        base, span = _HAIR_LENGTH[h.hair_style]
        put("hair_length", phi_inv((h.hair_length - base) / span))
    put("fringe", uniform_inv(h.fringe, 0.0, 1.0))
    put("glasses", choice_inv(GLASSES_STYLES.index(h.glasses), GLASSES_P))
    put("glasses_base", choice_inv(h.glasses_base, (1, 1, 1, 1)))
    put3("glasses_jitter", jitter_rgb_inv(h.glasses_rgb, GLASSES_BASE[h.glasses_base], 0.1))
    put("hat", choice_inv(HAT_STYLES.index(h.hat), HAT_P))
    for k, ch in enumerate("rgb"):
        put(f"hat_{ch}", uniform_inv(h.hat_rgb[k], 0.05, 0.85))
        put(f"clothes_{ch}", uniform_inv(h.clothes_rgb[k], 0.05, 0.9))
    put("beard", choice_inv(BEARD_STYLES.index(h.beard), beard_p(masc)))
    if h.beard in _BEARD_LENGTH:
        base, span = _BEARD_LENGTH[h.beard]
        put("beard_length", phi_inv((h.beard_length - base) / span))
    put("neckline", uniform_inv(h.neckline, 0.0, 1.0))

    lx, ly, lz = scene.light_dir
    put("light_azimuth", uniform_inv(math.degrees(math.atan2(lx, lz)), -75.0, 75.0))
    put("light_elevation", uniform_inv(math.degrees(math.asin(max(-1.0, min(1.0, ly)))), -5.0, 60.0))
    put("light_tint", uniform_inv(scene.light_rgb[0] - 1.0, -0.08, 0.08))
    put("key", uniform_inv(scene.key, 0.65, 1.0))
    put("ambient", uniform_inv(scene.ambient, 0.25, 0.5))
    put3("bg_top", _bg_top_inv(scene.bg_top))
    plain = all(abs(a - b) < 1e-9 for a, b in zip(scene.bg_top, scene.bg_bottom))
    put("bg_same", choice_inv(0 if plain else 1, (BG_SAME_P, 1 - BG_SAME_P)))
    if not plain:
        put3("bg_bottom", _bg_bottom_inv(scene.bg_top, scene.bg_bottom))
    return z
