# SPDX-License-Identifier: GPL-3.0-or-later
"""The distillation loop: ``G(z(head), camera)`` against everything we know about that head.

Per step, for a batch of heads and cameras (:mod:`.targets`): L1 and a perceptual distance on the final
image, L1 on the raw neural render against the area-averaged truth, the render's opacity against the
pixel's head coverage and its expected depth against the true depth, and the density at 3D points against
the true inside/outside of the head's signed distance (:mod:`.losses`). No discriminator: on a 2-core CPU
supervised targets teach in minutes what adversarial training needs GPU-days for.

Reproducibility as in the GAN loop: everything random in step k comes from generators seeded by
(seed, k), for the whole global batch, and each process takes its slice; snapshots hold the networks, the
optimiser and the position, so ``--resume`` continues exactly.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backend.configs import get_config
from backend.fileio import write_json
from backend.generator import TriPlaneGenerator
from backend.render.rays import pixel_uv
from backend.render.renderer import SamplingSettings
from backend.sampling import to_uint8
from train.amp import autocast, check_amp
from train.distill.losses import (
    FeaturePerceptual,
    density_loss,
    surface_samples,
    true_occupancy,
    truth_at,
    visible_surface,
)
from train.distill.options import DistillOptions
from train.distill.targets import Prefetching, RenderedTargets, TargetSource, fixed_latents, render_targets
from train.ema import ema_beta, update_ema
from train.gan import distributed
from train.gan.logs import TrainingLog, progress_line
from train.gan.snapshot import export_generator, load_newest_snapshot, run_provenance, save_snapshot
from train.synthetic.latent import LATENT_DIMS


@dataclass
class Progress:
    nimg: int = 0
    iteration: int = 0
    wall_time: float = 0.0


def init_from_model(G: torch.nn.Module, tensors: dict[str, torch.Tensor],
                    source_config: dict[str, Any] | None = None) -> list[str]:
    """Copy every tensor of another model whose name and shape match; returns the names left as built.

    Why: the distilled config keeps the GAN's networks but its z has another size, so all but the first
    mapping layer (and its w average) can start from a trained GAN. A model of the same z without the one-hot
    bin features (``source_config`` says so) keeps its first mapping layer too, widened so that it computes
    the same function (:func:`widen_first_mapping_layer`): a run can gain the features without starting over.

    A config with wider synthesis blocks, more tri-plane channels or a higher tri-plane resolution starts from
    the same function too (:func:`widen_synthesis_tensor`, :func:`widen_decoder_input`): the kept channels come
    from the source, the new ones reach what follows through zero weights, and a ToRGB layer that could not be
    copied (a new block) starts at zero, so the planes are the source's, up-sampled, until the new block learns.
    """
    own = G.state_dict()
    skipped = []
    with torch.no_grad():
        for name, t in own.items():
            src = tensors.get(name)
            if name == FIRST_MAPPING_WEIGHT and src is not None and src.shape != t.shape and source_config:
                src = widen_first_mapping_layer(src, source_config, G.cfg)
            elif name == DECODER_INPUT_WEIGHT and src is not None and src.shape != t.shape:
                src = widen_decoder_input(src, t.shape[1])
            if src is not None and tuple(src.shape) == tuple(t.shape):
                t.copy_(src)
            elif src is not None and widen_synthesis_tensor(name, t, src):
                pass
            else:
                if _is_plane_torgb(name) and tensors:
                    t.zero_()
                skipped.append(name)
    return skipped


DECODER_INPUT_WEIGHT = "decoder.net.0.weight"


def _is_plane_torgb(name: str) -> bool:
    return name.startswith("backbone.synthesis.b") and (name.endswith(".torgb.weight")
                                                         or name.endswith(".torgb.bias"))


def widen_synthesis_tensor(name: str, t: torch.Tensor, src: torch.Tensor) -> bool:
    """Copy a synthesis-network tensor into a wider one (more channels) so that the kept channels compute
    what they computed; False when ``src`` does not fit inside ``t``.

    Rules: a modulated, demodulated convolution [out, in, k, k] keeps its outputs' weights and gets zeros
    for the new inputs (so they do not reach the kept outputs; demodulation is unchanged by zero columns);
    new outputs, styles, biases and constant channels keep their fresh initialisation (they only reach kept
    channels through those zeros). A ToRGB layer's planes are rows [plane, channel] (channel k of plane p is
    row p·C + k), so more channels a plane are placed plane by plane; its new input columns are zero and the
    kept ones are scaled by sqrt(in_new / in_old) to undo its style gain 1/sqrt(in). New channels must not be
    all zero: the zero weights that read them would then get no gradient.
    """
    if (not name.startswith("backbone.synthesis.") or t.ndim != src.ndim or t.shape == src.shape
            or any(d < s for d, s in zip(t.shape, src.shape))):
        return False
    if _is_plane_torgb(name):
        if t.shape[0] % 3 or src.shape[0] % 3:
            return False
        c1, c0 = t.shape[0] // 3, src.shape[0] // 3
        if name.endswith(".weight"):
            src = insert_input_columns(src, src.shape[1], t.shape[1] - src.shape[1])
        t.view(3, c1, *t.shape[1:])[:, :c0].copy_(src.view(3, c0, *src.shape[1:]))
        return True
    if t.ndim == 4:
        t[:src.shape[0]].zero_()
    t[tuple(slice(0, n) for n in src.shape)].copy_(src)
    return True


def insert_input_columns(weight: torch.Tensor, at: int, count: int) -> torch.Tensor:
    """``weight`` [out, in, ...] with ``count`` zero input columns inserted before column ``at``, the kept
    ones scaled by sqrt(new inputs / old inputs): a layer with equalised learning rate (gain 1/sqrt(inputs))
    then computes the same function of the old inputs, and the new ones start with no effect."""
    old = weight.shape[1]
    zeros = weight.new_zeros(weight.shape[0], count, *weight.shape[2:])
    scaled = weight * math.sqrt((old + count) / old)
    return torch.cat([scaled[:, :at], zeros, scaled[:, at:]], dim=1)


def widen_decoder_input(weight: torch.Tensor, features: int) -> torch.Tensor | None:
    """The decoder's first layer for ``features`` > C0 input channels computing the same function (the new
    columns zero); None when it does not fit."""
    old = weight.shape[1]
    return insert_input_columns(weight, old, features - old) if features > old else None


FIRST_MAPPING_WEIGHT = "backbone.mapping.fc0.weight"


def widen_first_mapping_layer(weight: torch.Tensor, source_config: dict[str, Any],
                              cfg: Any) -> torch.Tensor | None:
    """The first mapping layer of a model without z bins, for ``cfg`` with them; None when it does not fit.

    The input is [z, bins, camera embedding]: z's and the embedding's columns are kept, the bins' start at
    zero (so the output is unchanged and they learn from there), and every kept column is scaled by
    sqrt(new inputs / old inputs) to undo the equalised-lr gain 1/sqrt(inputs) of the wider layer.
    """
    if source_config.get("z_bins") or source_config.get("z_dim") != cfg.z_dim:
        return None
    return insert_input_columns(weight, cfg.z_dim, cfg.z_bin_features)


class DistillTrainer:
    """Owns the generator, its EMA copy, the optimiser and the run folder of one distillation run."""

    def __init__(self, opts: DistillOptions, run_dir: str | Path, source: TargetSource | None = None,
                 device: torch.device | str = "cpu", dist: distributed.DistInfo | None = None,
                 command: list[str] | None = None, features: torch.nn.Module | None = None,
                 init_tensors: dict[str, torch.Tensor] | None = None, init_config: dict[str, Any] | None = None,
                 data_path: str = "",
                 log: bool = True, render_workers: int = 0) -> None:
        self.opts = opts
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.dist = dist or distributed.DistInfo()
        self.command = command or sys.argv
        self.data_path = data_path or "rendered on the fly"
        if opts.batch % self.dist.world_size:
            raise ValueError(f"batch {opts.batch} is not divisible by {self.dist.world_size} processes")
        self.cfg = get_config(opts.config)
        if opts.amp:
            check_amp(self.device)
        if self.cfg.z_dim < LATENT_DIMS:
            raise ValueError(f"config {self.cfg.name} has z_dim {self.cfg.z_dim}; a head latent needs {LATENT_DIMS}")
        self.truth_res = opts.truth_resolution or self.cfg.img_resolution
        if opts.fixed_heads > 0 and source is not None:
            raise ValueError("fixed heads are rendered on the fly: leave out --data")
        self.source = source or RenderedTargets(self.truth_res, self.cfg.z_dim, opts.seed, opts.around,
                                                opts.balance, opts.fixed_heads)
        if render_workers > 0:
            self.source = Prefetching(self.source, render_workers)
        if opts.rays > 0 and (self.cfg.superresolution != "none"
                              or self.cfg.neural_rendering_resolution != self.truth_res):
            raise ValueError(f"--rays needs a config that renders its image directly (no super-resolution, "
                             f"render size = image size); {self.cfg.name} does not")
        if opts.rays > self.cfg.neural_rendering_resolution ** 2:
            raise ValueError(f"--rays {opts.rays} is more than the {self.cfg.neural_rendering_resolution ** 2} "
                             "pixels of an image")
        self.G = TriPlaneGenerator(self.cfg, seed=opts.seed).train().to(self.device)
        self.init_skipped = (init_from_model(self.G, init_tensors, init_config) if init_tensors is not None
                             else None)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        mapping = [p for n, p in self.G.named_parameters() if n.startswith("backbone.mapping.")]
        rest = [p for n, p in self.G.named_parameters() if not n.startswith("backbone.mapping.")]
        self.opt = torch.optim.Adam([{"params": rest, "lr": opts.lr},
                                     {"params": mapping, "lr": opts.lr * opts.mapping_lr_mul}],
                                    betas=opts.betas, eps=1e-8)
        self.perceptual = FeaturePerceptual(features).to(self.device) if features is not None else None
        self.progress = Progress()
        self.log = TrainingLog(self.run_dir, enabled=self.dist.is_main and log)
        self._grid_targets = None
        self._fit_targets = None

    @property
    def kimg(self) -> float:
        return self.progress.nimg / 1000

    def _rng(self, stream: int, item: int = 0) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.opts.seed, 7_700_002, self.progress.iteration, stream, item])))

    def _item_rngs(self, stream: int) -> list[np.random.Generator]:
        """One generator per example of this process's slice, keyed by its place in the global batch."""
        n = self.opts.batch // self.dist.world_size
        return [self._rng(stream, self.dist.rank * n + j) for j in range(n)]

    def _sample_seeds(self) -> tuple[int, ...]:
        seeds = self._rng(1).integers(2**31 - 1, size=self.opts.batch)
        r, n = self.dist.rank, self.opts.batch // self.dist.world_size
        return tuple(int(s) for s in seeds[r * n:(r + 1) * n])

    # One step -----------------------------------------------------------------------------------------

    def losses(self, G: TriPlaneGenerator, t: Any, sampling: SamplingSettings,
               rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        """Every loss term (unweighted) of generator ``G`` on the targets ``t``."""
        o, dev = self.opts, self.device
        z, c = t.z.to(dev), t.c.to(dev)
        # As in the GAN loop: the mapping network (and its float32 w_avg) outside bf16 autocast, the synthesis
        # and the render inside it, every loss in float32.
        ws = G.mapping(z, c, update_emas=G.training)
        with autocast(self.device, o.amp):
            planes = G.synthesize_planes(ws, noise_mode="const", fused=False)
            if o.rays > 0:
                out, pixels = self._render_some_rays(G, planes, ws, c, sampling)
            else:
                out = G.render(planes, ws, c, sampling=sampling, run_sr="auto", fp16_sr=False)
        out = {k: v.float() for k, v in out.items()}
        image = t.image.to(dev)
        res = self.cfg.neural_rendering_resolution
        low = truth_at(image, t.depth.to(dev), res)
        terms: dict[str, torch.Tensor] = {}
        if o.rays > 0:  # the image is the render (no SR): compare the rendered rays with their pixels
            low = {k: v.flatten(2).gather(2, pixels[:, None].expand(-1, v.shape[1], -1)) for k, v in low.items()}
            terms["image_l1"] = terms["raw_l1"] = (out["image_raw"] - low["image"]).abs().mean()
        else:
            final = out["image"]
            if final.shape[-1] != image.shape[-1]:
                final = F.interpolate(final, size=image.shape[-2:], mode="area")
            terms["image_l1"] = (final - image).abs().mean()
            if self.perceptual is not None and o.perceptual > 0:
                terms["perceptual"] = self.perceptual(final, image)
            terms["raw_l1"] = (out["image_raw"] - low["image"]).abs().mean()
        terms["alpha_l1"] = (out["image_alpha"] - low["coverage"]).abs().mean()
        valid = low["depth_valid"]
        err = (out["image_depth"] - low["depth"]).abs()
        # A mean over all pixels (not over the valid ones): the same normalisation on every process, so the
        # averaged gradient of N processes is the one of the whole batch.
        terms["depth_l1"] = torch.where(valid, err, torch.zeros_like(err)).mean()
        if o.colour_l1 > 0 and o.colour_points > 0:
            pts, colour, seen = visible_surface(t.c, t.depth, t.image, o.colour_points, rngs)
            with autocast(self.device, o.amp):
                rgb = G.query(planes, pts.to(dev))["rgb"][..., :3].float() * 2 - 1
            err = (rgb - colour.to(dev)).abs().mean(dim=(1, 2))
            terms["colour_l1"] = (err * seen.to(dev)).mean()
        if o.density > 0 and o.density_points > 0:
            pts = surface_samples(t.c, t.depth, o.density_points, rngs)
            occupancy, _ = true_occupancy(t.heads, pts, o.density_softness)
            with autocast(self.device, o.amp):
                sigma = G.query(planes, pts.to(dev))["sigma"].float()
            terms["density"] = density_loss(sigma, occupancy.to(dev), o.density_level, o.density_scale)
        return terms

    def _render_some_rays(self, G: TriPlaneGenerator, planes: list[torch.Tensor], ws: torch.Tensor,
                          c: torch.Tensor, sampling: SamplingSettings) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Render ``opts.rays`` random pixels of each image (without repeats; per-example generators, so
        resuming and data parallelism see the same pixels). Returns the render as [N, C, M] "images" and the
        pixel indices [N, M] (row-major)."""
        res = self.cfg.neural_rendering_resolution
        pixels = torch.stack([torch.from_numpy(r.choice(res * res, self.opts.rays, replace=False))
                              for r in self._item_rngs(3)]).to(self.device)
        result = G.render_rays(planes, c, pixel_uv(res, self.device)[pixels], sampling, ws=ws)
        return {"image_raw": result.features[:, :3], "image_depth": result.depth,
                "image_alpha": result.weight_sum}, pixels

    def train_step(self) -> dict[str, float]:
        o = self.opts
        t = self.source.batch(self.progress.iteration, o.batch, self.dist.rank, self.dist.world_size)
        sampling = SamplingSettings(sample_seeds=self._sample_seeds(), ray_chunk=1 << 30)
        terms = self.losses(self.G, t, sampling, self._item_rngs(2))
        loss = sum(getattr(o, k) * v for k, v in terms.items())
        params = [p for p in self.G.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        loss.backward()  # type: ignore[union-attr]
        distributed.average_gradients(params, self.dist)
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
        self.opt.step()
        self._update_ema()
        self.progress.nimg += o.batch
        self.progress.iteration += 1
        stats = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        stats["loss/total"] = float(loss.detach())  # type: ignore[union-attr]
        return distributed.average_scalars(stats, self.dist)

    def _update_ema(self) -> None:
        o = self.opts
        update_ema(self.G_ema, self.G, ema_beta(o.batch, self.progress.nimg, o.ema_kimg, o.ema_rampup))

    # Snapshots, export, grids ----------------------------------------------------------------------

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "G_ema": self.G_ema}

    def save_snapshot(self) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {"options": self.opts.to_dict(), "config": self.cfg.to_dict(), "progress": vars(self.progress),
                "data": self.data_path}
        return save_snapshot(self.run_dir, self.progress.nimg, self._modules(), {"G": self.opt}, meta,
                             self.opts.keep_snapshots)

    def resume(self) -> bool:
        """Continue from the newest snapshot in the run folder; False when there is none."""
        meta = load_newest_snapshot(self.run_dir, self._modules(), {"G": self.opt}, self.device)
        if meta is None:
            return False
        self.progress = Progress(**meta["progress"])
        return True

    def provenance(self) -> dict[str, Any]:
        return run_provenance("aware3d-train distill", self.command, self.data_path, self.kimg,
                              self.progress.wall_time, self.device, self.dist.world_size, self.opts.to_dict(),
                              steps=self.progress.iteration)

    def export(self, path: str | Path) -> Path:
        return export_generator(path, self.G_ema, self.cfg.to_dict(), self.provenance())

    @torch.no_grad()
    def image_grid(self, heads: int = 4) -> np.ndarray:
        """Truth and G_ema side by side for fixed heads at yaw −60°, 0°, 60° and 180°."""
        if self._grid_targets is None:
            latents = np.random.Generator(np.random.PCG64(12345)).standard_normal((heads, LATENT_DIMS))
            yaws = [(-60.0, 0.0), (0.0, 0.0), (60.0, 0.0), (180.0, 0.0)]
            lat = np.repeat(latents, len(yaws), axis=0)
            self._grid_targets = render_targets(lat, yaws * heads, self.cfg.img_resolution, self.cfg.z_dim)
        t = self._grid_targets
        G = self.G_ema
        ws = G.mapping(t.z.to(self.device), t.c.to(self.device))
        out = G.render(G.synthesize_planes(ws), ws, t.c.to(self.device), sampling=SamplingSettings(seed=0))
        rows = []
        for i in range(t.z.shape[0]):
            rows.append(to_uint8(t.image[i]))
            rows.append(to_uint8(out["image"][i]))
        return np.stack(rows)

    FIT_YAWS = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0)

    @torch.no_grad()
    def fit_psnr(self) -> float:
        """Head-region PSNR (dB) of G_ema on the fixed heads of an over-fitting run, averaged over yaw ±45°
        (the reconstruction measure of ``aware3d-train eval``, on the training heads themselves)."""
        from train.eval.reconstruction import view_scores

        if self._fit_targets is None:
            latents = np.repeat(fixed_latents(self.opts.seed, self.opts.fixed_heads), len(self.FIT_YAWS), axis=0)
            angles = [(y, 0.0) for y in self.FIT_YAWS] * self.opts.fixed_heads
            self._fit_targets = render_targets(latents, angles, self.cfg.img_resolution, self.cfg.z_dim)
        t, G, scores = self._fit_targets, self.G_ema, []
        for lo in range(0, t.z.shape[0], 8):
            c = t.c[lo:lo + 8].to(self.device)
            ws = G.mapping(t.z[lo:lo + 8].to(self.device), c)
            out = G.render(G.synthesize_planes(ws), ws, c, sampling=SamplingSettings(seed=0))
            out = {k: v.float().cpu() for k, v in out.items()}
            scores += [view_scores(out, i, t.image[lo + i], t.depth[lo + i])["psnr_head"] for i in range(c.shape[0])]
        return float(np.nanmean(scores))

    def _log_fit(self) -> None:
        fit = self.fit_psnr()
        self.log.scalars(self.kimg, {"fit/head_psnr": fit})
        print(f"kimg {self.kimg:.3f}  fit/head_psnr {fit:.2f} dB on the {self.opts.fixed_heads} fixed heads",
              file=sys.stderr, flush=True)

    # The loop -------------------------------------------------------------------------------------------

    def run(self, stop_after_iterations: int | None = None) -> None:
        try:
            self._run(stop_after_iterations)
        finally:
            if isinstance(self.source, Prefetching):
                self.source.close()

    def _run(self, stop_after_iterations: int | None) -> None:
        o = self.opts
        start_time = time.time() - self.progress.wall_time
        tick_t, tick_nimg = time.time(), self.progress.nimg
        next_log = self.progress.nimg + o.log_kimg * 1000
        snap = int(o.snap_kimg * 1000)
        next_snap = (self.progress.nimg // snap + 1) * snap
        next_img = self.progress.nimg if self.progress.nimg == 0 else next_snap
        done = 0
        if self.dist.is_main:
            write_json(self.run_dir / "options.json", {"options": o.to_dict(), "config": self.cfg.to_dict(),
                                                       "command": self.command, "data": self.data_path,
                                                       "init_skipped": self.init_skipped})
        if o.fixed_heads > 0 and self.dist.is_main and self.progress.nimg == 0:
            self._log_fit()
        while self.progress.nimg < o.kimg * 1000:
            if o.image_kimg > 0 and self.progress.nimg >= next_img and self.dist.is_main:
                self.log.image_grid(self.kimg, "grid", self.image_grid(), cols=8)
                next_img += int(o.image_kimg * 1000)
            stats = self.train_step()
            self.progress.wall_time = time.time() - start_time
            done += 1
            if self.progress.nimg >= next_log or self.progress.nimg >= o.kimg * 1000:
                now = time.time()
                speed = (self.progress.nimg - tick_nimg) / 1000 / max(now - tick_t, 1e-9)
                tick_t, tick_nimg = now, self.progress.nimg
                stats["progress/kimg_per_s"] = speed
                self.log.scalars(self.kimg, stats)
                if self.dist.is_main:
                    print(progress_line(self.kimg, o.kimg, speed, stats), file=sys.stderr, flush=True)
                next_log += o.log_kimg * 1000
            if self.progress.nimg >= next_snap or self.progress.nimg >= o.kimg * 1000:
                self.save_snapshot()
                if self.dist.is_main:
                    self.export(self.run_dir / "latest.safetensors")
                    if o.fixed_heads > 0:
                        self._log_fit()
                next_snap += snap
            if stop_after_iterations is not None and done >= stop_after_iterations:
                break
        if self.dist.is_main and self.progress.nimg >= o.kimg * 1000:
            self.log.image_grid(self.kimg, "grid", self.image_grid(), cols=8)
            write_json(self.run_dir / "done.json", {"kimg": self.kimg, "wall_time_s": self.progress.wall_time,
                                                    "exported": "latest.safetensors"})
        self.log.close()

