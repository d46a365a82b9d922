# SPDX-License-Identifier: GPL-3.0-or-later
"""Derive the 3D face-landmark template of the synthetic heads and write ``backend/invert/face_template.py``.

Why a generated table: the backend must not import ``train/`` (the training code is not part of the
installed CLI's dependencies at run time), yet the pose prior of the bundled model has to compare a photo's
2D landmarks with *our* heads' 3D landmarks. This script computes them once from the head geometry
(``train/synthetic/layout.py`` and the signed distance field of ``train/synthetic/sdf.py``) and writes a
small Python table that the backend imports. Rerun it whenever the head geometry changes::

    .venv/bin/python tools/face_template.py            # rewrites backend/invert/face_template.py
    .venv/bin/python tools/face_template.py --check    # exit 1 if the committed table is stale

How each landmark is placed (canonical head coordinates of the layout, then the head's own transform to
world units, y up, face towards +z, image-left = world −x for a frontal camera):

* eye corners: the eyeball's centre ± its radius along x (``eye_r``: where the sclera meets the lids in a
  frontal view), on the surface;
* nose tip: the (x, y) of the tip sphere's centre, on the surface;
* nose base (subnasale; dlib's "bottom of the nose"): x = 0 at the height of the tip sphere's lowest point,
  on the surface;
* mouth corners: the lip slit's ends (x = ± its half-width, y on the smile curve of the lips), on the
  surface.

"On the surface" means the first hit of a ray cast along the head's own −z axis (sphere tracing of
``head_sdf``). Heads are drawn from the training distribution (``sample_head``) with hair, glasses, hats
and beards removed (landmarks are skin features), the positions are averaged and made left-right
symmetric. The heads' own roll and nod (±10°) are part of the average, as the generator learnt them.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.synthetic import HeadParams, head_sdf, sample_head  # noqa: E402
from train.synthetic.layout import HEAD_SCALE, PIVOT, layout  # noqa: E402

OUT = ROOT / "backend" / "invert" / "face_template.py"
NAMES = ("eye_l_outer", "eye_l_inner", "eye_r_inner", "eye_r_outer", "nose_tip", "nose_base", "mouth_l", "mouth_r")


def bare(h: HeadParams) -> HeadParams:
    """The head without hair, glasses, hat or beard (they would hide or move skin landmarks)."""
    return dataclasses.replace(h, hair_style="bald", hair_volume=0.0, hair_length=0.0, glasses="none", hat="none",
                               beard="none", beard_length=0.0)


def canonical_points(h: HeadParams) -> dict[str, tuple[float, float]]:
    """(x, y) of each landmark in canonical head coordinates (see the module docstring)."""
    t = layout(h)
    ex, ey, er = t["eye_cx"], t["eye_cy"], t["eye_r"]
    tip_y, tip_r = t["tip_cy"], t["tip_r"]
    smile = t["smile"]
    half = 1.0 / t["slit_ix"]  # the slit ellipsoid's x semi-axis
    ym = t["slit_cy"] + smile * half * half  # the lips are drawn at y + smile·x²
    return {
        "eye_l_outer": (-(ex + er), ey), "eye_l_inner": (-(ex - er), ey),
        "eye_r_inner": (ex - er, ey), "eye_r_outer": (ex + er, ey),
        "nose_tip": (0.0, tip_y), "nose_base": (0.0, tip_y - tip_r),
        "mouth_l": (-half, ym), "mouth_r": (half, ym),
    }


def head_transform(h: HeadParams) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) with world = A · canonical + b (the inverse of ``sdf.to_head``)."""
    s = HEAD_SCALE * h.head_scale
    roll, nod = math.radians(h.head_roll_deg), math.radians(h.head_nod_deg)
    rz = np.array([[math.cos(roll), -math.sin(roll), 0], [math.sin(roll), math.cos(roll), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(nod), math.sin(nod)], [0, -math.sin(nod), math.cos(nod)]])
    a = s * (rz @ rx)
    pivot = np.asarray(PIVOT)
    return a, pivot - a @ pivot


def surface_points(h: HeadParams, xy: np.ndarray, steps: int = 80) -> np.ndarray:
    """World points where rays along the head's −z axis through canonical (x, y) first meet the skin."""
    a, b = head_transform(h)
    start = np.concatenate([xy, np.full((len(xy), 1), 0.45)], axis=1)
    origin = torch.from_numpy(start @ a.T + b).float()
    direction = torch.from_numpy(a @ np.array([0.0, 0.0, -1.0])).float()
    direction = direction / direction.norm()
    t = torch.zeros(len(xy))
    for _ in range(steps):
        d = head_sdf(h, origin + t[:, None] * direction)
        t = t + d.clamp_min(2e-4)
        if bool((d.abs() < 1e-5).all()):
            break
    return (origin + t[:, None] * direction).numpy().astype(np.float64)


def derive(count: int, seed: int) -> dict[str, np.ndarray]:
    """Mean world position of every landmark over ``count`` bare heads of data set ``seed``."""
    acc = np.zeros((len(NAMES), 3))
    for i in range(count):
        h = bare(sample_head(seed, i))
        pts = canonical_points(h)
        acc += surface_points(h, np.array([pts[n] for n in NAMES]))
    mean = acc / count
    out = {n: mean[k] for k, n in enumerate(NAMES)}
    # Symmetrise: average each left/right pair with its mirror image; midline points get x = 0.
    for left, right in (("eye_l_outer", "eye_r_outer"), ("eye_l_inner", "eye_r_inner"), ("mouth_l", "mouth_r")):
        m = 0.5 * (out[right] + out[left] * np.array([-1.0, 1.0, 1.0]))
        out[right], out[left] = m, m * np.array([-1.0, 1.0, 1.0])
    for mid in ("nose_tip", "nose_base"):
        out[mid] = out[mid] * np.array([0.0, 1.0, 1.0])
    return out


def render_module(points: dict[str, np.ndarray], count: int, seed: int) -> str:
    rows = "\n".join(f"    \"{n}\": ({p[0]:.5f}, {p[1]:.5f}, {p[2]:.5f})," for n, p in points.items())
    return f'''# SPDX-License-Identifier: GPL-3.0-or-later
"""3D face landmarks of the synthetic heads (the bundled model's data), in generator world units.

Generated by ``tools/face_template.py`` (do not edit by hand; rerun the script after changing the head
geometry): the mean over {count} heads of data set seed {seed} (hair, glasses, hats and beards removed), made
left-right symmetric. World frame of the generator: y up, the face looks towards +z, a frontal camera sees
world −x on the image's left ("_l" = image-left in a frontal view). No eye centres: a photo's are the
corners' midpoints, which add nothing. The framing (:mod:`backend.invert.align`) and the pose prior
(:mod:`backend.invert.face_pose`) fit these to a photo's 2D landmarks.
"""

HEADS_TEMPLATE: dict[str, tuple[float, float, float]] = {{
{rows}
}}
HEADS_TEMPLATE_SOURCE = {{"script": "tools/face_template.py", "heads": {count}, "seed": {seed}}}
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", type=int, default=48, help="heads to average (default 48)")
    ap.add_argument("--seed", type=int, default=1, help="data set seed (the bundled model's: 1)")
    ap.add_argument("--check", action="store_true", help="only check that the committed table is current")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    text = render_module(derive(args.heads, args.seed), args.heads, args.seed)
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        print("up to date" if current == text else f"{args.out} is stale: rerun tools/face_template.py")
        return 0 if current == text else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
