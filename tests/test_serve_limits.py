# SPDX-License-Identifier: GPL-3.0-or-later
"""Limits of ``aware3d serve`` over TCP (issue 15, case 5): authentication deadline, idle timeout, connection
cap, bounded threads under a connection flood, and a client that stops reading does not stall the others.

Real sockets on 127.0.0.1 against an in-process :meth:`Server.serve_tcp` with short limits. Times below are
failure bounds (generous), never speed assertions.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from backend.server import protocol as P
from backend.server import server as S
from backend.server.jobs import JobContext, JobResult
from backend.server.server import Server

BOUND = 10.0  # seconds: how long a test waits for something that should happen much sooner

SLOW = P.OpSpec(True, {"steps": ((int,), 10), "dt": ((float, int), 0.02)}, "test: a job that takes a while")
BIG = P.OpSpec(True, {"mb": ((int,), 4)}, "test: a job with a large inline result")


def slow_job(ctx: JobContext) -> JobResult:
    n = ctx.args["steps"]
    for i in range(n):
        time.sleep(ctx.args["dt"])
        ctx.progress("work", i + 1, n)
    return JobResult(data={"steps": n})


def big_job(ctx: JobContext) -> JobResult:
    out = ctx.job_dir / "big.bin"
    out.write_bytes(bytes(range(256)) * (ctx.args["mb"] << 12))
    return JobResult(data={"bytes": out.stat().st_size}, files={"big": out})


@contextmanager
def serving(tmp_path: Path, **kw: Any) -> Iterator[tuple[int, Server]]:
    kw.setdefault("heartbeat_s", 0.1)
    s = Server(tmp_path / "jobs", **kw)
    s.register_op("slow", SLOW, slow_job)
    s.register_op("big", BIG, big_job)
    ports: list[int] = []
    ready = threading.Event()
    t = threading.Thread(target=s.serve_tcp, args=("127.0.0.1", 0, lambda p: (ports.append(p), ready.set())),
                         daemon=True)
    t.start()
    assert ready.wait(BOUND)
    try:
        yield ports[0], s
    finally:
        s.stop()
        t.join(BOUND)


class Client:
    """A TCP client that reads every event on a thread (so it is never a slow reader) and keeps them."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        self.events: list[dict[str, Any]] = []
        self.eof = False
        self.cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        f = self.sock.makefile("rb")
        try:
            while line := f.readline():
                with self.cond:
                    self.events.append(json.loads(line))
                    self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def send(self, op: str, rid: str, **args: Any) -> None:
        self.sock.sendall(P.encode(P.request(op, args, rid)))

    def wait(self, pred: Callable[[], bool], timeout: float = BOUND) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, timeout), [e.get("event") for e in self.events[-20:]]

    def terminal(self, rid: str, timeout: float = BOUND) -> dict[str, Any]:
        self.wait(lambda: any(e.get("id") == rid and P.is_terminal(e) for e in self.events), timeout)
        return next(e for e in self.events if e.get("id") == rid and P.is_terminal(e))

    def heartbeats(self) -> int:
        with self.cond:
            return sum(e.get("event") == "heartbeat" for e in self.events)

    def errors(self) -> list[dict[str, Any]]:
        with self.cond:
            return [e["error"] for e in self.events if e.get("event") == "error"]

    def close(self) -> None:
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the reader's file object keeps the descriptor open
        self.sock.close()


