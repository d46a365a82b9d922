"""Driving the add-on's poller in background-mode Blender, where timers never fire (shared by the bpy
scenario scripts)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def pump_until(session: Any, cond: Callable[[], bool], timeout: float = 120.0, interval: float = 0.02) -> None:
    """Call ``session.tick()`` as Blender's timer would until ``cond()`` holds. ``timeout`` only bounds a hang
    (it is no speed claim: speeds are measured in benchmarks/)."""
    deadline = time.monotonic() + timeout
    while not cond():
        session.tick()
        if time.monotonic() > deadline:
            raise AssertionError(f"no result within {timeout:.0f} s")
        time.sleep(interval)
