"""API keys: stored as digests, one active per name, created and revoked by the admin command."""
from __future__ import annotations

import stat

import pytest

from orchestrator.cli import main
from serve_app.keys import KeyStore, KeyStoreError, Quota, key_sha256
from tests.postgres import postgres_url  # noqa: F401 - a fixture


def test_store_keeps_digests_one_active_key_per_name(tmp_path) -> None:
    store = KeyStore(tmp_path / "h.db")
    key, secret = store.create("team-a", Quota(rate_per_s=5.0))
    assert secret.startswith("ork_") and len(secret) > 40 and key.sha256 == key_sha256(secret)
    assert store.active()[key.sha256].quota.rate_per_s == 5.0
    assert secret.encode() not in (tmp_path / "h.db").read_bytes()  # only the digest is on disk
    with pytest.raises(KeyStoreError) as e:
        store.create("team-a")
    assert e.value.field == "name"
    assert store.revoke("team-a") and not store.revoke("team-a") and not store.active()
    _, again = store.create("team-a")  # a revoked name may get a new secret
    assert again != secret and list(store.active().values())[0].name == "team-a"
    for bad in (Quota(rate_per_s=0), Quota(burst=0), Quota(max_in_flight=True)):
        with pytest.raises(KeyStoreError):
            store.create("team-b", bad)
    for reserved in ("admin", "Anonymous"):  # the router's own owner names: a key named so would own their tasks
        with pytest.raises(KeyStoreError):
            store.create(reserved)
    assert stat.S_IMODE((tmp_path / "h.db").stat().st_mode) == 0o600


def test_admin_command_creates_to_a_private_file_and_names_bad_input(tmp_path, capsys) -> None:
    hist = ["--history", f"sqlite:///{tmp_path / 'h.db'}"]
    out = tmp_path / "key"
    assert main(["keys", "create", "ci", "--burst", "10", "--out", str(out), *hist]) == 0
    assert out.read_text().startswith("ork_") and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert main(["keys", "create", "ci", *hist]) == 2
    assert "name: an active key named 'ci' exists" in capsys.readouterr().err
    assert main(["keys", "create", "bad name", *hist]) == 2
    assert main(["keys", "create", "x", "--rate", "-1", *hist]) == 2
    assert "rate_per_s" in capsys.readouterr().err
    assert main(["keys", "revoke", "nobody", *hist]) == 2
    assert main(["keys", "list", *hist]) == 0
    assert '"burst": 10' in capsys.readouterr().out
    assert main(["keys", "revoke", "ci", *hist]) == 0


def test_with_a_postgresql_history_the_keys_live_in_that_database(postgres_url) -> None:
    import sqlalchemy as sa

    from serve_app.history import open_store
    from serve_app.history_sql import parse_url

    h = open_store(postgres_url)  # the history and its keys: one database, either opening it first
    store = KeyStore(postgres_url)
    key, secret = store.create("team-a", Quota(burst=7))
    with pytest.raises(KeyStoreError) as e:
        KeyStore(postgres_url).create("team-a")
    assert e.value.conflict
    assert KeyStore(postgres_url).active()[key.sha256].quota.burst == 7  # another process sees it
    engine = parse_url(postgres_url).engine()
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text("SELECT * FROM api_keys"))]
    engine.dispose()
    assert len(rows) == 1 and rows[0][1] == key_sha256(secret) and secret not in repr(rows)
    assert store.revoke("team-a") and not store.active()
    store.close()
    h.close()
