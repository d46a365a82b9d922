# SPDX-License-Identifier: GPL-3.0-or-later
"""One job at a time: the queue, the worker thread, progress with ETA, and cooperative cancellation.

Why cooperative: a torch computation cannot be interrupted safely from outside, but the library reports
progress per ray chunk, per grid chunk and per seed. Every progress report checks the job's cancel flag and
raises :class:`Cancelled`, so a cancel takes effect within one step and leaves the model cache intact.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from backend.server import protocol as P

log = logging.getLogger("aware3d.server")

PROGRESS_MIN_INTERVAL_S = 0.1


class Cancelled(Exception):
    """Raised inside a job (from a progress callback) when its cancel flag is set."""


class Sink(Protocol):
    """Where a job's events go (one client connection)."""

    inline_results: bool

    def send(self, msg: dict[str, Any]) -> None: ...


@dataclass
class JobResult:
    data: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    op: str
    args: dict[str, Any]
    sink: Sink
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float | None = None


Handler = Callable[["JobContext"], JobResult]


class JobContext:
    """What a handler gets: its arguments, a job folder, progress reporting and the cancel check."""

    def __init__(self, job: Job, job_dir: Path, server: Any = None) -> None:
        self.job = job
        self.args = job.args
        self.job_dir = job_dir
        self.server = server
        self._stage: str | None = None
        self._stage_t0 = 0.0
        self._last_sent = 0.0
        self._weights: dict[str, float] = {}

    @property
    def cancelled(self) -> bool:
        return self.job.cancel.is_set()

    def check_cancel(self) -> None:
        if self.job.cancel.is_set():
            raise Cancelled()

    def plan(self, stages: dict[str, float]) -> None:
        """Declare the job's stages, in order, with relative weights, so progress events carry an overall
        fraction (a progress bar that does not restart at every stage)."""
        total = sum(stages.values()) or 1.0
        self._weights = {k: v / total for k, v in stages.items()}

    def progress(self, stage: str, step: int, total: int, message: str = "",
                 preview: str | Path | None = None, partial: JobResult | None = None) -> None:
        """Report progress (rate-limited) and honour a pending cancel.

        ``partial``: a first result that the job's final one will replace (e.g. the encoder's head before the
        refinement); always sent, its files inline for a TCP client as in a result."""
        self.check_cancel()
        now = time.monotonic()
        if stage != self._stage:
            self._stage, self._stage_t0 = stage, now
            first = True
        else:
            first = False
        last = step >= total
        if not (first or last or preview is not None or partial is not None
                or now - self._last_sent >= PROGRESS_MIN_INTERVAL_S):
            return
        self._last_sent = now
        elapsed = now - self._stage_t0
        eta = elapsed / step * (total - step) if step > 0 and total >= step else None
        frac = None
        if stage in self._weights:  # stages before this one in the plan count as done (even if skipped)
            order = list(self._weights)
            done = sum(self._weights[k] for k in order[: order.index(stage)])
            frac = min(1.0, done + self._weights[stage] * (step / total if total else 0.0))
        msg = P.event("progress", self.job.id, stage=stage, step=int(step), total=int(total),
                      eta_s=None if eta is None else round(eta, 2),
                      fraction=None if frac is None else round(frac, 4), message=message,
                      preview=None if preview is None else str(preview))
        if partial is not None:
            msg["partial"] = {"data": partial.data, "files": {k: str(v) for k, v in partial.files.items()}}
            if getattr(self.job.sink, "inline_results", False):
                msg["inline"] = inline_files(partial.files)
        self.job.sink.send(msg)

    def callback(self, stage: str, message: str = "") -> Callable[[int, int], None]:
        """An ``on_progress(i, n)`` callback (renderer, mesh grid) bound to a stage."""
        return lambda i, n: self.progress(stage, i, n, message)


