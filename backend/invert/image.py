# SPDX-License-Identifier: GPL-3.0-or-later
"""Photo input: reading any image file, an optional foreground mask, and the crop to the model's framing.

The face front end (:mod:`backend.invert.frontend`, with the ``face`` extra) frames from facial landmarks
and hands its crop in as a :class:`CropBox`. This module also holds the landmark-free framing, used without
the extra or with ``--align none``: the skin-coloured face (:func:`find_face`), or a foreground mask (the
image's alpha channel, a user mask, or OpenCV's GrabCut, which needs no weights) and a rule measured on the
synthetic training data: the top of the head sits ``HEAD_TOP`` of the crop below its top edge, and the head
(the mask's width over the top ``HEAD_BAND`` of the crop) spans ``HEAD_WIDTH`` of the crop, centred. That is
no landmark alignment (spec §6: inversion is sensitive to it), so the crop is always shown
(``crop_preview``) and can be given by hand (``CropBox``), and already framed images can skip it
(``crop='full'``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from backend.errors import Aware3DError

MIN_SIDE = 32  # smaller photos carry too little to invert
MAX_PIXELS = 80_000_000  # refuse decompression bombs before decoding
# Framing of the synthetic training heads (frontal test views of data/heads64_test.zip, 40 heads):
HEAD_TOP = 0.03  # top of the head below the crop's top edge, in crop sizes
HEAD_WIDTH = 0.64  # head width over the top band, in crop sizes
HEAD_BAND = 0.45  # height of that band, in crop sizes
# Framing of the face (cheek to cheek) in the same data: the face is about 0.29 world units wide and the view
# at the pivot 2.5 / 4.2647 = 0.59 units (backend.cameras.METRES_PER_UNIT), and it is centred.
FACE_WIDTH = 0.5
FACE_CENTRE_Y = 0.5
MASK_HINT = "give a mask with --mask, or pass --crop X,Y,SIZE"


@dataclass
class Photo:
    """A decoded photo: RGB uint8 [H, W, 3] and, for RGBA files, the alpha as float [H, W] in [0, 1]."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    name: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(frozen=True)
class CropBox:
    """A square crop in source pixels (may extend past the photo's edges: those pixels are padded).

    ``angle`` (degrees) turns the square about its centre: its x axis points along (cos a, sin a) in the
    photo (y down, so positive is clockwise on screen); a landmark-aligned crop uses the eye line's angle so
    that the eyes come out level. ``stretch`` scales the photo's x axis before cropping (1: none): (x, y,
    size) are then in the stretched photo's pixels; the face detector sets it when a face was only found in
    a horizontally stretched copy (the photo's aspect ratio was wrong).
    """

    x: float
    y: float
    size: float
    angle: float = 0.0
    stretch: float = 1.0

    def to_list(self) -> list[float]:
        return [round(self.x, 2), round(self.y, 2), round(self.size, 2)]

    def to_dict(self) -> dict[str, float]:
        return {"x": round(self.x, 2), "y": round(self.y, 2), "size": round(self.size, 2),
                "angle_deg": round(self.angle, 3), "stretch": round(self.stretch, 4)}

    @property
    def centre(self) -> tuple[float, float]:
        """The centre in photo pixels."""
        return (self.x + self.size / 2) / self.stretch, self.y + self.size / 2

    def photo_to_crop(self, resolution: float = 1.0) -> np.ndarray:
        """2×3 affine: continuous photo coordinates → continuous crop coordinates (0..resolution)."""
        a = np.radians(self.angle)
        c, s = np.cos(a), np.sin(a)
        k = resolution / self.size
        cx, cy = self.x + self.size / 2, self.y + self.size / 2
        rot = np.array([[c, s], [-s, c]]) * k
        lin = rot @ np.diag([self.stretch, 1.0])
        return np.concatenate([lin, (resolution / 2 - rot @ np.array([cx, cy]))[:, None]], axis=1)

    def corners(self) -> np.ndarray:
        """The crop's four corners in photo pixels [4, 2] (top-left, top-right, bottom-right, bottom-left)."""
        m = self.photo_to_crop()
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        q = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float64)
        return q @ inv.T

    @classmethod
    def parse(cls, text: str) -> CropBox:
        try:
            x, y, s = (float(v) for v in text.split(","))
        except ValueError:
            raise Aware3DError(f"cannot read crop {text!r}", "use X,Y,SIZE in photo pixels, 'auto' or 'full'") \
                from None
        if not s > 0:  # NaN too
            raise Aware3DError(f"crop size must be positive, got {s}", "use X,Y,SIZE in photo pixels")
        from backend.validate import within

        x, y, s = (within("crop_coordinate", v, f"crop {k}", "use X,Y,SIZE in photo pixels")
                   for k, v in zip(("X", "Y", "SIZE"), (x, y, s)))
        return cls(x, y, s)


