"""Check generated Envoy resources against the protoc-gen-validate rules in Envoy's own protos.

Envoy rejects (NACKs) a resource that breaks a `validate.rules` annotation. Checking the same
rules here, before any node sees the resource, turns a fleet-wide NACK into a rejected
registry change with a precise path, while every Envoy keeps its working configuration.

The common rule kinds are covered: required messages and oneofs, string lengths/patterns/sets,
numeric bounds, defined enums, repeated and map sizes (with item rules), durations and Any
type sets. `Any` fields are unpacked and checked recursively. Rules not covered here are left to
Envoy, whose NACK is still recorded and not retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import any_pb2, duration_pb2, symbol_database
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

_NUMERIC_KINDS = (
    "float",
    "double",
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "fixed32",
    "fixed64",
    "sfixed32",
    "sfixed64",
)
_HEADER_NAME = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE = re.compile(r"^[^\u0000\u000A\u000D]*$")
_database = symbol_database.Default()


class ResourceInvalid(ValueError):
    """A generated resource breaks a rule Envoy enforces; the message gives the field path."""


def check(message: Message, path: str = "") -> None:
    """Raise `ResourceInvalid` for the first rule `message` breaks."""
    for problem in _problems(message, path or message.DESCRIPTOR.name):
        raise ResourceInvalid(problem)


def _problems(message: Message, path: str) -> Iterator[str]:
    descriptor = message.DESCRIPTOR
    if descriptor.GetOptions().Extensions[validate_pb2.disabled]:
        return
    for oneof in descriptor.oneofs:
        if oneof.GetOptions().Extensions[validate_pb2.required] and message.WhichOneof(oneof.name) is None:
            yield f"{path}: one of {', '.join(f.name for f in oneof.fields)} is required"
    for field in descriptor.fields:
        rules = field.GetOptions().Extensions[validate_pb2.rules]
        yield from _field(message, field, rules, f"{path}.{field.name}")


def _field(message: Message, field: FieldDescriptor, rules: Any, path: str) -> Iterator[str]:
    value = getattr(message, field.name)
    kind = rules.WhichOneof("type")
    if field.is_repeated:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield from _map(value, field, rules, path)
            return
        if kind == "repeated":
            repeated = rules.repeated
            if not (repeated.ignore_empty and len(value) == 0):
                if repeated.min_items and len(value) < repeated.min_items:
                    yield f"{path}: needs at least {repeated.min_items} item(s)"
                if repeated.HasField("max_items") and len(value) > repeated.max_items:
                    yield f"{path}: at most {repeated.max_items} item(s)"
                for index, item in enumerate(value):
                    yield from _scalar_or_message(item, field, repeated.items, f"{path}[{index}]")
                return
        for index, item in enumerate(value):
            yield from _scalar_or_message(item, field, None, f"{path}[{index}]")
        return
    if field.message_type is not None and not message.HasField(field.name):
        if kind == "message" and rules.message.required:
            yield f"{path}: is required"
        elif kind in ("duration", "any", "timestamp") and getattr(rules, kind).required:
            yield f"{path}: is required"
        return
    if field.containing_oneof is not None and not message.HasField(field.name):
        return
    yield from _scalar_or_message(value, field, rules if kind else None, path)


def _map(value: Any, field: FieldDescriptor, rules: Any, path: str) -> Iterator[str]:
    if rules.WhichOneof("type") == "map":
        if rules.map.min_pairs and len(value) < rules.map.min_pairs:
            yield f"{path}: needs at least {rules.map.min_pairs} entr(y/ies)"
    value_field = field.message_type.fields_by_name["value"]
    for key in value:
        item = value[key]
        if value_field.message_type is not None:
            yield from _problems(item, f"{path}[{key!r}]")


def _scalar_or_message(value: Any, field: FieldDescriptor, rules: Any, path: str) -> Iterator[str]:
    kind = rules.WhichOneof("type") if rules is not None else None
    if field.message_type is not None:
        if isinstance(value, duration_pb2.Duration):
            if kind == "duration":
                yield from _duration(value, rules.duration, path)
            return
        if isinstance(value, any_pb2.Any):
            yield from _any(value, rules.any if kind == "any" else None, path)
            return
        yield from _problems(value, path)
        return
    if kind == "string":
        yield from _string(value, rules.string, path)
    elif kind in _NUMERIC_KINDS:
        yield from _number(value, getattr(rules, kind), path)
    elif kind == "enum" and rules.enum.defined_only:
        if field.enum_type.values_by_number.get(value) is None:
            yield f"{path}: {value} is not a defined {field.enum_type.name}"


def _string(value: str, rules: Any, path: str) -> Iterator[str]:
    if rules.ignore_empty and value == "":
        return
    if rules.HasField("min_len") and len(value) < rules.min_len:
        yield f"{path}: must have at least {rules.min_len} character(s)"
    if rules.HasField("max_len") and len(value) > rules.max_len:
        yield f"{path}: must have at most {rules.max_len} character(s)"
    if rules.HasField("min_bytes") and len(value.encode()) < rules.min_bytes:
        yield f"{path}: must have at least {rules.min_bytes} byte(s)"
    if rules.HasField("max_bytes") and len(value.encode()) > rules.max_bytes:
        yield f"{path}: must have at most {rules.max_bytes} byte(s)"
    if rules.HasField("pattern") and re.search(rules.pattern, value) is None:
        yield f"{path}: {value!r} does not match {rules.pattern!r}"
    if rules.HasField("prefix") and not value.startswith(rules.prefix):
        yield f"{path}: must start with {rules.prefix!r}"
    if getattr(rules, "in") and value not in getattr(rules, "in"):
        yield f"{path}: must be one of {list(getattr(rules, 'in'))}"
    if value in rules.not_in:
        yield f"{path}: must not be {value!r}"
    if rules.HasField("well_known_regex") and value:
        pattern = _HEADER_NAME if rules.well_known_regex == validate_pb2.HTTP_HEADER_NAME else _HEADER_VALUE
        if pattern.match(value) is None:
            what = "name" if pattern is _HEADER_NAME else "value"
            yield f"{path}: {value!r} is not a valid HTTP header {what}"


def _number(value: float, rules: Any, path: str) -> Iterator[str]:
    for bound, fails, words in (
        ("gt", lambda b: value <= b, "greater than"),
        ("gte", lambda b: value < b, "at least"),
        ("lt", lambda b: value >= b, "less than"),
        ("lte", lambda b: value > b, "at most"),
    ):
        if rules.HasField(bound) and fails(getattr(rules, bound)):
            yield f"{path}: {value} must be {words} {getattr(rules, bound)}"
    if getattr(rules, "in") and value not in getattr(rules, "in"):
        yield f"{path}: {value} must be one of {list(getattr(rules, 'in'))}"


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration(value: duration_pb2.Duration, rules: Any, path: str) -> Iterator[str]:
    seconds = _seconds(value)
    for bound, fails, words in (
        ("gt", lambda b: seconds <= b, "greater than"),
        ("gte", lambda b: seconds < b, "at least"),
        ("lt", lambda b: seconds >= b, "less than"),
        ("lte", lambda b: seconds > b, "at most"),
    ):
        if rules.HasField(bound) and fails(_seconds(getattr(rules, bound))):
            yield f"{path}: {seconds}s must be {words} {_seconds(getattr(rules, bound))}s"


def _any(value: any_pb2.Any, rules: Any, path: str) -> Iterator[str]:
    type_url = value.type_url
    if rules is not None and getattr(rules, "in") and type_url not in getattr(rules, "in"):
        yield f"{path}: type {type_url} is not allowed here"
        return
    name = type_url.rpartition("/")[2]
    try:
        message_class = _database.GetSymbol(name)
    except KeyError:
        return  # a type this process does not know: Envoy has the last word
    inner = message_class()
    if not value.Unpack(inner):
        yield f"{path}: cannot unpack {type_url}"
        return
    yield from _problems(inner, f"{path}<{name.rpartition('.')[2]}>")
