"""A stand-in for Blender's ``UILayout`` for panel tests in background mode (where no UI exists).

It checks every property and operator a panel's ``draw`` names, so that a typo fails in a test instead of in
front of a user, and records what was drawn in ``calls`` (``prop:NAME``, ``op:IDNAME``, ``label:TEXT``, ...).
"""

from __future__ import annotations

from typing import Any


class FakeLayout:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def _sub(self, *a: Any, **k: Any) -> FakeLayout:
        return self

    row = column = box = split = _sub

    def prop(self, data: Any, name: str, **k: Any) -> None:
        assert name in data.bl_rna.properties, name
        self.calls.append(f"prop:{name}")

    def prop_search(self, data: Any, name: str, sdata: Any, sname: str, **k: Any) -> None:
        assert name in data.bl_rna.properties and sname in sdata.bl_rna.properties, (name, sname)
        self.calls.append(f"prop_search:{name}")

    def template_ID(self, data: Any, name: str, **k: Any) -> None:
        assert name in data.bl_rna.properties, name
        self.calls.append(f"template_ID:{name}")

    def template_icon(self, **k: Any) -> None:
        self.calls.append("template_icon")

    def operator(self, idname: str, **k: Any) -> None:
        import bpy

        mod, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, mod), name), idname
        self.calls.append(f"op:{idname}")

    def progress(self, **k: Any) -> None:
        assert 0.0 <= k["factor"] <= 1.0
        self.calls.append("progress")

    def label(self, **k: Any) -> None:
        self.calls.append(f"label:{k.get('text', '')}")

    def separator(self, **k: Any) -> None:
        pass

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)


def draw_panel(panel: str) -> list[str]:
    """What the registered panel class ``bpy.types.<panel>`` draws in the current context (its ``calls``)."""
    import types

    import bpy

    calls: list[str] = []
    getattr(bpy.types, panel).draw(types.SimpleNamespace(layout=FakeLayout(calls)), bpy.context)
    return calls
