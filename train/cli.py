# SPDX-License-Identifier: GPL-3.0-or-later
"""Entry point of the ``aware3d-train`` command.

Sub-commands are registered by modules listed in ``COMMAND_MODULES``; each exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the parsed arguments
and returning an exit code. A module that does not exist yet is skipped, so others can add ``gan``,
``eval``, ``diffusion``, ``depth`` ... by adding a module and one line here. Heavy imports (torch) happen
inside the callables, so ``aware3d-train --help`` stays fast. User errors are one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from backend.cli import driver
from backend.errors import Aware3DError

PROG = "aware3d-train"

# Modules providing sub-commands, in the order ``--help`` lists them ("train.cli" = this module).
COMMAND_MODULES: tuple[str, ...] = (
    "train.cli",
    "train.gan.command",
    "train.distill.command",
    "train.encoder.command",
    "train.eval.command",
    "train.eval.mesh_level",
    "train.directions",
    "train.diffusion.command",
    "train.depth.command",
)


def command_line(args: argparse.Namespace, name: str) -> list[str]:
    """The command as a user would type it, rebuilt from the parsed arguments (also for in-process calls):
    what training runs and reports record as their provenance."""
    words = [PROG, name]
    for key, value in vars(args).items():
        if key in ("func", "command") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return words


# --------------------------------------------------------------------------------------------------------
# make-dataset
# --------------------------------------------------------------------------------------------------------


def _check_make_dataset(args: argparse.Namespace) -> None:
    """The count and the output files, before the renderer starts (``backend.validate``)."""
    from backend.validate import check_output_file, within

    within("dataset_images", args.count, "--count", "the number of training images, at least 1, e.g. --count 20000")
    check_output_file(args.out, (".zip",), "--out", "data set")
    if args.test_out is not None:
        check_output_file(args.test_out, (".zip",), "--test-out", "data set")


def _make_dataset(args: argparse.Namespace) -> int:
    from train.synthetic.writer import DatasetError, build_dataset

    _check_make_dataset(args)
    try:
        summary = build_dataset(
            out=args.out, count=args.count, res=args.res, seed=args.seed, test_heads=args.test_heads,
            test_out=args.test_out, device=args.device, resume=args.resume, workers=args.workers,
            batch=args.batch, progress=not args.quiet, keep_parts=args.keep_parts,
        )
    except DatasetError as exc:
        raise Aware3DError(str(exc)) from exc
    except OSError as exc:
        raise Aware3DError(f"cannot write the data set: {exc.strerror or exc} ({exc.filename or args.out})") \
            from exc
    test = f" + {summary['test_out']}" if summary["test_out"] else ""
    if summary["rendered"] == 0 and summary["workers"] == 0:
        print(f"{summary['out']}{test} already complete ({summary['images']} images); nothing to do")
        return 0
    print(f"wrote {summary['out']}{test}: {summary['images']} images in {summary['seconds']} s "
          f"({summary['images_per_s']} images/s rendering, {summary['workers']} worker(s))")
    return 0


def _positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "make-dataset",
        help="render the procedural synthetic-head data set (EG3D zip + depth + parameters)",
        description="Render N synthetic heads in EG3D's FFHQ camera convention and write an EG3D-format "
        "zip (PNGs + dataset.json labels) with per-image depth (.depth.npy) and params.json; with "
        "--test-heads K also a held-out test zip with 27 views per head. Deterministic by --seed.",
    )
    p.add_argument("--count", type=_positive_int, required=True, help="number of training images (1 to 10000000)")
    p.add_argument("--res", type=_positive_int, default=128, help="image size, a power of two (default 128)")
    p.add_argument("--out", required=True, help="output zip, e.g. heads128.zip")
    p.add_argument("--seed", type=_positive_int, default=0, help="data set seed (default 0)")
    p.add_argument("--test-heads", type=_positive_int, default=0,
                   help="held-out test heads, 27 views each (default 0: no test split)")
    p.add_argument("--test-out", default=None, help="test zip (default: <out stem>_test.zip)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--resume", action="store_true", help="keep the finished units of a killed run")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="render processes (default: one per CPU core; 1 on CUDA)")
    p.add_argument("--batch", type=_positive_int, default=None, help="images per render batch")
    p.add_argument("--keep-parts", action="store_true", help="keep the <out>.parts work folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_make_dataset)


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    return driver.build_parser(PROG, "Aware3D training: data sets, models, evaluation.", COMMAND_MODULES,
                               local={"train.cli": register})


def main(argv: Sequence[str] | None = None) -> int:
    return driver.run(PROG, build_parser(), argv,
                      interrupted="interrupted (finished units are kept; rerun with --resume)")


if __name__ == "__main__":
    sys.exit(main())
