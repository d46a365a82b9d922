# SPDX-License-Identifier: GPL-3.0-or-later
"""Examples for the photo encoder: synthetic heads whose latent and camera are known, and the augmentation a
real photo front end calls for.

Sources (all give, for a global batch index ``k``, the same examples whatever the number of processes: the
choices are drawn from generators seeded by (seed, k) and each process takes its slice, so ``--resume`` is
exact and N data-parallel processes compute what one would):

* :class:`HeadExamples`: new random heads rendered by the synthetic-head tracer every batch (no finite set to
  over-fit, but about 0.06 s per 64² image on one core: far more than the encoder's step).
* :class:`ZipExamples`: heads of data set zips made by ``aware3d-train make-dataset`` (their ``params.json``
  holds each head's latent and camera), decoded once into memory, each drawn as itself or its mirror image.
* :class:`MixedExamples`: a fixed share of each batch fresh from the tracer, the rest from zips.

Targets are the *identifiable* latent (:func:`identifiable_latents`): what the image determines. The recorded
latent also holds values no renderer shows (a discrete choice's position inside its bin, the hat colour of a
head without a hat, ...); regressing onto those only adds noise, and any value gives the same head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from backend.invert.encoder import ChoiceCoordinate
from train.synthetic.latent import (
    INDEX,
    LATENT_DIMS,
    MASCULINITY_CHOICES,
    NAMES,
    choice_middles,
    choice_of,
    choice_probabilities,
    head_from_latent,
    latent_from_params,
    lighting_from_latent,
)

# The synthetic heads are mirror-symmetric except for these coordinates, which change sign in the mirror image
# (tested: a head at yaw y mirrored is pixel for pixel the head with these negated at yaw -y).
MIRROR_NEGATE: tuple[int, ...] = (INDEX["light_azimuth"], INDEX["head_roll_deg"])
# Coordinates that carry nothing for some heads and that latent_from_params does not already zero
# (latent.UNUSED_WHEN lists them all): the frame colour without glasses, the hat colour without a hat.
_NO_GLASSES = tuple(INDEX[n] for n in ("glasses_base", "glasses_jitter_0", "glasses_jitter_1", "glasses_jitter_2"))
_NO_HAT = tuple(INDEX[n] for n in ("hat_r", "hat_g", "hat_b"))


def identifiable_latents(latents: np.ndarray) -> np.ndarray:
    """What a picture of each head determines (float32 [N, LATENT_DIMS]), from latents [N, >= LATENT_DIMS].

    The latent of the head's parameters (:func:`latent_from_params`: the middle of a discrete choice's bin,
    the bound of a clipped value), with the coordinates that carry nothing for this head set to 0. The same
    head (every parameter equal), so the same picture from every model that takes head latents."""
    out = np.zeros((len(latents), LATENT_DIMS), dtype=np.float32)
    for i, z in enumerate(np.asarray(latents, dtype=np.float64)):
        head, scene = head_from_latent(z), lighting_from_latent(z)
        c = latent_from_params(head, scene)
        if head.glasses == "none":
            c[list(_NO_GLASSES)] = 0.0
        if head.hat == "none":
            c[list(_NO_HAT)] = 0.0
        out[i] = c
    return out


IGNORE = -100  # class target of a choice the head does not show (cross_entropy's ignore_index)
# Masculinity coordinate values at which the choices that move with it are tabulated (step 0.125).
MASCULINITY_GRID = tuple(round(-3.5 + 0.125 * k, 3) for k in range(57))


def encoder_choices() -> tuple[ChoiceCoordinate, ...]:
    """Every discrete coordinate of the head latent as a choice the encoder classifies, in latent order."""
    out, probabilities = [], choice_probabilities()
    for name in NAMES:
        if name not in probabilities:
            continue
        if name in MASCULINITY_CHOICES:
            out.append(ChoiceCoordinate(INDEX[name], choice_middles(name, MASCULINITY_GRID), INDEX["masculinity"],
                                        MASCULINITY_GRID))
        else:
            out.append(ChoiceCoordinate(INDEX[name], choice_middles(name, (0.0,))))
    return tuple(out)


def choice_targets(latents: torch.Tensor, choices: Sequence[ChoiceCoordinate]) -> torch.Tensor:
    """The choice each coordinate of ``choices`` makes in each of ``latents`` [N, >= LATENT_DIMS] (int64
    [N, len(choices)]); ``IGNORE`` where the head does not show it (the frame colour without glasses)."""
    z = latents.detach().cpu().double().numpy()
    out = np.array([[choice_of(row, NAMES[c.index]) for c in choices] for row in z], dtype=np.int64)
    for k, c in enumerate(choices):
        if c.index == INDEX["glasses_base"]:
            out[[choice_of(row, "glasses") == 0 for row in z], k] = IGNORE  # glasses "none"
    return torch.from_numpy(out.reshape(len(z), len(choices))).to(latents.device)


def mirror_latents(latents: np.ndarray | torch.Tensor) -> Any:
    """Latents of the mirrored heads (copy)."""
    out = latents.clone() if isinstance(latents, torch.Tensor) else np.array(latents, copy=True)
    out[..., list(MIRROR_NEGATE)] = -out[..., list(MIRROR_NEGATE)]
    return out


@dataclass
class Examples:
    images: torch.Tensor   # [N, 3, R, R] in [-1, 1]
    latents: torch.Tensor  # [N, latent_dim] (z, or w)
    pose: torch.Tensor     # [N, 2] yaw, pitch in degrees


class ExampleSource(Protocol):
    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Examples: ...


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(stream), int(index)])))


def _local(size: int, rank: int, world: int) -> slice:
    return slice(rank * size // world, (rank + 1) * size // world)


class HeadExamples:
    """Synthetic heads of random latents from the data's cameras, rendered now (for a distilled model: z is the
    head)."""

    def __init__(self, res: int, seed: int) -> None:
        self.res, self.seed = res, seed

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Examples:
        from train.distill.targets import camera_angles, render_targets

        rng = _rng(self.seed, 8_800_001, index)
        latents = rng.standard_normal((size, LATENT_DIMS))
        angles = camera_angles(rng, size, around=0.0)
        local = _local(size, rank, world)
        t = render_targets(latents[local], angles[local], self.res, LATENT_DIMS)
        return Examples(t.image, torch.from_numpy(identifiable_latents(latents[local])),
                        torch.tensor(angles[local], dtype=torch.float32))


class ZipExamples:
    """Heads of one or more ``make-dataset`` zips, held in memory; each example is drawn uniformly from all of
    them and shown as itself or, with probability ``mirror``, as its mirror image (yaw and the
    :data:`MIRROR_NEGATE` coordinates negated: exactly another valid head). ``res``: the image size the zips
    must have (None: any; the encoder resizes its input)."""

    def __init__(self, paths: Sequence[str | Path], res: int | None, seed: int, mirror: float = 0.5) -> None:
        from train.data.zip_dataset import ZipDataset, ZipDatasetError

        if not paths:
            raise ValueError("no data set given")
        images, latents, poses = [], [], []
        for path in paths:
            try:
                data = ZipDataset(path, use_labels=False)
            except ZipDatasetError as exc:
                raise ValueError(str(exc)) from None
            if res is not None and data.resolution != res:
                raise ValueError(f"{path} holds {data.resolution}² images; the encoder takes {res}²")
            try:
                first = data.params(0)
            except Exception as exc:  # any unreadable params.json is the same user error
                raise ValueError(f"{path} has no head parameters (params.json): {exc}") from None
            if "latent" not in first:
                raise ValueError(f"{path} has no head latents (made by an older aware3d-train make-dataset): "
                                 "remake it")
            recorded = []
            for i in range(len(data)):
                p = data.params(i)
                recorded.append(np.asarray(p["latent"], dtype=np.float64)[:LATENT_DIMS])
                poses.append((float(p["yaw"]), float(p["pitch"])))
                images.append(torch.from_numpy(data._load_raw_image(data.raw_index(i))))
            latents.append(identifiable_latents(np.stack(recorded)))
            data.close()
        self.images = torch.stack(images)                               # uint8 [N, 3, R, R]
        if self.images.shape[1] != 3:
            raise ValueError(f"the data set's images have {self.images.shape[1]} channels, not 3")
        self.latents = torch.from_numpy(np.concatenate(latents))        # [N, LATENT_DIMS]
        self.pose = torch.tensor(poses, dtype=torch.float32)            # [N, 2]
        self.seed, self.mirror = seed, mirror

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Examples:
        rng = _rng(self.seed, 8_800_003, index)
        pick = rng.integers(len(self), size=size)
        flip = rng.random(size) < self.mirror
        local = _local(size, rank, world)
        pick_t, flip_t = torch.from_numpy(pick[local]), torch.from_numpy(flip[local])
        images = self.images[pick_t].float() / 127.5 - 1
        latents, pose = self.latents[pick_t].clone(), self.pose[pick_t].clone()
        images[flip_t] = images[flip_t].flip(-1)
        latents[flip_t] = mirror_latents(latents[flip_t])
        pose[flip_t, 0] = -pose[flip_t, 0]
        return Examples(images, latents, pose)


class MixedExamples:
    """``fresh`` of each batch (rounded) rendered now by ``rendered``, the rest from ``stored``; the fresh ones
    come first in the global batch and each process takes its slice of the whole (a process whose slice holds
    fresh ones renders all of them: simple, and the renders are a pure function of the batch index)."""

    def __init__(self, stored: ExampleSource, rendered: ExampleSource, fresh: float) -> None:
        self.stored, self.rendered, self.fresh = stored, rendered, fresh

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Examples:
        k = round(self.fresh * size)
        local = _local(size, rank, world)
        mine_new = slice(min(local.start, k), min(local.stop, k))
        mine_old = slice(max(local.start, k) - k, max(local.stop, k) - k)
        parts: list[Examples] = []
        if mine_new.stop > mine_new.start:
            parts.append(_slice(self.rendered.batch(index, k), mine_new))
        if mine_old.stop > mine_old.start:
            parts.append(_slice(self.stored.batch(index, size - k), mine_old))
        return Examples(*(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "latents", "pose")))

    def close(self) -> None:
        _close(self.rendered)


def _slice(ex: Examples, s: slice) -> Examples:
    return Examples(ex.images[s], ex.latents[s], ex.pose[s])


# --------------------------------------------------------------------------------------------------------
# Augmentation: what a photo's framing and camera do to the picture
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Per-example random changes, their sizes at ``strength`` 1 (all scale with it; 0 turns it off).

    Why: the encoder meets photos framed by the face front end (landmark crops a few per cent off in position
    and size), taken by real cameras (white balance, exposure, contrast, focus, sensor noise). Each example
    gets, with the data's pose label unchanged: a shift of up to ``shift`` of the image size and a zoom of up
    to ``scale`` (log-uniform) - at 64² and FFHQ's 13° field of view a 3 % shift is 0.4° of view direction,
    below the pose goal -, a gain per channel, a brightness offset, a contrast and a saturation change, with
    probability ``blur_p`` a Gaussian blur of up to ``blur`` pixels (σ), and noise of up to ``noise``.
    """

    shift: float = 0.03
    scale: float = 0.05
    gain: float = 0.08
    brightness: float = 0.08
    contrast: float = 0.15
    saturation: float = 0.2
    blur_p: float = 0.3
    blur: float = 1.0
    noise: float = 0.03

    def draw(self, rng: np.random.Generator, n: int, strength: float) -> dict[str, np.ndarray]:
        """The random choices of ``n`` examples (drawn for the global batch, so every process agrees)."""
        s = strength

        def sym(amount: float, shape: tuple[int, ...] = ()) -> np.ndarray:
            return rng.uniform(-1, 1, (n, *shape)) * amount * s

        blurred = rng.random(n) < self.blur_p
        return {"shift": sym(self.shift, (2,)), "log_scale": sym(math.log1p(self.scale)),
                "gain": sym(self.gain, (3,)), "brightness": sym(self.brightness), "contrast": sym(self.contrast),
                "saturation": sym(self.saturation), "blur": blurred * rng.random(n) * self.blur * s,
                "noise": rng.random(n) * self.noise * s, "noise_seed": rng.integers(1 << 31, size=n)}

    def apply(self, images: torch.Tensor, d: dict[str, np.ndarray]) -> torch.Tensor:
        """Images [n, 3, R, R] in [-1, 1] changed by the choices ``d`` of :meth:`draw` (sliced to these n)."""
        n, _, r, _ = images.shape
        if n == 0:
            return images
        t = lambda key: torch.from_numpy(np.asarray(d[key], dtype=np.float32))  # noqa: E731
        zoom = torch.exp(t("log_scale"))
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
        theta[:, :, 2] = t("shift") * 2  # grid units: the image spans [-1, 1]
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        x = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = (x + 1) / 2
        x = x * (1 + t("gain"))[:, :, None, None] + t("brightness")[:, None, None, None]
        grey = x.mean(1, keepdim=True)
        x = grey + (x - grey) * (1 + t("saturation"))[:, None, None, None]
        mean = x.mean((1, 2, 3), keepdim=True)
        x = mean + (x - mean) * (1 + t("contrast"))[:, None, None, None]
        x = _blur(x, t("blur"))
        noise = torch.stack([torch.randn(3, r, r, generator=torch.Generator().manual_seed(int(sd)))
                             for sd in d["noise_seed"]])
        x = x + noise * t("noise")[:, None, None, None]
        return (x.clamp(0, 1) * 2 - 1).contiguous()


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (σ in pixels; 0: unchanged), as one grouped 5×5 separable convolution."""
    if float(sigma.max()) <= 0:
        return x
    n, c, _, _ = x.shape
    k = torch.arange(-2, 3, dtype=x.dtype)
    w = torch.exp(-k[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    w = w / w.sum(1, keepdim=True)  # σ → 0 gives the identity kernel
    w = w.repeat_interleave(c, 0)  # [n·c, 5]
    y = x.reshape(1, n * c, *x.shape[2:])
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), w[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), w[:, None, :, None], groups=n * c)
    return y.reshape(x.shape)


class Augmented:
    """``source`` with :class:`Augmentation` at ``strength`` applied (choices a function of (seed, index))."""

    def __init__(self, source: ExampleSource, strength: float, seed: int, aug: Augmentation | None = None) -> None:
        self.source, self.strength, self.seed = source, strength, seed
        self.aug = aug or Augmentation()

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Examples:
        ex = self.source.batch(index, size, rank, world)
        choices = self.aug.draw(_rng(self.seed, 8_800_004, index), size, self.strength)
        local = _local(size, rank, world)
        mine = {k: v[local] for k, v in choices.items()}
        return Examples(self.aug.apply(ex.images, mine), ex.latents, ex.pose)

    def close(self) -> None:
        _close(self.source)


def _close(source: object) -> None:
    """Stop a source's worker processes, if it has any."""
    close = getattr(source, "close", None)
    if close is not None:
        close()
