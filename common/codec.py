"""Decoding: raw frame maps (msgpack, already unframed) to the typed messages of
`hushwire.common.messages`.

The relay decodes requests and the client decodes replies, errors and pushes. Every field
is validated against the dataclass annotations, so a handler only ever sees well-typed
values; anything else is a `MalformedFrame` naming the field. The relay's hottest requests
(`send`, `send_devices`, `ack`) have unrolled decoders that accept exactly what the
generic codec accepts.
Encoding stays with the types (`Message.to_wire`), since each type knows its own map.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from hushwire.common.errors import MalformedFrame, echo
from hushwire.common.messages import (
    PUSHES,
    REQUESTS,
    Ack,
    DeviceEnvelope,
    Error,
    ListVersion,
    Push,
    Reply,
    Request,
    Send,
    SendDevices,
)

_MAX_INT = 2**63 - 1


def decode_request(obj: Mapping[str, Any]) -> Request:
    """Relay side: a raw frame map to a typed request (MalformedFrame if it is not one)."""
    fast = _FAST_REQUESTS.get(obj["t"])
    if fast is not None and (request := fast(obj)) is not None:
        return request
    cls = REQUESTS.get(obj["t"])
    if cls is None:
        raise MalformedFrame(f"unknown request type {echo(obj['t'])}")
    return _from_wire(cls, obj, obj["t"])


def decode_from_relay(
    obj: Mapping[str, Any], expected: Mapping[int, type[Reply]]
) -> Reply | Error | Push:
    """Client side: `expected` maps outstanding request ids to their reply classes."""
    t = obj["t"]
    if t == Error.TYPE:
        return _from_wire(Error, obj, t)
    if t == Reply.TYPE:
        rid = obj.get("id")
        cls = expected.get(rid) if isinstance(rid, int) else None
        if cls is None:
            raise MalformedFrame(f"reply to unknown request id {echo(rid)}")
        return _from_wire(cls, obj, t)
    push = PUSHES.get(t)
    if push is None:
        raise MalformedFrame(f"unknown message type {echo(t)}")
    return _from_wire(push, obj, t)


def _fast_send(obj: Mapping[str, Any]) -> Send | None:
    """A well-formed `send`, accepted exactly when `_from_wire` would accept it; None for
    anything else, which then takes the generic path (and gets its precise error)."""
    rid, to, body = obj.get("id"), obj.get("to"), obj.get("body")
    if (
        type(rid) is int
        and 0 <= rid <= _MAX_INT
        and type(body) is bytes
        and type(to) is list
        and all(type(r) is str for r in to)
    ):
        return Send(rid, tuple(to), body)
    return None


def _fast_ack(obj: Mapping[str, Any]) -> Ack | None:
    """A well-formed `ack` (see `_fast_send`); its `id` may be nil, not absent."""
    rid, mids = obj.get("id", False), obj.get("mids")
    if (
        (rid is None or (type(rid) is int and 0 <= rid <= _MAX_INT))
        and type(mids) is list
        and all(type(m) is int and 0 <= m <= _MAX_INT for m in mids)
    ):
        return Ack(rid, tuple(mids))
    return None


def _fast_send_devices(obj: Mapping[str, Any]) -> SendDevices | None:
    """A well-formed `send_devices` (see `_fast_send`): what every real client sends."""
    rid, envs, views = obj.get("id"), obj.get("envelopes"), obj.get("lists")
    if not (type(rid) is int and 0 <= rid <= _MAX_INT and type(envs) is list):
        return None
    partial = obj.get("partial", False)
    payload = obj.get("payload")  # v2, optional: absent or nil is none
    if payload is not None and type(payload) is not bytes:
        return None
    if type(views) is not list or type(partial) is not bool:
        return None
    envelopes = []
    for env in envs:
        if type(env) is not dict:
            return None
        user, device, body = env.get("user"), env.get("device"), env.get("body")
        if type(user) is not str or type(device) is not int or type(body) is not bytes:
            return None
        if not 0 <= device <= _MAX_INT:
            return None
        envelopes.append(DeviceEnvelope(user, device, body))
    lists = []
    for view in views:
        if type(view) is not dict:
            return None
        user, version = view.get("user"), view.get("version")
        if type(user) is not str or type(version) is not int or not 0 <= version <= _MAX_INT:
            return None
        lists.append(ListVersion(user, version))
    return SendDevices(rid, tuple(envelopes), tuple(lists), partial, payload)


# The relay's hottest requests skip the annotation-driven codec when well-formed.
_FAST_REQUESTS: dict[str, Callable[[Mapping[str, Any]], Request | None]] = {
    Send.TYPE: _fast_send,
    Ack.TYPE: _fast_ack,
    SendDevices.TYPE: _fast_send_devices,
}


def request_id(obj: Mapping[str, Any]) -> int | None:
    """The `id` of a raw map if it has a usable one, so even a bad request gets its reply."""
    rid = obj.get("id")
    return rid if isinstance(rid, int) and not isinstance(rid, bool) and rid >= 0 else None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        all_hints = typing.get_type_hints(cls)
        hints = {f.name: all_hints[f.name] for f in dataclasses.fields(cls)}
        _HINTS[cls] = hints
    return hints


_Field = tuple[str, Any, Any]  # name, annotation, default (MISSING if required)
_PLANS: dict[type, tuple[_Field, ...]] = {}


def _plan(cls: type) -> tuple[_Field, ...]:
    """Each field's name, type and default, computed once per class (the hot path)."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = _hints(cls)
        plan = _PLANS[cls] = tuple(
            (f.name, hints[f.name], f.default) for f in dataclasses.fields(cls)
        )
    return plan


def _from_wire(cls: type, obj: Any, path: str) -> Any:
    if not isinstance(obj, Mapping):
        raise MalformedFrame(f"{path}: expected a map")
    kwargs = {}
    for name, tp, default in _plan(cls):
        if name in obj:
            value = obj[name]
            # Fast path for the common scalar fields; everything else takes _convert.
            if tp is int:
                if type(value) is not int or not 0 <= value <= _MAX_INT:
                    raise MalformedFrame(f"{path}.{name}: expected a non-negative integer")
            elif tp is bytes or tp is str:
                if type(value) is not tp:
                    value = _convert(value, tp, f"{path}.{name}")
            else:
                value = _convert(value, tp, f"{path}.{name}")
            kwargs[name] = value
        elif default is not dataclasses.MISSING:
            kwargs[name] = default
        else:
            raise MalformedFrame(f"{path}: missing field {name!r}")
    return cls(**kwargs)


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise MalformedFrame(f"{path}: expected an array")
        (inner, _ellipsis) = typing.get_args(tp)
        if inner is str or inner is bytes:
            # `send.to`: a list of names; one type check per item, no recursion.
            if all(type(v) is inner for v in value):
                return tuple(value)
        elif inner is int and all(type(v) is int and 0 <= v <= _MAX_INT for v in value):
            return tuple(value)  # `ack.mids`
        return tuple(_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise MalformedFrame(f"{path}: expected a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
            raise MalformedFrame(f"{path}: expected a non-negative integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedFrame(f"{path}: expected a number")
        if not 0.0 <= value < float("inf"):  # also false for NaN
            raise MalformedFrame(f"{path}: expected a finite non-negative number")
        return float(value)
    if tp is str or tp is bytes:
        if not isinstance(value, tp):
            raise MalformedFrame(f"{path}: expected {'a string' if tp is str else 'binary'}")
        return value
    if dataclasses.is_dataclass(tp):
        return _from_wire(tp, value, path)
    raise TypeError(f"no wire codec for {tp!r}")  # a bug in this module, not the peer
