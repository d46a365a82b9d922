"""Type and range checks for the config dataclasses that model files carry in their header.

Why: a model file's header is untrusted input, and its config decides the size of every tensor the network
allocates. A wrong type (``"z_dim": "lots"``) used to surface as a ``TypeError`` deep inside the network's
constructor, and an absurd size (a layer of 10^12 elements) would only fail after the machine ran out of
memory. Each config's ``from_dict`` calls :func:`check_fields` first, so such a file is refused with one
line naming the field ("z_dim must be an integer, got 'lots'") before anything is built.

The expected types come from the dataclass annotations (int, float, bool, str, ``Literal``, ``X | None``,
``tuple[...]``, ``list[...]``, ``dict[...]``, nested config dataclasses); the ranges from a table per class.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

# Inclusive (low, high) bounds per field; for tuples and lists they apply to every number inside.
Ranges = Mapping[str, tuple[float, float]]

# Containers longer than this are refused whatever their declared type (a config is small).
MAX_ITEMS = 4096


class ConfigFieldError(ValueError):
    """A config field has the wrong type or lies outside its range (the message names the field)."""


class UnknownFieldsError(ValueError):
    """A config has fields this version does not know (most likely written by a newer Aware3D)."""


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (not isinstance(value, float) or math.isfinite(value)))


def _describe(tp: Any) -> str:
    """What a type annotation asks for, in words for the error message."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a finite number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin in (tuple, list):
        return "a list"
    if origin is dict or tp is dict:
        return "an object"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return str(tp)


def _matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as read from JSON: lists for tuples) has the annotated type (shallow for unions)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_number(value)
    if tp is bool:
        return isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin in (tuple, list):
        return isinstance(value, (list, tuple)) and len(value) <= MAX_ITEMS
    if origin is dict or tp is dict:
        return isinstance(value, dict) and len(value) <= MAX_ITEMS
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return True  # an annotation this checker does not know: the class's own checks decide


def _check_value(path: str, value: Any, tp: Any, ranges: Ranges, key: str) -> None:
    if not _matches(value, tp):
        raise ConfigFieldError(f"{path} must be {_describe(tp)}, got {_show(value)}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = next(a for a in args if _matches(value, a))
        _check_value(path, value, inner, ranges, key)
        return
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            items = [(i, args[0]) for i in range(len(value))]
        else:
            if len(value) != len(args):
                raise ConfigFieldError(f"{path} must have {len(args)} entries, got {len(value)}")
            items = list(enumerate(args))
        for i, item_tp in items:
            _check_value(f"{path}[{i}]", value[i], item_tp, ranges, key)
        return
    if origin is list:
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, args[0] if args else Any, ranges, key)
        return
    if origin is dict and args:
        for k, v in value.items():
            _check_value(f"{path} key", k, args[0], {}, key)
            _check_value(f"{path}[{k!r}]", v, args[1], {}, key)
        return
    if dataclasses.is_dataclass(tp):
        check_fields(tp, value, getattr(tp, "FIELD_RANGES", {}), prefix=f"{path}.")
        return
    if key in ranges and _is_number(value):
        low, high = ranges[key]
        if not low <= value <= high:
            raise ConfigFieldError(f"{path} must be between {low:g} and {high:g}, got {_show(value)}")


def check_fields(cls: type, data: Mapping[str, Any], ranges: Ranges, prefix: str = "") -> None:
    """Refuse ``data`` (a config dict as stored in a file) whose fields do not fit ``cls``'s annotations or
    ``ranges``; unknown fields are left to the caller (each config words that refusal its own way).

    Raises :class:`ConfigFieldError` (a ``ValueError``) naming the first bad field.
    """
    if not isinstance(data, Mapping):
        raise ConfigFieldError(f"{prefix.rstrip('.') or 'the config'} must be an object, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data:
            _check_value(f"{prefix}{f.name}", data[f.name], hints[f.name], ranges, f.name)
