"""Refinement levels after a photo encoder's first avatar, and the rules shared by the CLI and the server.

Torch-free on purpose: the command line checks its arguments with these before it loads torch or a model.
"""

from __future__ import annotations

from backend.errors import Aware3DError

REFINES = ("none", "fast", "full")
# fast: the only level within the 20 s per photo (with the mesh) on 2 CPU cores; full from an encoder
# start costs as much as the pipeline without one.
DEFAULT_REFINE = "fast"


def check_refine(refine: str | None, encoder: str = "auto", flag: str = "--refine") -> str:
    """The refinement level to use; ``None`` means the user did not choose one (the default applies).

    An explicit ``none`` or ``fast`` together with ``encoder='none'`` asks for two things that exclude each
    other (they refine an encoder's start, and the encoder is off): one error line before anything loads, not
    a run of every stage that was not asked for. ``full`` is what runs without an encoder, so it is accepted.
    """
    if refine is None:
        return DEFAULT_REFINE
    if refine not in REFINES:
        raise Aware3DError(f"unknown refinement {refine!r}", f"use one of {', '.join(REFINES)}")
    if encoder == "none" and refine in ("none", "fast"):
        raise Aware3DError(f"{flag} {refine} refines a photo encoder's start, and the encoder is turned off "
                           f"({'--encoder' if flag.startswith('--') else 'encoder'} none)",
                           f"drop {flag} (without an encoder every stage runs), or use an encoder")
    return refine


def refine_ignored_note(notice: str, refine: str | None, flag: str = "--refine") -> str:
    """``auto`` found no encoder: its one line, which also says that an explicit ``none``/``fast`` refinement is
    not followed (every stage runs), so a user who asked for a one-pass avatar is not left waiting unawares."""
    if refine in ("none", "fast"):
        return f"{notice}; {flag} {refine} ignored (it refines an encoder's start)"
    return notice
