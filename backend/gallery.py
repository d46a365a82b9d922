# SPDX-License-Identifier: GPL-3.0-or-later
"""Seed gallery: a page of fast thumbnails, one per seed, to pick a head by looking before making its mesh.

Why a function of its own rather than ``sample``: a gallery page must come back in about a second, so a
thumbnail is one render from the frontal camera with no depth or camera files, at the model's neural rendering
resolution (``image="raw"``: the volume render, no super-resolution) or, where the model's super-resolution is
cheap (64² for the bundled model, ~10 % more time), the final image (``image="final"``, the default).

A thumbnail is a pure function of (model, seed, truncation): the latent comes from :func:`make_latent` exactly
as the mesh operation makes it, so "generate this one" with the same seed and truncation gives the head the
thumbnail shows. Pages are seed ranges: page ``p`` of ``n`` thumbnails from ``start`` holds seeds
``start + p·n … start + p·n + n − 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label, make_latent, to_uint8
from backend.validate import SEED_MAX, bounded_int

ImageKind = Literal["final", "raw"]
IMAGE_KINDS: tuple[str, ...] = ("final", "raw")
DEFAULT_COUNT = 8


def page_seeds(start: int, page: int, count: int = DEFAULT_COUNT) -> list[int]:
    """The seeds of page ``page`` (0-based) of ``count`` thumbnails from ``start``; refused in one line when
    any of them would leave the seed range (checked before anything is rendered)."""
    first = start + page * count
    if first < 0 or first + count - 1 > SEED_MAX:
        raise Aware3DError(f"page {page} of {count} seeds from {start} leaves the seed range 0…{SEED_MAX}",
                           "use a smaller start seed or page")
    return list(range(first, first + count))


def check_image_kind(kind: str) -> ImageKind:
    if kind not in IMAGE_KINDS:
        raise Aware3DError(f"unknown thumbnail image {kind!r}", f"use one of {', '.join(IMAGE_KINDS)}")
    return kind  # type: ignore[return-value]


def render_thumbnail(G: TriPlaneGenerator, seed: int, truncation: float = 0.7, image: ImageKind = "final",
                     yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """One seed's thumbnail as uint8 [H, W, 3]: ``final`` is the model's output image, ``raw`` the volume
    render at the neural rendering resolution (super-resolution skipped)."""
    latent = make_latent(G, seed, truncation)
    label = camera_label(G.cfg, yaw, pitch)
    c = torch.from_numpy(np.asarray(label, dtype=np.float32))[None].to(latent.ws.device)
    with torch.no_grad():
        out = G.render(latent.planes, latent.ws, c, sampling=SamplingSettings(seed=seed),
                       run_sr="auto" if image == "final" else False)
    return to_uint8(out["image" if image == "final" else "image_raw"][0])


def render_page(G: TriPlaneGenerator, seeds: list[int], truncation: float = 0.7, image: ImageKind = "final",
                on_thumbnail: Callable[[int, int, np.ndarray], None] | None = None) -> list[np.ndarray]:
    """Thumbnails of ``seeds`` in order; ``on_thumbnail(k, seed, pixels)`` after each one (the server writes
    the PNG, reports progress and checks for a cancel there, so a cancel waits for one thumbnail at most)."""
    thumbs = []
    for k, seed in enumerate(seeds):
        px = render_thumbnail(G, seed, truncation, image)
        thumbs.append(px)
        if on_thumbnail is not None:
            on_thumbnail(k, seed, px)
    return thumbs


def contact_sheet(thumbs: list[np.ndarray], columns: int = 4, pad: int = 2, scale: int = 1,
                  background: int = 32) -> np.ndarray:
    """Thumbnails in a grid (row-major, as the panel shows them), ``scale``× nearest-neighbour enlarged so
    that a 64² page stays readable in the docs."""
    if not thumbs:
        raise Aware3DError("no thumbnails for a contact sheet", "render a page first")
    columns = bounded_int(columns, 1, 64, "columns")
    tiles = [np.repeat(np.repeat(t, scale, 0), scale, 1) for t in thumbs]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), background, np.uint8)
    for k, tile in enumerate(tiles):
        r, col = divmod(k, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        sheet[y:y + h, x:x + w] = tile[:h, :w, :3]
    return sheet
