"""``aware3d models``: the models found in the user model folder and the bundled assets; ``aware3d models add``
puts a model file (or a converted official snapshot) into the user model folder after validating it."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("models", help="list available models",
                       description="List models in the user model folder (AWARE3D_MODELS, default under the "
                                   "user's data folder) and the bundled assets/models folder.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser(
        "add", help="validate a model file and add it to the user model folder",
        description="Validate a .safetensors model file in full (header, config, tensor shapes, no NaN/inf; "
                    "AWARE3D_ALLOW_NONFINITE=1 allows NaN/inf) or convert an official .pkl snapshot with the "
                    "safe converter, then place it in the user model folder. A refused file leaves nothing "
                    "behind.")
    add.add_argument("path", help="the .safetensors or official .pkl file")
    add.add_argument("--name", default=None, help="name in the models folder (default: the file's name)")
    add.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    add.set_defaults(func=run_add)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def run_add(args: argparse.Namespace) -> int:
    from pathlib import Path

    from backend.server.download import add_model_file

    info = add_model_file(Path(args.path).expanduser(), args.name, args.overwrite)
    print(f"added {info['name']} ({info['kind']}, config {info['config']}) as {info['path']}")
    return 0


def run(args: argparse.Namespace) -> int:
    from backend.registry import DEFAULT_MODEL, bundled_models_dir, list_models, user_models_dir

    entries = list_models()
    if args.json:
        print(json.dumps({"default": DEFAULT_MODEL, "user_dir": str(user_models_dir()),
                          "bundled_dir": str(bundled_models_dir()),
                          "models": [e.to_dict() for e in entries]}, indent=2))
        return 0
    print(f"user models:    {user_models_dir()}")
    print(f"bundled models: {bundled_models_dir()}")
    if not entries:
        print("no models found")
        return 0
    rows = [("NAME", "SOURCE", "KIND", "CONFIG", "RES", "SIZE", "")]
    for e in entries:
        mark = " (default)" if e.name == DEFAULT_MODEL else ""
        res = str(e.resolution) if e.resolution else ("-" if e.kind == "directions" else "?")
        rows.append((e.name + mark, e.source, e.kind, e.config_name, res, _size(e.size_bytes), e.note))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0
