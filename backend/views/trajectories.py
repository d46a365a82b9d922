# SPDX-License-Identifier: GPL-3.0-or-later
"""View trajectories: the order in which novel views are generated (spec §2.2).

Each new view is conditioned on all earlier ones, so the order matters: IVID's 3×9 grid grows outward
from the first view, alternating right and left, pitch variations at each yaw. Angles are degrees of the
FFHQ orbit (the first view is the frontal camera, yaw 0, pitch 0).
"""

from __future__ import annotations

import math

from backend.errors import Aware3DError


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
        if s == "3x9":
            step = math.degrees(0.15)
            return grid([k * step for k in range(-4, 5)], [-step, 0.0, step])
        if s.startswith("yaw:"):
            a, b, st = (float(x) for x in s[4:].split(":"))
            if st <= 0 or b < a:
                raise ValueError
            n = round((b - a) / st)
            ys = [round(a + k * st, 6) for k in range(n + 1)]
            if 0.0 not in ys:
                ys.append(0.0)
            return grid(ys, [0.0])
        if s.startswith("ring:"):
            n = int(s[5:])
            if n < 1:
                raise ValueError
            ys = [(360.0 / n) * k for k in range(n)]
            ys = [y - 360.0 if y > 180.0 else y for y in ys]
            return grid(ys, [0.0])
        views = [tuple(float(v) for v in item.split(",")) for item in s.split(";") if item.strip()]
        if not views or any(len(v) != 2 for v in views):
            raise ValueError
        return [(v[0], v[1]) for v in views]
    except ValueError:
        raise Aware3DError(f"cannot read the trajectory {spec!r}",
                           "use 3x9, yaw:-60:60:15, ring:8 or 'yaw,pitch;yaw,pitch;...'") from None
