"""A memory policy as text: "num_recent=8,int8=true" <-> MemoryPolicy(num_recent=8, int8=True).

One spelling for the benchmarks' --row specs and for reports that say which policy ran (jobs.benchmark):
a comma list of MemoryPolicy field=value pairs, "default" (or empty) for MemoryPolicy(). Fields and their
types come from the dataclass itself, so fields added to MemoryPolicy later need no change here.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from .errors import SamstreamError
from .memory_bank import MemoryPolicy


class PolicySpecError(SamstreamError, ValueError):
    """A memory policy spec (or --row) that does not parse; `value` holds the offending part."""

    def __init__(self, message: str, value=None):
        self.value = value
        super().__init__(message)


def parse_policy_spec(spec: str) -> MemoryPolicy:
    """'num_recent=8,store_threshold=0.5' -> MemoryPolicy(num_recent=8, store_threshold=0.5); 'default' or ''
    -> MemoryPolicy(). Fields and their types come from the dataclass itself."""
    text = spec.strip()
    if text in ("", "default"):
        return MemoryPolicy()
    hints = typing.get_type_hints(MemoryPolicy)
    known = [f.name for f in dataclasses.fields(MemoryPolicy)]
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not name:
            raise PolicySpecError(f"memory policy specs are FIELD=VALUE pairs, got {item!r} in {spec!r}", item)
        if name not in known:
            raise PolicySpecError(f"unknown MemoryPolicy field {name!r} in {spec!r}; known: {', '.join(known)}", name)
        values[name] = _field_value(name, value, hints[name])
    try:
        return MemoryPolicy(**values)
    except (TypeError, ValueError) as e:  # the policy's own checks (ranges, combinations)
        raise PolicySpecError(f"bad memory policy {spec!r}: {e}", spec) from e


def _field_value(name: str, text: str, hint):
    """`text` as a value of the type `hint` (int, float, bool, str, or one of them | None)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if type(None) in options and text.lower() == "none":
        return None
    kind = next((t for t in options if t is not type(None)), None)
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise PolicySpecError(f"{name} is a bool: true or false, got {text!r}", text)
        return text.lower() == "true"
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise PolicySpecError(f"{name} must be {_described(options)}, got {text!r}", text) from None
    raise PolicySpecError(f"{name} has a type a spec cannot write ({hint}), got {text!r}", text)


def _described(options) -> str:
    names = [{int: "an int", float: "a number", str: "a string"}.get(t, "none") for t in options]
    return " or ".join(names)


def policy_spec(policy: MemoryPolicy) -> str:
    """The spec of `policy`: its fields that differ from the default, in field order; "default" when none do
    (parse_policy_spec(policy_spec(p)) == p)."""
    default = MemoryPolicy()
    parts = [f"{f.name}={_text(getattr(policy, f.name))}" for f in dataclasses.fields(MemoryPolicy)
             if getattr(policy, f.name) != getattr(default, f.name)]
    return ",".join(parts) or "default"


def _text(value) -> str:
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, float) else str(value)
