"""The generator's state dict has exactly the official checkpoints' keys, order and shapes.

The tables in tests/data/keys/ were read off the public reference code (names and shapes only). Configs
without a table of their own are checked against tables composed from the given ones: the backbone of one
and the super-resolution section of another.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.configs import CONFIGS
from backend.generator import TriPlaneGenerator

KEYS = Path(__file__).parent / "data" / "keys"


def table(name: str) -> list[str]:
    return [line for line in (KEYS / f"{name}.txt").read_text().splitlines() if line.strip()]


def with_sr_from(backbone: str, sr_source: str) -> list[str]:
    """Keys of ``backbone`` with its superresolution rows replaced by those of ``sr_source``."""
    rows = table(backbone)
    first = next(i for i, r in enumerate(rows) if r.startswith("superresolution."))
    last = max(i for i, r in enumerate(rows) if r.startswith("superresolution."))
    sr_rows = [r for r in table(sr_source) if r.startswith("superresolution.")]
    return rows[:first] + sr_rows + rows[last + 1 :]


EXPECTED = {
    "eg3d-ffhq512-128": lambda: table("eg3d-ffhq512-128"),
    "eg3d-ffhq512-64": lambda: table("eg3d-ffhq512-128"),
    "eg3d-ffhqrebalanced512-128": lambda: table("eg3d-ffhq512-128"),
    "eg3d-ffhqrebalanced512-64": lambda: table("eg3d-ffhq512-128"),
    "eg3d-afhqcats512-128": lambda: table("eg3d-ffhq512-128"),
    "eg3d-ffhq256-128": lambda: table("eg3d-ffhq256-128"),
    "eg3d-afhqcats256-128": lambda: table("eg3d-ffhq256-128"),
    "eg3d-shapenetcars128-64": lambda: table("eg3d-shapenetcars128-64"),
    "mimic3d-ffhq512-2d": lambda: table("mimic3d-ffhq512-2d"),
    "mimic3d-afhqcats512-2d": lambda: table("mimic3d-ffhq512-2d"),
    "mimic3d-ffhq512-3d": lambda: table("mimic3d-ffhq512-3d"),
    "mimic3d-afhqcats512-3d": lambda: table("mimic3d-ffhq512-3d"),
    "mimic3d-ffhq256-2d": lambda: with_sr_from("mimic3d-ffhq512-2d", "eg3d-ffhq256-128"),
    "mimic3d-ffhq256-3d": lambda: with_sr_from("mimic3d-ffhq512-3d", "eg3d-ffhq256-128"),
    "mimic3d-shapenetcars128-2d": lambda: with_sr_from("mimic3d-ffhq512-2d", "eg3d-shapenetcars128-64"),
    "mimic3d-shapenetcars128-3d": lambda: with_sr_from("mimic3d-ffhq512-3d", "eg3d-shapenetcars128-64"),
}


def shape_text(t) -> str:
    return "x".join(str(s) for s in t.shape)


def test_every_official_config_has_a_table() -> None:
    official = {n for n in CONFIGS if n.startswith(("eg3d-", "mimic3d-"))}
    assert official == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_state_dict_matches_official_table(name: str) -> None:
    G = TriPlaneGenerator(CONFIGS[name])
    ours = [f"{k}\t{shape_text(v)}" for k, v in G.state_dict().items()]
    assert ours == EXPECTED[name]()


def test_official_specifics() -> None:
    """Spot checks from the spec's prose: buffers, the Mimic3D const, w assignment count."""
    eg3d = TriPlaneGenerator(CONFIGS["eg3d-ffhq512-128"]).state_dict()
    mimic = TriPlaneGenerator(CONFIGS["mimic3d-ffhq512-3d"]).state_dict()
    assert tuple(eg3d["backbone.synthesis.b4.const"].shape) == (512, 4, 4)
    assert tuple(mimic["backbone.synthesis.b4.const"].shape) == (1, 512, 4, 4)
    f = eg3d["backbone.synthesis.b64.resample_filter"]
    expected = [[1, 3, 3, 1], [3, 9, 9, 3], [3, 9, 9, 3], [1, 3, 3, 1]]
    assert (f * 64).round().tolist() == expected
    assert CONFIGS["eg3d-ffhq512-128"].num_ws == 14
    assert sum(v.numel() for k, v in eg3d.items() if "noise_const" not in k and "resample" not in k) > 30e6
