"""``aware3d-train gan`` / ``eval`` from the command line: outputs and one-line errors."""

from __future__ import annotations

import json
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
