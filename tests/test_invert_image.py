# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo input: reading any image file with clear errors, masks, framing and the crop preview."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.errors import Aware3DError
from backend.invert.demo_photo import compose_photo, write_photo
from backend.invert.image import (
    HEAD_TOP,
    HEAD_WIDTH,
    CropBox,
    crop_photo,
    crop_preview,
    estimate_mask,
    find_face,
    frame_from_mask,
    frame_photo,
    load_mask,
    load_photo,
)


def _noise_image(h: int = 80, w: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "bmp", "tiff"])
def test_reads_common_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"p.{fmt}"
    Image.fromarray(_noise_image()).save(path)
    photo = load_photo(path)
    assert photo.size == (120, 80) and photo.rgb.dtype == np.uint8 and photo.alpha is None


def test_reads_rgba_grey_16bit_and_exif_rotation(tmp_path: Path) -> None:
    rgba = np.dstack([_noise_image(), np.full((80, 120), 255, np.uint8)])
    rgba[:, :30, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    p = load_photo(tmp_path / "a.png")
    assert p.alpha is not None and p.alpha[:, :30].max() == 0 and p.alpha[:, 40:].min() == 1
    Image.fromarray(_noise_image()[..., 0]).save(tmp_path / "g.png")
    assert load_photo(tmp_path / "g.png").rgb.shape == (80, 120, 3)
    cv2.imwrite(str(tmp_path / "d.png"), (np.random.default_rng(1).random((64, 64)) * 65535).astype(np.uint16))
    assert load_photo(tmp_path / "d.png").rgb.max() > 200
    im = Image.fromarray(_noise_image())
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90°: a portrait phone photo stored sideways
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_photo(tmp_path / "r.jpg").size == (80, 120)


@pytest.mark.parametrize("case,needle", [
    ("missing", "not found"), ("folder", "folder"), ("empty", "empty (0 bytes)"), ("text", "not an image"),
    ("small", "too small"), ("flat", "same colour"), ("transparent", "transparent"),
])
def test_bad_input_gets_a_clear_error(tmp_path: Path, case: str, needle: str) -> None:
    path = tmp_path / "photo.png"
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a picture")
    elif case == "small":
        Image.fromarray(_noise_image(20, 200)).save(path)
    elif case == "flat":
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    elif case == "transparent":
        Image.fromarray(np.zeros((64, 64, 4), np.uint8), "RGBA").save(path)
    with pytest.raises(Aware3DError) as exc:
        load_photo(path)
    assert needle in exc.value.message and "\n" not in exc.value.one_line()


def test_full_crop_of_a_framed_image_is_the_identity(tmp_path: Path) -> None:
    img = _noise_image(64, 64)
    photo = load_photo(img)
    framed = frame_photo(photo, 64, "full")
    assert framed.method == "full" and framed.box == CropBox(0.0, 0.0, 64)
    assert np.abs(framed.uint8().astype(int) - img.astype(int)).max() <= 1
    # Downscaling by an exact factor is an area average; a crop past the edges is edge-padded.
    big = np.repeat(np.repeat(img, 2, 0), 2, 1)
    down, _ = crop_photo(load_photo(big), CropBox(0, 0, 128), 64)
    assert np.abs(down.astype(int) - img.astype(int)).max() <= 1
    out, _ = crop_photo(photo, CropBox(-32, 0, 128), 64)
    assert (out[:, :16] == out[:, :1]).all()


def test_framing_rule_reproduces_the_training_framing() -> None:
    """A mask with a head of the training data's proportions maps back to the full frame."""
    s = 200
    mask = np.zeros((400, 500), np.float32)
    cx, top = 260.0, 50.0
    yy, xx = np.mgrid[:400, :500]
    rx = HEAD_WIDTH * s / 2
    head = ((xx - cx) / rx) ** 2 + ((yy - (top + 0.4 * s)) / (0.4 * s)) ** 2 < 1
    mask[head] = 1.0
    mask[int(top + 0.7 * s):, int(cx - 0.8 * s):int(cx + 0.8 * s)] = 1.0  # shoulders below the band
    box = frame_from_mask(mask)
    assert box is not None
    assert abs(box.size - s) < 0.06 * s and abs(box.x + box.size / 2 - cx) < 3
    assert abs(box.y - (top - HEAD_TOP * box.size)) < 3
    assert frame_from_mask(np.zeros((50, 50), np.float32)) is None


def test_photograph_like_picture_is_framed_on_the_head(tmp_path: Path) -> None:
    """The composed photo: off-centre person on a textured wall with a window; the crop finds the face."""
    path = write_photo(tmp_path / "person.jpg")
    photo = load_photo(path)
    assert photo.size == (640, 480)
    face = find_face(photo)
    assert face is not None and 180 < face[0] < 280 and 150 < face[1] < 260  # the face is left of centre
    framed = frame_photo(photo, 64, "auto", auto_mask=True, matte=(0.6, 0.6, 0.6))
    assert framed.method == "auto-face" and framed.mask is not None
    b = framed.box
    assert b.x < face[0] < b.x + b.size and 150 < b.size < 350
    corner = framed.uint8()[:4, :4].reshape(-1, 3)
    assert np.abs(corner.astype(int) - 153).max() < 25  # the matte replaced the wall
    prev = crop_preview(photo, framed)
    assert prev.ndim == 3 and prev.shape[0] >= 64 and prev.shape[1] > 480


def test_masks_user_alpha_and_grabcut(tmp_path: Path) -> None:
    img = np.full((120, 160, 3), 40, np.uint8)
    cv2.ellipse(img, (80, 60), (30, 40), 0, 0, 360, (220, 170, 140), -1)
    photo = load_photo(img)
    m = estimate_mask(photo)
    assert m[60, 80] > 0.9 and m[5, 5] < 0.1
    Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "m.png")
    assert np.abs(load_mask(tmp_path / "m.png", photo) - m).max() < 0.01
    with pytest.raises(Aware3DError):
        load_mask(tmp_path / "nope.png", photo)
    rgba = np.dstack([img, (m * 255).astype(np.uint8)])
    framed = frame_photo(load_photo(rgba), 64, "auto")
    assert framed.mask is not None and framed.method == "auto"
    assert framed.uint8()[0, 0].tolist() == [153, 153, 153]  # transparent → neutral grey matte


def test_compose_photo_is_deterministic() -> None:
    a, b = compose_photo(seed=3), compose_photo(seed=3)
    assert a.shape == (480, 640, 3) and np.array_equal(a, b)


def test_crop_box_parsing() -> None:
    assert CropBox.parse("10,20.5,300") == CropBox(10.0, 20.5, 300.0)
    for bad in ("10,20", "a,b,c", "1,2,-3"):
        with pytest.raises(Aware3DError):
            CropBox.parse(bad)
