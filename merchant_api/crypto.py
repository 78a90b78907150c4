"""The API's own secrets, all derived from one root key (JAKARTAONE_API_SECRET_KEY).

Guarantees:
- A card serial is never stored in clear: `serial_hash` is HMAC-SHA256 under a key derived
  for that purpose (a lookup key; equal serials give equal hashes), and `seal` keeps the
  serial (and other sensitive raw input) recoverable only with the root key, AES-256-GCM
  with a random nonce, bound to its purpose by the associated data.
- API keys are shown once. Only SHA-256 of their random 256-bit secret is stored; keys are
  compared in constant time.
- Distinct purposes use distinct derived keys (HMAC-SHA256 of the root key over a label),
  so that a leak of one derived key does not expose the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from card_reader.certificate import Certificate, certificate_mac
from card_reader.keys import BackOfficeKeys

MIN_ROOT_KEY_BYTES = 32
API_KEY_PREFIX = "jo"
_NONCE_BYTES = 12


class KeyConfigError(ValueError):
    """The root key is missing or too short; the API refuses to start without it."""


@dataclass(frozen=True, slots=True)
class ApiSecrets:
    """Keys derived from the root key, one per purpose. Never logged (repr hides them)."""

    serial_lookup_key: bytes
    sealing_key: bytes

    def __repr__(self) -> str:
        return "ApiSecrets(<hidden>)"

    @staticmethod
    def from_root(root_key: bytes) -> ApiSecrets:
        if len(root_key) < MIN_ROOT_KEY_BYTES:
            raise KeyConfigError(f"the API root key needs at least {MIN_ROOT_KEY_BYTES} bytes")
        return ApiSecrets(
            serial_lookup_key=_derive(root_key, b"card-serial-lookup"),
            sealing_key=_derive(root_key, b"sealing"),
        )

    @staticmethod
    def from_hex(root_key_hex: str) -> ApiSecrets:
        try:
            root = bytes.fromhex(root_key_hex)
        except ValueError as exc:
            raise KeyConfigError("the API root key must be hexadecimal") from exc
        return ApiSecrets.from_root(root)

    def serial_hash(self, serial: bytes) -> bytes:
        return hmac.new(
            self.serial_lookup_key, b"card-serial\x00" + serial, hashlib.sha256
        ).digest()

    def seal(self, purpose: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.sealing_key).encrypt(nonce, plaintext, purpose.encode())

    def unseal(self, purpose: str, sealed: bytes) -> bytes:
        return self.unsealer(purpose)(sealed)

    def unsealer(self, purpose: str) -> Callable[[bytes], bytes]:
        """`unseal` for many values of one purpose: the cipher is set up once."""
        aead = AESGCM(self.sealing_key)
        label = purpose.encode()

        def unseal(sealed: bytes) -> bytes:
            return aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], label)

        return unseal


def _derive(root_key: bytes, label: bytes) -> bytes:
    return hmac.new(root_key, b"jakartaone.api.v1\x00" + label, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A freshly made API key: `token` is shown to its owner once and never stored."""

    prefix: str
    token: str
    secret_hash: bytes


def new_api_key() -> NewApiKey:
    """`jo_<prefix>_<secret>`: the prefix is the public key id, the secret 256 random bits."""
    prefix = secrets.token_hex(8)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return NewApiKey(prefix, f"{API_KEY_PREFIX}_{prefix}_{secret}", hash_secret(secret))


def split_api_key(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, or None."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != 16 or not 20 <= len(secret) <= 64:
        return None
    return prefix, secret


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


class CertificateVerifier:
    """Verifies certificate MACs, keeping each card's derived certificate key in memory.

    Deriving a card's key (AN10922) costs more than the MAC itself, and a card pays many
    times a day. The keys live only in this process's memory, at most `max_cards` of them
    (then the cache starts again empty); they are never logged (repr hides them), stored
    or sent anywhere. The MAC of every certificate is still computed and compared in
    constant time; only the derivation is remembered.
    """

    def __init__(self, keys: BackOfficeKeys, max_cards: int = 200_000) -> None:
        self._keys = keys
        self._max_cards = max_cards
        self._card_keys: dict[bytes, bytes] = {}

    def __repr__(self) -> str:
        return "CertificateVerifier(<hidden>)"

    def verify(self, cert: Certificate) -> bool:
        """True if the card that owns `cert.card_serial` made exactly this certificate
        (the same answer as card_reader.certificate.verify_certificate)."""
        key = self._card_keys.get(cert.card_serial)
        if key is None:
            if len(self._card_keys) >= self._max_cards:
                self._card_keys.clear()
            key = self._card_keys[cert.card_serial] = self._keys.certificate_key(cert.card_serial)
        return hmac.compare_digest(certificate_mac(key, cert.signed_bytes()), cert.mac)
