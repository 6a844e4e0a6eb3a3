"""Bearer-token check for admin calls (policy switch and anything that changes the router).

The router keeps only the SHA-256 of the token (see
:func:`serve_app.config.resolve_admin_token`) and compares digests in constant
time. No token configured means admin calls are refused (403) with the way to set
one; there is no default credential.
"""
from __future__ import annotations

import hmac

from serve_app.config import token_sha256
from serve_app.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchestrator-admin"'}


class AdminAuth:
    """Checks ``Authorization: Bearer <token>`` against a configured SHA-256."""

    def __init__(self, sha256: str | None, note: str) -> None:
        self.sha256 = sha256
        self.note = note  # where the token came from, or how to configure one

    @property
    def configured(self) -> bool:
        return self.sha256 is not None

    def check(self, authorization: str | None) -> None:
        """Return if the header carries the admin token; else raise 403 / 401."""
        if self.sha256 is None:
            raise ApiError(403, f"admin calls are disabled: {self.note}")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "admin call: send Authorization: Bearer <admin token>", headers=_CHALLENGE)
        if not hmac.compare_digest(token_sha256(token.strip()), self.sha256):
            raise ApiError(401, "admin call: wrong bearer token", headers=_CHALLENGE)
