# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend protocol on its own: encoding, request checks, events, limits, and the add-on's copy."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import pytest

from backend.server import protocol as P

ROOT = Path(__file__).resolve().parents[1]


def test_addon_ships_an_identical_copy() -> None:
    assert (ROOT / "addon" / "protocol.py").read_bytes() == (ROOT / "backend" / "server" / "protocol.py").read_bytes()


def test_protocol_imports_only_the_standard_library() -> None:
    tree = ast.parse((ROOT / "backend" / "server" / "protocol.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert mods <= {"__future__", "json", "dataclasses", "typing"}


def test_encode_decode_round_trip() -> None:
    msg = P.request("mesh", {"seed": 3, "model": "ü"}, "r1")
    line = P.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.isascii()
    assert P.decode(line) == msg


@pytest.mark.parametrize("line, kind", [
    (b"not json\n", P.BAD_REQUEST),
    (b"[1, 2]\n", P.BAD_REQUEST),
    (b"\xff\xfe\n", P.BAD_REQUEST),
    (b'"text"\n', P.BAD_REQUEST),
    (b"[" * 200_000 + b"]" * 200_000 + b"\n", P.BAD_REQUEST),  # json recurses per level
    (b'{"v": 1, "id": "r1", "op": "mesh", "args": {"level": NaN}}\n', P.BAD_REQUEST),
    (b'{"v": 1, "id": "r1", "op": "sample", "args": {"yaw": -Infinity}}\n', P.BAD_REQUEST),
])
def test_malformed_lines(line: bytes, kind: str) -> None:
    with pytest.raises(P.ProtocolError) as e:
        P.decode(line)
    assert e.value.type == kind and e.value.hint


def test_events_send_null_for_non_finite_numbers() -> None:
    """A result holding a NaN (a diverged loss) still reaches the client, as valid JSON."""
    line = P.encode(P.event("result", "r1", data={"loss": float("nan"), "curve": [1.0, float("inf")]}))
    assert P.decode(line)["data"] == {"loss": None, "curve": [1.0, None]}


def test_oversized_line() -> None:
    with pytest.raises(P.ProtocolError) as e:
        P.decode(b"x" * (P.MAX_REQUEST_BYTES + 1))
    assert e.value.type == P.MESSAGE_TOO_LARGE


def test_read_line_discards_the_rest_of_an_oversized_line() -> None:
    big = b'{"pad": "' + b"y" * 5000 + b'"}\n'
    stream = io.BytesIO(big + b'{"v": 1}\n')
    first = P.read_line(stream, 100)
    assert first is not None and len(first) == 101
    with pytest.raises(P.ProtocolError):
        P.decode(first, 100)
    assert P.decode(P.read_line(stream, 100) or b"", 100) == {"v": 1}  # still in step
    assert P.read_line(stream, 100) is None


def test_parse_request_fills_defaults() -> None:
    rid, op, args = P.parse_request(P.request("mesh", {"seed": 7}, "a"))
    assert (rid, op) == ("a", "mesh")
    assert args["seed"] == 7 and args["resolution"] == 128 and args["colour_mode"] == "vertex"
    _, _, a1 = P.parse_request(P.request("sample", {}, "b"))
    _, _, a2 = P.parse_request(P.request("sample", {}, "c"))
    a1["seeds"].append(5)
    assert a2["seeds"] == [0]  # defaults are copies


@pytest.mark.parametrize("msg, kind", [
    ({"v": 1, "op": "hello"}, P.BAD_REQUEST),  # no id
    ({"v": 1, "id": "", "op": "hello"}, P.BAD_REQUEST),
    ({"v": 1, "id": "x" * 65, "op": "hello"}, P.BAD_REQUEST),
    ({"v": 2, "id": "a", "op": "hello"}, P.PROTOCOL_MISMATCH),
    ({"id": "a", "op": "hello"}, P.PROTOCOL_MISMATCH),
    ({"v": 1, "id": "a", "op": "explode"}, P.UNKNOWN_OP),
    ({"v": 1, "id": "a"}, P.UNKNOWN_OP),
    ({"v": 1, "id": "a", "op": "mesh", "args": []}, P.BAD_REQUEST),
    ({"v": 1, "id": "a", "op": "mesh", "args": {"sed": 1}}, P.BAD_REQUEST),
    ({"v": 1, "id": "a", "op": "mesh", "args": {"seed": "1"}}, P.BAD_REQUEST),
    ({"v": 1, "id": "a", "op": "mesh", "args": {"seed": True}}, P.BAD_REQUEST),
    ({"v": 1, "id": "a", "op": "mesh", "args": {"camera": 1}}, P.BAD_REQUEST),
    ({"v": 1, "id": "a", "op": "add_model", "args": {}}, P.BAD_REQUEST),
])
def test_bad_requests(msg: dict, kind: str) -> None:
    with pytest.raises(P.ProtocolError) as e:
        P.parse_request(msg)
    assert e.value.type == kind
    if kind != P.BAD_REQUEST or msg.get("id") == "a":
        assert e.value.request_id == msg.get("id")


def test_floats_accept_ints_but_not_bools() -> None:
    assert P.parse_request(P.request("mesh", {"truncation": 1}, "a"))[2]["truncation"] == 1
    with pytest.raises(P.ProtocolError):
        P.parse_request(P.request("mesh", {"truncation": False}, "a"))


def test_events() -> None:
    ev = P.error_event("r1", "Busy", "queue full", "wait")
    assert P.is_terminal(ev) and P.parse_event(ev)["error"]["type"] == "Busy"
    assert not P.is_terminal(P.event("progress", "r1", stage="grid", step=1, total=2))
    with pytest.raises(P.ProtocolError):
        P.parse_event({"v": 1, "event": "weird"})
    with pytest.raises(P.ProtocolError):
        P.parse_event({"v": 9, "event": "result"})
    assert json.loads(P.encode(ev))["v"] == P.PROTOCOL_VERSION
    assert P.encode({"x": float("nan")}) == b'{"x":null}\n'  # NaN is not JSON


def test_every_operation_is_documented() -> None:
    doc = (ROOT / "docs" / "blender.md").read_text()
    for op in P.OPS:
        assert f"`{op}`" in doc, op
    for ev in P.EVENTS:
        assert f"`{ev}`" in doc, ev


@pytest.mark.parametrize("seconds, text", [(None, ""), (-1, ""), (5.4, "0:05"), (65, "1:05"), (3725, "1:02:05")])
def test_format_eta(seconds: float | None, text: str) -> None:
    assert P.format_eta(seconds) == text
