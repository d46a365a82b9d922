# SPDX-License-Identifier: GPL-3.0-or-later
"""Training loop of the monocular depth network: AdamW, EMA, data parallelism, resumable snapshots.

Reuses the GAN trainer's machinery (:mod:`train.gan.distributed` for torchrun/gloo/NCCL,
:mod:`train.gan.snapshot` for atomic safetensors snapshots, :mod:`train.gan.logs` for log.jsonl). As there,
the batch of step k is drawn from a generator seeded with (seed, k), for the whole global batch, and each
process takes its slice: a resumed run continues exactly, and N processes compute what one would.

The EMA network is exported to ``<out>/depth-latest.safetensors`` (``backend.diffusion.model_file.save_net``,
kind "depth") at every snapshot and at the end, with its provenance.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from backend.devices import hardware_description
from backend.diffusion.config import UNetConfig
from backend.diffusion.model_file import save_net
from backend.diffusion.unet import UNet
from backend.fileio import write_json
from train.depth.data import DepthData
from train.depth.loss import orientation, ssi_loss
from train.gan import distributed
from train.gan.logs import TrainingLog, format_duration
from train.gan.snapshot import (
    load_newest_snapshot,
    save_snapshot,
)

EXPORT_NAME = "depth-latest.safetensors"


@dataclass(frozen=True)
class DepthOptions:
    """Hyper-parameters of one run (stored in snapshots and options.json)."""

    preset: str = "small"
    steps: int = 2000
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    min_lr_ratio: float = 0.05
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    background_weight: float = 1.0
    gradient_weight: float = 0.5
    seed: int = 0
    snap_steps: int = 200
    log_steps: int = 20
    keep_snapshots: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DepthOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESET_OPTIONS: dict[str, DepthOptions] = {
    "small": DepthOptions(),
    "tiny": DepthOptions(preset="tiny", steps=40, batch=4, lr=3e-3, warmup=5, snap_steps=20, log_steps=10),
}


@dataclass
class Progress:
    step: int = 0
    nimg: int = 0
    wall_time: float = 0.0


class DepthTrainer:
    """Owns the network, its EMA copy, the optimiser and the run folder of one training run."""

    def __init__(self, opts: DepthOptions, cfg: UNetConfig, data: DepthData, run_dir: str | Path,
                 device: torch.device | str = "cpu", dist: distributed.DistInfo | None = None,
                 command: list[str] | None = None, data_path: str = "", test_data: DepthData | None = None,
                 log: bool = True) -> None:
        self.opts, self.cfg, self.data = opts, cfg, data
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.dist = dist or distributed.DistInfo()
        self.command = command or sys.argv
        self.data_path = data_path or data.path
        self.test_data = test_data
        if opts.batch % self.dist.world_size:
            raise ValueError(f"batch {opts.batch} is not divisible by {self.dist.world_size} processes")
        self.local_batch = opts.batch // self.dist.world_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed)
            self.net = UNet(cfg)
            # The UNet zero-initialises its output layer (right for diffusion). A constant prediction is a
            # degenerate point of the scale-and-shift-invariant loss (no usable gradient), so start random.
            self.net.out.reset_parameters()
        self.net = self.net.to(self.device).train()
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        self.progress = Progress()
        self.last_stats: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        self.log = TrainingLog(self.run_dir, enabled=self.dist.is_main and log, tensorboard=False)

    # Schedules and randomness ---------------------------------------------------------------------------

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio``·lr at ``steps``."""
        o = self.opts
        warm = min(1.0, (step + 1) / max(o.warmup, 1))
        frac = min(step / max(o.steps, 1), 1.0)
        return o.lr * warm * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    def _indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + self.progress.step)
        idx = torch.randint(len(self.data), (self.opts.batch,), generator=g)
        r = self.dist.rank
        return idx[r * self.local_batch : (r + 1) * self.local_batch].tolist()

    # One step -------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        o = self.opts
        rgb, disp, mask = (t.to(self.device) for t in self.data.batch(self._indices()))
        pred = self.net(rgb * 2.0 - 1.0)
        loss, stats = ssi_loss(pred, disp, mask, o.background_weight, o.gradient_weight)
        params = list(self.net.parameters())
        for p in params:
            p.grad = None
        loss.backward()
        distributed.average_gradients(params, self.dist)
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        if o.grad_clip > 0:
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, o.grad_clip))
        lr = self.lr_at(self.progress.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self._update_ema()
        self.progress.step += 1
        self.progress.nimg += o.batch
        stats = distributed.average_scalars(stats, self.dist)
        stats["lr"] = lr
        return stats

    @torch.no_grad()
    def _update_ema(self) -> None:
        n = self.progress.step
        beta = min(self.opts.ema_decay, (1 + n) / (10 + n))  # ramp-up: early weights are forgotten fast
        for p_ema, p in zip(self.ema.parameters(), self.net.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))

    # Snapshots and export ------------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {"options": self.opts.to_dict(), "config": self.cfg.to_dict(), "progress": vars(self.progress),
                "data": self.data_path, "last_stats": self.last_stats}

    def save_snapshot(self) -> Path | None:
        if not self.dist.is_main:
            return None
        return save_snapshot(self.run_dir, self.progress.step, {"net": self.net, "ema": self.ema}, {"opt": self.opt},
                             self._meta(), self.opts.keep_snapshots)

    def resume(self) -> bool:
        """Continue from the newest snapshot in the run folder; False when there is none."""
        meta = load_newest_snapshot(self.run_dir, {"net": self.net, "ema": self.ema}, {"opt": self.opt},
                                    self.device)
        if meta is None:
            return False
        saved = UNetConfig.from_dict(meta["config"])
        if saved != self.cfg:
            raise ValueError(f"the snapshot's network ({saved}) differs from this run's ({self.cfg})")
        self.progress = Progress(**meta["progress"])
        self.last_stats = dict(meta.get("last_stats") or {})
        return True

    def provenance(self) -> dict[str, Any]:
        return {
            "source": "aware3d-train depth",
            "command": " ".join(self.command),
            "data": self.data_path,
            "steps": self.progress.step,
            "images_seen": self.progress.nimg,
            "wall_time_s": round(self.progress.wall_time, 1),
            "hardware": hardware_description(self.device),
            "processes": self.dist.world_size,
            "options": self.opts.to_dict(),
            "metrics": {"train": {k: round(v, 5) for k, v in self.last_stats.items() if k.startswith("loss/")},
                        **self.metrics},
        }

    @torch.no_grad()
    def oriented_ema(self) -> tuple[UNet, bool]:
        """The EMA network, with its output negated if it learned "larger = farther" (see
        :func:`train.depth.loss.orientation`), so exported files always mean "larger = nearer", which
        :func:`backend.depth.depth_for_view` relies on. Judged on a fixed batch of training images; the
        training state is untouched (the loss is sign-invariant, so training is unaffected)."""
        idx = list(range(min(31, len(self.data))))  # odd: no tied vote
        rgb, disp, mask = (t.to(self.device) for t in self.data.batch(idx))
        if orientation(self.ema(rgb * 2.0 - 1.0), disp, mask) > 0:
            return self.ema, False
        net = copy.deepcopy(self.ema)
        net.out.weight.neg_()
        net.out.bias.neg_()
        return net, True

    def export(self, path: str | Path | None = None) -> Path:
        path = Path(path) if path is not None else self.run_dir / EXPORT_NAME
        net, negated = self.oriented_ema()
        prov = self.provenance()
        prov["output_negated"] = negated
        save_net(path, net, prov)
        return path

    def evaluate(self) -> dict[str, Any]:
        """Held-out metrics of the EMA net (AbsRel, δ after alignment) when a test set was given."""
        if self.test_data is None:
            return {}
        from train.depth.eval import evaluate

        net, _ = self.oriented_ema()
        self.metrics = {"test": evaluate(net, self.test_data, data_path=self.test_data.path)}
        return self.metrics["test"]

    # The loop --------------------------------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> None:
        o = self.opts
        start_time = time.time() - self.progress.wall_time
        tick_t, tick_step = time.time(), self.progress.step
        done = 0
        if self.dist.is_main:
            write_json(self.run_dir / "options.json", {"options": o.to_dict(), "config": self.cfg.to_dict(),
                                                       "command": self.command, "data": self.data_path})
        while self.progress.step < o.steps:
            stats = self.train_step()
            self.last_stats = stats
            self.progress.wall_time = time.time() - start_time
            done += 1
            step = self.progress.step
            finished = step >= o.steps
            if step % o.log_steps == 0 or finished:
                now = time.time()
                speed = (step - tick_step) / max(now - tick_t, 1e-9)
                tick_t, tick_step = now, step
                self.log.scalars(self.progress.nimg / 1000, {"step": step, **stats, "progress/steps_per_s": speed})
                if self.dist.is_main:
                    print(progress_line(step, o.steps, speed, o.batch, stats), file=sys.stderr, flush=True)
            if step % o.snap_steps == 0 or finished:
                if finished and self.dist.is_main:
                    self.evaluate()
                self.save_snapshot()
                if self.dist.is_main:
                    self.export()
            if stop_after is not None and done >= stop_after:
                break
        if done == 0 and self.progress.step >= o.steps and self.dist.is_main:
            self.evaluate()  # a finished run resumed: nothing to train, export (and evaluate) again
            self.export()
        if self.dist.is_main and self.progress.step >= o.steps:
            write_json(self.run_dir / "done.json", {"steps": self.progress.step, "wall_time_s":
                                                    round(self.progress.wall_time, 1), "exported": EXPORT_NAME,
                                                    "metrics": self.metrics})
        self.log.close()


def progress_line(step: int, total: int, steps_per_s: float, batch: int, stats: dict[str, float]) -> str:
    """``step 120/2000  img/s 31.2  ETA 12m03s  loss/total 0.123 ...`` (one line on stderr)."""
    eta = format_duration((total - step) / steps_per_s) if steps_per_s > 0 else "?"
    losses = "  ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(stats.items()) if k.startswith("loss/"))
    return f"step {step:6d}/{total}  img/s {steps_per_s * batch:6.1f}  ETA {eta}  {losses}"
