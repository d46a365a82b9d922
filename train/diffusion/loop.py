# SPDX-License-Identifier: GPL-3.0-or-later
"""The diffusion training loop: ε-MSE at uniformly drawn timesteps (IVID §5.3), AdamW, EMA, DDP,
atomic snapshots with exact resume, and the EMA net exported as a model file at every snapshot.

The global batch, its timesteps and noise are functions of (seed, step): a resumed run continues as if never
stopped, and N data-parallel ranks (each taking its slice) compute what one process would.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.devices import hardware_description
from backend.diffusion.config import PRESETS
from backend.diffusion.model_file import load_net, save_net
from backend.diffusion.schedule import NoiseSchedule
from backend.diffusion.unet import UNet, widen_input
from backend.errors import Aware3DError
from train.data.zip_dataset import ZipDataset, ZipDatasetError
from train.diffusion.data import RGBDExamples
from train.diffusion.options import DiffusionOptions
from train.gan import distributed
from train.gan.logs import TrainingLog, format_duration
from train.gan.snapshot import (
    list_snapshots,
    load_training_state,
    save_snapshot,
    stored_options,
)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _depth_fn(path: str | None, device: torch.device) -> Any:
    if path is None:
        return None
    from backend.depth import depth_for_view

    net = load_net(path, expect="depth", device=device).net
    return lambda rgb, cam: depth_for_view(net, rgb, cam)


class DiffusionTrainer:
    """One run: builds the data, the net and its EMA; ``train()`` runs to ``options.steps``."""

    def __init__(self, options: DiffusionOptions, resume: bool = False) -> None:
        self.info = distributed.init_from_env(_device(options.device).type)
        self.device = _device(options.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.info.local_rank)
        if options.threads:
            torch.set_num_threads(options.threads)
        self.out = Path(options.out)
        snaps = list_snapshots(self.out) if resume else []
        self.opts = options
        if snaps:  # before any tensor is loaded: a different network would fail with a shape error
            saved = DiffusionOptions.from_dict(stored_options(self.out) or {})
            for key in ("kind", "preset", "data", "backdrop", "hole_fill", "shape"):
                if getattr(saved, key) != getattr(options, key):
                    raise Aware3DError(f"--{key.replace('_', '-')} {getattr(options, key)} differs from the run "
                                       f"being resumed ({getattr(saved, key)})", "use the same settings or a new --out")
        if options.kind not in ("uncond", "cond"):
            raise Aware3DError(f"--kind must be uncond or cond, got {options.kind!r}")
        if options.preset not in PRESETS:
            raise Aware3DError(f"unknown preset {options.preset!r}", f"choose one of {', '.join(PRESETS)}")
        if options.batch % self.info.world_size:
            raise Aware3DError(f"--batch {options.batch} is not divisible by {self.info.world_size} processes")
        try:
            cfg = PRESETS[options.preset].replace(kind=options.kind, backdrop=options.backdrop,
                                                  hole_fill=options.hole_fill, shape=options.shape)
        except ValueError as exc:
            raise Aware3DError(str(exc)) from None
        try:
            data = ZipDataset(options.data, resolution=cfg.resolution, xflip=options.xflip, extras=True)
        except ZipDatasetError as exc:
            raise Aware3DError(str(exc), f"make a {cfg.resolution} px data set with aware3d-train make-dataset") \
                from None
        self.examples = RGBDExamples(data, options.kind, seed=options.seed,
                                     depth_fn=_depth_fn(options.depth_model, self.device),
                                     true_pairs=options.true_pairs, backdrop=options.backdrop,
                                     hole_fill=options.hole_fill, shape=options.shape)
        self.cfg = cfg
        torch.manual_seed(options.seed)  # the initial weights are part of the run
        self.net = UNet(cfg).to(self.device)
        if options.init_from and not snaps:
            source = load_net(options.init_from).net
            if source.cfg.kind not in ("uncond", "cond") or source.cfg.in_channels > cfg.in_channels:
                raise Aware3DError(f"--init-from {options.init_from}: a {source.cfg.kind!r} network with "
                                   f"{source.cfg.in_channels} inputs cannot start this {options.kind} network "
                                   f"({cfg.in_channels} inputs)",
                                   "G_u starts from a G_u; G_c from a G_u, a G_c, or (with --backdrop) either")
            try:
                widen_input(self.net, source.state_dict())
            except ValueError as exc:
                raise Aware3DError(f"--init-from {options.init_from}: {exc}", "use a model of the same preset") \
                    from None
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=options.lr, weight_decay=0.0)
        self.schedule = NoiseSchedule.from_config(cfg)
        self.step = 0
        self.wall = 0.0
        self.metrics: dict[str, float] = {}
        if snaps:
            meta = load_training_state(snaps[-1], {"net": self.net, "ema": self.ema}, {"opt": self.opt},
                                       self.device)
            self.step, self.wall = int(meta["step"]), float(meta["wall_time"])
            self.metrics = dict(meta.get("metrics", {}))
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = TrainingLog(self.out, enabled=self.info.is_main, tensorboard=False)

    # -- one step ---------------------------------------------------------------------------------------
    def _local(self) -> slice:
        n = self.opts.batch // self.info.world_size
        return slice(self.info.rank * n, (self.info.rank + 1) * n)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's share of the global batch of ``step`` (the global batch does not depend on the
        number of processes, so N ranks average to the gradient one process would compute)."""
        rng = np.random.default_rng([self.opts.seed, step])
        idx = rng.integers(0, len(self.examples), self.opts.batch)[self._local()]
        items = [self.examples.example(int(i), step) for i in idx]
        return {k: torch.stack([it[k] for it in items]).to(self.device) for k in items[0]}

    def loss(self, b: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.opts.seed, step, 1)) & 0x7FFFFFFF)
        shape = (self.opts.batch, *b["target"].shape[1:])
        t = torch.randint(0, self.schedule.timesteps, (self.opts.batch,), generator=g)[self._local()]
        noise = torch.randn(shape, generator=g)[self._local()]
        x0 = b["target"]
        t, noise = t.to(self.device), noise.to(self.device)
        xt = self.schedule.add_noise(x0, noise, t)
        inp = torch.cat([xt, b["cond"]], dim=1) if "cond" in b else xt
        target = noise if self.cfg.prediction == "eps" else self.schedule.v_target(x0, noise, t)
        return (self.net(inp, t) - target).square().mean()

    def train_step(self) -> float:
        lr = self.opts.lr * min(1.0, (self.step + 1) / max(self.opts.warmup, 1))
        for group in self.opt.param_groups:
            group["lr"] = lr
        loss = self.loss(self.batch(self.step), self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.net.parameters() if p.requires_grad]
        distributed.average_gradients(params, self.info)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        # EMA with a warm-up: the decay grows as (1 + step) / (10 + step) up to --ema, so a short CPU run's
        # exported net is not mostly its random initialisation (0.999^1000 ≈ 0.37)
        decay = min(self.opts.ema, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p, 1.0 - decay)
        self.step += 1
        return float(loss.detach())

    # -- files ------------------------------------------------------------------------------------------
    def provenance(self) -> dict[str, Any]:
        return {"source": "aware3d-train diffusion", "command": " ".join(self.opts.command),
                "data": Path(self.opts.data).name, "steps": self.step,
                "images": self.step * self.opts.batch, "wall_time_s": round(self.wall, 1),
                "hardware": f"{hardware_description(self.device)} x{self.info.world_size}",
                "metrics": self.metrics}

    def export(self, path: Path) -> None:
        save_net(path, self.ema, self.provenance())

    def save(self) -> None:
        if not self.info.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        meta = {"options": self.opts.to_dict(), "step": self.step, "wall_time": self.wall, "metrics": self.metrics}
        save_snapshot(self.out, self.step, {"net": self.net, "ema": self.ema}, {"opt": self.opt}, meta,
                      self.opts.keep_snapshots)
        self.export(self.out / f"{self.opts.kind}-latest.safetensors")

    def train(self, progress: bool = True) -> dict[str, Any]:
        start_step = self.step
        t0 = time.time()
        wall0 = self.wall
        try:
            with distributed.sigterm_as_interrupt():  # ``kill`` keeps the work since the last snapshot
                self._run(start_step, t0, wall0, progress)
        except KeyboardInterrupt:
            self.save()
            if self.info.is_main:
                print(f"interrupted: snapshot saved at step {self.step}; continue with --resume", file=sys.stderr)
            distributed.shutdown(self.info, synchronize=False)
            raise
        if self.step % self.opts.snap_every:
            self.save()
        self.log.close()
        distributed.shutdown(self.info)
        return {"steps": self.step, "wall_time_s": round(self.wall, 1), "loss": self.metrics.get("loss_ema"),
                "export": str(self.out / f"{self.opts.kind}-latest.safetensors")}

    def _run(self, start_step: int, t0: float, wall0: float, progress: bool) -> None:
        """Steps until ``options.steps`` with progress lines, log scalars and periodic snapshots."""
        avg = math.nan
        while self.step < self.opts.steps:
            loss = self.train_step()
            loss = distributed.average_scalars({"loss": loss}, self.info)["loss"]
            avg = loss if math.isnan(avg) else 0.98 * avg + 0.02 * loss
            self.wall = wall0 + time.time() - t0
            self.metrics = {"loss_ema": round(avg, 5)}
            if self.info.is_main and progress and (self.step % 10 == 0 or self.step == self.opts.steps):
                rate = (self.step - start_step) / max(time.time() - t0, 1e-9)
                eta = (self.opts.steps - self.step) / max(rate, 1e-9)
                print(f"step {self.step}/{self.opts.steps}  loss {avg:.4f}  {rate:.2f} step/s  "
                      f"ETA {format_duration(eta)}", file=sys.stderr, flush=True)
            if self.step % 50 == 0:
                self.log.scalars(self.step / 1000, {"loss": avg})
            if self.step % self.opts.snap_every == 0:
                self.save()
                distributed.barrier(self.info)

