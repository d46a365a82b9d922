# SPDX-License-Identifier: GPL-3.0-or-later
"""Options of a diffusion training run (stored in every snapshot, so a resume continues the same run)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DiffusionOptions:
    data: str
    out: str
    kind: str = "uncond"  # uncond | cond
    preset: str = "views64"
    steps: int = 20000
    batch: int = 16  # global batch (split over DDP ranks)
    lr: float = 2e-4
    ema: float = 0.999  # per step; IVID uses 0.9999 over 1 M steps, we train ~100× shorter
    warmup: int = 200
    seed: int = 0
    xflip: bool = True
    snap_every: int = 250  # steps between snapshots (and exports of the EMA net)
    keep_snapshots: int = 2
    init_from: str | None = None  # weights to start from: G_c from G_u (IVID's finetune_ckpt) or G_c; G_u from G_u
    true_pairs: float = 0.0  # cond only: share of true multi-view pairs (train.diffusion.pairs)
    backdrop: bool = False  # cond only: the model gets the first view's backdrop (UNetConfig.backdrop)
    hole_fill: str = "noise"  # cond only: what fills the condition's holes (UNetConfig.hole_fill)
    shape: bool = False  # cond only: the model gets the target view's known geometry (UNetConfig.shape)
    depth_model: str | None = None  # for zips without depth: a monocular depth network
    threads: int | None = None
    device: str = "auto"
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffusionOptions:
        return cls(**d)