def _until(pred: Callable[[], bool], timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------------------


def test_auth_deadline_closes_silent_connections(tmp_path: Path) -> None:
    with serving(tmp_path, auth_timeout_s=0.3) as (port, _), ExitStack() as stack:  # loopback, no token
        silent, talker = Client(port), Client(port)
        stack.callback(silent.close)
        stack.callback(talker.close)
        talker.send("ping", "p")
        assert talker.terminal("p")["event"] == "result"
        silent.wait(lambda: silent.eof)
        assert [e["type"] for e in silent.errors()] == [S.TIMEOUT] and "0.3 s" in silent.errors()[0]["message"]
        n = talker.heartbeats()
        talker.wait(lambda: talker.heartbeats() > n + 5)  # well past the deadline: still served
        talker.send("ping", "p2")
        assert talker.terminal("p2")["event"] == "result" and not talker.eof

    with serving(tmp_path, auth_timeout_s=0.3, token="s3cret") as (port, _), ExitStack() as stack:
        silent, wrong, good = Client(port), Client(port), Client(port)
        for c in (silent, wrong, good):
            stack.callback(c.close)
        wrong.sock.sendall(b'{"v": 1, "id": "h", "op": "hel')  # a trickle that never ends its line
        good.send("hello", "h", token="s3cret")
        assert good.terminal("h")["event"] == "result"
        for c in (silent, wrong):
            c.wait(lambda c=c: c.eof)
            assert [e["type"] for e in c.errors()] == [P.UNAUTHORIZED] and "token" in c.errors()[0]["message"]
            assert c.heartbeats() == 0  # nothing but the error before authentication
        time.sleep(0.6)
        good.send("ping", "p")
        assert good.terminal("p")["event"] == "result" and not good.eof


def test_idle_timeout_spares_clients_with_jobs(tmp_path: Path) -> None:
    with serving(tmp_path, idle_timeout_s=0.4) as (port, _), ExitStack() as stack:
        idle, busy = Client(port), Client(port)
        stack.callback(idle.close)
        stack.callback(busy.close)
        idle.send("ping", "p")
        busy.send("slow", "j", steps=40, dt=0.03)  # 1.2 s: three idle timeouts without a request
        idle.wait(lambda: idle.eof)  # heartbeats went out all along: they are not activity
        assert idle.heartbeats() > 0 and idle.errors() == []
        assert busy.terminal("j")["event"] == "result" and not busy.eof
        busy.wait(lambda: busy.eof)  # idle once its job is done


def test_connection_cap_refuses_the_next_one_with_one_line(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections=3) as (port, s), ExitStack() as stack:
        first = [Client(port) for _ in range(3)]
        for i, c in enumerate(first):
            stack.callback(c.close)
            c.send("ping", f"p{i}")
            c.terminal(f"p{i}")
        extra = Client(port)
        stack.callback(extra.close)
        extra.wait(lambda: extra.eof)
        assert [e["event"] for e in extra.events] == ["error"]
        assert extra.errors()[0]["type"] == P.BUSY and extra.errors()[0]["message"] == "too many connections (3)"
        for i, c in enumerate(first):  # the first three still work
            c.send("ping", f"q{i}")
            assert c.terminal(f"q{i}")["event"] == "result"
        first[0].close()
        _until(lambda: len(s.connections) == 2)
        again = Client(port)
        stack.callback(again.close)
        again.send("ping", "p")
        assert again.terminal("p")["event"] == "result"


def test_a_connection_flood_costs_bounded_threads(tmp_path: Path) -> None:
    cap = 4
    base = threading.active_count()
    with serving(tmp_path, max_connections=cap, auth_timeout_s=5.0) as (port, s), ExitStack() as stack:
        peak = 0
        socks = []
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
            stack.callback(sock.close)
            socks.append(sock)
            peak = max(peak, threading.active_count())
        _until(lambda: len(s.connections) == cap)
        peak = max(peak, threading.active_count())
        assert peak <= base + 3 + 2 * cap, (peak, base)  # accept, worker, heartbeat; a reader and a writer each
        line = socks[-1].makefile("rb").readline()
        assert json.loads(line)["error"]["type"] == P.BUSY
        for sock in socks:
            sock.close()
        _until(lambda: len(s.connections) == 0)
        c = Client(port)
        stack.callback(c.close)
        c.send("ping", "p")
        assert c.terminal("p")["event"] == "result"


def test_a_client_that_stops_reading_is_dropped_without_stalling_others(tmp_path: Path) -> None:
    with serving(tmp_path, send_timeout_s=0.8, heartbeat_s=0.05) as (port, s), ExitStack() as stack:
        stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        stuck.connect(("127.0.0.1", port))
        stack.callback(stuck.close)
        other = Client(port)
        stack.callback(other.close)
        other.send("ping", "p0")
        other.terminal("p0")
        # 48 MB inline (64 MB of base64) is far more than the socket buffers hold; then a long job queued.
        stuck.sendall(P.encode(P.request("big", {"mb": 48}, "b")) + P.encode(P.request("slow", {"steps": 500}, "s")))
        _until(lambda: s.jobs.running_id == "s")  # the big result is out of the worker's hands
        for i in range(5):  # heartbeats and answers keep coming while the stuck client's buffer is full
            n = other.heartbeats()
            other.send("ping", f"p{i + 1}")
            assert other.terminal(f"p{i + 1}")["event"] == "result"
            other.wait(lambda n=n: other.heartbeats() > n)
        _until(lambda: len(s.connections) == 1)  # dropped after the send timeout ...
        _until(lambda: s.jobs.running_id is None and not s.jobs.queued)  # ... and its job cancelled
        other.send("slow", "j", steps=2)
        assert other.terminal("j")["event"] == "result" and not other.eof


def test_large_results_reach_a_slow_but_reading_client(tmp_path: Path) -> None:
    """The send timeout is on progress, not on a whole event: 4 MB read in small sips over more than the
    timeout still arrives whole."""
    with serving(tmp_path, send_timeout_s=1.0) as (port, _), \
            socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(P.encode(P.request("big", {"mb": 4}, "b")))
        buf = bytearray()
        t0 = time.monotonic()
        result = None
        while result is None:
            chunk = sock.recv(256 << 10)
            assert chunk, "connection closed before the result"
            buf += chunk
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                ev = json.loads(line)
                if ev.get("id") == "b" and P.is_terminal(ev):
                    result = ev
            time.sleep(0.1)
        assert result["event"] == "result", result
        data = base64.b64decode(result["inline"]["big"])
        assert data == bytes(range(256)) * (4 << 12)
        assert time.monotonic() - t0 > 1.0  # it did take longer than the send timeout in all


def test_line_splitter_matches_read_line() -> None:
    sp = S._LineSplitter(8)
    assert sp.feed(b"ab\ncd") == [b"ab\n"]
    assert sp.feed(b"e\n12345678\n") == [b"cde\n", b"12345678\n"]
    assert sp.feed(b"0123456789") == [b"012345678"]  # too long: truncated to max + 1, rest discarded
    assert sp.feed(b"abc\nok\n") == [b"ok\n"]
    assert sp.feed(b"xxxxxxxxxxxx\nz\n") == [b"xxxxxxxxx", b"z\n"]


def test_serve_flags_and_their_defaults() -> None:
    import argparse

    from backend.cli import serve_cmd

    parser = argparse.ArgumentParser()
    serve_cmd.register(parser.add_subparsers())
    a = parser.parse_args(["serve", "--port", "0"])
    assert (a.max_connections, a.auth_timeout, a.idle_timeout, a.send_timeout) == (
        S.MAX_CONNECTIONS, S.AUTH_TIMEOUT_S, S.IDLE_TIMEOUT_S, S.SEND_TIMEOUT_S)
    a = parser.parse_args(["serve", "--port", "0", "--max-connections", "2", "--auth-timeout", "1.5",
                           "--idle-timeout", "0", "--send-timeout", "5"])
    assert (a.max_connections, a.auth_timeout, a.idle_timeout, a.send_timeout) == (2, 1.5, 0.0, 5.0)
    for bad in (["--max-connections", "0"], ["--auth-timeout", "0"], ["--idle-timeout", "-1"],
                ["--send-timeout", "nan"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--port", "0", *bad])
    from backend.errors import Aware3DError

    with pytest.raises(Aware3DError):
        Server(None, max_connections=0)
