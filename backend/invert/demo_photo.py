# SPDX-License-Identifier: GPL-3.0-or-later
"""A photograph-like test picture of a person, composed with OpenCV (no photo can be downloaded here).

It is deliberately *not* a synthetic training head and not framed like one: a 4:3 landscape frame, the person
off-centre, a textured indoor background (wall, window, shelf), shoulders in a patterned shirt, a head with
shaded skin, hair with strands, eyes, brows, nose, mouth and ears, soft light from one side, sensor noise,
a slight blur and JPEG compression. Tests, the benchmark and docs/invert.md use it to check that a
non-synthetic picture goes through the whole pipeline (crop, pose, inversion, mesh) without errors. It says
nothing about quality on real photographs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _shade(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, light: np.ndarray, cx: float, cy: float,
           rx: float, ry: float) -> None:
    """Paint ``mask`` with ``colour`` lit like a rounded surface (Lambert on an ellipsoid) from ``light``."""
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    nx, ny = (xx - cx) / rx, (yy - cy) / ry
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0.02, 1))
    lam = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    shade = 0.35 + 0.75 * lam
    img[mask] = np.clip(colour[None] * shade[mask][:, None], 0, 255)


def compose_photo(width: int = 640, height: int = 480, seed: int = 7) -> np.ndarray:
    """An RGB uint8 [height, width, 3] picture of a person (see the module docstring)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    # Wall: warm gradient, plaster texture, a window with a bright sky and a shelf with objects.
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    img[:] = np.array([178, 164, 140])[None, None] * (0.85 + 0.25 * xx[..., None] / width)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 3)
    img += noise[..., None] * 10
    wx0, wx1, wy0, wy1 = int(0.62 * width), int(0.95 * width), int(0.08 * height), int(0.55 * height)
    img[wy0:wy1, wx0:wx1] = np.array([205, 225, 245]) + rng.normal(0, 4, (wy1 - wy0, wx1 - wx0, 3))
    cv2.rectangle(img, (wx0, wy0), (wx1, wy1), (90, 70, 50), 8)
    cv2.line(img, ((wx0 + wx1) // 2, wy0), ((wx0 + wx1) // 2, wy1), (90, 70, 50), 6)
    sy = int(0.7 * height)
    cv2.rectangle(img, (int(0.55 * width), sy), (width, sy + 12), (110, 80, 55), -1)
    for k in range(5):
        x0 = int(0.6 * width) + k * 45
        cv2.rectangle(img, (x0, sy - 40 - 8 * (k % 3)), (x0 + 28, sy), tuple(float(c) for c in rng.uniform(40, 200, 3)),
                      -1)
    # The person, left of centre: shoulders and shirt, neck, head, hair.
    cx, cy = 0.36 * width, 0.42 * height
    rx, ry = 0.105 * width, 0.19 * height
    light = np.array([-0.55, -0.35, 0.76])
    shirt = np.zeros((height, width), np.uint8)
    pts = np.array([[cx - 2.6 * rx, height], [cx - 2.2 * rx, cy + 1.55 * ry], [cx - 0.5 * rx, cy + 1.2 * ry],
                    [cx + 0.5 * rx, cy + 1.2 * ry], [cx + 2.2 * rx, cy + 1.55 * ry], [cx + 2.6 * rx, height]],
                   np.int32)
    cv2.fillPoly(shirt, [pts], 1)
    stripes = ((xx + 0.5 * yy) // 14 % 2).astype(np.float32)
    shirt_col = np.array([60, 90, 150]) * (0.8 + 0.3 * stripes[..., None])
    img[shirt > 0] = shirt_col[shirt > 0] * (0.9 + 0.1 * noise[shirt > 0][:, None])
    skin = np.array([222, 170, 140], np.float32)
    neck = np.zeros((height, width), bool)
    neck[int(cy + 0.6 * ry) : int(cy + 1.3 * ry), int(cx - 0.42 * rx) : int(cx + 0.42 * rx)] = True
    _shade(img, neck, skin * 0.85, light, cx, cy + ry, 0.6 * rx, 0.8 * ry)
    for side in (-1, 1):  # ears
        ear = ((xx - (cx + side * 0.98 * rx)) / (0.16 * rx)) ** 2 + ((yy - cy) / (0.22 * ry)) ** 2 < 1
        _shade(img, ear, skin * 0.95, light, cx + side * rx, cy, 0.3 * rx, 0.3 * ry)
    head = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
    _shade(img, head, skin, light, cx, cy, rx, ry)
    hair = head & (yy < cy - 0.25 * ry - 0.25 * ry * np.cos((xx - cx) / rx * 1.6))
    hair |= (((xx - cx) / (1.08 * rx)) ** 2 + ((yy - cy + 0.12 * ry) / (1.02 * ry)) ** 2 < 1) & (yy < cy - 0.3 * ry)
    strands = np.sin((xx - cx) * 0.9 + 3 * np.sin(yy * 0.05)) * 0.5 + 0.5
    hair_col = np.array([70, 45, 28]) * (0.7 + 0.5 * strands[..., None])
    img[hair] = hair_col[hair]
    # Face: brows, eyes, nose shadow, mouth.
    for side in (-1, 1):
        ex, ey = cx + side * 0.38 * rx, cy - 0.08 * ry
        cv2.ellipse(img, (int(ex), int(ey - 0.16 * ry)), (int(0.22 * rx), int(0.03 * ry)), 0, 0, 360, (60, 40, 30), -1)
        cv2.ellipse(img, (int(ex), int(ey)), (int(0.17 * rx), int(0.06 * ry)), 0, 0, 360, (240, 238, 235), -1)
        cv2.circle(img, (int(ex + 0.02 * rx), int(ey)), int(0.065 * rx), (70, 90, 60), -1)
        cv2.circle(img, (int(ex + 0.02 * rx), int(ey)), int(0.03 * rx), (15, 10, 10), -1)
    nose = np.array([[cx, cy], [cx - 0.1 * rx, cy + 0.3 * ry], [cx + 0.08 * rx, cy + 0.32 * ry]], np.int32)
    cv2.fillPoly(img, [nose], (170, 120, 95))
    cv2.ellipse(img, (int(cx), int(cy + 0.55 * ry)), (int(0.3 * rx), int(0.07 * ry)), 0, 0, 180, (150, 70, 70), -1)
    # Camera: slight defocus, vignetting, sensor noise; returned as JPEG-compressed pixels.
    img = cv2.GaussianBlur(img, (0, 0), 1.1)
    vignette = 1 - 0.25 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2) * 2
    img = img * vignette[..., None] + rng.normal(0, 5, img.shape)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 72])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def write_photo(path: str | os.PathLike[str], width: int = 640, height: int = 480, seed: int = 7) -> Path:
    """Write :func:`compose_photo` as a JPEG (quality 72) and return the path."""
    import cv2

    from backend.fileio import write_bytes

    rgb = compose_photo(width, height, seed)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 72])
    if not ok:
        raise OSError("could not encode the JPEG")
    out = Path(path)
    write_bytes(out, buf.tobytes())
    return out