@dataclass
class Framed:
    """The photo cut to the model's framing: the generator's target and what was done to get it."""

    image: torch.Tensor  # [1, 3, R, R] in [−1, 1]
    mask: torch.Tensor | None  # [1, 1, R, R] soft foreground in [0, 1], when known
    box: CropBox
    method: str  # 'face' (landmarks), 'ffhq' (EG3D's recipe), 'auto' (mask), 'auto-face' (skin), 'full',
    #              'given', 'fallback-centre'
    note: str = ""

    def uint8(self) -> np.ndarray:
        return ((self.image[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def _decode(data: bytes, name: str) -> Photo:
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)  # phone photos carry their rotation in EXIF
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray(np.clip(arr / max(arr.max(), 1.0) * 255, 0, 255).astype(np.uint8))
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            rgba = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise Aware3DError(f"{name} is not an image Aware3D can read ({type(exc).__name__})",
                           "use a PNG, JPEG, WebP, BMP or TIFF photo") from None
    except Image.DecompressionBombError:
        raise Aware3DError(f"{name} is too large (more than {MAX_PIXELS // 1_000_000} megapixels)",
                           "resize it first") from None
    rgb = np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3].astype(np.float32) / 255 if has_alpha else None
    return Photo(rgb, alpha, name)


def load_photo(source: str | os.PathLike[str] | np.ndarray, name: str | None = None) -> Photo:
    """Read and check a photo: any format Pillow knows, any size ≥ 32 px, RGB/RGBA/grey/16-bit.

    ``source`` may also be an array (H×W×3 or H×W×4 uint8, RGB order). Errors are one-line
    ``Aware3DError``s: missing file, not an image, too small, or empty (a single flat colour).
    """
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise Aware3DError(f"an image array must be H×W×3 or H×W×4, got shape {arr.shape}", "")
        if arr.dtype != np.uint8:
            arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        photo = Photo(np.ascontiguousarray(arr[..., :3]),
                      arr[..., 3].astype(np.float32) / 255 if arr.shape[2] == 4 else None, name or "image")
    else:
        path = Path(source)
        if not path.exists():
            raise Aware3DError(f"photo not found: {path}", "check the path")
        if path.is_dir():
            raise Aware3DError(f"{path} is a folder, not a photo", "give an image file")
        data = path.read_bytes()
        if not data:
            raise Aware3DError(f"{path.name} is empty (0 bytes)", "give an image file")
        photo = _decode(data, name or path.name)
    w, h = photo.size
    if min(w, h) < MIN_SIDE:
        raise Aware3DError(f"{photo.name} is too small ({w}×{h} pixels)",
                           f"use a photo at least {MIN_SIDE} pixels on each side (ideally 256 or more)")
    if photo.alpha is not None and photo.alpha.max() < 0.05:
        raise Aware3DError(f"{photo.name} is fully transparent", "give a photo with visible pixels")
    if int(photo.rgb.max()) - int(photo.rgb.min()) < 3:
        raise Aware3DError(f"{photo.name} is empty: every pixel has the same colour", "give a photo of a head")
    return photo


def load_mask(path: str | os.PathLike[str], photo: Photo) -> np.ndarray:
    """A user mask (any image; white = head) resized to the photo, as float [H, W] in [0, 1]."""
    import cv2

    m = load_photo(path, Path(path).name) if Path(path).exists() else None
    if m is None:
        raise Aware3DError(f"mask not found: {path}", "check the path")
    grey = (m.alpha if m.alpha is not None and m.alpha.min() < 0.99 else m.rgb.mean(axis=2) / 255).astype(np.float32)
    w, h = photo.size
    if grey.shape != (h, w):
        grey = cv2.resize(grey, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(grey, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------------
# Foreground and framing
# --------------------------------------------------------------------------------------------------------


def estimate_mask(photo: Photo, iterations: int = 4, box: CropBox | None = None) -> np.ndarray:
    """A soft foreground mask by GrabCut (weight-free), initialised with ``box`` (the crop, clipped to the
    photo, where the head fills most of the rectangle) or else the photo minus a 4 % border.

    Runs on a copy at most 320 px on its long side (GrabCut is slow) and is resized back.
    """
    import cv2

    if photo.alpha is not None and photo.alpha.min() < 0.5:
        return photo.alpha.copy()
    w, h = photo.size
    scale = min(1.0, 320 / max(w, h))
    small = cv2.resize(photo.rgb, (max(8, round(w * scale)), max(8, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else photo.rgb
    sh, sw = small.shape[:2]
    mx, my = max(1, round(0.04 * sw)), max(1, round(0.04 * sh))
    rect = (mx, my, sw - 2 * mx, sh - 2 * my)
    if box is not None:
        corners = box.corners()
        (bx0, by0), (bx1, by1) = corners.min(axis=0), corners.max(axis=0)
        x0, y0 = max(1, round(bx0 * sw / w)), max(1, round(by0 * sh / h))
        x1, y1 = min(sw - 1, round(bx1 * sw / w)), min(sh - 1, round(by1 * sh / h))
        if x1 - x0 > 4 and y1 - y0 > 4:
            rect = (x0, y0, x1 - x0, y1 - y0)
    mask = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(small[..., ::-1])
    try:
        cv2.grabCut(bgr, mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return np.ones((h, w), np.float32)
    fg = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    # Keep the largest component and fill its holes: eyes and mouth are often labelled background.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n > 1:
        keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = (labels == keep).astype(np.uint8)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(fg)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    soft = cv2.GaussianBlur(filled.astype(np.float32), (0, 0), max(0.5, 1.0 * sw / 256))
    return np.clip(cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def find_face(photo: Photo) -> tuple[float, float, float] | None:
    """(centre x, centre y, width) of the most face-like skin-coloured region, or None.

    Weight-free: Chai & Ngan's YCrCb skin box (Cr 133–173, Cb 77–127), tightened to Cr ≥ 136 and Cr − Cb ≥ 28
    so that beige walls and brown hair drop out (very dark skin may then be missed: use --crop), opened and
    hole-filled; the
    component with the best area × compactness among those shaped like a face (taller than wide, at least
    0.2 % of the picture) wins. Its width and centre are taken at its widest rows (the cheeks and ears), so
    a neck of the same colour below does not move them.
    """
    import cv2

    w, h = photo.size
    scale = min(1.0, 400 / max(w, h))
    small = cv2.resize(photo.rgb, (max(8, round(w * scale)), max(8, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else photo.rgb
    ycc = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2YCrCb)
    y_, cr, cb = (ycc[..., i].astype(np.int16) for i in range(3))
    skin = ((cr >= 136) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (cr - cb >= 28) & (y_ > 40)).astype(np.uint8)
    k = max(3, round(min(small.shape[:2]) / 80) | 1)
    skin = cv2.morphologyEx(skin, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(skin, connectivity=8)
    best, best_score = None, 0.0
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        if area < 0.002 * skin.size or not 0.8 <= bh / max(bw, 1) <= 3.0:
            continue
        comp = (labels[y : y + bh, x : x + bw] == i).astype(np.uint8)
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        filled = np.zeros_like(comp)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        fill = filled.sum() / float(bw * bh)
        if fill < 0.45:
            continue
        score = float(filled.sum()) * fill
        if score > best_score:
            best_score, best = score, (x, y, filled)
    if best is None:
        return None
    x, y, filled = best
    rows = [(r, np.nonzero(row)[0]) for r, row in enumerate(filled) if row.any()]
    widths = np.array([c[-1] - c[0] + 1 for _, c in rows])
    top = np.argsort(widths)[-max(1, len(widths) // 5):]
    width = float(np.median(widths[top]))
    cx = float(np.mean([(rows[i][1][0] + rows[i][1][-1] + 1) / 2 for i in top])) + x
    cy = float(np.mean([rows[i][0] + 0.5 for i in top])) + y
    return cx / scale, cy / scale, width / scale


def frame_from_face(face: tuple[float, float, float]) -> CropBox:
    cx, cy, width = face
    size = width / FACE_WIDTH
    return CropBox(cx - size / 2, cy - FACE_CENTRE_Y * size, size)


def frame_from_mask(mask: np.ndarray, iterations: int = 12) -> CropBox | None:
    """The square crop that frames the masked head like the training data, or None if the mask is unusable."""
    fg = mask > 0.5
    area = fg.mean()
    if area < 0.01 or area > 0.97:
        return None
    rows = np.nonzero(fg.any(axis=1))[0]
    top = int(rows[0])
    # Start from the crown (the top tenth of the figure) and grow: the band's width can only increase as the
    # band does, so the iteration climbs to the head's width and stops before the shoulders.
    size = max(4.0, (rows[-1] - top + 1) * 0.1 / HEAD_BAND)
    cx = 0.0
    for _ in range(iterations):
        band = fg[top : top + max(2, round(HEAD_BAND * size))]
        if not band.any():
            return None
        # Row-wise extents are more robust to stray pixels than the band's union: take the widest 10 %.
        spans = [(np.nonzero(r)[0][0], np.nonzero(r)[0][-1] + 1) for r in band if r.any()]
        widths = np.array([b - a for a, b in spans])
        k = max(1, len(widths) // 10)
        widest = np.argsort(widths)[-k:]
        new = float(np.median(widths[widest])) / HEAD_WIDTH
        cx = float(np.median([(spans[i][0] + spans[i][1]) / 2 for i in widest]))
        if abs(new - size) < 0.5:
            size = new
            break
        size = new
    return CropBox(cx - size / 2, top - HEAD_TOP * size, size)


def _affine(box: CropBox, resolution: int, shrink: int) -> np.ndarray:
    """Pixel-index affine map from a photo shrunk ``shrink``× to the crop (pixel j spans [j, j+1))."""
    m = box.photo_to_crop(resolution)
    lin = m[:, :2] * shrink
    return np.concatenate([lin, (m[:, 2] + lin @ np.array([0.5, 0.5]) - 0.5)[:, None]], axis=1)


def crop_photo(photo: Photo, box: CropBox, resolution: int, mask: np.ndarray | None = None,
               matte: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut ``box`` out of the photo (edge-replicated where it leaves the photo) and resize to ``resolution``².

    With ``matte`` (sRGB 0..1) the background outside the mask is replaced by that flat colour, which is what
    the synthetic training backgrounds look like. Returns (uint8 [R, R, 3], mask [R, R] or None).
    """
    import cv2

    scale = resolution / box.size * min(1.0, box.stretch)
    # Shrinking: area-average by an integer factor first (warpAffine has no area filter), then place exactly.
    f = max(1, int(1 / scale)) if scale < 1 else 1
    src = photo.rgb if f == 1 else cv2.resize(photo.rgb, (max(1, photo.rgb.shape[1] // f),
                                                          max(1, photo.rgb.shape[0] // f)),
                                              interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_LINEAR
    img = cv2.warpAffine(src, _affine(box, resolution, f), (resolution, resolution), flags=interp,
                         borderMode=cv2.BORDER_REPLICATE)
    cm = None
    if mask is not None:
        msrc = mask.astype(np.float32)
        if f > 1:
            msrc = cv2.resize(msrc, (src.shape[1], src.shape[0]), interpolation=cv2.INTER_AREA)
        cm = cv2.warpAffine(msrc, _affine(box, resolution, f), (resolution, resolution), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        cm = np.clip(cm, 0.0, 1.0)
        if matte is not None:
            bg = np.array(matte, dtype=np.float32) * 255
            img = (img.astype(np.float32) * cm[..., None] + bg * (1 - cm[..., None])).round().clip(0, 255)
            img = img.astype(np.uint8)
    return img, cm


def frame_photo(photo: Photo, resolution: int, crop: str | CropBox = "auto", mask: np.ndarray | None = None,
                auto_mask: bool = False, matte: tuple[float, float, float] | None = None,
                label: str = "given") -> Framed:
    """Photo → the generator's target image (and mask), by the rule in the module docstring.

    ``crop``: 'auto' (from the mask when one is known, else from the skin-coloured face, else from a GrabCut
    mask), 'full' (the photo is already framed: a centred square of its short side), or a :class:`CropBox`
    (``label`` names where it came from: 'given', or 'face'/'ffhq' from :mod:`backend.invert.frontend`,
    which frames from facial landmarks). ``auto_mask`` estimates a mask even for 'full'/given crops (for
    the matte).
    """
    if photo.alpha is not None and mask is None and photo.alpha.min() < 0.99:
        mask = photo.alpha
        if matte is None:
            matte = (0.6, 0.6, 0.6)  # transparent pixels have no colour: use a neutral grey
    note = ""
    method = label
    if isinstance(crop, CropBox):
        box = crop
    elif crop == "full":
        w, h = photo.size
        s = min(w, h)
        box, method = CropBox((w - s) / 2, (h - s) / 2, s), "full"
    elif crop == "auto":
        found = None
        if mask is not None:
            found = frame_from_mask(mask)
        else:
            face = find_face(photo)
            if face is not None:
                found = frame_from_face(face)
                method = "auto-face"
            else:
                mask = estimate_mask(photo)
                found = frame_from_mask(mask)
        if found is None:
            w, h = photo.size
            s = min(w, h)
            box, method = CropBox((w - s) / 2, 0.0 if h > w else (h - s) / 2, s), "fallback-centre"
            note = f"no head found: used a centred square ({MASK_HINT})"
        else:
            box = found
            method = method if method == "auto-face" else "auto"
    else:
        raise Aware3DError(f"unknown crop {crop!r}", "use auto, full or X,Y,SIZE")
    if mask is None and auto_mask:
        mask = estimate_mask(photo, box=box if method != "full" else None)
    if box.size < MIN_SIDE / 2:
        raise Aware3DError(f"the crop is only {box.size:.0f} pixels wide", "use a larger photo or crop")
    img, cm = crop_photo(photo, box, resolution, mask, matte)
    image = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    mt = None if cm is None else torch.from_numpy(cm)[None, None].float()
    return Framed(image, mt, box, method, note)


def crop_preview(photo: Photo, framed: Framed, max_side: int = 512, landmarks: np.ndarray | None = None,
                 face_box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """The photo (shrunk to ``max_side``) with the crop drawn (and the detected face's box and landmarks,
    when given), and the framed result inset: uint8 RGB."""
    import cv2

    w, h = photo.size
    s = min(1.0, max_side / max(w, h))
    view = cv2.resize(photo.rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    view = np.ascontiguousarray(view)
    thick = max(1, round(max(view.shape[:2]) / 200))
    if face_box is not None:
        cv2.rectangle(view, (round(face_box[0] * s), round(face_box[1] * s)),
                      (round(face_box[2] * s), round(face_box[3] * s)), (0, 220, 90), thick)
    if landmarks is not None:
        for x, y in np.asarray(landmarks) * s:
            cv2.circle(view, (round(x), round(y)), max(1, thick), (255, 40, 40), -1)
    quad = np.round(framed.box.corners() * s).astype(np.int32)
    cv2.polylines(view, [quad.reshape(-1, 1, 2)], True, (255, 200, 0), thick)
    inset = framed.uint8()
    side = max(32, view.shape[0])
    inset = cv2.resize(inset, (side, side), interpolation=cv2.INTER_NEAREST)
    out = np.full((max(view.shape[0], side), view.shape[1] + side + 4, 3), 32, np.uint8)
    out[: view.shape[0], : view.shape[1]] = view
    out[:side, view.shape[1] + 4 :] = inset
    return out
