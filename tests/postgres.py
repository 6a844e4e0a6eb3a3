"""A throwaway PostgreSQL server from Debian's packages, for the history's tests against a real one.

One server per test process, started on first use in a temporary folder (``initdb -A trust``,
listening on 127.0.0.1 at a free port, its socket in the same folder) and stopped at exit;
each test gets a database of its own (:func:`postgres_url`). initdb and pg_ctl refuse to run
as root, so as root they run as the ``postgres`` user (Debian's package makes it) or ``nobody``.
Without the binaries the tests that need them skip, saying how to get them.

The server runs with ``fsync=off``: it outlives every test process, and what the tests kill
is the client (the router), whose acknowledged commits the server then still holds.
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from cluster.procs import free_fixed_port

SKIP = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (.ci/run does)"


def find_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder, or the one of an ``initdb`` on the PATH."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb and shutil.which("pg_ctl") else None


class PostgresServer:
    """initdb, start and stop one server in ``root`` (a fresh folder)."""

    def __init__(self, bin_dir: Path, root: Path, *, fsync: bool = False) -> None:
        self.bin, self.root, self.port = bin_dir, root, free_fixed_port()  # bound later: outside the ephemeral range
        self.data = root / "data"
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:  # initdb: "cannot be run as root"
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            os.chown(root, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        opts = f"-k {root} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not fsync:
            opts += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(root / "log"), "-w", "-t", "60", "-o", opts, "start")

    def _run(self, tool: str, *args: str) -> None:
        kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}
        res = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True, cwd=self.root,
                             env={**os.environ, "LC_ALL": "C.UTF-8"}, **kw)
        if res.returncode != 0:
            log = (self.root / "log").read_text()[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr[-2000:]}{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_server: PostgresServer | None = None


def server() -> PostgresServer:
    """This process's server, started on first use (stopped at exit); skips without the binaries."""
    global _server
    if _server is None:
        bin_dir = find_bin()
        if bin_dir is None:
            pytest.skip(SKIP)
        _server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="orch-pg-")))
        atexit.register(_server.stop)
    return _server


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh database on this process's throwaway server (dropped after the test)."""
    srv = server()
    url = srv.create_database()
    yield url
    srv.drop_database(url)
