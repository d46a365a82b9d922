# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's client with a backend interpreter that lacks the requirements (no numpy): a clear one-line
error that says what to do, not ``BackendDied`` with "the next request starts a new backend".

The interpreter is this environment's Python run with ``-S`` (no site-packages, so no numpy or torch) through
a two-line shell wrapper: a real interpreter, started the way the add-on starts any backend, in milliseconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from test_server import _client_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell wrapper")
def test_interpreter_without_numpy_says_so(tmp_path: Path) -> None:
    C = _client_module()
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    cmd = C.backend_command(str(bare), ["--work-dir", str(tmp_path / "jobs")])
    env = C.backend_env(ROOT, None, base={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})

    def factory() -> Any:
        return C.PipeTransport(cmd, env=env, cwd=str(ROOT), log_path=tmp_path / "backend.log")

    client = C.BackendClient(factory)
    with pytest.raises(C.BackendError) as info:
        client.request("ping", timeout=60)
    err = info.value
    assert err.type == C.MISSING_DEPENDENCY, (err.type, str(err))
    assert err.message.startswith("this Python lacks numpy") and str(bare) in err.message
    assert "Set up backend" in err.hint and "another interpreter" in err.hint
    assert "\n" not in str(err) and "new backend" not in str(err)
    assert client.transport is None and client.deaths == 1


def test_missing_module_reads_the_last_one_and_ignores_our_own_packages() -> None:
    C = _client_module()
    assert C.missing_module(["x", "ModuleNotFoundError: No module named 'torch.nn'"]) == "torch"
    assert C.missing_module(["ModuleNotFoundError: No module named 'backend.server'"]) is None
    assert C.missing_module(["all good"]) is None
    client = C.BackendClient(lambda: None)
    err = client._explain(C.BackendError("InternalError", "ModuleNotFoundError: No module named 'torch'"))
    assert err.type == C.MISSING_DEPENDENCY and "lacks torch" in err.message
    other = C.BackendError("InternalError", "boom")
    assert client._explain(other) is other


def test_backend_threads_preference_reaches_the_backend(tmp_path: Path) -> None:
    """The add-on's Backend threads preference (``BackendSettings.threads``) becomes ``--threads N`` on the
    backend's command line (0: none, PyTorch's choice), and the backend it starts reports that many."""
    from test_server import _env

    C = _client_module()
    assert "--threads" not in C.backend_command("py", ["--work-dir", "j"])
    assert C.backend_command("py", ["--work-dir", "j"], threads=0) == C.backend_command("py", ["--work-dir", "j"])
    cmd = C.backend_command(sys.executable, ["--work-dir", str(tmp_path / "jobs")], threads=2)
    assert cmd[-2:] == ["--threads", "2"]
    env = C.backend_env(ROOT, None, base=_env(OMP_NUM_THREADS="1"))
    client = C.BackendClient(lambda: C.PipeTransport(cmd, env=env, cwd=str(ROOT), log_path=tmp_path / "b.log"))
    try:
        assert client.request("status", timeout=60)["cpu_threads"] == 2
    finally:
        client.stop()
