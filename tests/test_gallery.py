# SPDX-License-Identifier: GPL-3.0-or-later
"""The seed gallery's backend: ``backend.gallery`` and the server's ``thumbnails`` operation.

A page is N PNGs of the model's image size, seeds ``start + page·N …``, progress after every thumbnail (with it
as the preview), a cancel within one thumbnail, a warm page from the model cache, and bad arguments refused in
one line before the model is loaded. Uses ``random:tiny`` (64² final image from a 32² neural render).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_server import Recorder, send

from backend.errors import Aware3DError
from backend.gallery import contact_sheet, page_seeds, render_page
from backend.server.server import Server

TINY = {"model": "random:tiny", "device": "cpu"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "jobs", heartbeat_s=0.2, max_queued=2)
    yield s
    s.finish(5)


def test_page_seeds_and_contact_sheet() -> None:
    assert page_seeds(10, 0, 4) == [10, 11, 12, 13]
    assert page_seeds(10, 2, 4) == [18, 19, 20, 21]
    with pytest.raises(Aware3DError, match="seed range"):
        page_seeds(2**32 - 4, 1, 8)
    tiles = [np.full((4, 4, 3), k * 30, np.uint8) for k in range(5)]
    sheet = contact_sheet(tiles, columns=3, pad=1, scale=2)
    assert sheet.shape == (2 * 9 + 1, 3 * 9 + 1, 3)
    assert (sheet[1:9, 10:18] == 30).all() and (sheet[10:18, 10:18] == 120).all()


def test_truncation_zero_gives_one_head() -> None:
    """The truncation reaches the latent: at psi 0 every seed is the average head (so a thumbnail's seed and
    truncation are all "generate this one" needs). Seeds jitter their rays differently: equal up to that."""
    import torch

    from backend.registry import load_generator

    G = load_generator("random:tiny", torch.device("cpu")).generator
    a, b = render_page(G, [3, 4], truncation=0.0, image="raw")
    c, d = render_page(G, [3, 4], truncation=1.0, image="raw")
    same, other = np.abs(a.astype(int) - b).mean(), np.abs(c.astype(int) - d).mean()
    assert a.shape == (32, 32, 3) and same < 0.5 and other > 4 * same  # psi 0: only the ray jitter differs


def test_thumbnails_op_page_progress_and_warm_cache(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "g", "thumbnails", start=5, page=1, count=4, **TINY)
    res = rec.terminal("g", 120)
    assert res["event"] == "result", res
    data = res["data"]
    assert data["seeds"] == [9, 10, 11, 12] and data["size"] == [64, 64] and not data["cached"]
    assert [t["seed"] for t in data["thumbnails"]] == data["seeds"]
    for t in data["thumbnails"]:
        path = Path(res["files"][t["file"]])
        assert path.parent == Path(res["job_dir"]) and path.suffix == ".png"
        assert Image.open(path).size == (64, 64)
    previews = [e for e in rec.of("g") if e["event"] == "progress" and e["stage"] == "thumbnails" and e["preview"]]
    assert [e["step"] for e in previews] == [1, 2, 3, 4] and previews[-1]["fraction"] == 1.0
    send(server, rec, "raw", "thumbnails", count=2, image="raw", **TINY)
    raw = rec.terminal("raw", 60)
    assert raw["data"]["cached"] and raw["data"]["size"] == [32, 32]  # warm: no reload; raw: neural resolution


def test_thumbnails_cancel_within_one_thumbnail(server: Server) -> None:
    rec = Recorder()
    send(server, rec, "big", "thumbnails", count=64, **TINY)
    rec.wait(lambda e: e["id"] == "big" and e["event"] == "progress" and e.get("preview"), 120)

    def done() -> int:
        return sum(1 for e in rec.of("big") if e["event"] == "progress" and e.get("preview"))

    before = done()
    send(server, rec, "c", "cancel")
    assert rec.terminal("big", 10)["event"] == "cancelled"
    assert done() - before <= 1


@pytest.mark.parametrize(("args", "words"), [
    ({"count": 0}, "count"), ({"count": 65}, "count"), ({"truncation": 3.0}, "truncation"),
    ({"start": -1}, "start"), ({"page": -1}, "page"), ({"image": "hd"}, "thumbnail image"),
    ({"start": 2**32 - 2, "page": 0, "count": 8}, "seed range"), ({"count": True}, "count"),
    ({"model": "no-such-model"}, "no-such-model"),
])
def test_thumbnails_bad_args_refused_in_one_line(server: Server, args: dict, words: str) -> None:
    rec = Recorder()
    send(server, rec, "bad", "thumbnails", **{**TINY, **args})
    ev = rec.terminal("bad", 60)
    assert ev["event"] == "error", ev
    err = ev["error"]
    assert words in err["message"] and "\n" not in err["message"], err
    assert err["hint"] or err["type"] == "BadRequest", err  # the protocol's own type check names the type
