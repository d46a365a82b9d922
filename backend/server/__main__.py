# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m backend.server``: the backend on stdin/stdout (default) or TCP (``--port``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="TCP address to bind with --port (default 127.0.0.1; other addresses need --token)")
    p.add_argument("--port", type=int, default=None,
                   help="serve on TCP instead of stdin/stdout (0 picks a free port, printed on stderr)")
    p.add_argument("--token", default=None,
                   help="secret a TCP client must send in its hello (default: $AWARE3D_TOKEN)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where job folders are written (default: a new temporary folder)")
    p.add_argument("--heartbeat", type=float, default=None, help="seconds between heartbeats (default 1)")


def serve(args: argparse.Namespace) -> int:
    from backend.errors import Aware3DError
    from backend.server import protocol as P
    from backend.server.server import run

    try:
        return run(args.host, args.port, args.token, args.work_dir,
                   args.heartbeat if args.heartbeat else P.HEARTBEAT_S)
    except Aware3DError as exc:
        print(f"aware3d serve: error: {exc.one_line()}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.server", description=__doc__)
    add_arguments(p)
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
