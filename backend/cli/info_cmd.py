"""``aware3d info``: a model's config and provenance, and optionally its state-dict keys and shapes."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("info", help="show a model's config, provenance and (with --keys) tensor shapes",
                       description="Show a model's config and provenance. --keys prints the state-dict "
                                   "keys with shapes, one per line as KEY<TAB>SHAPE (shapes like 512x25).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("model", nargs="?", help="model name or path (.safetensors or official .pkl)")
    src.add_argument("--config", help="a named config instead of a file (see the list in the error)")
    p.add_argument("--keys", action="store_true", help="print KEY<TAB>SHAPE lines only")
    p.set_defaults(func=run)


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def run(args: argparse.Namespace) -> int:
    from backend.checkpoints.model_file import read_header, tensor_shapes
    from backend.configs import get_config
    from backend.registry import resolve_model

    if args.config:
        cfg = get_config(args.config)
        if args.keys:
            from backend.generator import TriPlaneGenerator

            for k, v in TriPlaneGenerator(cfg).state_dict().items():
                print(f"{k}\t{shape_text(tuple(v.shape))}")
            return 0
        print(json.dumps({"config": cfg.to_dict()}, indent=2))
        return 0
    path = resolve_model(args.model)
    if path.suffix == ".pkl":
        from backend.checkpoints.convert import convert_official_pickle

        cfg, tensors, provenance = convert_official_pickle(path)
        if args.keys:
            for k, v in tensors.items():
                print(f"{k}\t{shape_text(tuple(v.shape))}")
            return 0
        print(json.dumps({"path": str(path), "kind": "official-pkl", "config": cfg.to_dict(),
                          "provenance": provenance}, indent=2))
        return 0
    if args.keys:
        for k, shape in tensor_shapes(path).items():
            print(f"{k}\t{shape_text(shape)}")
        return 0
    header = read_header(path)
    print(json.dumps({"path": str(path), "kind": header.kind, "format_version": header.format_version,
                      "config": header.config, "provenance": header.provenance}, indent=2))
    return 0
