# SPDX-License-Identifier: GPL-3.0-or-later
"""Seed gallery: the time of one page of thumbnails (the server's ``thumbnails`` job), cold and warm.

Runs an in-process server (the same code the Blender add-on's backend process runs) and times a request from
sending it to its result event, PNG writes included: **cold** is the first page of a fresh server (the model
is loaded), **warm** the next pages (the model comes from the server's cache; each page is a different seed
range, as Next does). In Blender the first page also waits for the backend process to start (see
tests/test_gallery_blender.py). Goal (issue 16): ≤ 2 s warm for 8 thumbnails on 2 CPU cores. CPU timings
scale with whatever else runs: the report carries the load average before and after.

``--sheet docs/gallery_page.png`` also writes a contact sheet of page 1 (what the panel's grid shows).

    python benchmarks/gallery.py --threads 2 --sheet docs/gallery_page.png
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.record import ROOT, Run

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gallery_cpu.json"


class Waiter:
    """A server connection that keeps events and wakes a waiter when a request ends."""

    def __init__(self) -> None:
        from backend.server.server import Connection

        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.conn = Connection(self._write, "benchmark")

    def _write(self, data: bytes) -> None:
        with self.cond:
            self.events.append(json.loads(data))
            self.cond.notify_all()

    def terminal(self, rid: str, timeout: float = 600.0) -> dict[str, Any]:
        from backend.server import protocol as P

        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev.get("id") == rid and P.is_terminal(ev):
                        return ev
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no result for {rid}")


def timed_page(server: Any, waiter: Waiter, rid: str, **args: Any) -> dict[str, Any]:
    """One ``thumbnails`` request, timed from send to result."""
    from backend.server import protocol as P

    t0 = time.perf_counter()
    server.handle_line(waiter.conn, P.encode(P.request("thumbnails", args, rid)))
    ev = waiter.terminal(rid)
    seconds = time.perf_counter() - t0
    if ev["event"] != "result":
        raise SystemExit(f"thumbnails failed: {ev.get('error')}")
    data = ev["data"]
    return {"seconds": round(seconds, 3), "seeds": data["seeds"], "cached": data["cached"], "size": data["size"],
            "files": [ev["files"][t["file"]] for t in data["thumbnails"]]}


def write_sheet(files: list[str], path: Path, columns: int, scale: int) -> dict[str, Any]:
    """The page's PNGs as one contact sheet (row-major, as the panel's grid)."""
    import numpy as np
    from PIL import Image

    from backend.fileio import write_png
    from backend.gallery import contact_sheet

    thumbs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    sheet = contact_sheet(thumbs, columns=columns, pad=2, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, sheet)
    return {"path": str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path),
            "size": [int(sheet.shape[1]), int(sheet.shape[0])], "columns": columns, "scale": scale}


def main(argv: list[str] | None = None) -> int:
    record = Run(__file__, argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model name or path (default: the bundled default model)")
    p.add_argument("--count", type=int, default=8, help="thumbnails per page")
    p.add_argument("--truncation", type=float, default=0.7)
    p.add_argument("--image", choices=("final", "raw"), default="final")
    p.add_argument("--runs", type=int, default=3, help="warm pages after the cold one")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--sheet", type=Path, default=None, help="write a contact sheet of page 1 here")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    import torch

    from backend.server.server import Server

    torch.set_num_threads(args.threads)
    common = {"model": args.model, "device": "cpu", "count": args.count, "truncation": args.truncation,
              "image": args.image}
    with tempfile.TemporaryDirectory(prefix="aware3d-gallery-") as tmp:
        server = Server(Path(tmp) / "jobs", heartbeat_s=1.0)
        waiter = Waiter()
        try:
            cold = timed_page(server, waiter, "cold", start=0, page=0, **common)
            print(f"cold: {cold['seconds']:.2f} s", file=sys.stderr)
            warm = []
            for i in range(args.runs):
                warm.append(timed_page(server, waiter, f"warm{i}", start=0, page=i + 1, **common))
                print(f"warm {i + 1}: {warm[-1]['seconds']:.2f} s", file=sys.stderr)
            sheet = write_sheet(cold["files"], args.sheet, 4, 3) if args.sheet else None
        finally:
            server.finish(5)
    for r in [cold, *warm]:
        r.pop("files")
    warm_s = sorted(r["seconds"] for r in warm)
    result = {
        "benchmark": "gallery", "what": f"one gallery page of {args.count} thumbnails (server 'thumbnails' job, "
                                        "request to result, PNGs written)",
        "model": args.model or "aware3d-heads (bundled default)", "image": args.image, "count": args.count,
        "truncation": args.truncation, "cold": cold, "warm": warm,
        "warm_median_s": warm_s[len(warm_s) // 2] if warm_s else None, "target_warm_s": 2.0,
        "torch_threads": torch.get_num_threads(), "sheet": sheet,
    }
    print(json.dumps(record.finish(result, args.out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
