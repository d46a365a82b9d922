"""Our UNet against ``diffusers.UNet2DModel`` of the same shape: parameters and CPU time (forward, train step).

    PYTHONPATH=/path/to/diffusers python benchmarks/unet_choice.py --out benchmarks/results/unet_choice_cpu.json

diffusers is not an Aware3D dependency; install it anywhere on PYTHONPATH to run this comparison. Both nets:
G_c's 10 input channels, 4 outputs, widths 32/64/64/64 at 64/32/16/8 px, one residual block per level,
self-attention at 16 and 8 px. Timings interleave the two nets (median of ``--repeat``). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.devices import hardware_description
from backend.diffusion.config import PRESETS
from backend.diffusion.unet import UNet
from benchmarks.record import Run


def diffusers_unet() -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=64, in_channels=10, out_channels=4, block_out_channels=(32, 64, 64, 64),
                       layers_per_block=1, norm_num_groups=8, attention_head_dim=32,
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ours = UNet(PRESETS["views64"].replace(kind="cond"))
    theirs = diffusers_unet()
    nets = {"aware3d": (ours, lambda x, t: ours(x, t)), "diffusers": (theirs, lambda x, t: theirs(x, t).sample)}
    x1, t1 = torch.randn(1, 10, 64, 64), torch.tensor([500])
    x8, t8 = torch.randn(8, 10, 64, 64), torch.randint(0, 1000, (8,))
    times: dict[str, dict[str, list[float]]] = {k: {"forward_b1_ms": [], "train_step_b8_ms": []} for k in nets}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in nets.items()}
    for r in range(args.repeat + 1):
        for k, (_, f) in nets.items():
            with torch.no_grad():
                t0 = time.perf_counter()
                f(x1, t1)
                fwd = time.perf_counter() - t0
            t0 = time.perf_counter()
            loss = f(x8, t8).square().mean()
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
            step = time.perf_counter() - t0
            if r:  # the first round warms up
                times[k]["forward_b1_ms"].append(1000 * fwd)
                times[k]["train_step_b8_ms"].append(1000 * step)
    result = {"benchmark": "unet_choice", "device": hardware_description(torch.device("cpu")),
              "threads": args.threads, "repeat": args.repeat}
    for k, (m, _) in nets.items():
        result[k] = {"parameters": sum(p.numel() for p in m.parameters()),
                     **{n: round(statistics.median(v), 1) for n, v in times[k].items()}}
    import diffusers

    result["diffusers_version"] = diffusers.__version__
    print(json.dumps(record.finish(result, args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
