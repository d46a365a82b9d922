# SPDX-License-Identifier: GPL-3.0-or-later
"""Where distillation gets its ground truth: heads rendered on the fly, or a data set zip with latents.

Both give, for a global batch index ``k``, the same :class:`Targets` whatever the number of processes:
the batch is drawn from generators seeded by (seed, k) and each process takes its slice. So a resumed run
sees exactly the examples it would have seen, and N processes compute what one process would.

On the fly is the default: every step shows new heads (no over-fitting to a finite set, which is what makes
held-out heads come out right) and cameras from anywhere around the head (so its back is trained too, which
the data's FFHQ-like poses never show).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from train.synthetic.latent import LATENT_DIMS, head_from_latent, latent_bins, lighting_from_latent, phi, phi_inv
from train.synthetic.params import HeadParams, SceneParams, sample_yaw_pitch


@dataclass
class Targets:
    """One process's share of a batch: inputs of G and the truth it must reproduce."""

    z: torch.Tensor          # [N, z_dim]
    c: torch.Tensor          # [N, 25] camera labels
    image: torch.Tensor      # [N, 3, R, R] in [-1, 1]
    depth: torch.Tensor      # [N, R, R] distance along the unit ray, inf on the background
    heads: list[HeadParams]


class TargetSource(Protocol):
    def batch(self, index: int, size: int, rank: int, world: int) -> Targets: ...


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 7_700_001, int(index), stream])))


def camera_angles(rng: np.random.Generator, n: int, around: float) -> list[tuple[float, float]]:
    """(yaw, pitch) in degrees: the data's FFHQ-like poses, or with probability ``around`` any yaw."""
    out = []
    for _ in range(n):
        yaw, pitch = sample_yaw_pitch(rng)
        if rng.random() < around:
            yaw, pitch = float(rng.uniform(-180.0, 180.0)), float(rng.uniform(-35.0, 35.0))
        out.append((yaw, pitch))
    return out


