# SPDX-License-Identifier: GPL-3.0-or-later
"""Cancel latency per stage of every job op, through a real in-process Server and JobQueue.

    OMP_NUM_THREADS=1 python benchmarks/cancel.py --out benchmarks/results/cancel_cpu.json

Why two measurements:

* **cancels** (the figure the docs quote): for each stage of each op, a fresh job is started, and ``--delays``
  seconds after the stage's first progress event a ``cancel`` request is sent; the latency is the time from
  that request to the ``cancelled`` event. The stage a cancel is attributed to is the last one that reported
  progress before the ``cancelled`` event (a short stage may be over by the time the cancel arrives).
* **gaps** (where the worst case hides): one uncancelled run per op with every cancel check timed; the longest
  gap between two checks is the worst cancel latency that stage can have, wherever a cancel lands. Sending
  cancels at a few moments can miss the one long step, the gaps cannot.

Both are reported per stage (min/median/max), with the overall maxima, the device, and the load average
(CPU timings scale with whatever else runs on the machine, e.g. a training run: ``--load-note`` says so).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.server import protocol as P  # noqa: E402
from backend.server.jobs import JobContext  # noqa: E402
from backend.server.server import Connection, Server  # noqa: E402
from benchmarks.record import Run  # noqa: E402


class Recorder:
    """A connection that timestamps the events it is sent (monotonic clock, on arrival)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.conn = Connection(self._write, "bench")

    def _write(self, data: bytes) -> None:
        with self.cond:
            self.events.append((time.monotonic(), json.loads(data)))
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float) -> tuple[float, dict[str, Any]] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, ev in self.events:
                    if pred(ev):
                        return t, ev
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def of(self, rid: str) -> list[tuple[float, dict[str, Any]]]:
        with self.cond:
            return [(t, e) for t, e in self.events if e.get("id") == rid]


CHECKS: list[tuple[float, str | None]] = []  # (time, current stage) of every cancel check of the traced job
_TRACE = threading.Event()


def _install_trace() -> None:
    """Time every cancel check (``progress`` calls ``check_cancel``), with the stage it is reported under."""
    orig_check, orig_progress = JobContext.check_cancel, JobContext.progress

    def check_cancel(self: JobContext) -> None:
        if _TRACE.is_set():
            CHECKS.append((time.monotonic(), getattr(self, "_trace_stage", None) or self._stage))
        orig_check(self)

    def progress(self: JobContext, stage: str, *a: Any, **k: Any) -> None:
        self._trace_stage = stage  # type: ignore[attr-defined]
        orig_progress(self, stage, *a, **k)
        self._trace_stage = None  # type: ignore[attr-defined]

    JobContext.check_cancel = check_cancel  # type: ignore[method-assign]
    JobContext.progress = progress  # type: ignore[method-assign]


def _summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "min_s": round(min(values), 3), "median_s": round(statistics.median(values), 3),
            "max_s": round(max(values), 3)} if values else {"n": 0}


