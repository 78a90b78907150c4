"""Fixtures for the security suite: the merchant API's own (a migrated database, the app
under Litestar's test client, an issuer key, a small onboarded world)."""

from tests.api.conftest import client, ctx, issuer, world

__all__ = ["client", "ctx", "issuer", "world"]
