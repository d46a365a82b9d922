# SPDX-License-Identifier: GPL-3.0-or-later
"""benchmarks/volume.py runs end to end on a tiny model and reports every section it is asked for (the
figures in docs/speed.md come from it on the official-size model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_volume_benchmark_reports_previews(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.volume import main

    out = tmp_path / "volume.json"
    result = main(["--model", "random:tiny", "--res", "16", "--repeat", "1", "--thumbnails", "2",
                   "--pose-previews", "3", "--threads", "1", "--out", str(out)])
    capsys.readouterr()
    assert json.loads(out.read_text())["pose_previews"] == result["pose_previews"]
    poses = result["pose_previews"]
    assert poses["count"] == 3 and poses["planes_included"]
    for k in ("reference", "fast"):
        assert poses["seconds"][k]["best_s"] > 0 and result["thumbnails"]["seconds"][k]["best_s"] > 0
    assert result["fast_vs_reference"]
