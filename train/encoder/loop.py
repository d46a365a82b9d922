# SPDX-License-Identifier: GPL-3.0-or-later
"""The encoder's training loop: photos whose latent and camera are known, and a regression onto them.

Examples: for a distilled model, synthetic heads (:mod:`train.encoder.data`: data set zips, heads rendered by
our tracer from random latents, or a mix) with their true latent (its ``z``: the encoder fits every model that
takes head latents, whatever the snapshot) and the data's FFHQ-like cameras, i.e. real photos of the kind the
model was trained on, optionally changed as a photo front end and a camera would change them; for a GAN, the
generator's own renders from random latents (its ``w``) and cameras. Loss: mean squared error of the
standardised latent plus the absolute pose error (in units of ``POSE_SCALE``).

Conventions as for the other trainers: everything random in step k is a function of (seed, k, example), so
``--resume`` is exact and N data-parallel processes compute what one would; atomic snapshots; Ctrl-C or
SIGTERM saves one.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backend.config import takes_head_latents
from backend.fileio import write_json
from backend.invert.encoder import POSE_SCALE, EncoderConfig, PhotoEncoder, save_encoder
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label
from train.distill.targets import Prefetching, camera_angles
from train.encoder.data import (
    IGNORE,
    MIRROR_NEGATE,
    Augmented,
    Examples,
    HeadExamples,
    MixedExamples,
    ZipExamples,
    _close,
    choice_targets,
    encoder_choices,
)
from train.gan import distributed
from train.gan.logs import TrainingLog
from train.gan.snapshot import load_newest_snapshot, save_snapshot
from train.synthetic.latent import LATENT_DIMS

__all__ = ["EncoderOptions", "EncoderTrainer", "Examples", "GeneratorExamples", "HeadExamples", "w_statistics"]


@dataclass
class EncoderOptions:
    steps: int = 20000
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pose_weight: float = 1.0
    seed: int = 0
    snap_steps: int = 500
    log_steps: int = 50
    keep_snapshots: int = 2
    # Distilled models only. data: make-dataset zips to draw heads from (none: every head rendered now);
    # fresh: the share of each batch rendered now when data is given; mirror: the chance a data head is shown
    # mirrored; augment: the strength of train.encoder.data.Augmentation (0: none, 1: its default sizes).
    data: tuple[str, ...] = ()
    fresh: float = 0.0
    mirror: float = 0.5
    augment: float = 0.0
    # Distilled models: discrete choices (hair style, glasses, ...) as class logits over their Gaussian bins
    # (cross-entropy, weighted by class_weight) instead of a regressed bin middle.
    classes: bool = True
    class_weight: float = 1.0
    # channels, embedding and thumbnail of the network (see EncoderConfig)
    channels: tuple[int, ...] = (32, 64, 128, 256)
    embedding: int = 512
    thumbnail: int = 8
    # an encoder file to start from (init_weights_from: same network, or one that adds the thumbnail)
    init_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GeneratorExamples:
    """A GAN's own renders of random latents (target: w) from the data's cameras."""

    def __init__(self, G: Any, seed: int) -> None:
        self.G, self.seed = G, seed

    @torch.no_grad()
    def batch(self, index: int, size: int, rank: int = 0, world: int = 1) -> Examples:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 8_800_002, index])))
        G = self.G
        device = next(G.parameters()).device
        z = torch.from_numpy(rng.standard_normal((size, G.cfg.z_dim)).astype(np.float32))
        angles = camera_angles(rng, size, around=0.0)
        local = slice(rank * size // world, (rank + 1) * size // world)
        c = torch.from_numpy(np.stack([camera_label(G.cfg, y, p) for y, p in angles[local]])).to(device)
        front = torch.from_numpy(camera_label(G.cfg, 0.0, 0.0))[None].expand(c.shape[0], -1).to(device)
        ws = G.mapping(z[local].to(device), front)
        out = G.render(G.synthesize_planes(ws), ws, c, sampling=SamplingSettings(seed=index))
        return Examples(out["image"].clamp(-1, 1).cpu(), ws[:, 0].cpu(),
                        torch.tensor(angles[local], dtype=torch.float32))


def init_weights_from(enc: PhotoEncoder, path: str | Path) -> None:
    """Start ``enc`` from a trained encoder file: every tensor of the same shape is copied; embedding inputs
    the source lacks (a thumbnail added) start at zero, so the start computes what the source computed.

    Why: an encoder trained for an hour is the best start for the same network with one more input; the
    added inputs then learn only what the source could not read. A calibrated file is refused: its scaled
    outputs would be trained on as if they were the raw ones."""
    from backend.checkpoints.model_file import load_tensors, read_header_of_kind

    header = read_header_of_kind(path, "encoder", "a photo encoder", "start from an encoder's training export")
    if "calibration" in header.provenance:
        raise ValueError(f"{path} is calibrated: start from the run's uncalibrated export (its latest.safetensors)")
    source = load_tensors(path)
    with torch.no_grad():
        for name, mine in enc.state_dict().items():
            theirs = source.get(name)
            if theirs is not None and theirs.shape == mine.shape:
                mine.copy_(theirs)
            elif theirs is not None and name == "embed.weight" and theirs.shape[0] == mine.shape[0] \
                    and theirs.shape[1] < mine.shape[1]:
                mine.zero_()
                mine[:, : theirs.shape[1]] = theirs
            else:
                have = "missing" if theirs is None else f"{tuple(theirs.shape)}"
                raise ValueError(f"{path} does not fit this encoder: {name} is {have} there, "
                                 f"{tuple(mine.shape)} here (same channels, embedding and choices needed)")


def w_statistics(G: Any, samples: int = 2048, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-coordinate spread of w under the frontal conditioning camera."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.cfg.z_dim, generator=gen).to(device)
    c = torch.from_numpy(camera_label(G.cfg, 0.0, 0.0))[None].expand(samples, -1).to(device)
    with torch.no_grad():
        w = G.mapping(z, c)[:, 0].cpu()
    return w.mean(0), w.std(0).clamp_min(1e-6)


class EncoderTrainer:
    def __init__(self, opts: EncoderOptions, G: Any, generator: dict[str, Any], run_dir: str | Path,
                 device: torch.device | str = "cpu", dist: distributed.DistInfo | None = None,
                 command: list[str] | None = None, render_workers: int = 0, log: bool = True) -> None:
        self.opts, self.G, self.run_dir = opts, G, Path(run_dir)
        self.device = torch.device(device)
        self.dist = dist or distributed.DistInfo()
        self.command = command or sys.argv
        if opts.batch % self.dist.world_size:
            raise ValueError(f"batch {opts.batch} is not divisible by {self.dist.world_size} processes")
        distilled = takes_head_latents(G.cfg)
        if not distilled and (opts.data or opts.fresh or opts.augment):
            raise ValueError(f"{generator.get('name', G.cfg.name)} is a GAN: its encoder learns from its own renders "
                             "(data sets, fresh heads and augmentation are for models that take head latents)")
        if not 0 <= opts.fresh <= 1 or not 0 <= opts.mirror <= 1 or opts.augment < 0:
            raise ValueError("fresh and mirror must lie in [0, 1], augment must not be negative")
        if distilled:  # bound to no weights: every model that takes head latents reads z the same way
            generator = {"name": "models that take head latents", "config": generator.get("config", G.cfg.name),
                         "z_dim": LATENT_DIMS, "trained_with": generator.get("name")}
        cfg = EncoderConfig(target="z" if distilled else "w", latent_dim=LATENT_DIMS if distilled else G.cfg.w_dim,
                            resolution=G.cfg.img_resolution, channels=tuple(opts.channels), embedding=opts.embedding,
                            thumbnail=opts.thumbnail,
                            generator=generator, trained_on="heads" if distilled else "generator",
                            mirror_negate=MIRROR_NEGATE if distilled else (), mirror_average=distilled,
                            choices=encoder_choices() if distilled and opts.classes else ())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed)
            self.encoder = PhotoEncoder(cfg).to(self.device)
        if opts.init_from:
            init_weights_from(self.encoder, opts.init_from)
        elif not distilled:
            mean, std = w_statistics(G, seed=opts.seed)
            self.encoder.latent_mean.copy_(mean)
            self.encoder.latent_std.copy_(std)
        self.source = self._source(G, distilled, render_workers)
        self.opt = torch.optim.AdamW(self.encoder.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        self.step = 0
        self.wall_time = 0.0
        self.log = TrainingLog(self.run_dir, enabled=self.dist.is_main and log)

    def _source(self, G: Any, distilled: bool, render_workers: int) -> Any:
        o, res = self.opts, G.cfg.img_resolution
        if not distilled:
            return GeneratorExamples(G, o.seed)
        rendered: Any = HeadExamples(res, o.seed)
        if render_workers > 0 and (o.fresh > 0 or not o.data):
            rendered = Prefetching(rendered, render_workers)
        source: Any = rendered
        if o.data:
            stored = ZipExamples(o.data, res, o.seed, o.mirror)
            source = MixedExamples(stored, rendered, o.fresh) if o.fresh > 0 else stored
        return Augmented(source, o.augment, o.seed) if o.augment > 0 else source

    def lr_at(self, step: int) -> float:
        """Cosine decay to 5 % over the run after a 2 % warm-up."""
        o = self.opts
        warm = max(1, o.steps // 50)
        if step < warm:
            return o.lr * (step + 1) / warm
        t = (step - warm) / max(1, o.steps - warm)
        return o.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    def loss(self, ex: Examples) -> dict[str, torch.Tensor]:
        enc = self.encoder
        standard, pose_out, logits = enc.split(enc.raw(ex.images.to(self.device)))
        latents = ex.latents.to(self.device)
        latent = (latents - enc.latent_mean) / enc.latent_std
        pose = ex.pose.to(self.device) / torch.tensor(POSE_SCALE, device=self.device)
        terms = {"pose_l1": (pose_out - pose).abs().mean()}
        regressed = self._regressed
        terms["latent_mse"] = F.mse_loss(standard[:, regressed], latent[:, regressed])
        if logits:
            target = choice_targets(latents, enc.cfg.choices)
            shown = (target != IGNORE).sum(0).clamp_min(1)  # a batch may hold no head with glasses: 0, not NaN
            terms["choice_ce"] = torch.stack([
                F.cross_entropy(lg, target[:, k], ignore_index=IGNORE, reduction="sum") / shown[k]
                for k, lg in enumerate(logits)]).mean()
        return terms

    @property
    def _regressed(self) -> torch.Tensor:
        """Indices of the latent coordinates the encoder regresses (those without class logits)."""
        binned = {c.index for c in self.encoder.cfg.choices}
        return torch.tensor([i for i in range(self.encoder.cfg.latent_dim) if i not in binned],
                            device=self.device)

    def train_step(self) -> dict[str, float]:
        o = self.opts
        ex = self.source.batch(self.step, o.batch, self.dist.rank, self.dist.world_size)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        terms = self.loss(ex)
        loss = terms["latent_mse"] + o.pose_weight * terms["pose_l1"] + o.class_weight * terms.get("choice_ce", 0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = list(self.encoder.parameters())
        distributed.average_gradients(params, self.dist)
        self.opt.step()
        self.step += 1
        return distributed.average_scalars({f"loss/{k}": float(v.detach()) for k, v in terms.items()}, self.dist)

    def save_snapshot(self) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {"options": self.opts.to_dict(), "progress": {"step": self.step, "wall_time": self.wall_time}}
        return save_snapshot(self.run_dir, self.step, {"encoder": self.encoder}, {"encoder": self.opt}, meta,
                             self.opts.keep_snapshots)

    def resume(self) -> bool:
        meta = load_newest_snapshot(self.run_dir, {"encoder": self.encoder}, {"encoder": self.opt}, self.device)
        if meta is None:
            return False
        self.step, self.wall_time = int(meta["progress"]["step"]), float(meta["progress"]["wall_time"])
        return True

    def export(self, path: str | Path) -> Path:
        from backend.devices import hardware_description

        return save_encoder(path, self.encoder.eval(), {
            "source": "aware3d-train encoder", "command": " ".join(self.command), "steps": self.step,
            "wall_time_s": round(self.wall_time, 1), "hardware": hardware_description(self.device),
            "processes": self.dist.world_size, "options": self.opts.to_dict()})

    def run(self, stop_after: int | None = None) -> None:
        try:
            self._run(stop_after)
        finally:
            _close(self.source)

    def _run(self, stop_after: int | None) -> None:
        o = self.opts
        start = time.time() - self.wall_time
        done = 0
        if self.dist.is_main:
            write_json(self.run_dir / "options.json", {"options": o.to_dict(), "command": self.command,
                                                       "encoder": self.encoder.cfg.to_dict()})
        while self.step < o.steps:
            self.encoder.train()
            stats = self.train_step()
            self.wall_time = time.time() - start
            done += 1
            if self.step % o.log_steps == 0 or self.step == o.steps:
                self.log.scalars(self.step / 1000, {**stats, "progress/step": self.step})
                if self.dist.is_main:
                    losses = "  ".join(f"{k} {v:.4f}" for k, v in sorted(stats.items()))
                    print(f"step {self.step}/{o.steps}  {losses}", file=sys.stderr, flush=True)
            if self.step % o.snap_steps == 0 or self.step == o.steps:
                self.save_snapshot()
                if self.dist.is_main:
                    self.export(self.run_dir / "latest.safetensors")
            if stop_after is not None and done >= stop_after:
                break
        self.encoder.eval()
        self.log.close()
