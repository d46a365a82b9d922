# SPDX-License-Identifier: GPL-3.0-or-later
"""View trajectories: the order in which novel views are generated (spec §2.2).

Each new view is conditioned on all earlier ones, so the order matters: IVID's 3×9 grid grows outward
from the first view, alternating right and left, pitch variations at each yaw. Angles are degrees of the
FFHQ orbit (the first view is the frontal camera, yaw 0, pitch 0).
"""

from __future__ import annotations

import math

from backend.errors import Aware3DError
from backend.validate import BOUNDS, within


def outward(values: list[float]) -> list[float]:
    """0 first, then ±v in growing |v|, right (+) before left (−): IVID's yaw-major order."""
    mags = sorted({abs(v) for v in values})
    out: list[float] = []
    for m in mags:
        for s in ((1.0,) if m == 0 else (1.0, -1.0)):
            if s * m in values or (m == 0 and 0.0 in values):
                out.append(s * m if m else 0.0)
    return out


def grid(yaws: list[float], pitches: list[float]) -> list[tuple[float, float]]:
    """(yaw, pitch) pairs, yaw-major, each yaw and each pitch in :func:`outward` order."""
    return [(y, p) for y in outward(yaws) for p in outward(pitches)]


def parse(spec: str) -> list[tuple[float, float]]:
    """A trajectory from a short text:

    * ``3x9``: IVID's grid, yaw in {0, ±8.6, ±17.2, ±25.8, ±34.4}° (0.15 rad steps), pitch in {0, ±8.6}°;
    * ``yaw:A:B:STEP`` (e.g. ``yaw:-60:60:15``): a yaw sweep at pitch 0, generated outward from 0;
    * ``ring:N``: N views all around (360°/N apart), outward from 0;
    * ``Y,P;Y,P;...``: an explicit list (the first one is the first view).
    """
    s = spec.strip()
    try:
        angles = _parse(s)
    except ValueError:
        raise Aware3DError(f"cannot read the trajectory {spec[:60]!r}",
                           "use 3x9, yaw:-60:60:15, ring:8 or 'yaw,pitch;yaw,pitch;...'") from None
    for yaw, pitch in angles:
        within("yaw_deg", yaw, "a trajectory's yaw", "e.g. yaw:-60:60:15")
        within("pitch_deg", pitch, "a trajectory's pitch", "e.g. '0,0;20,5'")
    return angles


def _parse(s: str) -> list[tuple[float, float]]:
    """:func:`parse` without its checks of the angles; ``ValueError`` for text it cannot read. The number of
    views is checked before any list of them is built (``yaw:0:1:1e-12`` would be a trillion)."""
    if s == "3x9":
        step = math.degrees(0.15)
        return grid([k * step for k in range(-4, 5)], [-step, 0.0, step])
    if s.startswith("yaw:"):
        a, b, st = (float(x) for x in s[4:].split(":"))
        if not all(math.isfinite(v) for v in (a, b, st)) or st <= 0 or b < a:
            raise ValueError
        span = (b - a) / st
        _count(span + 1 if math.isfinite(span) else math.inf)
        n = round(span)
        ys = [round(a + k * st, 6) for k in range(n + 1)]
        if 0.0 not in ys:
            ys.append(0.0)
        return grid(ys, [0.0])
    if s.startswith("ring:"):
        if not s[5:].strip().isdigit():
            raise ValueError
        n = _count(int(s[5:]) if len(s) < 20 else math.inf)
        if n < 1:
            raise ValueError
        ys = [(360.0 / n) * k for k in range(n)]
        ys = [y - 360.0 if y > 180.0 else y for y in ys]
        return grid(ys, [0.0])
    _count(s.count(";") + 1 - s.rstrip().endswith(";"))
    views = [tuple(float(v) for v in item.split(",")) for item in s.split(";") if item.strip()]
    if not views or any(len(v) != 2 or not all(math.isfinite(x) for x in v) for v in views):
        raise ValueError
    return [(v[0], v[1]) for v in views]


def _count(n: float) -> int:
    """A trajectory's number of views, refused past ``BOUNDS['views_per_trajectory']`` before it exists."""
    limit = BOUNDS["views_per_trajectory"].hi
    if n > limit:
        shown = f"{int(n)}" if n < 1e9 else "over a billion"
        raise Aware3DError(f"the trajectory has {shown} views; the limit is {int(limit)}",
                           "use a larger step or fewer views, e.g. yaw:-60:60:15")
    return int(n)
