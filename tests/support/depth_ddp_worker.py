"""Runs tiny depth-training steps (alone or under torchrun) and saves the last step's averaged gradients
and the weights, for DDP tests."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backend.depth import depth_config
from train.depth.data import DepthData
from train.depth.loop import PRESET_OPTIONS, DepthTrainer
from train.gan import distributed


def main() -> None:
    data_path, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    info = distributed.init_from_env("cpu")
    opts = dataclasses.replace(PRESET_OPTIONS["tiny"], batch=4, steps=100, snap_steps=1000, log_steps=1000)
    data = DepthData(data_path, xflip=True)
    trainer = DepthTrainer(opts, depth_config("tiny", data.resolution), data, out.parent / f"run-{info.world_size}",
                           dist=info, log=False)
    trainer.run(stop_after=steps)
    if info.is_main:
        grads = {f"grad.{k}": p.grad.numpy() for k, p in trainer.net.named_parameters() if p.grad is not None}
        np.savez(out, **grads, **{f"weight.{k}": v.numpy() for k, v in trainer.net.state_dict().items()})
    distributed.shutdown(info)


if __name__ == "__main__":
    main()
