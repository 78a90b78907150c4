"""Shapes every resource shares: problems, lists, money and identifiers."""

from __future__ import annotations

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
