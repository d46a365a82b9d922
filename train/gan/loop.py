"""The GAN training loop: EG3D's recipe with Mimic3D's 3D-to-2D imitation stage.

Per iteration: a generator step (non-saturating loss through the dual discriminator, with generator pose
conditioning swapped with probability ``gpc_reg_prob``; every ``g_reg_interval`` steps the density smoothness
regulariser), a discriminator step (logistic loss; every ``d_reg_interval`` steps R1 on real images) and, in
the imitation stage, the patch terms. The generator's EMA copy is what gets exported.

Reproducibility: all randomness of iteration k is drawn from generators seeded with (seed, k, stream), for
the whole global batch, and every process takes its slice. So a resumed run continues exactly where the
snapshot left off, and N data-parallel processes compute what one process would.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from backend.configs import get_config
from backend.fileio import write_json
from backend.generator import TriPlaneGenerator
from backend.render.rays import patch_uv
from backend.render.renderer import SamplingSettings
from backend.sampling import camera_label, to_uint8
from train.amp import autocast, check_amp
from train.ema import ema_beta, update_ema
from train.gan import distributed
from train.gan.discriminator import Discriminator, DiscriminatorConfig, dual_input
from train.gan.logs import TrainingLog, progress_line
from train.gan.options import GanOptions
from train.gan.perceptual import DiscriminatorFeatureDistance, LPIPSDistance
from train.gan.snapshot import export_generator, load_newest_snapshot, run_provenance, save_snapshot

STREAMS = {name: i for i, name in enumerate(
    ["data", "z_G", "pose_G", "swap_G", "z_D", "pose_D", "swap_D", "z_reg", "pose_reg", "swap_reg",
     "noise_G", "noise_D", "render_G", "render_D", "patch_G", "patch_D", "patch_real", "density", "cnoise",
     "patchrender_G", "patchrender_D"], start=1)}


class ImageDataset(Protocol):
    """What the loop needs from a data set (EG3D's zip format reader provides it)."""

    resolution: int

    def __len__(self) -> int: ...

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, Any]: ...

    def get_label(self, idx: int) -> np.ndarray: ...


@dataclass
class Progress:
    nimg: int = 0
    iteration: int = 0
    wall_time: float = 0.0


