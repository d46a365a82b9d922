"""Runs a few tiny distillation steps (alone or under torchrun) and saves G's weights, for DDP tests."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from train.distill.loop import DistillTrainer
from train.distill.options import PRESETS
from train.gan import distributed


def main() -> None:
    out, iterations = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    info = distributed.init_from_env("cpu")
    opts = dataclasses.replace(PRESETS["tiny"], batch=4, kimg=1.0, snap_kimg=100, image_kimg=0, log_kimg=100,
                               truth_resolution=32)
    trainer = DistillTrainer(opts, out.parent / f"run-{info.world_size}", dist=info, log=False)
    trainer.run(stop_after_iterations=iterations)
    if info.is_main:
        save_file({k: v.contiguous() for k, v in trainer.G.state_dict().items()}, str(out))
    distributed.shutdown(info)


if __name__ == "__main__":
    main()