def render_targets(latents: np.ndarray, angles: Sequence[tuple[float, float]], res: int,
                   z_dim: int) -> Targets:
    """Render the heads of ``latents`` [N, >= LATENT_DIMS] from ``angles`` (FFHQ orbit cameras)."""
    from train.synthetic.tracer import render

    heads = [head_from_latent(z) for z in latents]
    scenes = [lighting_from_latent(z, SceneParams(yaw_deg=y, pitch_deg=p)) for z, (y, p) in zip(latents, angles)]
    out = render(heads, scenes, res)
    z = np.zeros((len(heads), z_dim), dtype=np.float32)
    z[:, :LATENT_DIMS] = latents[:, :LATENT_DIMS]
    image = torch.from_numpy(out.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return Targets(torch.from_numpy(z), torch.from_numpy(out.labels), image, torch.from_numpy(out.depth), heads)


def balance_discrete(rng: np.random.Generator, latents: np.ndarray, share: float) -> np.ndarray:
    """Redraw each discrete coordinate, with probability ``share``, in a bin chosen uniformly.

    Why: a hat is drawn for 12 % of heads, a full beard for about 6 %, platinum hair for 4 %; trained on
    z ~ N(0, I) the first distilled model drew none of them at 53 kimg. The generator is a regression from z,
    so training it on more of the rare bins teaches them without changing what any z means. Within the chosen
    bin (of :func:`~train.synthetic.latent.latent_bins`) the value is drawn from the normal restricted to it.
    """
    if share <= 0:
        return latents
    out = latents.copy()
    for index, edges in latent_bins():
        cum = np.concatenate([[0.0], [phi(e) for e in edges], [1.0]])
        pick = rng.random(len(out)) < share
        k = rng.integers(len(cum) - 1, size=len(out))
        u = cum[k] + (cum[k + 1] - cum[k]) * rng.random(len(out))
        out[pick, index] = [phi_inv(float(x)) for x in u[pick]]
    return out


def fixed_latents(seed: int, count: int) -> np.ndarray:
    """The ``count`` heads (``z ~ N(0, I)``) of an over-fitting test of run seed ``seed``."""
    return _rng(seed, 0, 3).standard_normal((count, LATENT_DIMS))


class RenderedTargets:
    """New random heads every batch (``z ~ N(0, I)``, discrete choices balanced by ``balance``), rendered by
    the synthetic-head tracer.

    ``fixed_heads`` > 0 draws every batch from the same heads (:func:`fixed_latents`; not balanced), each
    seen from new cameras: an over-fitting test. With nothing to generalise, how close a generator comes to
    those heads is the ceiling of its architecture and recipe (docs/distill.md), measured in 20-30 minutes
    instead of a multi-session run.
    """

    def __init__(self, res: int, z_dim: int, seed: int = 0, around: float = 0.25, balance: float = 0.0,
                 fixed_heads: int = 0) -> None:
        if z_dim < LATENT_DIMS:
            raise ValueError(f"the generator's z has {z_dim} coordinates; a head latent needs {LATENT_DIMS}")
        self.res, self.z_dim, self.seed, self.around, self.balance = res, z_dim, seed, around, balance
        self.fixed = fixed_latents(seed, fixed_heads) if fixed_heads > 0 else None

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Targets:
        rng = _rng(self.seed, index, 0)
        latents = rng.standard_normal((size, LATENT_DIMS))
        angles = camera_angles(rng, size, self.around)
        if self.fixed is not None:
            latents = self.fixed[_rng(self.seed, index, 4).integers(len(self.fixed), size=size)]
        elif self.balance > 0:  # its own stream: the heads and cameras of a run without it stay the same
            latents = balance_discrete(_rng(self.seed, index, 2), latents, self.balance)
        local = slice(rank * size // world, (rank + 1) * size // world)
        return render_targets(latents[local], angles[local], self.res, self.z_dim)


class ZipTargets:
    """Examples from a synthetic-head zip made by ``aware3d-train make-dataset`` (with each head's latent)."""

    def __init__(self, path: str | Path, z_dim: int, seed: int = 0) -> None:
        from train.data.zip_dataset import ZipDataset

        self.data = ZipDataset(path, extras=True)
        if not self.data.has_depth:
            raise ValueError(f"{path} has no depth maps: make it with aware3d-train make-dataset")
        try:
            first = self.data.params(0)
        except Exception as exc:
            raise ValueError(f"{path} has no head parameters (params.json): {exc}") from None
        if "latent" not in first:
            raise ValueError(f"{path} has no head latents (made by an older aware3d-train make-dataset): "
                             "remake it")
        self.res, self.z_dim, self.seed = self.data.resolution, z_dim, seed

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Targets:
        idx = _rng(self.seed, index, 1).integers(len(self.data), size=size)
        local = idx[rank * size // world:(rank + 1) * size // world]
        z = np.zeros((len(local), self.z_dim), dtype=np.float32)
        images, depths, labels, heads = [], [], [], []
        for j, i in enumerate(local.tolist()):
            item = self.data[i]
            p = self.data.params(i)
            z[j, :LATENT_DIMS] = np.asarray(p["latent"], dtype=np.float32)[:LATENT_DIMS]
            heads.append(HeadParams.from_json(p))
            images.append(item["image"].float() / 127.5 - 1)
            depths.append(item["depth"])
            labels.append(item["label"])
        return Targets(torch.from_numpy(z), torch.stack(labels), torch.stack(images), torch.stack(depths), heads)


def _render_batch(source: TargetSource, index: int, size: int, rank: int, world: int) -> Targets:
    return source.batch(index, size, rank, world)


class Prefetching:
    """Renders the next batches of ``source`` in worker processes while the current one trains.

    Why: the tracer takes about a quarter of a step on one CPU core; a worker process moves that off the
    training thread. Batches are pure functions of their index, so prefetching changes no number (tested).
    """

    def __init__(self, source: TargetSource, workers: int = 1, ahead: int = 2) -> None:
        import multiprocessing as mp

        self.source, self.ahead = source, max(ahead, 1)
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        self.pending: dict[tuple[int, int, int, int], Future[Targets]] = {}

    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Targets:
        for k in range(index, index + self.ahead + 1):
            key = (k, size, rank, world)
            if key not in self.pending:
                self.pending[key] = self.pool.submit(_render_batch, self.source, k, size, rank, world)
        for key in [key for key in self.pending if key[0] < index]:
            self.pending.pop(key).cancel()
        return self.pending.pop((index, size, rank, world)).result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
