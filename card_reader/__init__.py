"""The JakartaOne card: purse protocol, keys, a virtual card, gates and merchant terminals.

The back office imports only `card_reader.certificate` and `card_reader.keys` (the
certificate and key code). This package imports nothing else of JakartaOne's: gates talk
to the back office over HTTP. The specification is docs/card-protocol.md.
"""
