"""``aware3d convert``: an official EG3D / Mimic3D snapshot (.pkl) → an Aware3D model (.safetensors)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "convert", help="convert an official EG3D/Mimic3D .pkl snapshot to .safetensors (safely)",
        description="Convert an official EG3D or Mimic3D training snapshot. The file is read by a restricted "
                    "unpickler: the Python source embedded in the snapshot is never executed, and anything "
                    "outside a whitelist of globals is refused. G_ema's tensors keep their official names.")
    p.add_argument("snapshot", type=Path, help="official network-snapshot-*.pkl")
    p.add_argument("out", type=Path, help="output .safetensors (put it in the models folder to use it by name)")
    p.add_argument("--focal", type=float,
                   help="the training data's focal length in image widths (default 4.2647; ShapeNet 1.7074)")
    p.add_argument("--name", help="model name stored in the config (default: the output file name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.checkpoints.convert import convert_to_file
    from backend.errors import Aware3DError

    if args.out.suffix != ".safetensors":
        raise Aware3DError(f"output must end in .safetensors, got {args.out.name}", "e.g. ffhq512-128.safetensors")
    cfg = convert_to_file(args.snapshot, args.out, focal=args.focal, name=args.name)
    print(f"converted {args.snapshot.name} → {args.out} ({cfg.family}, {cfg.img_resolution}px, "
          f"projection {cfg.projection}, SR {cfg.superresolution}, "
          f"renders at {cfg.neural_rendering_resolution}² by default)", file=sys.stderr)
    return 0
