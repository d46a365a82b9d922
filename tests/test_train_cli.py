"""``aware3d-train gan`` / ``eval`` from the command line: outputs and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.checkpoints.model_file import read_header
from train.cli import main
from train.synthetic.writer import build_dataset


@pytest.fixture(scope="module")
def heads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "heads.zip"
    build_dataset(out, count=12, res=64, seed=5, test_heads=0, workers=1, progress=False)
    return out


def test_gan_trains_exports_and_refuses_to_overwrite(heads: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    export = tmp_path / "model.safetensors"
    args = ["gan", "--data", str(heads), "--preset", "tiny", "--out", str(run), "--kimg", "0.008", "--batch", "4",
            "--snap", "0.004", "--export", str(export)]
    assert main(args) == 0
    header = read_header(export)
    assert header.kind == "gan" and header.provenance["kimg"] == pytest.approx(0.008)
    assert "--preset tiny" in header.provenance["command"]
    assert (run / "log.jsonl").is_file() and (run / "done.json").is_file()
    capsys.readouterr()
    # The same --out again without --resume is refused; with --resume and a longer --kimg it continues.
    assert main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main([*args[:-2], "--kimg", "0.012", "--resume"]) == 0
    assert json.loads((run / "done.json").read_text())["kimg"] == pytest.approx(0.012)


def test_sigterm_saves_a_snapshot_where_training_stopped(heads: Path, tmp_path: Path) -> None:
    """``kill`` (SIGTERM) on a running ``aware3d-train gan`` keeps the work since the last snapshot."""
    run = tmp_path / "run"
    log = run / "log.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "train.cli", "gan", "--data", str(heads), "--preset", "tiny", "--out", str(run),
         "--kimg", "10", "--batch", "4", "--snap", "5"],
        cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (log.is_file() and log.read_text().strip()):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: snapshot saved at" in err
    snaps = sorted(run.glob("snapshot-*.safetensors"))
    assert snaps, "no snapshot on SIGTERM (the first interval of 5 kimg was never reached)"
    assert main(["gan", "--data", str(heads), "--preset", "tiny", "--out", str(run), "--kimg", "0.004",
                 "--batch", "4", "--resume"]) == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"--data": "missing.zip"}, "data set not found"),
        ({"--preset": "nope"}, "unknown preset"),
        ({"--config": "eg3d-ffhq512-128"}, "512px images"),
    ],
)
def test_gan_bad_input(heads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, str],
                       message: str) -> None:
    options = {"--data": str(heads), "--preset": "tiny", "--out": str(tmp_path / "r"), "--kimg": "0.004"}
    options.update({k: str(tmp_path / v) if k == "--data" else v for k, v in changes.items()})
    assert main(["gan", *[w for kv in options.items() for w in kv]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aware3d-train: error:") and message in err, err