class GanTrainer:
    """Owns the networks, optimisers and run folder of one training run."""

    def __init__(
        self,
        opts: GanOptions,
        dataset: ImageDataset,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
        dist: distributed.DistInfo | None = None,
        command: list[str] | None = None,
        data_path: str = "",
        log: bool = True,
    ) -> None:
        self.opts = opts
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.dist = dist or distributed.DistInfo()
        self.command = command or sys.argv
        self.data_path = data_path
        if opts.batch % self.dist.world_size:
            raise ValueError(f"batch {opts.batch} is not divisible by {self.dist.world_size} processes")
        self.local_batch = opts.batch // self.dist.world_size
        if opts.amp:
            check_amp(self.device)
        cfg = get_config(opts.config)
        if dataset.resolution != cfg.img_resolution:
            raise ValueError(f"the data set's images are {dataset.resolution}px but config {cfg.name} makes "
                             f"{cfg.img_resolution}px images")
        self.cfg = cfg
        labels = np.stack([np.asarray(dataset.get_label(i), dtype=np.float32) for i in range(len(dataset))])
        if labels.ndim != 2 or labels.shape[1] != cfg.c_dim:
            raise ValueError(f"the data set needs {cfg.c_dim}-value camera labels (dataset.json)")
        self.labels_all = torch.from_numpy(labels)
        self.G = TriPlaneGenerator(cfg, seed=opts.seed).train().requires_grad_(False).to(self.device)
        self.G.dataset_label_std.copy_(self.labels_all.std(0).to(self.device))
        self.G_ema = copy.deepcopy(self.G).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed + 1)
            self.D = Discriminator(DiscriminatorConfig(
                resolution=cfg.img_resolution, img_channels=6, c_dim=cfg.c_dim, channel_base=opts.d_channel_base,
                channel_max=opts.d_channel_max, mapping_layers=opts.d_mapping_layers,
                mbstd_group_size=opts.mbstd_group_size)).to(self.device).requires_grad_(False)
            im = opts.imitation
            self.patch_size = max(8, round(cfg.img_resolution * im.patch_scale))
            self.D_patch = None
            if im.start_kimg is not None:
                self.D_patch = Discriminator(DiscriminatorConfig(
                    resolution=self.patch_size, img_channels=3, c_dim=0, channel_base=opts.d_channel_base,
                    channel_max=opts.d_channel_max, mbstd_group_size=opts.mbstd_group_size),
                ).to(self.device).requires_grad_(False)
        self.opt_G = self._adam(self.G.parameters(), opts.lr_g, opts.g_reg_interval)
        self.opt_D = self._adam(self.D.parameters(), opts.lr_d, opts.d_reg_interval)
        self.opt_Dp = (self._adam(self.D_patch.parameters(), opts.lr_d, opts.d_reg_interval)
                       if self.D_patch is not None else None)
        self.perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        if self.D_patch is not None:
            self.perceptual = (LPIPSDistance(im.lpips_weights, im.l1_weight, self.device) if im.lpips_weights
                               else DiscriminatorFeatureDistance(self.D_patch, im.l1_weight))
        self.progress = Progress()
        self.log = TrainingLog(self.run_dir, enabled=self.dist.is_main and log)
        self._grid_z = None

    def _adam(self, params: Any, lr: float, reg_interval: int) -> torch.optim.Adam:
        # Lazy regularisation: the main loss runs every step, the regulariser every `reg_interval` steps.
        ratio = reg_interval / (reg_interval + 1)
        b1, b2 = self.opts.betas
        return torch.optim.Adam(params, lr=lr * ratio, betas=(b1**ratio, b2**ratio), eps=1e-8)

    # Randomness -------------------------------------------------------------------------------------

    def _gen(self, stream: str) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.opts.seed * 1_000_003 + self.progress.iteration) * 101 + STREAMS[stream])
        return g

    def _local(self, t: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global-batch tensor."""
        r = self.dist.rank
        return t[r * self.local_batch : (r + 1) * self.local_batch].to(self.device)

    def _poses(self, stream: str) -> torch.Tensor:
        idx = torch.randint(len(self.labels_all), (self.opts.batch,), generator=self._gen(stream))
        return self.labels_all[idx]

    def _gen_inputs(self, phase: str) -> tuple[torch.Tensor, ...]:
        z = torch.randn(self.opts.batch, self.cfg.z_dim, generator=self._gen(f"z_{phase}"))
        c = self._poses(f"pose_{phase}")
        swap = torch.rand(self.opts.batch, 1, generator=self._gen(f"swap_{phase}")) < self.opts.gpc_reg_prob
        c_cond = torch.where(swap, torch.roll(c, 1, 0), c)
        return self._local(z), self._local(c), self._local(c_cond)

    def _real_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.dataset), (self.opts.batch,), generator=self._gen("data"))
        local = idx[self.dist.rank * self.local_batch : (self.dist.rank + 1) * self.local_batch]
        imgs, labels = [], []
        for i in local.tolist():
            img, lab = self.dataset[i]
            imgs.append(torch.as_tensor(img))
            labels.append(torch.as_tensor(np.asarray(lab, dtype=np.float32)))
        x = torch.stack(imgs).to(self.device, torch.float32) / 127.5 - 1
        return x, torch.stack(labels).to(self.device)

    # Schedules --------------------------------------------------------------------------------------

    @property
    def kimg(self) -> float:
        return self.progress.nimg / 1000

    def neural_rendering_resolution(self) -> int:
        o = self.opts
        start = o.nrr_initial or self.cfg.neural_rendering_resolution
        end = o.nrr_final or start
        alpha = min(self.progress.nimg / max(o.nrr_fade_kimg * 1000, 1), 1.0)
        return int(np.rint(start * (1 - alpha) + end * alpha))

    def blur_sigma(self) -> float:
        o = self.opts
        if o.blur_fade_kimg <= 0:
            return 0.0
        return max(1 - self.progress.nimg / (o.blur_fade_kimg * 1000), 0.0) * o.blur_init_sigma

    def imitation_active(self) -> bool:
        s = self.opts.imitation.start_kimg
        return self.D_patch is not None and s is not None and self.kimg >= s

    # Networks -------------------------------------------------------------------------------------------

    def _sample_seeds(self, stream: str) -> list[int]:
        """One seed per sample of this process's slice of the global batch."""
        seeds = torch.randint(2**31 - 1, (self.opts.batch,), generator=self._gen(stream))
        r = self.dist.rank
        return seeds[r * self.local_batch : (r + 1) * self.local_batch].tolist()

    def _sampling(self, stream: str, distortion: bool = False) -> SamplingSettings:
        return SamplingSettings(sample_seeds=tuple(self._sample_seeds(stream)), ray_chunk=1 << 30,
                                distortion=distortion)

    def _autocast(self) -> AbstractContextManager[object]:
        """bf16 autocast around a forward pass with ``--amp`` (train.amp); losses are taken in float32. The
        mapping network stays float32 outside it: it is a small MLP, and its running w_avg is float32."""
        return autocast(self.device, self.opts.amp)

    def _run_G(self, z: torch.Tensor, c: torch.Tensor, c_cond: torch.Tensor, phase: str,
               update_emas: bool = False, patch: bool = False) -> dict[str, torch.Tensor]:
        ws = self.G.mapping(z, c_cond, update_emas=update_emas)
        with self._autocast():
            out = self._forward_G(ws, c, phase, patch)
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}

    def _forward_G(self, ws: torch.Tensor, c: torch.Tensor, phase: str, patch: bool) -> dict[str, torch.Tensor]:
        G = self.G
        gens = [torch.Generator(device=self.device).manual_seed(s) for s in self._sample_seeds(f"noise_{phase}")]
        planes = G.synthesize_planes(ws, noise_mode="random", generator=gens, fused=False)
        plane_set = "coarse" if self.cfg.detail_plane else "all"
        distortion = phase == "G" and self.opts.distortion_reg > 0
        out = G.render(planes, ws, c, resolution=self.neural_rendering_resolution(),
                       sampling=self._sampling(f"render_{phase}", distortion), run_sr=True, plane_set=plane_set)
        out["ws"] = ws
        if patch:
            ps, full = self.patch_size, self.cfg.img_resolution
            corners = torch.randint(full - ps + 1, (self.opts.batch, 2), generator=self._gen(f"patch_{phase}"))
            corners = self._local(corners)
            uv = patch_uv(full, ps, corners[:, 0], corners[:, 1]).to(self.device)
            res = G.render_rays(planes, c, uv, self._sampling(f"patchrender_{phase}"), ws=ws)
            n = c.shape[0]
            out["patch_raw"] = res.features[:, :3].reshape(n, 3, ps, ps)
            rows = corners[:, 0, None] + torch.arange(ps, device=self.device)
            cols = corners[:, 1, None] + torch.arange(ps, device=self.device)
            img = out["image"]
            out["patch_target"] = torch.stack([img[i][:, rows[i]][:, :, cols[i]] for i in range(n)])
        return out

    def _run_D(self, image: torch.Tensor, image_raw: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.opts.c_noise > 0:
            noise = self._local(torch.randn(self.opts.batch, c.shape[1], generator=self._gen("cnoise"))).to(c)
            c = c + noise * self.labels_all.std(0).to(c) * self.opts.c_noise
        with self._autocast():
            logits = self.D(dual_input(image, image_raw, self.blur_sigma()), c)
        return logits.float()  # type: ignore[union-attr]

    def _run_D_patch(self, patch: torch.Tensor) -> torch.Tensor:
        assert self.D_patch is not None
        with self._autocast():
            logits = self.D_patch(patch, None)
        return logits.float()  # type: ignore[union-attr]

    def _step(self, opt: torch.optim.Optimizer, module: torch.nn.Module, loss: torch.Tensor) -> None:
        params = [p for p in module.parameters()]
        for p in params:
            p.grad = None
        loss.backward()
        distributed.average_gradients(params, self.dist)
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0, posinf=1e5, neginf=-1e5)
        opt.step()

    # One iteration ---------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        o = self.opts
        it = self.progress.iteration
        stats: dict[str, float] = {}
        imitate = self.imitation_active()

        # Generator: adversarial (+ imitation and patch adversarial terms).
        self.G.requires_grad_(True)
        z, c, c_cond = self._gen_inputs("G")
        out = self._run_G(z, c, c_cond, "G", patch=imitate)
        loss_g = F.softplus(-self._run_D(out["image"], out["image_raw"], c)).mean()
        stats["loss/G"] = float(loss_g.detach())
        if imitate:
            assert self.D_patch is not None and self.perceptual is not None
            with self._autocast():
                imitation = self.perceptual(out["patch_raw"], out["patch_target"].detach()).float()
            adv_patch = F.softplus(-self._run_D_patch(out["patch_raw"])).mean()
            loss_g = loss_g + o.imitation.weight * imitation + o.imitation.patch_gan_weight * adv_patch
            stats["loss/G_imitation"] = float(imitation.detach())
            stats["loss/G_patch"] = float(adv_patch.detach())
        if o.opacity_reg > 0 and self.cfg.background != "none":
            opacity = opacity_prior(out["image_alpha"], o.opacity_entropy)
            loss_g = loss_g + o.opacity_reg * opacity
            stats["loss/G_opacity"] = float(opacity.detach())
        if o.distortion_reg > 0:
            distortion = out["image_distortion"].mean()
            loss_g = loss_g + o.distortion_reg * distortion
            stats["loss/G_distortion"] = float(distortion.detach())
        self._step(self.opt_G, self.G, loss_g)

        # Generator regulariser: density smoothness (EG3D's 'l1' density regularisation).
        if o.density_reg > 0 and it % o.g_reg_interval == 0:
            z, c, c_cond = self._gen_inputs("reg")
            gd = self._gen("density")
            pts = torch.rand(self.opts.batch, 1000, 3, generator=gd) * 2 - 1
            pts = self._local(pts)
            noise = self._local(torch.randn(self.opts.batch, 1000, 3, generator=gd))
            ws = self.G.mapping(z, c_cond)
            with self._autocast():
                planes = self.G.synthesize_planes(ws, noise_mode="const", fused=False)
                sigma = self.G.query(planes, torch.cat([pts, pts + noise * o.density_reg_p_dist], dim=1))["sigma"]
            sigma = sigma.float()
            tv = F.l1_loss(sigma[:, :1000], sigma[:, 1000:]) * o.density_reg
            self._step(self.opt_G, self.G, tv * o.g_reg_interval)
            stats["loss/G_density"] = float(tv.detach())
        self.G.requires_grad_(False)

        # Discriminator: fakes and reals (+ lazy R1).
        self.D.requires_grad_(True)
        z, c, c_cond = self._gen_inputs("D")
        with torch.no_grad():
            fake = self._run_G(z, c, c_cond, "D", update_emas=True, patch=imitate)
            # Each process moved w_avg towards its own batch mean; the average is the global batch's move.
            distributed.average_tensor_(self.G.backbone.mapping.w_avg, self.dist)
        real, real_c = self._real_batch()
        real_raw = F.interpolate(real, size=(self.neural_rendering_resolution(),) * 2, mode="bilinear",
                                 align_corners=False, antialias=True)
        loss_fake = F.softplus(self._run_D(fake["image"], fake["image_raw"], c)).mean()
        do_r1 = o.r1_gamma > 0 and it % o.d_reg_interval == 0
        real_in, real_raw_in = real.detach().requires_grad_(do_r1), real_raw.detach().requires_grad_(do_r1)
        logits_real = self._run_D(real_in, real_raw_in, real_c)
        loss_real = F.softplus(-logits_real).mean()
        loss_d = loss_fake + loss_real
        if do_r1:
            grads = torch.autograd.grad(logits_real.sum(), [real_in, real_raw_in], create_graph=True)
            r1 = sum(g.square().sum(dim=[1, 2, 3]) for g in grads).mean()  # type: ignore[union-attr]
            loss_d = loss_d + r1 * (o.r1_gamma / 2) * o.d_reg_interval
            stats["loss/D_r1"] = float(r1.detach())
        stats["loss/D"] = float((loss_fake + loss_real).detach())
        stats["scores/real"] = float(logits_real.detach().mean())
        self._step(self.opt_D, self.D, loss_d)
        self.D.requires_grad_(False)

        # Patch discriminator: real crops against rendered patches (+ lazy R1).
        if imitate:
            assert self.D_patch is not None and self.opt_Dp is not None
            self.D_patch.requires_grad_(True)
            ps, full = self.patch_size, self.cfg.img_resolution
            corners = self._local(torch.randint(full - ps + 1, (self.opts.batch, 2),
                                                generator=self._gen("patch_real")))
            crops = torch.stack([real[i, :, a : a + ps, b : b + ps] for i, (a, b) in enumerate(corners.tolist())])
            loss_pf = F.softplus(self._run_D_patch(fake["patch_raw"].detach())).mean()
            crops_in = crops.detach().requires_grad_(do_r1)
            logits = self._run_D_patch(crops_in)
            loss_pr = F.softplus(-logits).mean()
            loss_p = loss_pf + loss_pr
            if do_r1:
                (g,) = torch.autograd.grad(logits.sum(), [crops_in], create_graph=True)
                r1p = g.square().sum(dim=[1, 2, 3]).mean()
                loss_p = loss_p + r1p * (o.imitation.r1_gamma_patch / 2) * o.d_reg_interval
            stats["loss/D_patch"] = float((loss_pf + loss_pr).detach())
            self._step(self.opt_Dp, self.D_patch, loss_p)
            self.D_patch.requires_grad_(False)

        # EMA of the generator.
        self._update_ema()
        self.progress.nimg += o.batch
        self.progress.iteration += 1
        return distributed.average_scalars(stats, self.dist)

    def _update_ema(self) -> None:
        o = self.opts
        ema_kimg = o.ema_kimg if o.ema_kimg is not None else o.batch * 10 / 32
        update_ema(self.G_ema, self.G, ema_beta(o.batch, self.progress.nimg, ema_kimg, o.ema_rampup))

    # Snapshots, export, grids ----------------------------------------------------------------------

    def _modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"G": self.G, "G_ema": self.G_ema, "D": self.D}
        if self.D_patch is not None:
            mods["D_patch"] = self.D_patch
        return mods

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts: dict[str, torch.optim.Optimizer] = {"G": self.opt_G, "D": self.opt_D}
        if self.opt_Dp is not None:
            opts["D_patch"] = self.opt_Dp
        return opts

    def save_snapshot(self) -> Path | None:
        if not self.dist.is_main:
            return None
        meta = {"options": self.opts.to_dict(), "config": self.cfg.to_dict(),
                "progress": vars(self.progress), "data": self.data_path}
        return save_snapshot(self.run_dir, self.progress.nimg, self._modules(), self._optimizers(), meta,
                             self.opts.keep_snapshots)

    def resume(self) -> bool:
        """Continue from the newest snapshot in the run folder; False when there is none."""
        meta = load_newest_snapshot(self.run_dir, self._modules(), self._optimizers(), self.device)
        if meta is None:
            return False
        self.progress = Progress(**meta["progress"])
        return True

    def _export_before_imitation(self) -> None:
        """Keep the generator as it is when the imitation stage starts, to compare before and after."""
        start = self.opts.imitation.start_kimg
        path = self.run_dir / "before-imitation.safetensors"
        if (self.dist.is_main and self.D_patch is not None and start is not None and start <= self.kimg < start + 1
                and not path.exists()):
            self.export(path)

    def provenance(self, wall_time: float) -> dict[str, Any]:
        return run_provenance("aware3d-train gan", self.command, self.data_path, self.kimg, wall_time, self.device,
                              self.dist.world_size, self.opts.to_dict())

    def export(self, path: str | Path) -> Path:
        return export_generator(path, self.G_ema, self.cfg.to_dict(), self.provenance(self.progress.wall_time))

    @torch.no_grad()
    def image_grid(self, n: int = 8) -> np.ndarray:
        """n seeds × 3 yaws (−30°, 0°, +30°) from G_ema: final image and raw render side by side."""
        G = self.G_ema
        rows = []
        for seed in range(n):
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, self.cfg.z_dim)).float().to(self.device)
            c0 = torch.from_numpy(camera_label(self.cfg))[None].to(self.device)
            ws = G.mapping(z, c0, truncation_psi=self.opts.truncation_for_grids)
            planes = G.synthesize_planes(ws)
            for yaw in (-30.0, 0.0, 30.0):
                c = torch.from_numpy(camera_label(self.cfg, yaw, 0.0))[None].to(self.device)
                out = G.render(planes, ws, c, sampling=SamplingSettings(seed=0))
                raw = F.interpolate(out["image_raw"], size=out["image"].shape[-2:], mode="nearest")
                rows.append(to_uint8(out["image"][0]))
                rows.append(to_uint8(raw[0]))
        return np.stack(rows)

    # The loop -------------------------------------------------------------------------------------------

    def run(self, stop_after_iterations: int | None = None) -> None:
        o = self.opts
        start_time = time.time() - self.progress.wall_time
        tick_t, tick_nimg = time.time(), self.progress.nimg
        next_log = self.progress.nimg + o.log_kimg * 1000
        next_snap = (self.progress.nimg // int(o.snap_kimg * 1000) + 1) * int(o.snap_kimg * 1000)
        next_img = self.progress.nimg if self.progress.nimg == 0 else next_snap
        done = 0
        if self.dist.is_main:
            write_json(self.run_dir / "options.json", {"options": o.to_dict(), "config": self.cfg.to_dict(),
                                                       "command": self.command, "data": self.data_path})
        while self.progress.nimg < o.kimg * 1000:
            self._export_before_imitation()
            if o.image_kimg > 0 and self.progress.nimg >= next_img and self.dist.is_main:
                self.log.image_grid(self.kimg, "grid", self.image_grid(4), cols=6)
                next_img += int(o.image_kimg * 1000)
            stats = self.train_step()
            self.progress.wall_time = time.time() - start_time
            done += 1
            if self.progress.nimg >= next_log or self.progress.nimg >= o.kimg * 1000:
                now = time.time()
                speed = (self.progress.nimg - tick_nimg) / 1000 / max(now - tick_t, 1e-9)
                tick_t, tick_nimg = now, self.progress.nimg
                stats.update({"progress/kimg_per_s": speed, "progress/blur_sigma": self.blur_sigma(),
                              "progress/nrr": self.neural_rendering_resolution(),
                              "progress/imitation": float(self.imitation_active())})
                self.log.scalars(self.kimg, stats)
                if self.dist.is_main:
                    print(progress_line(self.kimg, o.kimg, speed, stats), file=sys.stderr, flush=True)
                next_log += o.log_kimg * 1000
            if self.progress.nimg >= next_snap or self.progress.nimg >= o.kimg * 1000:
                self.save_snapshot()
                if self.dist.is_main:
                    self.export(self.run_dir / "latest.safetensors")
                next_snap += int(o.snap_kimg * 1000)
            if stop_after_iterations is not None and done >= stop_after_iterations:
                break
        if self.dist.is_main and self.progress.nimg >= o.kimg * 1000:
            self.log.image_grid(self.kimg, "grid", self.image_grid(4), cols=6)
            write_json(self.run_dir / "done.json", {"kimg": self.kimg, "wall_time_s": self.progress.wall_time,
                                                    "exported": "latest.safetensors"})
        self.log.close()


def read_options_file(run_dir: Path) -> GanOptions:
    data = json.loads((run_dir / "options.json").read_text())
    return GanOptions.from_dict(data["options"])


def opacity_prior(alpha: torch.Tensor, entropy_weight: float = 0.0) -> torch.Tensor:
    """Mean opacity of the raw render, plus ``entropy_weight`` x its binary entropy.

    The mean is an L1 sparsity prior that pushes unexplained density out of empty space (the learned backdrop
    paints the background). The entropy makes each pixel clearly head or clearly backdrop, so that the density
    has a sharp level set that a mesh can follow; with the mean at weight 1, pixels above alpha ~0.73 are pushed
    to 1 and the rest to 0 (d/da of the entropy is log((1 - a) / a)). Start it only once the volume has cleared:
    from a fogged volume (alpha near 1 everywhere) it pushes every ray further towards opaque, as measured.
    """
    loss = alpha.mean()
    if entropy_weight > 0:
        a = alpha.clamp(1e-4, 1 - 1e-4)
        loss = loss + entropy_weight * (-(a * a.log() + (1 - a) * (1 - a).log())).mean()
    return loss


def nan_safe(x: float) -> float:
    return x if math.isfinite(x) else float("nan")
