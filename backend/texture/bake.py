# SPDX-License-Identifier: GPL-3.0-or-later
"""The UV texture: texel geometry, the mesh's own colours, and the sequential weighted blend of views.

Why texel space: a texel is a surface point with a fixed position and normal (rasterise the mesh in UV
space once, §11.2 step 2), so "project view k onto the mesh" is "project every texel into view k and
sample it" — no scattering of pixels into texels, no holes from magnification.

The blend (§11.2 step 5, sequential variant). Views arrive one by one; each texel keeps a weighted mean of
the views that painted it plus the best cosine ``c*`` among them. A new view with weight ``w > 0`` and
cosine ``c`` at a texel:

* blends in with its weight when it sees the texel about as well (``|c − c*|`` small) — neighbouring
  views average across their overlap instead of leaving a seam;
* replaces the earlier views when it sees the texel clearly better (``c − c*`` ≥ 1.5 × ``refine_gain``;
  TEXTure's "refine" with its 0.2 gain): the earlier contributions are faded out smoothly between 0.5 and
  1.5 × the gain so the switch is not a seam either;
* is ignored when it sees the texel clearly worse (``c* − c`` ≥ 1.5 × gain, faded in the same way): a
  view conditioned on the texture was told those colours and can only give back a blurrier copy.

Weights are max-normalised per texel (StableGen): the accumulators hold sums relative to the largest
weight seen so far, so a large ``exponent`` (a near winner-take-all blend) cannot underflow. Texels no
view painted keep the mesh's own colour.
"""

from __future__ import annotations

import numpy as np

from backend.mesh.texture import TexelGeometry
from backend.texture.visibility import smoothstep


def texel_colours_from_vertices(geom: TexelGeometry, faces: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """[N, 3] texel colours interpolated from per-vertex colours (the mesh's own colour)."""
    tri = np.asarray(faces, dtype=np.int64)[geom.face]
    return np.einsum("kc,kcd->kd", geom.bary, np.asarray(colours, dtype=np.float64)[tri])


def texel_colours_from_texture(geom: TexelGeometry, texture: np.ndarray) -> np.ndarray:
    """[N, 3] texel colours read from an existing texture (resized to the atlas size if needed)."""
    import cv2

    t = np.asarray(texture)
    if t.shape[0] != geom.size or t.shape[1] != geom.size:
        t = cv2.resize(t, (geom.size, geom.size), interpolation=cv2.INTER_AREA)
    return t.astype(np.float64)[geom.covered] / (255.0 if t.dtype == np.uint8 else 1.0)


def compose(geom: TexelGeometry, texel_colours: np.ndarray) -> np.ndarray:
    """[T, T, 3] float32 texture: covered texels' colours, every other texel its nearest covered one's."""
    tex = np.zeros((geom.size, geom.size, 3), dtype=np.float32)
    tex[geom.covered] = texel_colours
    return tex[geom.fill_rows, geom.fill_cols]


def to_uint8(texture: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(texture, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


class SequentialBlend:
    """The per-texel sequential blend of the module docstring over ``count`` texels."""

    def __init__(self, base: np.ndarray, refine_gain: float = 0.2) -> None:
        self.base = np.asarray(base, dtype=np.float64)
        n = len(self.base)
        self.num = np.zeros((n, 3), dtype=np.float64)
        self.den = np.zeros(n, dtype=np.float64)  # both relative to wmax (max-normalised)
        self.wmax = np.zeros(n, dtype=np.float64)
        self.best_cos = np.full(n, -np.inf)
        self.gain = float(refine_gain)

    def add(self, colours: np.ndarray, weight: np.ndarray, cos: np.ndarray) -> np.ndarray:
        """Blend one view in; returns the effective (gated) weight each texel took from it."""
        idx = np.nonzero(weight > 0)[0]
        eff = np.zeros(len(weight), dtype=np.float64)
        if idx.size == 0:
            return eff
        w, c, best = weight[idx].astype(np.float64), cos[idx].astype(np.float64), self.best_cos[idx]
        painted = np.isfinite(best)
        gain = np.where(painted, c - best, np.inf)
        if self.gain > 0:
            keep_old = 1.0 - smoothstep(0.5 * self.gain, 1.5 * self.gain, gain)
            take_new = smoothstep(-1.5 * self.gain, -0.5 * self.gain, gain)
        else:  # gain 0: a plain weighted mean of all views
            keep_old, take_new = np.ones_like(w), np.ones_like(w)
        keep_old = np.where(painted, keep_old, 0.0)
        w_new = w * take_new
        old_max = self.wmax[idx]
        new_max = np.maximum(old_max * (keep_old > 0), w_new)
        safe = np.where(new_max > 0, new_max, 1.0)
        scale_old = np.where(new_max > 0, old_max * keep_old / safe, 1.0)
        rel = w_new / safe
        self.num[idx] = self.num[idx] * scale_old[:, None] + np.asarray(colours, np.float64)[idx] * rel[:, None]
        self.den[idx] = self.den[idx] * scale_old + rel
        self.wmax[idx] = np.where(new_max > 0, new_max, old_max)
        took = w_new > 0
        self.best_cos[idx[took]] = np.maximum(np.where(painted[took], best[took], -np.inf), c[took])
        eff[idx] = w_new
        return eff

    @property
    def painted(self) -> np.ndarray:
        return self.den > 0

    def colours(self) -> np.ndarray:
        """[N, 3] current texel colours: the blend where painted, the mesh's own colour elsewhere."""
        out = self.base.copy()
        p = self.painted
        out[p] = self.num[p] / self.den[p, None]
        return out

