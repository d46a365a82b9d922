# SPDX-License-Identifier: GPL-3.0-or-later
"""``aware3d serve``: run the backend server (JSON lines on stdin/stdout, or TCP with --port)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from backend.server.__main__ import add_arguments

    p = sub.add_parser("serve", help="run the backend server the Blender add-on talks to",
                       description="Serve the Aware3D protocol (see docs/blender.md) on stdin/stdout, or on "
                                   "TCP with --port (127.0.0.1 by default; any other address needs --token). "
                                   "TCP is not encrypted: across a network, use an SSH tunnel to 127.0.0.1.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.server.__main__ import serve

    return serve(args)
