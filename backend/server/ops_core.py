# SPDX-License-Identifier: GPL-3.0-or-later
"""Server operations that manage the backend itself: hello, status, models, doctor, load and free.

Loaded generators stay in a small cache keyed by the model file (and its modification time) and the device,
so pressing Generate again does not reload weights; ``free`` drops them and returns GPU memory to the driver.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

from backend.server import protocol as P
from backend.server.jobs import JobContext, JobResult

log = logging.getLogger("aware3d.server")

MAX_CACHED_MODELS = 2


class ModelCache:
    """Loaded generators, least recently used first out (thread-safe).

    Why loads run in their own thread: loading weights is one blocking call of seconds (2.9 s traced under
    load on CPU) in which a job cannot check its cancel flag. ``get(..., wait=ctx.check_cancel)`` loads in a
    daemon thread and polls ``wait`` every ``POLL_S`` while it runs, so a cancel returns at once; the load
    itself finishes in the background and still fills the cache, so the next request is warm. One in-flight
    load per key (a future the later requests wait on), so a cancel-and-retry never loads the same weights
    twice."""

    POLL_S = 0.05

    def __init__(self, max_models: int = MAX_CACHED_MODELS) -> None:
        self.max_models = max_models
        self._models: OrderedDict[tuple[str, str, float], Any] = OrderedDict()
        self._loading: dict[tuple[str, str, float], Future[Any]] = {}
        self._generation = 0  # bumped by clear(): a load started before a 'free' does not refill the cache
        self._lock = threading.Lock()

    def _key(self, spec: str | None, device: Any) -> tuple[str, str, float]:
        from backend.registry import DEFAULT_MODEL, resolve_model

        spec = spec or DEFAULT_MODEL
        if spec.startswith("random:"):
            return (spec, str(device), 0.0)
        path = resolve_model(spec)
        return (str(path.resolve()), str(device), path.stat().st_mtime)

    def get(self, spec: str | None, device: Any,
            wait: Callable[[], None] | None = None) -> tuple[Any, bool]:
        """``(LoadedModel, was_cached)``. With ``wait``, the load runs in a background thread and ``wait()``
        is called every ``POLL_S`` until it is done; whatever ``wait`` raises (a cancel) propagates at once,
        and the load still completes into the cache."""
        key = self._key(spec, device)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key], True
            fut = self._loading.get(key)
            if fut is None:
                fut = Future()
                self._loading[key] = fut
                generation = self._generation
                loader = threading.Thread(target=self._load, args=(key, spec, device, fut, generation),
                                          name=f"aware3d-load-{Path(key[0]).name}", daemon=True)
                loader.start()
        while True:
            if wait is not None:
                wait()
            try:
                return fut.result(timeout=None if wait is None else self.POLL_S), False
            except FutureTimeout:
                continue

    def _load(self, key: tuple[str, str, float], spec: str | None, device: Any, fut: Future[Any],
              generation: int) -> None:
        from backend.registry import load_generator

        try:
            model = load_generator(spec if spec is None or spec.startswith("random:") else key[0], device)
        except BaseException as exc:  # handed to every waiter, re-raised there
            with self._lock:
                self._loading.pop(key, None)
            fut.set_exception(exc)
            return
        with self._lock:
            self._loading.pop(key, None)
            if generation == self._generation:
                self._models[key] = model
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
        fut.set_result(model)

    def loading(self) -> int:
        """How many loads are in flight (a cancelled job's load goes on in the background)."""
        with self._lock:
            return len(self._loading)

    def wait_loading(self, timeout: float) -> bool:
        """Wait (bounded) for the loads in flight; True when none is left. Why: the loader is a daemon thread
        inside torch, and an interpreter that exits under it can abort (SIGABRT) instead of exiting cleanly."""
        with self._lock:
            pending = list(self._loading.values())
        return not wait_futures(pending, timeout=timeout).not_done

    def names(self) -> list[str]:
        with self._lock:
            return [f"{m.name} ({k[1]})" for k, m in self._models.items()]

    def clear(self) -> int:
        with self._lock:
            n = len(self._models)
            self._models.clear()
            self._generation += 1
        release_memory()
        return n


def release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a backend requirement
        pass


def resolve_device(name: str) -> Any:
    from backend.devices import resolve_device as resolve

    return resolve(name)


def load_model(ctx: JobContext, spec: str | None, device_name: str, stage: str = "load") -> tuple[Any, bool]:
    """Load (or fetch from the cache) a model, with a progress step and a clear log line.

    The job checks its cancel flag every 50 ms while the weights load (see ``ModelCache``)."""
    device = resolve_device(device_name)
    ctx.progress(stage, 0, 1, f"loading {spec or 'the default model'}")
    t0 = time.monotonic()
    model, cached = ctx.server.models.get(spec, device, wait=ctx.check_cancel)
    if not cached:
        log.info("loaded %s (%s) on %s in %.1fs", model.name, model.generator.cfg.name, device,
                 time.monotonic() - t0)
    ctx.progress(stage, 1, 1)
    return model, cached


# --------------------------------------------------------------------------------------------------------
# Immediate operations: (server, args) -> data
# --------------------------------------------------------------------------------------------------------


def op_hello(server: Any, args: dict[str, Any]) -> dict[str, Any]:
    from backend import __version__

    if args.get("protocol", P.PROTOCOL_VERSION) != P.PROTOCOL_VERSION:
        raise P.ProtocolError(P.PROTOCOL_MISMATCH, f"the client speaks protocol {args.get('protocol')}, the "
                              f"backend {P.PROTOCOL_VERSION}", "update the add-on and the backend together")
    return {"server": "aware3d", "version": __version__, "protocol": P.PROTOCOL_VERSION,
            "ops": sorted(server.ops), "job_ops": sorted(o for o, s in server.ops.items() if s.job),
            "pid": os.getpid(), "python": sys.version.split()[0], "work_dir": str(server.work_dir),
            "heartbeat_s": server.heartbeat_s, "max_request_bytes": P.MAX_REQUEST_BYTES,
            "max_queued": server.jobs.max_queued}


def op_ping(server: Any, args: dict[str, Any]) -> dict[str, Any]:
    return {}


def op_status(server: Any, args: dict[str, Any]) -> dict[str, Any]:
    return {**server.jobs.status(), "models": server.models.names(), "cpu_threads": _cpu_threads()}


def _cpu_threads() -> int | None:
    """PyTorch's CPU threads (``serve --threads``), or None while torch is not imported yet: a status request
    must answer at once, not wait seconds for the import."""
    get = getattr(sys.modules.get("torch"), "get_num_threads", None)  # None too while torch is being imported
    return int(get()) if get is not None else None


def op_list_models(server: Any, args: dict[str, Any]) -> dict[str, Any]:
    from backend.registry import DEFAULT_MODEL, bundled_models_dir, list_models, user_models_dir

    return {"default": DEFAULT_MODEL, "user_dir": str(user_models_dir()), "bundled_dir": str(bundled_models_dir()),
            "models": [e.to_dict() for e in list_models()]}


# --------------------------------------------------------------------------------------------------------
# Job operations: (ctx) -> JobResult
# --------------------------------------------------------------------------------------------------------


def _memory(device: Any) -> dict[str, Any]:
    import torch

    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {"kind": "gpu", "total_bytes": int(total), "free_bytes": int(free),
                "name": torch.cuda.get_device_name(device)}
    total = available = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in meminfo.read_text().splitlines()
                  if line.split()[1:2] and line.split()[1].isdigit()}
        total, available = fields.get("MemTotal"), fields.get("MemAvailable")
    elif hasattr(os, "sysconf"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            total = None
    return {"kind": "ram", "total_bytes": total, "free_bytes": available, "name": platform.processor() or None}


def op_doctor(ctx: JobContext) -> JobResult:
    """Versions, device and memory, and a tiny timed inference that proves the whole stack works."""
    import numpy as np
    import torch

    from backend import __version__
    from backend.registry import load_generator
    from backend.render.renderer import SamplingSettings
    from backend.sampling import camera_label, make_latent, render_view

    ctx.plan({"probe": 1, "inference": 3})
    ctx.progress("probe", 0, 1, "checking the device")
    device = resolve_device(ctx.args["device"])
    data: dict[str, Any] = {
        "aware3d": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "numpy": np.__version__, "device": str(device),
        "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(), "memory": _memory(device),
    }
    ctx.progress("probe", 1, 1)
    t0 = time.monotonic()
    G = load_generator("random:tiny", device).generator
    latent = make_latent(G, 0)
    view = render_view(G, latent, camera_label(G.cfg), resolution=32,
                       sampling=SamplingSettings(seed=0, ray_chunk=256), on_progress=ctx.callback("inference"))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    data["tiny_inference_s"] = round(time.monotonic() - t0, 4)
    data["tiny_inference_ok"] = bool(np.isfinite(view.depth).all())
    return JobResult(data=data)


def op_load_model(ctx: JobContext) -> JobResult:
    t0 = time.monotonic()
    model, cached = load_model(ctx, ctx.args["model"], ctx.args["device"])
    G = model.generator
    return JobResult(data={"name": model.name, "path": None if model.path is None else str(model.path),
                           "config": G.cfg.name, "resolution": G.cfg.img_resolution,
                           "device": str(next(G.parameters()).device), "cached": cached,
                           "load_s": round(time.monotonic() - t0, 3)})


def op_free(ctx: JobContext) -> JobResult:
    return JobResult(data={"freed_models": ctx.server.models.clear()})