class JobQueue:
    """A FIFO of jobs served by one worker thread."""

    def __init__(self, handlers: dict[str, Handler], work_dir: Path, server: Any = None,
                 max_queued: int = P.MAX_QUEUED) -> None:
        self.handlers = handlers
        self.work_dir = work_dir
        self.server = server
        self.max_queued = max_queued
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="aware3d-worker", daemon=True)
        self._thread.start()

    # Client side ---------------------------------------------------------------------------------------

    def submit(self, job: Job, on_accept: Callable[[int], None] | None = None) -> int:
        """Queue a job; returns its position (0 = starts now). Raises ProtocolError(Busy) when full.

        ``on_accept(position)`` runs before the worker can see the job, so an ``ack`` always precedes the
        job's first progress event.
        """
        with self._cond:
            if self._stopping:
                raise P.ProtocolError(P.BUSY, "the backend is shutting down", "start a new backend", job.id)
            if len(self._queue) >= self.max_queued:
                raise P.ProtocolError(P.BUSY, f"{len(self._queue)} jobs are already waiting",
                                      "wait for a job to finish, or cancel one", job.id)
            if any(j.id == job.id for j in self._jobs()):
                raise P.ProtocolError(P.BAD_REQUEST, f"a job with id {job.id!r} is already queued or running",
                                      "use a new id for every request", job.id)
            position = len(self._queue) + (1 if self._running else 0)
            if on_accept is not None:
                on_accept(position)
            self._queue.append(job)
            self._cond.notify_all()
            return position

    def cancel(self, job_id: str | None = None, sink: Sink | None = None) -> list[str]:
        """Cancel one job (or all, or all of one client): queued ones end at once, the running one at its
        next progress step."""
        hit: list[str] = []
        dropped: list[Job] = []

        def match(j: Job) -> bool:
            return (job_id is None or j.id == job_id) and (sink is None or j.sink is sink)

        with self._cond:
            for j in list(self._queue):
                if match(j):
                    self._queue.remove(j)
                    dropped.append(j)
            if self._running and match(self._running):
                self._running.cancel.set()
                hit.append(self._running.id)
        for j in dropped:
            hit.append(j.id)
            j.sink.send(P.event("cancelled", j.id, op=j.op))
        return hit

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {"running": None if self._running is None else
                    {"id": self._running.id, "op": self._running.op,
                     "elapsed_s": round(time.monotonic() - (self._running.started or time.monotonic()), 2)},
                    "queued": [{"id": j.id, "op": j.op} for j in self._queue]}

    @property
    def running_id(self) -> str | None:
        job = self._running
        return None if job is None else job.id

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel everything and wait (bounded) for the worker to finish its current step."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.cancel(None)
        self._thread.join(timeout)

    def _jobs(self) -> list[Job]:
        return list(self._queue) + ([self._running] if self._running else [])

    # Worker --------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._running = job
                job.started = time.monotonic()
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None

    def _run(self, job: Job) -> None:
        job_dir = self.work_dir / _safe_name(job.id)
        if job_dir.exists():
            shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True, exist_ok=True)
        ctx = JobContext(job, job_dir, self.server)
        t0 = time.monotonic()
        try:
            ctx.check_cancel()
            result = self.handlers[job.op](ctx)
            ctx.check_cancel()
        except Cancelled:
            log.info("job %s (%s) cancelled", job.id, job.op)
            job.sink.send(P.event("cancelled", job.id, op=job.op))
            return
        except BaseException as exc:  # every failure becomes an error event; the worker survives
            job.sink.send(error_from_exception(job.id, exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        msg = P.event("result", job.id, op=job.op, data=result.data,
                      files={k: str(v) for k, v in result.files.items()}, job_dir=str(job_dir),
                      elapsed_s=round(time.monotonic() - t0, 3))
        if getattr(job.sink, "inline_results", False):
            msg["inline"] = inline_files(result.files)
        job.sink.send(msg)


def _safe_name(request_id: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in request_id)
    return keep.strip(".") or "job"


def inline_files(files: dict[str, Path]) -> dict[str, str]:
    import base64

    return {role: base64.b64encode(Path(p).read_bytes()).decode("ascii") for role, p in files.items()
            if Path(p).is_file()}


def error_from_exception(request_id: str | None, exc: BaseException) -> dict[str, Any]:
    """An exception → an error event: type, message and hint as strings (never a pickled exception)."""
    from backend.errors import Aware3DError

    if isinstance(exc, P.ProtocolError):
        return P.error_event(request_id, exc.type, exc.message, exc.hint)
    if isinstance(exc, Aware3DError):
        return P.error_event(request_id, type(exc).__name__, exc.message, exc.hint)
    if isinstance(exc, OSError) and exc.strerror:  # a full disk, a folder made read-only: not a bug
        where = f" {exc.filename}" if exc.filename else ""
        return P.error_event(request_id, type(exc).__name__, f"cannot write or read{where}: {exc.strerror}",
                             "check the free disk space and the permissions of the backend's folders")
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return P.error_event(request_id, P.OUT_OF_MEMORY, f"out of memory: {text[:300]}",
                             "lower the mesh resolution, free the backend, or use the CPU")
    log.error("job %s failed:\n%s", request_id, "".join(traceback.format_exception(exc)))
    return P.error_event(request_id, P.INTERNAL, f"{type(exc).__name__}: {text[:500]}",
                         "this is a bug; the backend log (stderr) has the traceback")
