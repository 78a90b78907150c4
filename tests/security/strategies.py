"""Hypothesis strategies for hostile input: any JSON value (Infinity, NaN, huge integers,
deep nesting, look-alike text), and byte-level mutations of a valid encoding."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Text an attacker tries in string fields: SQL, look-alikes, controls, bidi overrides.
HOSTILE_TEXT = [
    "' OR '1'='1",
    "'; DROP TABLE merchants; --",
    "1; SELECT pg_sleep(5)--",
    '" OR ""="',
    "Robert'); DELETE FROM ledger_transfers;--",
    "\u0410lfamart",  # Cyrillic A
    "ＭＲＴ－０１",  # fullwidth
    "MRT\u200b01",  # zero-width space
    "abc\u202edcb",  # right-to-left override
    "caf\u0065\u0301",  # decomposed é
    "\x00",
    "line\nbreak",
    "%s%s%s%n",
    "{{7*7}}",
    "😀",
    "A" * 5000,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 2, max_value=2**70)
    | st.integers(min_value=-(2**70), max_value=-(2**63) + 2)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(HOSTILE_TEXT)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = 0
    for index in range(depth):
        value = [value] if index % 2 else {"a": value}
    return value


@st.composite
def mutated_json(draw: st.DrawFn, valid: dict[str, Any]) -> Any:
    """`valid` with one field replaced, removed or added, or the whole value replaced."""
    choice = draw(st.integers(0, 3))
    if choice == 0 or not valid:
        return draw(json_values)
    copy = json.loads(json.dumps(valid))
    name = draw(st.sampled_from(sorted(copy)))
    if choice == 1:
        copy[name] = draw(json_values)
    elif choice == 2:
        del copy[name]
    else:
        copy[draw(st.text(max_size=12))] = draw(json_values)
    return copy


@st.composite
def mutated_bytes(draw: st.DrawFn, valid: bytes) -> bytes:
    """`valid` truncated, extended, or with some bytes changed."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.integers(0, 2))
        if action == 0 and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif action == 1:
            data += draw(st.binary(min_size=1, max_size=8))
        elif data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] = draw(st.integers(0, 255))
    return bytes(data)
