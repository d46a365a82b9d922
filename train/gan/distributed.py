"""Data-parallel helpers: the same code runs as one process or under ``torchrun --nproc-per-node N``.

Gradients are summed with ``all_reduce`` and divided by the world size after each phase's backward pass, so
N processes with B/N samples each compute the gradient of the mean loss over the global batch B, exactly as
one process would (up to floating-point summation order). CPU runs use the gloo backend, CUDA runs NCCL.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes through environment variables (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    if info.world_size <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].reshape_as(p).clone()
        offset += n


def average_tensor_(t: torch.Tensor, info: DistInfo) -> None:
    """Average a tensor across processes in place (for running statistics such as w_avg)."""
    if info.world_size <= 1:
        return
    dist.all_reduce(t)
    t /= info.world_size


def average_scalars(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    if info.world_size <= 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def shutdown(info: DistInfo, synchronize: bool = True) -> None:
    """Leave the process group. ``synchronize`` waits for every rank first: a rank that tears gloo down while
    another is still writing its last file can abort the peer ("terminate called without an active
    exception"). Pass False on the interrupt path, where a peer may already be gone."""
    if info.world_size > 1 and dist.is_initialized():
        if synchronize:
            barrier(info)
        dist.destroy_process_group()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while training: ``kill``, job schedulers and torchrun's agent stop a run with
    SIGTERM, and without this the work since the last snapshot would be lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_to_completion(run: Callable[[], object], save_snapshot: Callable[[], object], info: DistInfo,
                      position: Callable[[], str]) -> bool:
    """Run a training loop; on Ctrl-C or SIGTERM save a snapshot and say where (``position()``, e.g. "step
    120"). Always leaves the process group. Returns False when interrupted (the command then exits 130)."""
    finished = False
    try:
        with sigterm_as_interrupt():
            run()
        finished = True
    except KeyboardInterrupt:
        save_snapshot()
        if info.is_main:
            print(f"interrupted: snapshot saved at {position()}; continue with --resume", file=sys.stderr)
    finally:
        shutdown(info, synchronize=finished)
    return finished


class Trainer(Protocol):
    def resume(self) -> bool: ...
    def run(self) -> None: ...
    def save_snapshot(self) -> object: ...
    def export(self, path: Path) -> object: ...


def train_command(trainer: Trainer, info: DistInfo, out: Path, resume: bool, export: Path | None,
                  position: Callable[[], str]) -> int:
    """The common end of a training command: resume if asked, run to the end (a snapshot on Ctrl-C or SIGTERM:
    exit code 130), then export if asked. Returns the exit code."""
    if resume and trainer.resume() and info.is_main:
        print(f"resumed {out} at {position()}", file=sys.stderr)
    if not run_to_completion(trainer.run, trainer.save_snapshot, info, position):
        return 130
    if export and info.is_main:
        trainer.export(export)
        print(f"exported {export}", file=sys.stderr)
    return 0


def check_run_folder(out: str | os.PathLike[str]) -> None:
    """A trainer's ``--out``, checked before any work (:func:`backend.validate.check_output_dir`) by the first
    process only. Why: the check creates the folder to write a probe file in it and removes what it created,
    so two torchrun ranks checking at once could remove it under each other (a random "cannot write" at a
    multi-process start); the other ranks never write there before the first one has."""
    if int(os.environ.get("RANK", "0")) == 0:
        from backend.validate import check_output_dir

        check_output_dir(out)
