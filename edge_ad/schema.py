"""The one validation style of every edge_ad config and manifest (model config, recipe, station, model.json).

`from_dict` checks keys, required keys and types against a dataclass, then `validate_tree` runs each section's
`validate()`, whose `check*` calls name the key relative to the section; the tree walk adds the section path and
`build` the place the values came from. Every problem is one ConfigError line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from edge_ad.errors import ConfigError


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ConfigError('key: msg') unless cond."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def check_choice(value: Any, key: str, choices: tuple) -> None:
    check(value in choices, key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is tuple:  # fixed length, e.g. tuple[int, int]; JSON and YAML give a list
        items = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and len(value) == len(items) and all(
            _type_ok(v, t) for v, t in zip(value, items))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        return isinstance(value, dict) and all(_type_ok(k, key_tp) and _type_ok(v, value_tp) for k, v in value.items())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types (an empty section = defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    for f in fields:
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{f.name}: missing (required)")
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (allowed: {', '.join(sorted(names))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value, f"{prefix}{key}.")
            continue
        if not _type_ok(value, tp):
            shown = str(tp).replace("typing.", "") if typing.get_origin(tp) else getattr(tp, "__name__", str(tp))
            raise ConfigError(f"{prefix}{key}: expected {shown}, got {value!r}")
        kwargs[key] = float(value) if tp is float else tuple(value) if typing.get_origin(tp) is tuple else value
    return cls(**kwargs)


def validate_tree(obj: Any, prefix: str = "") -> Any:
    """Run `validate()` of every nested config section (children first); errors get the section path."""
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child):
            validate_tree(child, f"{prefix}{f.name}.")
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    return obj


def build(cls: type, raw: Any, where: str = "", prefix: str = "") -> Any:
    """from_dict + validate_tree with every message prefixed by where the values came from (and `prefix`, the
    section's path when `cls` is one section of a bigger file, e.g. 'scoring.')."""
    try:
        return validate_tree(from_dict(cls, raw, prefix), prefix)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
