"""Why a release refuses to run: one named code per broken rule.

A refused release writes nothing. Messages name the rule and the column or count involved,
never a card id, a pseudonym or the release key.
"""

from __future__ import annotations

from enum import StrEnum


class ReleaseErrorCode(StrEnum):
    # The release key and the config.
    KEY_TOO_SHORT = "key_too_short"
    CONFIG_INVALID = "config_invalid"
    # Shape of the inputs.
    SCHEMA_MISMATCH = "schema_mismatch"
    NULL_IN_REQUIRED_COLUMN = "null_in_required_column"
    # Rows of `events`.
    EVENT_ID_DUPLICATE = "event_id_duplicate"
    EVENT_OUTSIDE_DAY = "event_outside_day"
    KIND_INVALID = "kind_invalid"
    AMOUNT_NOT_POSITIVE = "amount_not_positive"
    TRANSIT_FIELDS_INVALID = "transit_fields_invalid"
    LOAD_CHANNEL_INVALID = "load_channel_invalid"
    NEGATIVE_VALUE = "negative_value"
    # Rows of `cards`.
    CARD_DUPLICATE = "card_duplicate"
    # The seal.
    SEAL_INVALID = "seal_invalid"
    # The output directory.
    OUTPUT_NOT_EMPTY = "output_not_empty"
    # Reading the day from the ledger database (extract).
    DAY_NOT_SEALED = "day_not_sealed"
    RECORD_INVALID = "record_invalid"


class ReleaseError(Exception):
    """A release that cannot be made; `code` says which rule the input broke."""

    def __init__(self, code: ReleaseErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
