"""User-facing errors.

Every error a user can cause (bad input, a missing file, a hostile checkpoint) is an ``Aware3DError`` with a
one-line message saying what went wrong and a hint saying what to do. Front ends (CLI, server, add-on) show
these two lines and never a traceback.
"""

from __future__ import annotations


class Aware3DError(Exception):
    """An error caused by the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UnsafeCheckpointError(Aware3DError):
    """A checkpoint asked to run or import something that is not on the converter's whitelist."""
