"""Training logs: a JSONL file, TensorBoard scalars and image grids, and a human progress line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from backend.fileio import write_png


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class TrainingLog:
    """Writes ``log.jsonl`` (appended, survives resumes), TensorBoard events and ``grid-*.png`` files."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                print("tensorboard is not installed: logging to log.jsonl only", file=sys.stderr)

    def scalars(self, step_kimg: float, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"time": time.time(), "kimg": round(step_kimg, 4), **values}
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, global_step=int(step_kimg * 1000))
            self.writer.flush()

    def image_grid(self, step_kimg: float, name: str, images: np.ndarray, cols: int) -> Path | None:
        """``images``: [N, H, W, 3] uint8 → one PNG grid (and a TensorBoard image)."""
        if not self.enabled:
            return None
        n, h, w, _ = images.shape
        rows = (n + cols - 1) // cols
        grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
        for i in range(n):
            r, c = divmod(i, cols)
            grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
        path = self.run_dir / f"{name}-{int(step_kimg * 1000):09d}.png"
        write_png(path, grid)
        if self.writer is not None:
            self.writer.add_image(name, grid, global_step=int(step_kimg * 1000), dataformats="HWC")
            self.writer.flush()
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def progress_line(kimg: float, total_kimg: float, kimg_per_s: float, values: dict[str, float]) -> str:
    eta = (total_kimg - kimg) / kimg_per_s if kimg_per_s > 0 else float("inf")
    eta_text = format_duration(eta) if np.isfinite(eta) else "?"
    losses = "  ".join(f"{k} {v:.3f}" for k, v in sorted(values.items()) if k.startswith("loss/"))
    return (f"kimg {kimg:8.3f}/{total_kimg:g}  kimg/s {kimg_per_s:.4f}  ETA {eta_text}  {losses}").rstrip()
