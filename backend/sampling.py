"""Sampling heads: seeds → latents → images, raw renders and depth from chosen cameras.

Seeds map to latents exactly as the official scripts do (``np.random.RandomState(seed).randn(1, z_dim)``),
and the mapping network is conditioned on the model's average (frontal) camera, so a converted official
checkpoint gives the official scripts' heads for the same seeds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from backend import cameras
from backend.config import GeneratorConfig
from backend.errors import Aware3DError
from backend.generator import TriPlaneGenerator
from backend.render.renderer import Kernels, SamplingSettings
from backend.validate import SEED_MAX


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def camera_label(
    cfg: GeneratorConfig,
    yaw: float = 0.0,
    pitch: float = 0.0,
    focal: float | None = None,
    fov: float | None = None,
    radius: float | None = None,
) -> np.ndarray:
    """A 25-value label for a camera orbiting the model's pivot (angles in degrees)."""
    if focal is not None and fov is not None:
        raise Aware3DError("give either a focal length or a field of view, not both", "drop --focal or --fov")
    if fov is not None:
        if not 0 < fov < 180:
            raise Aware3DError(f"field of view must be between 0 and 180 degrees, got {fov}",
                               "e.g. --fov 13.37 for the FFHQ camera")
        focal = cameras.fov_to_focal(fov)
    focal = cfg.rendering.focal if focal is None else focal
    if focal <= 0:
        raise Aware3DError(f"focal length must be positive, got {focal}", "e.g. --focal 4.2647")
    r = cfg.rendering
    c2w = cameras.orbit_camera(yaw, pitch, radius=radius or r.avg_camera_radius, lookat=r.avg_camera_pivot)
    return cameras.make_label(c2w, focal)


def conditioning_label(cfg: GeneratorConfig) -> np.ndarray:
    """The camera the mapping network is conditioned on: frontal, at the average radius and pivot."""
    return camera_label(cfg)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [−1, 1] → H×W×3 uint8 (the official rounding: clamp(x·127.5 + 128))."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@dataclass
class View:
    image: np.ndarray   # H×W×3 uint8, final (SR or direct) image
    raw: np.ndarray     # h×w×3 uint8, the neural render before super-resolution
    depth: np.ndarray   # h×w float32, distance along the unit ray in world units
    alpha: np.ndarray   # h×w float32, accumulated opacity
    label: np.ndarray   # 25 float32


@dataclass
class Latent:
    seed: int | None
    ws: torch.Tensor
    planes: list[torch.Tensor]


def make_latent(
    G: TriPlaneGenerator, seed: int, truncation: float = 0.7, noise_mode: str = "const",
    kernels: Kernels = "fast",
) -> Latent:
    """Map a seed to ws and compute its tri-planes once (they are reused for every view).

    ``kernels='reference'`` is ``--exact``: the official arithmetic op for op.
    """
    device = next(G.parameters()).device
    cfg = G.cfg
    z = z_from_seed(seed, cfg.z_dim).to(device)
    c = torch.from_numpy(conditioning_label(cfg))[None].to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(z, c, truncation_psi=truncation)
        planes = G.synthesize_planes(ws, noise_mode=noise_mode, generator=gen,  # type: ignore[arg-type]
                                     kernels=kernels)
    return Latent(seed, ws, planes)


def render_view(
    G: TriPlaneGenerator,
    latent: Latent,
    label: np.ndarray,
    resolution: int | None = None,
    sampling: SamplingSettings | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> View:
    device = latent.ws.device
    c = torch.from_numpy(np.asarray(label, dtype=np.float32))[None].to(device)
    if sampling is None:
        sampling = SamplingSettings(seed=latent.seed if latent.seed is not None else 0)
    with torch.no_grad():
        out = G.render(latent.planes, latent.ws, c, resolution=resolution, sampling=sampling,
                       on_progress=on_progress)
    return View(
        image=to_uint8(out["image"][0]),
        raw=to_uint8(out["image_raw"][0]),
        depth=out["image_depth"][0, 0].float().cpu().numpy(),
        alpha=out["image_alpha"][0, 0].float().cpu().numpy(),
        label=np.asarray(label, dtype=np.float32),
    )


def orbit_labels(
    cfg: GeneratorConfig, frames: int, yaw_range: float = 30.0, pitch_range: float = 10.0,
    focal: float | None = None, fov: float | None = None,
) -> list[np.ndarray]:
    """A closed loop of cameras: yaw = A·sin(2πt), pitch = B·cos(2πt) (degrees)."""
    if frames < 2:
        raise Aware3DError(f"an orbit needs at least 2 frames, got {frames}", "e.g. --orbit 60")
    out = []
    for i in range(frames):
        t = i / frames
        out.append(camera_label(cfg, yaw_range * math.sin(2 * math.pi * t),
                                pitch_range * math.cos(2 * math.pi * t), focal=focal, fov=fov))
    return out


_SEED_PART = re.compile(r"([0-9]+)(?: *- *([0-9]+))?")


def _parts(text: str) -> Iterator[str]:
    """The comma-separated parts of ``text``, one at a time (no list of them: a request may be 1 MiB)."""
    start = 0
    while start <= len(text):
        end = text.find(",", start)
        end = len(text) if end < 0 else end
        yield text[start:end].strip()
        start = end + 1


def _seed_range(part: str, text: str) -> tuple[int, int]:
    """One part, '7' or '0-3', as an inclusive range, checked."""
    m = _SEED_PART.fullmatch(part)
    if m is None:
        if part.startswith("-") and _SEED_PART.fullmatch(part[1:].lstrip()):
            raise Aware3DError(f"seeds must be between 0 and 2^32-1, got {_clip(part)}", "e.g. --seeds 0-7")
        raise Aware3DError(f"cannot read seeds {_clip(text)}", "use numbers and ranges, e.g. 0-7 or 1,5,9")
    digits = [g.lstrip("0") for g in m.groups() if g is not None]
    if any(len(d) > len(str(SEED_MAX)) for d in digits):  # before int(): no 100k-digit conversions
        raise Aware3DError(f"seeds must be between 0 and 2^32-1, got {_clip(part)}", "e.g. --seeds 0-7")
    a = int(m.group(1))
    b = a if m.group(2) is None else int(m.group(2))
    if max(a, b) > SEED_MAX:
        raise Aware3DError(f"seeds must be between 0 and 2^32-1, got {_clip(part)}", "e.g. --seeds 0-7")
    if b < a:
        raise Aware3DError(f"the range {a}-{b} is reversed", f"write {b}-{a}")
    return a, b


def _clip(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


def parse_seeds(text: str, max_count: int) -> list[int]:
    """'0-3,7,10-11' → [0, 1, 2, 3, 7, 10, 11], at most ``max_count`` seeds.

    Each range's size is counted before it is expanded, and reading stops at the first range past the
    limit, so "0-4294967295" is refused at once in constant memory (a request is data from outside: see
    ``backend.validate``). A reversed range ("5-1") is an error that says so, not an empty range.
    """
    ranges: list[tuple[int, int]] = []
    total = 0
    for part in _parts(text):
        if not part:
            continue
        a, b = _seed_range(part, text)
        total += b - a + 1
        if total > max_count:
            raise Aware3DError(f"too many seeds in {_clip(text)}: the limit is {max_count}",
                               f"split the work into ranges of at most {max_count} seeds")
        ranges.append((a, b))
    if not ranges:
        raise Aware3DError("no seeds given", "e.g. --seeds 0-7")
    return [s for a, b in ranges for s in range(a, b + 1)]