def traced_run(server: Server, name: str, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One full run: stage durations and the longest gap between cancel checks per stage."""
    rec = Recorder()
    rid = f"{name}-trace"
    CHECKS.clear()
    _TRACE.set()
    t0 = time.monotonic()
    server.handle_line(rec.conn, P.encode(P.request(op, args, rid)))
    hit = rec.wait(lambda e: e.get("id") == rid and P.is_terminal(e), timeout)
    _TRACE.clear()
    if hit is None or hit[1]["event"] != "result":
        raise RuntimeError(f"{name}: the traced run did not finish: {hit and hit[1]}")
    checks = [(t0, "start"), *CHECKS, (hit[0], "end")]
    gaps: dict[str, float] = {}
    spans: dict[str, list[float]] = {}
    for (ta, _), (tb, sb) in itertools.pairwise(checks):
        # The work before a check belongs to the stage the check reports (a stage's report at step i says
        # i steps of it are done); the gap before the final event belongs to the last stage.
        stage = sb if sb != "end" else (checks[-2][1] or "end")
        stage = stage or "?"
        gaps[stage] = max(gaps.get(stage, 0.0), tb - ta)
        s = spans.setdefault(stage, [ta, tb])
        s[1] = tb
    return {"seconds": round(hit[0] - t0, 2), "checks": len(CHECKS), "result": hit[1],
            "stages": {k: {"seconds": round(spans[k][1] - spans[k][0], 2), "max_gap_s": round(gaps[k], 3)}
                       for k in spans if k not in ("start", "end")}}


def cancel_run(server: Server, rid: str, op: str, args: dict[str, Any], stage: str, delay: float,
               timeout: float) -> dict[str, Any] | None:
    """Start a job, cancel it ``delay`` s after the stage's first progress event; the latency and where it hit.

    A cancelled load goes on in the background (``ModelCache``): wait for it, so runs do not overlap; for the
    ``load`` stage the cache is emptied first, or the load would be a warm no-op and the cancel land later."""
    while server.models.loading():
        time.sleep(0.05)
    if stage == "load":
        server.models.clear()
    rec = Recorder()
    server.handle_line(rec.conn, P.encode(P.request(op, args, rid)))
    first = rec.wait(lambda e: e.get("id") == rid and (P.is_terminal(e) or e.get("stage") == stage), timeout)
    if first is None or P.is_terminal(first[1]):
        rec.wait(lambda e: e.get("id") == rid and P.is_terminal(e), timeout)
        return None
    time.sleep(max(0.0, delay - (time.monotonic() - first[0])))
    t_cancel = time.monotonic()
    server.handle_line(rec.conn, P.encode(P.request("cancel", {"job": rid}, f"{rid}-c")))
    end = rec.wait(lambda e: e.get("id") == rid and P.is_terminal(e), timeout)
    if end is None:
        raise RuntimeError(f"{rid}: no terminal event {timeout} s after the cancel")
    before = [e for t, e in rec.of(rid) if e.get("event") == "progress" and t <= t_cancel]
    after = [e for t, e in rec.of(rid) if e.get("event") == "progress"]
    return {"stage": stage, "delay_s": delay, "event": end[1]["event"],
            "latency_s": round(end[0] - t_cancel, 3),
            "stage_at_cancel": before[-1]["stage"] if before else None,
            "stage_seen_last": after[-1]["stage"] if after else None}


def op_cases(args: argparse.Namespace, work: Path) -> list[tuple[str, str, dict[str, Any]]]:
    from backend.invert.demo_photo import write_photo

    cases: list[tuple[str, str, dict[str, Any]]] = []
    ops = set(args.ops.split(","))
    if "sample" in ops:
        cases.append(("sample", "sample", {"seeds": [0, 1]}))
    if "mesh" in ops:
        for res in args.mesh_res:
            cases.append((f"mesh{res}", "mesh", {"seed": 0, "resolution": res, "faces": 50_000,
                                                 "colour_mode": "texture", "texture_size": 1024}))
    if "invert" in ops:
        photo = write_photo(work / "photo.jpg")
        cases.append(("invert", "invert", {"image": str(photo), "preset": args.invert_preset, "seed": 0}))
    if "texture" in ops:
        cases.append(("texture", "texture", {"mesh": None, "cameras": {"ring": args.views, "pitch": 0.0},
                                             "generator": "diffusion", "model": args.view_model,
                                             "steps": args.steps, "size": 64}))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="sample,mesh,invert,texture")
    ap.add_argument("--mesh-res", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--invert-preset", default="default")
    ap.add_argument("--view-model", default=None, help="texture: view model (default: the bundled aware3d-views-cond)")
    ap.add_argument("--views", type=int, default=3, help="texture: ring cameras")
    ap.add_argument("--steps", type=int, default=25, help="texture: diffusion steps per view")
    ap.add_argument("--delays", type=float, nargs="+", default=[0.1, 0.5],
                    help="seconds after a stage's first progress event at which the cancel is sent")
    ap.add_argument("--min-stage-s", type=float, default=0.3,
                    help="stages shorter than this in the traced run get no cancel runs (the gaps cover them)")
    ap.add_argument("--no-cancels", action="store_true", help="only the traced runs (gaps)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--load-note", default="", help="what else loads the machine (recorded in the JSON)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    run = Run(__file__, argv)

    import torch

    _install_trace()
    work = Path(tempfile.mkdtemp(prefix="aware3d-cancel-"))
    server = Server(work / "jobs", heartbeat_s=60)
    report: dict[str, Any] = {"benchmark": "cancel", "device": "cpu", "threads": torch.get_num_threads(),
                              "load_note": args.load_note, "delays_s": args.delays, "ops": {}}
    latencies: list[float] = []
    gap_max = 0.0
    try:
        for name, op, op_args in op_cases(args, work):
            if op == "texture":  # the mesh of the smallest mesh case (or a fresh 128³ one)
                mesh_dir = work / "texture-mesh"
                if not mesh_dir.exists():
                    res = traced_run(server, "texture-mesh", "mesh", {"seed": 0, "resolution": 128,
                                                                     "faces": 20_000}, args.timeout)
                    mesh_dir.mkdir()
                    op_args["mesh"] = res["result"]["files"]["mesh"]
            print(f"[{name}] traced run ...", flush=True)
            tr = traced_run(server, name, op, op_args, args.timeout)
            tr.pop("result")
            print(f"[{name}] {tr['seconds']} s: " + ", ".join(
                f"{k} {v['seconds']} s gap {v['max_gap_s']}" for k, v in tr["stages"].items()), flush=True)
            entry: dict[str, Any] = {"op": op, "args": op_args, "traced": tr, "cancels": []}
            gap_max = max([gap_max, *(v["max_gap_s"] for v in tr["stages"].values())])
            if not args.no_cancels:
                for stage, st in tr["stages"].items():
                    if st["seconds"] < args.min_stage_s:
                        continue
                    for d in args.delays:
                        c = cancel_run(server, f"{name}-{stage}-{d}", op, op_args, stage, d, args.timeout)
                        if c is not None:
                            entry["cancels"].append(c)
                            if c["event"] == "cancelled":  # a job that finished first measured nothing
                                latencies.append(c["latency_s"])
                            print(f"[{name}] cancel in {stage} +{d}s: {c['latency_s']} s "
                                  f"({c['event']}, at {c['stage_at_cancel']})", flush=True)
            by_stage: dict[str, list[float]] = {}
            for c in (c for c in entry["cancels"] if c["event"] == "cancelled"):
                by_stage.setdefault(c["stage_at_cancel"] or c["stage"], []).append(c["latency_s"])
            entry["cancel_latency_by_stage"] = {k: _summary(v) for k, v in by_stage.items()}
            report["ops"][name] = entry
    finally:
        server.finish(30)
    report["overall"] = {"cancel_latency": _summary(latencies), "max_gap_between_checks_s": round(gap_max, 3),
                         "target_s": 1.0}
    run.finish(report, args.out)
    print(json.dumps(report["overall"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
