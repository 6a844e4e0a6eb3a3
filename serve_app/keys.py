"""Per-client API keys: who may submit work, and how much.

A key is ``ork_`` plus 32 random bytes (URL-safe base64), shown once when it is
created; the store keeps only its SHA-256. The keys are 256-bit random, so a
plain hash is as strong as a slow password hash would be (nothing to guess), and
it costs a microsecond per request. Each key has a name (the owner of the tasks it
submits) and a quota: a sustained rate and a burst of tasks per second (a batch
counts each task) and a most-in-flight count. A quota field left unset takes the
router's default from its config at the time of use.

The keys live in the ``api_keys`` table of the router's history database (one file
to back up and to keep private; with a ``postgresql://`` history, that database),
written by ``orchestrator keys`` or the admin API; the router re-reads the table every
``key_refresh_s``, so a revoked key stops working within that time without a restart.
The table is :data:`serve_app.history_schema.api_keys`; SQLAlchemy Core reaches either
database (a few statements a second at most, so its cost does not matter here).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from serve_app.history_schema import HistoryError, api_keys, prepare
from serve_app.history_sql import Target, parse_url, sqlite_file

PREFIX = "ork_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: names the router gives to the admin token's work, to keyless decisions and to the Python API's calls
#: (serve_app.python_calls.HANDLE_CLIENT): no key may take them
RESERVED = ("admin", "anonymous", "python-api")


class KeyStoreError(ValueError):
    """A bad key name or quota, or a name that is taken; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str, conflict: bool = False) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.conflict = conflict  # taken, rather than invalid


@dataclass(frozen=True)
class Quota:
    """Limits of one client; None: the router's configured default."""

    rate_per_s: float | None = None
    burst: int | None = None
    max_in_flight: int | None = None

    def check(self) -> "Quota":
        if self.rate_per_s is not None and not (0 < self.rate_per_s <= 1e6):
            raise KeyStoreError("rate_per_s", f"must be in (0, 1e6] tasks per second, got {self.rate_per_s}")
        for name in ("burst", "max_in_flight"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000_000):
                raise KeyStoreError(name, f"must be a whole number from 1 to 10,000,000, got {v!r}")
        return self


@dataclass(frozen=True)
class ApiKey:
    """A key as stored (never the secret itself)."""

    name: str
    sha256: str
    quota: Quota
    created_at: float
    revoked_at: float | None = None

    def public(self) -> dict:
        return {"name": self.name, "created_at": self.created_at, "revoked_at": self.revoked_at,
                "rate_per_s": self.quota.rate_per_s, "burst": self.quota.burst,
                "max_in_flight": self.quota.max_in_flight, "active": self.revoked_at is None}


def key_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The ``api_keys`` table of the history database.

    Args:
        where: the history's URL (``sqlite:///path``, ``postgresql://...``) or a SQLite file's path.
    """

    def __init__(self, where: str | Path) -> None:
        target = parse_url(where) if isinstance(where, str) and "://" in where else Target("sqlite", path=Path(where))
        self.path = sqlite_file(target.path) if target.kind == "sqlite" else None
        self._engine = target.engine()
        if self.path is None:
            try:
                prepare(self._engine)
            except sa_exc.OperationalError as exc:
                raise HistoryError(f"API keys: cannot open the history database: {exc.orig}") from None

    def create(self, name: str, quota: Quota = Quota()) -> tuple[ApiKey, str]:
        """A new key for ``name``: (its record, the secret, shown only now). A revoked name may be
        reused (a new secret); an active one may not (revoke it first: one key per client)."""
        if not isinstance(name, str) or not NAME.match(name):
            raise KeyStoreError("name", "1-64 characters: letters, digits, '.', '_' or '-', starting with a "
                                    f"letter or digit; got {name!r}")
        if name.lower() in RESERVED:
            raise KeyStoreError("name", f"{name!r} is reserved (the router's own names: {', '.join(RESERVED)})")
        quota.check()
        secret = PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(name, key_sha256(secret), quota, time.time())
        taken = KeyStoreError("name", f"an active key named {name!r} exists; revoke it first", conflict=True)
        try:
            with self._engine.connect().execution_options(immediate=True) as conn, conn.begin():
                row = conn.execute(sa.select(api_keys.c.revoked_at).where(api_keys.c.name == name)).first()
                if row is not None and row.revoked_at is None:
                    raise taken
                conn.execute(api_keys.delete().where(api_keys.c.name == name))
                conn.execute(api_keys.insert().values(
                    name=name, sha256=key.sha256, rate_per_s=quota.rate_per_s, burst=quota.burst,
                    max_in_flight=quota.max_in_flight, created_at=key.created_at, revoked_at=None))
        except sa_exc.IntegrityError:  # another admin created the same name a moment ago
            raise taken from None
        return key, secret

    def revoke(self, name: str) -> bool:
        """Revoke the active key named ``name``; False if there is none."""
        with self._engine.connect().execution_options(immediate=True) as conn, conn.begin():
            cur = conn.execute(api_keys.update().where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                               .values(revoked_at=time.time()))
        return cur.rowcount > 0

    def list(self) -> list[ApiKey]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.name)).all()
        return [ApiKey(r.name, r.sha256, Quota(r.rate_per_s, r.burst, r.max_in_flight), r.created_at, r.revoked_at)
                for r in rows]

    def active(self) -> dict[str, ApiKey]:
        """Active keys by their SHA-256 (what a request's key is looked up by)."""
        return {k.sha256: k for k in self.list() if k.revoked_at is None}

    def close(self) -> None:
        self._engine.dispose()
