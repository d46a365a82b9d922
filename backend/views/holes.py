# SPDX-License-Identifier: GPL-3.0-or-later
"""What G_c sees where its condition knows nothing: the one place its training and its sampling must agree.

IVID fills the holes of the warped condition with N(0, 1) noise (§4.4), so the network learns to ignore
them and paints disoccluded skin and hair from scratch. On our heads that loses to the plain baseline
(warp + nearest known colour) on the head region: the nearest known skin or hair colour is usually almost
right (docs/views.md, *Where G_c loses the head*). ``UNetConfig.hole_fill = "nearest"`` gives the network that
baseline in the holes instead; the masks still mark which pixels are known, so it can learn where to keep the
fill, where to draw the backdrop and where to correct.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from backend.views.rgbd import Condition


def fill_nearest(image: np.ndarray, known: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Every unknown pixel of ``image`` ([H, W] or [H, W, C]) takes the value of its nearest known pixel
    (``default`` when none is known)."""
    if known.all():
        return image.copy()
    if not known.any():
        return np.full_like(image, default)
    _, (rows, cols) = ndimage.distance_transform_edt(~known, return_indices=True)
    return image[rows, cols]


def network_condition(cond: Condition, noise: np.ndarray, backdrop: bool = False,
                      hole_fill: str = "noise", shape: bool = False) -> np.ndarray:
    """G_c's condition channels [6 (+3 backdrop) (+3 shape), H, W] with the holes filled.

    ``noise`` [4, H, W] (standard normal; colour then depth code) fills them for ``"noise"``, and for
    ``"nearest"`` wherever nothing at all is known (so a condition with no colour is what the network saw in
    training either way). The caller draws it, so training (numpy streams) and sampling (torch generators)
    keep their own reproducible random numbers. With ``"nearest"``, a given target geometry
    (``cond.shape_z``) and a carried backdrop, holes off the surface take the backdrop's colour: the fill
    is then the warp + fill baseline drawn inside the true silhouette.
    """
    x = cond.to_network(backdrop, shape)
    rm = np.asarray(cond.rgb_mask, bool)
    dm = np.asarray(cond.depth_mask, bool)
    if hole_fill == "nearest":
        if rm.any():
            x[1:4] = fill_nearest(x[1:4].transpose(1, 2, 0), rm).transpose(2, 0, 1)
        else:
            x[1:4] = noise[:3]
        if shape and cond.shape_z is not None and cond.backdrop is not None:
            off = ~cond.surface() & ~rm
            x[1:4] = np.where(off[None], np.asarray(cond.backdrop, np.float32).transpose(2, 0, 1) * 2 - 1, x[1:4])
        x[4] = fill_nearest(x[4], dm) if dm.any() else noise[3]
        return x
    if hole_fill != "noise":
        raise ValueError(f"unknown hole fill {hole_fill!r}")
    x[1:4] = np.where(rm[None], x[1:4], noise[:3])
    x[4] = np.where(dm, x[4], noise[3])
    return x
