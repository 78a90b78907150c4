"""One-dimensional PostgreSQL arrays in the binary wire format, built in one pass.

The ledger sends each batch as one array per column (`ledger.store`, through libpq
itself; the API's stores send `column`s through psycopg). psycopg's own adaptation of a
Python list inspects it first (its dimensions, an element to choose a dumper for, whether
any is None) and then dumps it element by element: about twice the client CPU of
building the bytes directly. Here each column says its element type, so the array's
bytes are joined straight away.

Wire format (PostgreSQL's `array_send`): number of dimensions, a has-nulls flag and the
element type's OID, then per dimension its length and lower bound (1), then each element
as its byte length (-1 for NULL) and its binary value.

Guarantees:
- `encode(kind, values)`, and `column(kind, values)` sent through psycopg, is what
  PostgreSQL reads as exactly the `kind[]` holding `values`, in order, None as NULL; an
  empty column is the empty array.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

# Element type OIDs (pg_type; fixed since PostgreSQL 8).
_ELEMENT_OIDS = {
    "uuid": 2950,
    "bool": 16,
    "int2": 21,
    "int4": 23,
    "int8": 20,
    "text": 25,
    "bytea": 17,
}

_HEADER = struct.Struct(">iiiii")
_EMPTY = struct.Struct(">iii")
_NULL = struct.pack(">i", -1)
_LENGTH = struct.Struct(">i")
_UUID_LENGTH = _LENGTH.pack(16)


# Each encoder returns its elements' encodings in order, NULL as _NULL itself: whether
# the array has a NULL is then one C-level `_NULL in elements`, not a Python test per value.
Elements = list[bytes]


def _uuids(values: Sequence[Any]) -> Elements:
    # `v.int.to_bytes` is what UUID.bytes computes, without the property's Python call.
    return [_NULL if v is None else _UUID_LENGTH + v.int.to_bytes(16, "big") for v in values]


def _fixed_width(value_format: str) -> Callable[[Sequence[Any]], Elements]:
    """The encoder of a fixed-width type: each element's length and value in one pack."""
    element = struct.Struct(">i" + value_format)
    pack, width = element.pack, element.size - _LENGTH.size

    def encode(values: Sequence[Any]) -> Elements:
        return [_NULL if v is None else pack(width, v) for v in values]

    return encode


def _texts(values: Sequence[Any]) -> Elements:
    # Text columns repeat a few values (currency, kind, phase): each is encoded once.
    length = _LENGTH.pack
    encoded: dict[str, bytes] = {}
    parts = []
    for v in values:
        if v is None:
            parts.append(_NULL)
            continue
        element = encoded.get(v)
        if element is None:
            raw = v.encode()
            element = encoded[v] = length(len(raw)) + raw
        parts.append(element)
    return parts


def _raw(values: Sequence[Any]) -> Elements:
    length = _LENGTH.pack
    return [_NULL if v is None else length(len(v)) + bytes(v) for v in values]


_ENCODERS: dict[str, Callable[[Sequence[Any]], Elements]] = {
    "uuid": _uuids,
    "bool": _fixed_width("?"),
    "int2": _fixed_width("h"),
    "int4": _fixed_width("i"),
    "int8": _fixed_width("q"),
    "text": _texts,
    "bytea": _raw,
}


def encode(kind: str, values: Sequence[Any]) -> bytes:
    """`values` as a binary `kind[]`: uuid, bool, int2, int4, int8, text or bytea."""
    if kind not in _ENCODERS:
        raise ValueError(f"no binary array encoding for {kind!r}")
    if not values:
        return _EMPTY.pack(0, 0, _ELEMENT_OIDS[kind])
    elements = _ENCODERS[kind](values)
    # Only a NULL equals _NULL: every other element starts with its length, never -1.
    has_nulls = _NULL in elements
    elements.insert(0, _HEADER.pack(1, has_nulls, _ELEMENT_OIDS[kind], len(values), 1))
    return b"".join(elements)


def encode_rows(kinds: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[bytes]:
    """Rows of len(kinds) values as one binary array per column."""
    return [
        encode(kind, values) for kind, values in zip(kinds, _transposed(kinds, rows), strict=True)
    ]


def _transposed(kinds: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    if not rows:
        return [() for _ in kinds]
    return list(zip(*rows, strict=True))


class Column:
    """A column of values of one PostgreSQL type, as a psycopg query parameter (`%b`)."""

    __slots__ = ("kind", "values")

    def __init__(self, kind: str, values: Sequence[Any]) -> None:
        self.kind = kind
        self.values = values


def _dumper(kind: str) -> type[Dumper]:
    class ArrayDumper(Dumper):
        format = Format.BINARY
        oid = _ARRAY_OIDS[kind]

        def dump(self, obj: Any) -> bytes:
            return encode(obj.kind, obj.values)

    return ArrayDumper


# Array type OIDs (pg_type), which the dumper fixes as the type the server reads.
_ARRAY_OIDS = {
    "uuid": 2951, "bool": 1000, "int2": 1005, "int4": 1007, "int8": 1016, "text": 1009,
    "bytea": 1001,
}  # fmt: skip

# One class per type: psycopg picks a dumper by the parameter's class.
_CLASSES: dict[str, type[Column]] = {
    kind: type(f"{kind.title()}Column", (Column,), {"__slots__": ()}) for kind in _ELEMENT_OIDS
}
for _kind, _class in _CLASSES.items():
    psycopg.adapters.register_dumper(_class, _dumper(_kind))


def column(kind: str, values: Sequence[Any]) -> Column:
    """`values` as a psycopg parameter sent as a binary `kind[]` (see `encode`)."""
    if kind not in _CLASSES:
        raise ValueError(f"no binary array encoding for {kind!r}")
    return _CLASSES[kind](kind, values)


def columns(kinds: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Column]:
    """Rows of len(kinds) values as one psycopg parameter per column."""
    return [
        column(kind, values) for kind, values in zip(kinds, _transposed(kinds, rows), strict=True)
    ]
