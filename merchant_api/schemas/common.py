"""Shapes every resource shares: problems, lists, money and identifiers."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Generic, TypeVar

import msgspec

T = TypeVar("T")

# Integer rupiah. A single movement never exceeds the ledger's cap.
Amount = Annotated[int, msgspec.Meta(ge=1, le=100_000_000_000_000, description="Integer rupiah")]
Money = Annotated[int, msgspec.Meta(description="Integer rupiah (may be zero or negative)")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Mcc = Annotated[
    str, msgspec.Meta(pattern=r"^[0-9]{4}$", description="ISO 18245 merchant category code")
]
TerminalCode = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,32}$", description="The terminal id cards sign")
]


class RequestBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The base of every request body: unknown fields are refused, and every string in it
    (fields and list items) is checked by `visible_text`, so a bad one is 400
    `request_invalid` naming the field."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, str):
                msgspec.structs.force_setattr(self, name, visible_text(value, name))
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, str):
                        visible_text(item, name)


def visible_text(value: str, field: str) -> str:
    """`value` in Unicode NFC, if every character in it is printable; ValueError otherwise.

    This is the one place that keeps what a person sees and what is stored the same, for
    every string of every request: `str.isprintable` refuses controls (a NUL cannot even be
    stored in PostgreSQL text; a trailing newline would slip through a `$`-anchored
    pattern and make `POS-1\n` a second terminal), invisible and direction-changing format
    characters (zero-width spaces, bidi overrides: two names that look alike but differ),
    separators other than the ASCII space, surrogates, private use and unassigned code
    points. NFC makes composed and decomposed accents one spelling.
    """
    if not value.isprintable():
        raise ValueError(
            f"{field}: control, invisible, separator or direction-changing characters"
            " are not allowed"
        )
    return unicodedata.normalize("NFC", value)


class Problem(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details. `code` is stable; match on it, not on `detail`."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str
    request_id: str
    errors: list[dict[str, str]] | None = None


class Page(msgspec.Struct, Generic[T], kw_only=True):
    """One page of a list, newest first. Pass the last item's id as `starting_after` for
    the next (older) page, the first item's id as `ending_before` for the previous one."""

    object: str = "list"
    data: list[T]
    has_more: bool
