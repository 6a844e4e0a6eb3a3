"""Credentials: the admin token for admin calls, per-client API keys for work.

The router keeps only the SHA-256 of the admin token (see
:func:`serve_app.config.resolve_admin_token`) and compares digests in constant
time. No token configured means admin calls are refused (403) with the way to set
one; there is no default credential.

Calls that run work or change state (``POST /v1/tasks``, ``DELETE /v1/tasks/{id}``)
need an API key (:mod:`serve_app.keys`) or the admin token; decisions that run
nothing (``/v1/route``, ``/v1/route/batch``) may be left open by the router's
``open_route`` setting, and are then charged to one shared anonymous quota.
"""
from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass

from serve_app.config import token_sha256
from serve_app.errors import ApiError
from serve_app.keys import ApiKey, KeyStore, Quota, key_sha256

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchestrator-admin"'}
_KEY_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orchestrator"'}
#: the owner of open (keyless) decisions
ANONYMOUS = "anonymous"
#: the owner of work sent with the admin token
ADMIN = "admin"
#: least time between two re-reads of the key table caused by unknown keys (a guessing client
#: must not turn every request into a database read)
MISS_REFRESH_S = 0.5


@dataclass(frozen=True)
class Principal:
    """Who sent a request: a key's name (its quota), the admin, or anonymous."""

    name: str
    quota: Quota = Quota()
    admin: bool = False


def _bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class AdminAuth:
    """Checks ``Authorization: Bearer <token>`` against a configured SHA-256."""

    def __init__(self, sha256: str | None, note: str) -> None:
        self.sha256 = sha256
        self.note = note  # where the token came from, or how to configure one

    @property
    def configured(self) -> bool:
        return self.sha256 is not None

    def matches(self, token: str) -> bool:
        return self.sha256 is not None and hmac.compare_digest(token_sha256(token), self.sha256)

    def check(self, authorization: str | None) -> None:
        """Return if the header carries the admin token; else raise 403 / 401."""
        if self.sha256 is None:
            raise ApiError(403, f"admin calls are disabled: {self.note}")
        token = _bearer(authorization)
        if token is None:
            raise ApiError(401, "admin call: send Authorization: Bearer <admin token>", headers=_CHALLENGE)
        if not self.matches(token):
            raise ApiError(401, "admin call: wrong bearer token", headers=_CHALLENGE)


class ClientAuth:
    """Who a work request comes from: an active API key, or the admin token.

    The active keys are cached and re-read every ``refresh_s`` (revocation takes
    effect within it), and at most every :data:`MISS_REFRESH_S` when an unknown key
    is presented (a key created a moment ago works within half a second).
    """

    def __init__(self, admin: AdminAuth, store: KeyStore | None, refresh_s: float = 2.0) -> None:
        self.admin = admin
        self.store = store
        self.refresh_s = refresh_s
        self._keys: dict[str, ApiKey] = {}
        self._read_at = -1e18
        self._lock = threading.Lock()

    def _lookup(self, sha: str) -> ApiKey | None:
        now = time.monotonic()
        key = self._keys.get(sha)
        stale = now - self._read_at > self.refresh_s
        if self.store is not None and (stale or (key is None and now - self._read_at > MISS_REFRESH_S)):
            with self._lock:
                if now - self._read_at > MISS_REFRESH_S or stale:
                    self._keys = self.store.active()
                    self._read_at = time.monotonic()
            key = self._keys.get(sha)
        return key

    def principal(self, authorization: str | None) -> Principal | None:
        """The sender, or None without credentials; 401 for a credential that is not valid."""
        if authorization is None:
            return None
        token = _bearer(authorization)
        if token is None:
            raise ApiError(401, "send Authorization: Bearer <API key>", headers=_KEY_CHALLENGE)
        if self.admin.matches(token):
            return Principal(ADMIN, admin=True)
        key = self._lookup(key_sha256(token))
        if key is None:
            raise ApiError(401, "unknown or revoked API key", headers=_KEY_CHALLENGE)
        return Principal(key.name, key.quota)

    def require(self, authorization: str | None, what: str) -> Principal:
        """The sender of a call that needs credentials; 401 saying how to get a key."""
        who = self.principal(authorization)
        if who is None:
            raise ApiError(401, f"{what} needs an API key: send Authorization: Bearer <key> (an operator creates "
                                "one with `orchestrator keys create NAME`)", headers=_KEY_CHALLENGE)
        return who
