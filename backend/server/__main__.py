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
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for PyTorch in this backend, for every job, e.g. one less than the cores to "
                        "leave one for Blender (default: PyTorch's choice, one per core)")
    # Limits of the TCP server (see docs/blender.md): defaults from backend.server.server, imported lazily so
    # that --help stays fast; the literal values here are checked against them by the tests.
    lim = p.add_argument_group("TCP limits (with --port)")
    lim.add_argument("--max-connections", type=_count, default=16, metavar="N",
                     help="concurrent clients, not yet authenticated ones included; more are refused with a "
                          "'Busy' error line (default %(default)s)")
    lim.add_argument("--auth-timeout", type=_seconds, default=10.0, metavar="S",
                     help="close a connection that has not sent its first request (hello with the token, when "
                          "one is set) within S seconds (default %(default)g)")
    lim.add_argument("--idle-timeout", type=_seconds_or_0, default=600.0, metavar="S",
                     help="close a client that sent no request and has no job running or queued for S seconds; "
                          "0: never (default %(default)g)")
    lim.add_argument("--send-timeout", type=_seconds, default=30.0, metavar="S",
                     help="drop a client (and cancel its jobs) that accepts no data for S seconds, i.e. stopped "
                          "reading; large results may take longer as long as they move (default %(default)g)")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _seconds_or_0(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (never) or a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def serve(args: argparse.Namespace) -> int:
    from backend.errors import Aware3DError
    from backend.server import protocol as P
    from backend.server.server import run

    try:
        threads = getattr(args, "threads", None)
        if threads is not None:  # before any job thread starts: they all take this number
            from backend.devices import set_cpu_threads
            from backend.validate import within

            set_cpu_threads(within("threads", threads, "--threads",
                                   "at least 1, e.g. --threads 2, or leave it out for one per core"))
        return run(args.host, args.port, args.token, args.work_dir,
                   args.heartbeat if args.heartbeat else P.HEARTBEAT_S, auth_timeout_s=args.auth_timeout,
                   idle_timeout_s=args.idle_timeout, max_connections=args.max_connections,
                   send_timeout_s=args.send_timeout)
    except Aware3DError as exc:
        print(f"aware3d serve: error: {exc.one_line()}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend.server", description=__doc__)
    add_arguments(p)
    return serve(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
